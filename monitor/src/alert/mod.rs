//! Alerts: findings become alerts with a fingerprint (a stable hash of their identifying labels),
//! deduplicated while firing, resolved when the finding stops (or its anomaly resolves), routed
//! to the sinks that want them, written to each sink's durable spool before they count as
//! accepted, and delivered from there by one thread per sink (`delivery`).
//!
//! apiwatch also alerts about itself: events dropped, a sink that keeps failing, a spool that
//! overflowed (see `SelfAlert`).
pub mod alertmanager;
mod bench;
pub mod delivery;
pub mod file;
pub mod http;
pub mod metrics;
pub mod pagerduty;
pub mod sinks;
pub mod slack;
pub mod spec;
pub mod spool;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::finding::{Finding, Lifecycle, Severity};
pub use bench::bench;
pub use metrics::AlertMetrics;
pub use sinks::{Sinks, send_test_alerts};
pub use spec::SinkSpec;
pub use spool::{Spool, SpoolError};

/// One alert notification as the spools keep it and the sinks send it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertNotice {
    pub fingerprint: String,
    pub status: Lifecycle,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Unix nanoseconds.
    pub starts_at: u64,
    pub ends_at: Option<u64>,
}

impl AlertNotice {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn annotation(&self, name: &str) -> &str {
        self.annotations.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn is_resolved(&self) -> bool {
        self.status == Lifecycle::Resolved
    }

    /// The alert as the webhook and file sinks write it and /api/v1/alerts serves it
    /// (docs/schemas/alert-webhook.schema.json).
    pub fn to_json(&self) -> serde_json::Value {
        let mut a = serde_json::json!({
            "fingerprint": self.fingerprint,
            "status": self.status,
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": alertmanager::rfc3339(self.starts_at),
        });
        if let Some(end) = self.ends_at {
            a["endsAt"] = alertmanager::rfc3339(end).into();
        }
        a
    }
}

#[derive(Clone, Debug)]
pub struct AlertOptions {
    /// A boundary finding that does not recur for this long resolves its alert.
    pub resolve_after_ns: u64,
    /// While firing, the alert is sent again this often to sinks that want re-sends.
    pub resend_ns: u64,
    /// A sink failing for this long raises ApiwatchAlertSinkFailing.
    pub sink_failing_after_ns: u64,
    /// Template of the "dashboard" annotation (see DEFAULT_CONFIG).
    pub dashboard_url: Option<String>,
    /// Where the firing alerts are kept across restarts (so they still resolve afterwards).
    pub state_file: Option<std::path::PathBuf>,
}

impl Default for AlertOptions {
    fn default() -> Self {
        Self {
            resolve_after_ns: 300_000_000_000,
            resend_ns: 60_000_000_000,
            sink_failing_after_ns: 120_000_000_000,
            dashboard_url: None,
            state_file: None,
        }
    }
}

/// Which alerts a sink takes.
#[derive(Clone, Debug, Default)]
pub struct Route {
    pub min_severity: Option<Severity>,
    /// Alert names taken; empty: all.
    pub kinds: Vec<String>,
    pub exclude_kinds: Vec<String>,
}

impl Route {
    pub fn accepts(&self, n: &AlertNotice) -> bool {
        let name = n.label("alertname");
        let severity_ok = match (self.min_severity, Severity::parse(n.label("severity"))) {
            (Some(min), Some(sev)) => sev >= min,
            _ => true,
        };
        severity_ok
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == name))
            && !self.exclude_kinds.iter().any(|k| k == name)
    }
}

/// How a sink's deliveries go, shared by its delivery thread (writer) and the engine (reader,
/// for the ApiwatchAlertSinkFailing self-alert).
#[derive(Debug, Default)]
pub struct SinkHealth {
    /// Attempts that failed in a row; 0 once one succeeds.
    pub consecutive_failures: AtomicU64,
    /// Unix ns of the first failure of the current run of failures.
    pub failing_since_ns: AtomicU64,
}

impl SinkHealth {
    pub fn failed(&self, now_ns: u64) {
        if self.consecutive_failures.fetch_add(1, Ordering::Relaxed) == 0 {
            self.failing_since_ns.store(now_ns, Ordering::Relaxed);
        }
    }

