//! The Slack sink (incoming webhook): up to 5 alerts per message as Block Kit blocks, kept
//! within Slack's limits (50 blocks, 150 characters of header, 3,000 per section, 10 fields of
//! 2,000; about 12,000 characters per message in all). Text from traffic is escaped, so a route
//! like `/<!channel>` cannot mention anyone.
use std::time::Duration;

use super::delivery::{Outcome, Sink};
use super::{AlertNotice, http, truncate};

/// Alerts per message; with the caps below a message stays under 12,000 characters.
pub const MAX_ALERTS_PER_MESSAGE: usize = 5;
const SUMMARY_MAX: usize = 300;
const DESCRIPTION_MAX: usize = 1200;
const FIELD_MAX: usize = 100;

/// Slack's mrkdwn control characters.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn mrkdwn(text: String) -> serde_json::Value {
    serde_json::json!({"type": "mrkdwn", "text": text})
}

/// The webhook message for a batch of notices.
pub fn message(notices: &[AlertNotice]) -> serde_json::Value {
    let firing = notices.iter().filter(|n| !n.is_resolved()).count();
    let resolved = notices.len() - firing;
    let title = match (firing, resolved) {
        (1, 0) => format!("FIRING: {}", notices[0].label("alertname")),
        (0, 1) => format!("RESOLVED: {}", notices[0].label("alertname")),
        _ => format!("apiwatch: {firing} firing, {resolved} resolved"),
    };
    let mut blocks = vec![serde_json::json!({
        "type": "header",
        "text": {"type": "plain_text", "text": truncate(&title, 150)},
    })];
    for n in notices.iter().take(MAX_ALERTS_PER_MESSAGE) {
        let mark = if n.is_resolved() { "RESOLVED" } else { "FIRING" };
        let text = format!(
            "*[{mark}] {}*\n{}",
            truncate(&escape(n.annotation("summary")), SUMMARY_MAX),
            truncate(&escape(n.annotation("description")), DESCRIPTION_MAX),
        );
        let fields: Vec<serde_json::Value> = ["severity", "service", "route", "rule", "source_zone", "host"]
            .iter()
            .filter(|k| !n.label(k).is_empty())
            .map(|k| mrkdwn(format!("*{k}*\n{}", truncate(&escape(n.label(k)), FIELD_MAX))))
            .chain(
                ["source", "identity", "occurrences"]
                    .iter()
                    .filter(|k| !n.annotation(k).is_empty())
                    .map(|k| {
                        mrkdwn(format!(
                            "*{k}*\n{}",
                            truncate(&escape(n.annotation(k)), FIELD_MAX)
                        ))
                    }),
            )
            .take(10)
            .collect();
        let mut section = serde_json::json!({"type": "section", "text": mrkdwn(truncate(&text, 3000))});
        if !fields.is_empty() {
            section["fields"] = fields.into(); // Slack refuses an empty list
        }
        blocks.push(section);
        let mut context = format!("fingerprint {}", n.fingerprint);
        let dashboard = n.annotation("dashboard");
        if !dashboard.is_empty() {
            context.push_str(&format!(" · <{}|dashboard>", truncate(&escape(dashboard), 500)));
        }
        blocks.push(serde_json::json!({"type": "context", "elements": [mrkdwn(context)]}));
        blocks.push(serde_json::json!({"type": "divider"}));
    }
    blocks.pop(); // no divider after the last alert
    let fallback: Vec<String> = notices
        .iter()
        .map(|n| {
            let mark = if n.is_resolved() { "RESOLVED" } else { "FIRING" };
            format!(
                "[{mark}] {}",
                truncate(&escape(n.annotation("summary")), SUMMARY_MAX)
            )
        })
        .collect();
    serde_json::json!({
        "text": truncate(&fallback.join("\n"), 3000),
        "blocks": blocks,
    })
}

pub struct Slack {
    webhook_url: String,
    agent: ureq::Agent,
}

impl Slack {
    pub fn new(webhook_url: &str, timeout: Duration) -> Self {
        Self {
            webhook_url: webhook_url.to_string(),
            agent: http::agent(timeout),
        }
    }
}

impl Sink for Slack {
    fn batch_max(&self) -> usize {
        MAX_ALERTS_PER_MESSAGE
    }

    fn send(&mut self, notices: &[AlertNotice]) -> Outcome {
        http::post_json(&self.agent, &self.webhook_url, &message(notices).to_string(), &[])
    }
}
