//! One delivery thread per sink: takes what the sink's spool holds, oldest first, within the
//! sink's rate limit, and acknowledges it only once the sink took it (or refused it for good).
//! Failures are retried with exponential backoff and jitter, or after the sink's Retry-After.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::metrics::{DELIVERED, FAILED, REJECTED};
use super::{AlertMetrics, AlertNotice, SinkHealth, Spool};
use crate::clock::{agent_now_ns, unix_now_ns};

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What became of one delivery attempt.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Delivered,
    /// Try again later: the sink is down, timed out, throttled us (429) or failed (5xx).
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// The sink refused the payload (a 4xx other than 408/429): retrying would not help.
    Rejected(String),
}

/// A destination for alert notices.
pub trait Sink: Send {
    /// Notices sent in one request at most.
    fn batch_max(&self) -> usize {
        1
    }
    fn send(&mut self, notices: &[AlertNotice]) -> Outcome;
}

/// A token bucket: `count` notifications per `per_secs`, bursts up to `count`.
struct RateLimit {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(count: u32, per_secs: u64) -> Self {
        Self {
            capacity: count as f64,
            per_sec: count as f64 / per_secs.max(1) as f64,
            tokens: count as f64,
            last: Instant::now(),
        }
    }

    /// Takes a token. None: go now; Some(wait): not before then.
    fn take(&mut self) -> Option<Duration> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec).min(self.capacity);
        self.last = now;
        // Reserve the token now; a deficit is the wait.
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.per_sec))
    }
}

pub struct DeliveryConfig {
    pub name: String,
    /// (count, per seconds).
    pub rate_limit: Option<(u32, u64)>,
}

pub struct Delivery {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Delivery {
    pub fn start(
        cfg: DeliveryConfig,
        sink: Box<dyn Sink>,
        spool: Arc<Mutex<Spool>>,
        health: Arc<SinkHealth>,
        metrics: AlertMetrics,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        // A sink without its thread would take alerts and never send them: fail instead.
        let thread = std::thread::Builder::new()
            .name(format!("apiwatch-alert-{}", cfg.name))
            .spawn(move || run(cfg, sink, &spool, &health, &metrics, &s))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
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

/// Sleeps `d` in short steps; false if asked to stop meanwhile.
fn pause(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25).min(until - Instant::now()));
    }
    !stop.load(Ordering::Relaxed)
}

fn run(
    cfg: DeliveryConfig,
    mut sink: Box<dyn Sink>,
    spool: &Mutex<Spool>,
    health: &SinkHealth,
    metrics: &AlertMetrics,
    stop: &AtomicBool,
) {
    let name = cfg.name.as_str();
    let mut limit = cfg.rate_limit.map(|(n, per)| RateLimit::new(n, per));
    let mut backoff = BACKOFF_MIN;
    let mut seed: u64 = (std::process::id() as u64 ^ unix_now_ns()) | 1;
    let mut ready_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let jobs = spool
            .lock()
            .map(|s| s.pending(sink.batch_max()))
            .unwrap_or_default();
        if jobs.is_empty() {
            pause(Duration::from_millis(100), stop);
            continue;
        }
        // A rate limit holds notifications back (they wait in the spool); it never drops them.
        if let Some(wait) = limit.as_mut().and_then(RateLimit::take) {
            metrics.rate_limited(name).inc();
            ready_at = ready_at.max(Instant::now() + wait);
        }
        if !pause(ready_at.saturating_duration_since(Instant::now()), stop) {
            break;
        }
        let notices: Vec<AlertNotice> = jobs
            .iter()
            .filter_map(|(_, p)| serde_json::from_slice(p).ok())
            .collect();
        let outcome = if notices.is_empty() {
            Outcome::Rejected("unreadable spool record".into())
        } else {
            sink.send(&notices)
        };
        let ack = |spool: &Mutex<Spool>| {
            if let Ok(mut s) = spool.lock() {
                for (id, _) in &jobs {
                    if let Err(e) = s.ack(*id) {
                        log::error!("alert spool of sink {name}: {e}");
                    }
                }
            }
        };
        match outcome {
            Outcome::Delivered => {
                ack(spool);
                metrics.notification(name, DELIVERED).inc_by(jobs.len() as u64);
                metrics.sink_up(name).set(1);
                health.succeeded();
                backoff = BACKOFF_MIN;
            }
            Outcome::Rejected(why) => {
                // Kept forever it would block every alert behind it; dropped, counted, logged.
                ack(spool);
                metrics.notification(name, REJECTED).inc_by(jobs.len() as u64);
                metrics.sink_up(name).set(0);
                health.failed(agent_now_ns());
                log::error!(
                    "sink {name} refused {} alert notification(s) ({why}); not retried",
                    jobs.len()
                );
            }
            Outcome::Retry { why, after } => {
                metrics.notification(name, FAILED).inc_by(jobs.len() as u64);
                metrics.sink_up(name).set(0);
                health.failed(agent_now_ns());
                // Jitter: 75..125% of the backoff, so many agents do not retry in step.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let jittered = backoff.mul_f64(0.75 + (seed % 1000) as f64 / 2000.0);
                let wait = after.map_or(jittered, |a| a.max(jittered));
                log::warn!(
                    "sink {name} did not take {} alert notification(s) ({why}); retrying in {wait:?}",
                    jobs.len()
                );
                ready_at = Instant::now() + wait;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