    pub fn succeeded(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Since when the sink has been failing, if it is.
    pub fn failing_since(&self) -> Option<u64> {
        (self.consecutive_failures.load(Ordering::Relaxed) > 0)
            .then(|| self.failing_since_ns.load(Ordering::Relaxed))
    }
}

/// The engine's side of one sink: where its alerts go and what it wants.
#[derive(Clone)]
pub struct SinkQueue {
    pub name: String,
    pub route: Route,
    /// Firing alerts are sent again every resend_ns (Alertmanager expires alerts otherwise).
    pub resend: bool,
    pub spool: Arc<Mutex<Spool>>,
    pub health: Arc<SinkHealth>,
}

/// The alerts apiwatch raises about itself; their names start with "Apiwatch" so routes can
/// pick them (`kinds`) apart from findings.
pub mod self_alert {
    pub const EVENTS_DROPPED: &str = "ApiwatchEventsDropped";
    pub const SINK_FAILING: &str = "ApiwatchAlertSinkFailing";
    pub const SPOOL_OVERFLOW: &str = "ApiwatchAlertSpoolOverflow";
    pub const AUDIT_WRITE_FAILING: &str = "ApiwatchAuditWriteFailing";
}

/// Every alert name a route can name: the kinds of finding the running agent raises
/// (`FindingKind::LIVE`) and the self-alerts.
pub fn alert_names() -> impl Iterator<Item = &'static str> {
    crate::finding::FindingKind::LIVE
        .into_iter()
        .map(crate::finding::FindingKind::as_str)
        .chain([
            self_alert::EVENTS_DROPPED,
            self_alert::SINK_FAILING,
            self_alert::SPOOL_OVERFLOW,
            self_alert::AUDIT_WRITE_FAILING,
        ])
}

#[derive(Serialize, Deserialize)]
struct Active {
    notice: AlertNotice,
    last_seen_ns: u64,
    last_sent_ns: u64,
    /// Anomaly alerts and failing sinks resolve explicitly, not by silence.
    has_lifecycle: bool,
    /// Findings folded into this alert, the first included.
    #[serde(default)]
    occurrences: u64,
}

impl Active {
    /// The notice as sent now: how often it happened and when last, for the on-call engineer.
    fn current(&self) -> AlertNotice {
        let mut n = self.notice.clone();
        n.annotations
            .insert("occurrences".into(), self.occurrences.max(1).to_string());
        n.annotations.insert(
            "last_seen".into(),
            crate::clock::rfc3339_micros(self.last_seen_ns),
        );
        n
    }
}

/// Findings in, notices into the sinks' spools. Bounded: at most MAX_ACTIVE alerts tracked.
pub struct AlertEngine {
    opts: AlertOptions,
    active: HashMap<String, Active>,
    sinks: Vec<SinkQueue>,
    metrics: AlertMetrics,
    host: String,
    dropped_seen: Option<u64>,
    /// Sinks whose ApiwatchAlertSinkFailing alert is firing, with its fingerprint.
    failing: HashMap<String, String>,
    /// The ApiwatchAuditWriteFailing alert's fingerprint while it fires.
    audit_failing: Option<String>,
    /// The active set changed since it was last saved.
    dirty: bool,
    /// ... since it was last published for /api/v1/alerts.
    unpublished: bool,
    saved_ns: u64,
    /// Saves of the firing set (firing.json) that failed, and whether they fail now.
    pub save_health: crate::state::SaveHealth,
    pub deduplicated: u64,
    pub refused: u64,
}

const MAX_ACTIVE: usize = 10_000;

impl AlertEngine {
    pub fn new(opts: AlertOptions, sinks: Vec<SinkQueue>, metrics: AlertMetrics) -> Self {
        for s in &sinks {
            if let Ok(spool) = s.spool.lock() {
                metrics.spool_torn(&s.name).inc_by(spool.torn_records);
            }
        }
        let mut e = Self {
            opts,
            active: HashMap::new(),
            sinks,
            metrics,
            host: hostname(),
            dropped_seen: None,
            failing: HashMap::new(),
            audit_failing: None,
            dirty: false,
            unpublished: true,
            saved_ns: 0,
            save_health: Default::default(),
            deduplicated: 0,
            refused: 0,
        };
        e.restore();
        e
    }

