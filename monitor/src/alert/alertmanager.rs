//! The Alertmanager sink (API v2, `POST /api/v2/alerts`): delivers what the spool holds, in
//! order, acknowledging each batch only once Alertmanager accepted it; retries with exponential
//! backoff and jitter while it is down.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{AlertNotice, Spool};

const BATCH: usize = 64;
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

fn rfc3339(ns: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The Alertmanager JSON for a batch of notices.
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

pub struct Delivery {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Delivery {
    /// Starts delivering from `spool` to the Alertmanager at `base_url` (http://host:port).
    pub fn start(base_url: String, spool: Arc<Mutex<Spool>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("apiwatch-alertmanager".into())
            .spawn(move || run(&base_url, &spool, &s))
            .ok();
        Self { stop, thread }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(base_url: &str, spool: &Mutex<Spool>, stop: &AtomicBool) {
    let url = format!("{}/api/v2/alerts", base_url.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut backoff = BACKOFF_MIN;
    let mut seed: u64 = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    while !stop.load(Ordering::Relaxed) {
        let jobs = spool.lock().map(|s| s.pending(BATCH)).unwrap_or_default();
        if jobs.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let notices: Vec<AlertNotice> = jobs
            .iter()
            .filter_map(|(_, p)| serde_json::from_slice(p).ok())
            .collect();
        let body = payload(&notices).to_string();
        let sent = agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.as_str());
        match sent {
            Ok(resp) if resp.status().is_success() => {
                if let Ok(mut s) = spool.lock() {
                    for (id, _) in &jobs {
                        if let Err(e) = s.ack(*id) {
                            log::error!("alert spool: {e}");
                        }
                    }
                }
                backoff = BACKOFF_MIN;
            }
            other => {
                let why = match other {
                    Ok(resp) => format!("HTTP {}", resp.status()),
                    Err(e) => e.to_string(),
                };
                log::warn!(
                    "Alertmanager at {url} did not take {} alert(s) ({why}); retrying in {backoff:?}",
                    jobs.len()
                );
                // Jitter: 75..125% of the backoff, so many agents do not retry in step.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let jitter = 0.75 + (seed % 1000) as f64 / 2000.0;
                let wait = backoff.mul_f64(jitter);
                let until = std::time::Instant::now() + wait;
                while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
