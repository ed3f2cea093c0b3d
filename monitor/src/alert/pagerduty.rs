//! The PagerDuty sink (Events API v2, `POST /v2/enqueue`): one event per alert, `trigger` then
//! `resolve` under the alert's fingerprint as `dedup_key`. 429 and 5xx are retried; 400 (an
//! invalid event) is not.
use std::time::Duration;

use super::alertmanager::rfc3339;
use super::delivery::{Outcome, Sink};
use super::{AlertNotice, http, truncate};

pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// PagerDuty's severities: critical, error, warning, info.
fn severity(ours: &str) -> &'static str {
    match ours {
        "critical" => "critical",
        "high" => "error",
        "warning" => "warning",
        _ => "info",
    }
}

/// The Events API v2 event for one notice.
pub fn event(routing_key: &str, n: &AlertNotice) -> serde_json::Value {
    let dedup_key = format!("apiwatch-{}", n.fingerprint);
    if n.is_resolved() {
        return serde_json::json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        });
    }
    let mut details = serde_json::Map::new();
    for (k, v) in n.labels.iter().chain(n.annotations.iter()) {
        details.insert(k.clone(), truncate(v, 1024).into());
    }
    let mut event = serde_json::json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            // PagerDuty truncates summaries at 1024 characters; we cut first.
            "summary": truncate(n.annotation("summary"), 1024),
            "source": truncate(n.label("host"), 255),
            "severity": severity(n.label("severity")),
            "timestamp": rfc3339(n.starts_at),
            "component": truncate(n.label("service"), 255),
            "group": truncate(n.label("route"), 255),
            "class": n.label("alertname"),
            "custom_details": details,
        },
        "client": "apiwatch",
    });
    let dashboard = n.annotation("dashboard");
    if !dashboard.is_empty() {
        event["client_url"] = dashboard.into();
        event["links"] = serde_json::json!([{"href": dashboard, "text": "apiwatch dashboard"}]);
    }
    event
}

pub struct PagerDuty {
    url: String,
    routing_key: String,
    agent: ureq::Agent,
}

impl PagerDuty {
    pub fn new(url: &str, routing_key: &str, timeout: Duration) -> Self {
        Self {
            url: url.to_string(),
            routing_key: routing_key.to_string(),
            agent: http::agent(timeout),
        }
    }
}

impl Sink for PagerDuty {
    fn send(&mut self, notices: &[AlertNotice]) -> Outcome {
        // batch_max is 1: the Events API takes one event per request.
        let body = event(&self.routing_key, &notices[0]).to_string();
        http::post_json(&self.agent, &self.url, &body, &[])
    }
}