    /// Alerts firing when the agent last stopped: they resolve (or go on) as if it had not.
    fn restore(&mut self) {
        let Some(path) = &self.opts.state_file else { return };
        let Ok(bytes) = std::fs::read(path) else { return };
        let saved: Vec<Active> = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                let aside = crate::state::set_aside(path);
                log::warn!(
                    "ignoring {} ({e}; kept as {}): firing alerts from the last run are forgotten (those undelivered are still in the spools)",
                    path.display(),
                    aside.map_or("nothing".into(), |p| p.display().to_string())
                );
                return;
            }
        };
        for a in saved.into_iter().take(MAX_ACTIVE) {
            let fp = a.notice.fingerprint.clone();
            if a.notice.label("alertname") == self_alert::SINK_FAILING {
                let sink = a.notice.label("sink").to_string();
                // A sink no longer configured cannot recover: resolved by check_sinks at once.
                self.failing.insert(sink, fp.clone());
            }
            self.active.insert(fp, a);
        }
        if !self.active.is_empty() {
            log::info!("{} alert(s) still firing from the last run", self.active.len());
        }
    }

    /// Writes the firing alerts atomically and durably (crate::state).
    pub fn save(&mut self) -> std::io::Result<()> {
        let Some(path) = &self.opts.state_file else {
            return Ok(());
        };
        let active: Vec<&Active> = self.active.values().collect();
        crate::state::write_atomic(path, &serde_json::to_vec(&active).map_err(std::io::Error::other)?)?;
        self.dirty = false;
        Ok(())
    }

    /// `save`, its failure counted and logged once per outage (`save_health`).
    pub fn save_counted(&mut self) {
        let saved = self.save();
        self.save_health.record("the firing alerts (firing.json)", saved);
    }

    pub fn on_finding(&mut self, f: &Finding) {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".into(), f.kind.to_string());
        labels.insert("severity".into(), f.severity.as_str().to_string());
        labels.insert("rule".into(), f.rule.clone());
        labels.insert("service".into(), f.service.clone());
        labels.insert("route".into(), f.route.clone());
        if let Some(zone) = f.source_zones.first() {
            labels.insert("source_zone".into(), zone.clone());
        }
        if f.state == Some(Lifecycle::Resolved) {
            let fp = self.fingerprint_of(labels);
            self.resolve(&fp, f.ts);
            return;
        }
        self.fire(labels, || annotations_of(f), f.ts, f.state.is_some());
    }

    /// Resolves silent alerts, re-sends firing ones, raises and resolves self-alerts.
    /// `dropped_total`: events lost so far (kernel and pipeline), for ApiwatchEventsDropped.
    pub fn tick(&mut self, now_ns: u64, dropped_total: u64) {
        self.check_drops(now_ns, dropped_total);
        self.check_sinks(now_ns);
        let mut resolved = Vec::new();
        let mut resend = Vec::new();
        for (fp, a) in self.active.iter_mut() {
            if !a.has_lifecycle && now_ns.saturating_sub(a.last_seen_ns) >= self.opts.resolve_after_ns {
                resolved.push(fp.clone());
            } else if now_ns.saturating_sub(a.last_sent_ns) >= self.opts.resend_ns {
                a.last_sent_ns = now_ns;
                resend.push(a.current());
            }
        }
        for fp in resolved {
            self.resolve(&fp, now_ns);
        }
        for n in resend {
            self.enqueue(&n, true, now_ns);
        }
        self.metrics.firing.set(self.active.len() as i64);
        if self.unpublished {
            self.unpublished = false;
            let mut firing: Vec<AlertNotice> = self.active.values().map(Active::current).collect();
            firing.sort_by(|a, b| (a.starts_at, &a.fingerprint).cmp(&(b.starts_at, &b.fingerprint)));
            self.metrics.publish_firing(firing);
        }
        if self.dirty && now_ns.saturating_sub(self.saved_ns) >= 5_000_000_000 {
            self.saved_ns = now_ns;
            self.save_counted();
        }
        for s in &self.sinks {
            if let Ok(spool) = s.spool.lock() {
                self.metrics.spool_pending(&s.name).set(spool.len() as i64);
                let errors = self.metrics.spool_write_errors(&s.name);
                errors.inc_by(spool.write_errors.saturating_sub(errors.get()));
            }
        }
    }

    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// Makes every alert raised since the last call durable (one fsync per sink that got any)
    /// and hands it to delivery. The pipeline calls it after each batch of events and tick.
    pub fn flush(&mut self) {
        for s in &self.sinks {
            // A refusal is counted and logged by the spool itself, once per outage, and what it
            // holds is written again at the next flush.
            let _ = s.spool.lock().map(|mut spool| spool.sync());
        }
    }

    fn fingerprint_of(&self, mut labels: BTreeMap<String, String>) -> String {
        labels.insert("host".into(), self.host.clone());
        fingerprint(&labels)
    }

    /// Raises the alert, or counts a repeat of one firing (`annotations` is only built for a
    /// new alert: repeats are the hot path when every request breaks the same rule).
    fn fire(
        &mut self,
        mut labels: BTreeMap<String, String>,
        annotations: impl FnOnce() -> BTreeMap<String, String>,
        now: u64,
        has_lifecycle: bool,
    ) -> String {
        labels.insert("host".into(), self.host.clone());
        let fp = fingerprint(&labels);
        if let Some(a) = self.active.get_mut(&fp) {
            a.last_seen_ns = now;
            a.occurrences += 1;
            self.deduplicated += 1;
            self.metrics.deduplicated.inc();
            return fp;
        }
        if self.active.len() >= MAX_ACTIVE {
            self.refused += 1;
            self.metrics.refused.inc();
            return fp;
        }
        let mut annotations = annotations();
        if let Some(template) = &self.opts.dashboard_url {
            annotations.insert("dashboard".into(), dashboard_link(template, &labels));
        }
        let notice = AlertNotice {
            fingerprint: fp.clone(),
            status: Lifecycle::Firing,
            labels,
            annotations,
            starts_at: now,
            ends_at: None,
        };
        self.metrics.raised(notice.label("severity")).inc();
        self.dirty = true;
        self.unpublished = true;
        self.enqueue(&notice, false, now);
        self.active.insert(
            fp.clone(),
            Active {
                notice,
                last_seen_ns: now,
                last_sent_ns: now,
                occurrences: 1,
                has_lifecycle,
            },
        );
        fp
    }

    fn resolve(&mut self, fp: &str, now: u64) {
        if let Some(a) = self.active.remove(fp) {
            self.dirty = true;
            self.unpublished = true;
            let mut n = a.current();
            n.status = Lifecycle::Resolved;
            n.ends_at = Some(now);
            self.enqueue(&n, false, now);
        }
    }

    /// Into the spool of every sink whose route takes it. A full spool refuses it (counted) and
    /// raises ApiwatchAlertSpoolOverflow, which self-alerts may still write (a small reserve).
    fn enqueue(&mut self, n: &AlertNotice, resend: bool, now: u64) {
        let bytes = match serde_json::to_vec(n) {
            Ok(b) => b,
            Err(e) => {
                log::error!("alert {} cannot be serialized and is lost: {e}", n.fingerprint);
                return;
            }
        };
        let name = n.label("alertname");
        let is_self = name.starts_with("Apiwatch");
        let mut overflowed = Vec::new();
        for s in &self.sinks {
            if (resend && !s.resend) || !s.route.accepts(n) {
                continue;
            }
            // Telling a failing sink that it fails helps nobody: the others are told.
            if name == self_alert::SINK_FAILING && n.label("sink") == s.name {
                continue;
            }
            let pushed = s
                .spool
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(&bytes, is_self);
            match pushed {
                Ok(_) => {}
                Err(SpoolError::Full(pending)) => {
                    self.metrics.spool_overflow(&s.name).inc();
                    log::error!(
                        "alert {} ({name}) not accepted by sink {}: its spool is full ({pending} pending)",
                        n.fingerprint,
                        s.name
                    );
                    if !is_self {
                        overflowed.push(s.name.clone());
                    }
                }
                Err(e) => log::error!("alert {} not accepted by sink {}: {e}", n.fingerprint, s.name),
            }
        }
        for sink in overflowed {
            self.raise_self(
                self_alert::SPOOL_OVERFLOW,
                "high",
                Some(&sink),
                format!("the alert spool of sink {sink} is full: new alerts for it are refused"),
                format!(
                    "Sink {sink} has not taken its alerts and its spool reached alerts.spool_max; alerts are being lost (apiwatch_alert_spool_overflow_total)."
                ),
                now,
                false,
            );
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "each argument is one field of the self-alert it raises"
    )]
    fn raise_self(
        &mut self,
        name: &str,
        severity: &str,
        sink: Option<&str>,
        summary: String,
        description: String,
        now: u64,
        has_lifecycle: bool,
    ) -> String {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".into(), name.to_string());
        labels.insert("severity".into(), severity.to_string());
        labels.insert("service".into(), "apiwatch".to_string());
        if let Some(s) = sink {
            labels.insert("sink".into(), s.to_string());
        }
        let annotations =
            || BTreeMap::from([("summary".into(), summary), ("description".into(), description)]);
        self.fire(labels, annotations, now, has_lifecycle)
    }

    /// ApiwatchEventsDropped while the count of lost events grows; resolves after
    /// resolve_after of no loss.
    fn check_drops(&mut self, now: u64, total: u64) {
        let before = self.dropped_seen.replace(total);
        let Some(before) = before else { return };
        if total > before {
            self.raise_self(
                self_alert::EVENTS_DROPPED,
                "warning",
                None,
                format!("apiwatch dropped {} events on {}", total - before, self.host),
                format!(
                    "{} capture events were lost since the last check ({total} in all): traffic is not fully observed. See apiwatch_events_dropped_total by reason.",
                    total - before
                ),
                now,
                false,
            );
        }
    }

    /// ApiwatchAuditWriteFailing while the audit trail cannot be written (`failing_since`: the
    /// first failed write); resolved by the first write that succeeds.
    pub fn check_audit(&mut self, now: u64, failing_since: Option<u64>) {
        match (failing_since, self.audit_failing.clone()) {
            (Some(since), None) => {
                let secs = now.saturating_sub(since) / 1_000_000_000;
                let fp = self.raise_self(
                    self_alert::AUDIT_WRITE_FAILING,
                    "critical",
                    None,
                    format!("the audit trail on {} cannot be written", self.host),
                    format!(
                        "Audit records have not reached the disk for {secs} s (a full or read-only file system?); they are held in memory up to audit.max_pending and retried every second, beyond that they are dropped and the trail records the gap. See apiwatch_audit_write_errors_total and the agent's log."
                    ),
                    now,
                    true,
                );
                self.audit_failing = Some(fp);
            }
            (None, Some(fp)) => {
                self.audit_failing = None;
                self.resolve(&fp, now);
            }
            _ => {}
        }
    }

    /// ApiwatchAlertSinkFailing for a sink failing longer than sink_failing_after; resolved
    /// when it delivers again.
    fn check_sinks(&mut self, now: u64) {
        let states: Vec<(String, Option<u64>)> = self
            .sinks
            .iter()
            .map(|s| (s.name.clone(), s.health.failing_since()))
            .collect();
        let gone: Vec<String> = self
            .failing
            .keys()
            .filter(|s| !self.sinks.iter().any(|q| &q.name == *s))
            .cloned()
            .collect();
        for sink in gone {
            if let Some(fp) = self.failing.remove(&sink) {
                self.resolve(&fp, now);
            }
        }
        for (sink, since) in states {
            match (since, self.failing.get(&sink).cloned()) {
                (Some(since), None) if now.saturating_sub(since) >= self.opts.sink_failing_after_ns => {
                    let secs = now.saturating_sub(since) / 1_000_000_000;
                    let fp = self.raise_self(
                        self_alert::SINK_FAILING,
                        "warning",
                        Some(&sink),
                        format!("alert sink {sink} has been failing for {secs} s"),
                        format!(
                            "Deliveries to sink {sink} have failed for {secs} s; its alerts wait in its spool and are retried with backoff. See apiwatch_alert_notifications_total{{sink=\"{sink}\"}} and the agent's log."
                        ),
                        now,
                        true,
                    );
                    self.failing.insert(sink, fp);
                }
                (None, Some(fp)) => {
                    self.failing.remove(&sink);
                    self.resolve(&fp, now);
                }
                _ => {}
            }
        }
    }
}

