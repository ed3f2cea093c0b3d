//! The alert stage's metrics. Label sets are bounded: one per configured sink (and outcome).
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::AlertNotice;

/// Handles shared by the engine and the delivery threads; registered on /metrics when there
/// is a registry, working but unexported otherwise.
#[derive(Clone)]
pub struct AlertMetrics {
    pub firing: IntGauge,
    raised: IntCounterVec,
    pub deduplicated: IntCounter,
    pub refused: IntCounter,
    notifications: IntCounterVec,
    spool_pending: IntGaugeVec,
    spool_overflow: IntCounterVec,
    spool_torn: IntCounterVec,
    spool_write_errors: IntCounterVec,
    rate_limited: IntCounterVec,
    sink_up: IntGaugeVec,
    /// The alerts firing now, as the engine last published them (GET /api/v1/alerts).
    firing_now: Arc<Mutex<Vec<AlertNotice>>>,
}

/// Outcomes of a delivery attempt, as the `outcome` label.
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";
pub const REJECTED: &str = "rejected";

impl Default for AlertMetrics {
    fn default() -> Self {
        Self::new(None)
    }
}

impl AlertMetrics {
    pub fn new(registry: Option<&Registry>) -> Self {
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: Option<&Registry>, m: T) -> T {
            if let Some(r) = r {
                r.register(Box::new(m.clone())).expect("unique metric name");
            }
            m
        }
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        Self {
            firing: reg(
                registry,
                IntGauge::new("apiwatch_alerts_firing", "Alerts firing now.").expect("valid metric"),
            ),
            raised: counter_vec(
                "apiwatch_alerts_raised_total",
                "Alerts raised (a burst of identical findings is one), by severity.",
                &["severity"],
            ),
            deduplicated: reg(
                registry,
                IntCounter::new(
                    "apiwatch_alerts_deduplicated_total",
                    "Findings folded into an alert already firing.",
                )
                .expect("valid metric"),
            ),
            refused: reg(
                registry,
                IntCounter::new(
                    "apiwatch_alerts_refused_total",
                    "Alerts not raised because 10,000 were already firing (the bound on active alerts).",
                )
                .expect("valid metric"),
            ),
            notifications: counter_vec(
                "apiwatch_alert_notifications_total",
                "Alert notifications per sink: delivered, failed (retried later) or rejected (the sink refused the payload; not retried).",
                &["sink", "outcome"],
            ),
            spool_pending: gauge_vec(
                "apiwatch_alert_spool_pending",
                "Alert notifications on disk waiting for their sink.",
                &["sink"],
            ),
            spool_overflow: counter_vec(
                "apiwatch_alert_spool_overflow_total",
                "Alert notifications refused because the sink's spool was full.",
                &["sink"],
            ),
            spool_torn: counter_vec(
                "apiwatch_alert_spool_torn_records_total",
                "Spool records found torn or corrupt at start (written during a crash) and skipped.",
                &["sink"],
            ),
            spool_write_errors: counter_vec(
                "apiwatch_alert_spool_write_errors_total",
                "Spool writes the disk refused (full, read-only): the alerts are held in memory, delivered, and written when it takes them again.",
                &["sink"],
            ),
            rate_limited: counter_vec(
                "apiwatch_alert_rate_limited_total",
                "Notifications held back by the sink's rate limit (sent later, not dropped).",
                &["sink"],
            ),
            sink_up: gauge_vec(
                "apiwatch_alert_sink_up",
                "1 if the sink's last delivery attempt succeeded, 0 if it failed.",
                &["sink"],
            ),
            firing_now: Arc::default(),
        }
    }

    /// The engine's view of what fires now (at most the 10,000 active alerts).
    pub fn publish_firing(&self, firing: Vec<AlertNotice>) {
        if let Ok(mut f) = self.firing_now.lock() {
            *f = firing;
        }
    }

    pub fn firing_now(&self) -> Vec<AlertNotice> {
        self.firing_now.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Makes every series of a sink exist from the start, at zero.
    pub fn add_sink(&self, sink: &str) {
        for outcome in [DELIVERED, FAILED, REJECTED] {
            self.notification(sink, outcome);
        }
        self.spool_pending(sink);
        self.spool_overflow(sink);
        self.spool_torn(sink);
        self.spool_write_errors(sink);
        self.rate_limited(sink);
        self.sink_up(sink).set(1);
    }

    pub fn raised(&self, severity: &str) -> IntCounter {
        self.raised.with_label_values(&[severity])
    }

    pub fn notification(&self, sink: &str, outcome: &str) -> IntCounter {
        self.notifications.with_label_values(&[sink, outcome])
    }

    pub fn spool_pending(&self, sink: &str) -> IntGauge {
        self.spool_pending.with_label_values(&[sink])
    }

    pub fn spool_overflow(&self, sink: &str) -> IntCounter {
        self.spool_overflow.with_label_values(&[sink])
    }

    pub fn spool_torn(&self, sink: &str) -> IntCounter {
        self.spool_torn.with_label_values(&[sink])
    }

    pub fn spool_write_errors(&self, sink: &str) -> IntCounter {
        self.spool_write_errors.with_label_values(&[sink])
    }

    pub fn rate_limited(&self, sink: &str) -> IntCounter {
        self.rate_limited.with_label_values(&[sink])
    }

    pub fn sink_up(&self, sink: &str) -> IntGauge {
        self.sink_up.with_label_values(&[sink])
    }
}
