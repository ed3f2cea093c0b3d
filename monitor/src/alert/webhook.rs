//! The generic webhook sink: a JSON document of alerts (docs/alert-webhook.schema.json), signed
//! when a secret is configured: `X-Apiwatch-Timestamp: <unix seconds>` and
//! `X-Apiwatch-Signature-256: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`; the
//! timestamp inside the MAC lets receivers refuse replays.
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::delivery::{Outcome, Sink};
use super::{AlertNotice, http};

pub const TIMESTAMP_HEADER: &str = "X-Apiwatch-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Apiwatch-Signature-256";

pub fn document(notices: &[AlertNotice]) -> serde_json::Value {
    serde_json::json!({
        "version": "1",
        "sender": "apiwatch",
        "alerts": notices.iter().map(AlertNotice::to_json).collect::<Vec<_>>(),
    })
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

pub struct Webhook {
    url: String,
    secret: Option<Vec<u8>>,
    agent: ureq::Agent,
}

impl Webhook {
    pub fn new(url: &str, secret: Option<&str>, timeout: Duration) -> Self {
        Self {
            url: url.to_string(),
            secret: secret.map(|s| s.as_bytes().to_vec()),
            agent: http::agent(timeout),
        }
    }
}

impl Sink for Webhook {
    fn batch_max(&self) -> usize {
        64
    }

    fn send(&mut self, notices: &[AlertNotice]) -> Outcome {
        let body = document(notices).to_string();
        let mut headers = Vec::new();
        if let Some(secret) = &self.secret {
            let ts = crate::clock::unix_now_ns() / 1_000_000_000;
            headers.push((TIMESTAMP_HEADER, ts.to_string()));
            headers.push((SIGNATURE_HEADER, signature(secret, ts, body.as_bytes())));
        }
        http::post_json(&self.agent, &self.url, &body, &headers)
    }
}