/// What an on-call engineer reads: the summary, the redacted evidence, who and from where.
fn annotations_of(f: &Finding) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "summary".into(),
        format!("{} on {} {} {}", f.kind, f.service, f.method, f.route),
    );
    annotations.insert("description".into(), f.evidence.clone());
    annotations.insert("method".into(), f.method.clone());
    annotations.insert("process".into(), format!("{} (pid {})", f.comm, f.pid));
    if let Some(s) = &f.source {
        annotations.insert("source".into(), s.clone());
    }
    if !f.source_zones.is_empty() {
        annotations.insert("source_zones".into(), f.source_zones.join(","));
    }
    if let Some(id) = &f.identity {
        annotations.insert("identity".into(), id.clone());
    }
    annotations
}

/// 16 hex digits of a SipHash of the sorted labels.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h = siphasher::sip::SipHasher13::new();
    for (k, v) in labels {
        h.write(k.as_bytes());
        h.write_u8(0);
        h.write(v.as_bytes());
        h.write_u8(0);
    }
    format!("{:016x}", h.finish())
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The dashboard an alert belongs on: anomalies, the agent's own health, or trust boundaries.
fn dashboard_for(alertname: &str) -> &'static str {
    if alertname.starts_with("Apiwatch") {
        "apiwatch-agent-health"
    } else if alertname.ends_with("_anomaly") {
        "apiwatch-anomalies"
    } else {
        "apiwatch-trust-boundaries"
    }
}

fn dashboard_link(template: &str, labels: &BTreeMap<String, String>) -> String {
    let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
    template
        .replace("{dashboard}", dashboard_for(get("alertname")))
        .replace("{service}", &url_encode(get("service")))
        .replace("{route}", &url_encode(get("route")))
        .replace("{host}", &url_encode(get("host")))
        .replace("{alertname}", &url_encode(get("alertname")))
}

/// Percent-encoding of everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `s` cut to at most `max` bytes on a character boundary, with "…" when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests;
