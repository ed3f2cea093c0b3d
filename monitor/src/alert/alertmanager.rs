//! The Alertmanager sink (API v2, `POST /api/v2/alerts`): batches of alerts, `endsAt` on
//! resolve; firing alerts are re-sent (resend_secs) so Alertmanager does not expire them.
use std::time::Duration;

use super::delivery::{Outcome, Sink};
use super::{AlertNotice, http};

pub fn rfc3339(ns: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The Alertmanager JSON for a batch of notices (postableAlerts).
pub fn payload(notices: &[AlertNotice]) -> serde_json::Value {
    serde_json::Value::Array(
        notices
            .iter()
            .map(|n| {
                let mut a = serde_json::json!({
                    "labels": n.labels,
                    "annotations": n.annotations,
                    "startsAt": rfc3339(n.starts_at),
                });
                if let Some(end) = n.ends_at {
                    a["endsAt"] = serde_json::Value::String(rfc3339(end));
                }
                a
            })
            .collect(),
    )
}

pub struct Alertmanager {
    url: String,
    agent: ureq::Agent,
}

impl Alertmanager {
    /// `base_url`: http://host:port of Alertmanager.
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        Self {
            url: format!("{}/api/v2/alerts", base_url.trim_end_matches('/')),
            agent: http::agent(timeout),
        }
    }
}

impl Sink for Alertmanager {
    fn batch_max(&self) -> usize {
        64
    }

    fn send(&mut self, notices: &[AlertNotice]) -> Outcome {
        http::post_json(&self.agent, &self.url, &payload(notices).to_string(), &[])
    }
}
