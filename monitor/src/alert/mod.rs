//! Alerts: findings become alerts with a fingerprint (a stable hash of their identifying labels),
//! deduplicated while firing, resolved when the finding stops (or its anomaly resolves), written
//! to the durable spool before they count as accepted, and delivered by the sinks.
pub mod alertmanager;
pub mod spool;

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::boundary::Finding;
pub use spool::{Spool, SpoolError};

/// One alert notification as the spool keeps it and the sinks send it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertNotice {
    pub fingerprint: String,
    /// "firing" or "resolved".
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Unix nanoseconds.
    pub starts_at: u64,
    pub ends_at: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct AlertOptions {
    /// A boundary finding that does not recur for this long resolves its alert.
    pub resolve_after_ns: u64,
    /// While firing, the alert is sent again this often (Alertmanager expects re-sends).
    pub resend_ns: u64,
}

impl Default for AlertOptions {
    fn default() -> Self {
        Self {
            resolve_after_ns: 300_000_000_000,
            resend_ns: 60_000_000_000,
        }
    }
}

struct Active {
    notice: AlertNotice,
    last_seen_ns: u64,
    last_sent_ns: u64,
    /// Anomaly alerts resolve with their finding, not by silence.
    has_lifecycle: bool,
}

/// Findings in, notices into the spool. Bounded: at most MAX_ACTIVE alerts tracked.
pub struct AlertEngine {
    opts: AlertOptions,
    active: HashMap<String, Active>,
    spool: Arc<Mutex<Spool>>,
    pub deduplicated: u64,
    pub refused: u64,
}

const MAX_ACTIVE: usize = 10_000;

impl AlertEngine {
    pub fn new(opts: AlertOptions, spool: Arc<Mutex<Spool>>) -> Self {
        Self {
            opts,
            active: HashMap::new(),
            spool,
            deduplicated: 0,
            refused: 0,
        }
    }

    pub fn on_finding(&mut self, f: &Finding) {
        let labels = labels_of(f);
        let fp = fingerprint(&labels);
        let now = f.ts;
        if f.state == Some("resolved") {
            if let Some(mut a) = self.active.remove(&fp) {
                a.notice.status = "resolved".into();
                a.notice.ends_at = Some(now);
                self.enqueue(&a.notice);
            }
            return;
        }
        if let Some(a) = self.active.get_mut(&fp) {
            a.last_seen_ns = now;
            self.deduplicated += 1;
            return;
        }
        if self.active.len() >= MAX_ACTIVE {
            self.refused += 1;
            return;
        }
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "summary".into(),
            format!("{} on {} {}", f.kind, f.service, f.route),
        );
        annotations.insert("description".into(), f.evidence.clone());
        let notice = AlertNotice {
            fingerprint: fp.clone(),
            status: "firing".into(),
            labels,
            annotations,
            starts_at: now,
            ends_at: None,
        };
        self.enqueue(&notice);
        self.active.insert(
            fp,
            Active {
                notice,
                last_seen_ns: now,
                last_sent_ns: now,
                has_lifecycle: f.state.is_some(),
            },
        );
    }

    /// Resolves silent boundary alerts and re-sends firing ones.
    pub fn tick(&mut self, now_ns: u64) {
        let mut resolved = Vec::new();
        let mut resend = Vec::new();
        for (fp, a) in self.active.iter_mut() {
            if !a.has_lifecycle && now_ns.saturating_sub(a.last_seen_ns) >= self.opts.resolve_after_ns {
                resolved.push(fp.clone());
            } else if now_ns.saturating_sub(a.last_sent_ns) >= self.opts.resend_ns {
                a.last_sent_ns = now_ns;
                resend.push(a.notice.clone());
            }
        }
        for fp in resolved {
            if let Some(mut a) = self.active.remove(&fp) {
                a.notice.status = "resolved".into();
                a.notice.ends_at = Some(now_ns);
                self.enqueue(&a.notice);
            }
        }
        for n in resend {
            self.enqueue(&n);
        }
    }

    pub fn active(&self) -> usize {
        self.active.len()
    }

    fn enqueue(&mut self, n: &AlertNotice) {
        let Ok(bytes) = serde_json::to_vec(n) else { return };
        match self.spool.lock().map(|mut s| s.push(&bytes)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::error!("alert {} not accepted: {e}", n.fingerprint),
            Err(_) => log::error!("alert spool lock poisoned"),
        }
    }
}

/// The identifying labels: what the alert is about, not when or how often.
fn labels_of(f: &Finding) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("alertname".into(), f.kind.to_string());
    l.insert("severity".into(), f.severity.as_str().to_string());
    l.insert("rule".into(), f.rule.clone());
    l.insert("service".into(), f.service.clone());
    l.insert("route".into(), f.route.clone());
    if let Some(zone) = f.source_zones.first() {
        l.insert("source_zone".into(), zone.clone());
    }
    l
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boundary::Severity;

    fn finding(ts: u64, state: Option<&'static str>) -> Finding {
        Finding {
            record: "finding",
            ts,
            kind: "source_outside_boundary",
            rule: "shop /api".into(),
            severity: Severity::Critical,
            service: "nginx:80".into(),
            route: "/api".into(),
            method: "GET".into(),
            source: Some("10.0.0.9".into()),
            source_zones: vec![],
            identity: Some("abc".into()),
            pid: 1,
            comm: "nginx".into(),
            evidence: "source 10.0.0.9 is not in local".into(),
            state,
        }
    }

    #[test]
    fn burst_is_one_alert_that_resolves_and_everything_is_spooled_first() {
        let dir = std::env::temp_dir().join(format!("aw-alerts-{}", std::process::id()));
        let spool = Arc::new(Mutex::new(Spool::open(&dir.join("spool"), 100).unwrap()));
        let mut e = AlertEngine::new(
            AlertOptions {
                resolve_after_ns: 10,
                resend_ns: 1_000,
            },
            spool.clone(),
        );
        for i in 0..50 {
            let mut f = finding(100 + i, None);
            f.source = Some(format!("10.0.0.{i}")); // the source is evidence, not identity
            e.on_finding(&f);
        }
        assert_eq!(e.active(), 1);
        assert_eq!(e.deduplicated, 49);
        e.tick(200);
        let notices: Vec<AlertNotice> = spool
            .lock()
            .unwrap()
            .pending(10)
            .iter()
            .map(|(_, p)| serde_json::from_slice(p).unwrap())
            .collect();
        assert_eq!(notices.len(), 2);
        assert_eq!(notices[0].status, "firing");
        assert_eq!(notices[1].status, "resolved");
        assert_eq!(notices[0].fingerprint, notices[1].fingerprint);
        assert_eq!(notices[0].labels["alertname"], "source_outside_boundary");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn anomalies_resolve_with_their_finding() {
        let dir = std::env::temp_dir().join(format!("aw-alerts2-{}", std::process::id()));
        let spool = Arc::new(Mutex::new(Spool::open(&dir.join("spool"), 100).unwrap()));
        let mut e = AlertEngine::new(
            AlertOptions {
                resolve_after_ns: 10,
                resend_ns: 1_000_000,
            },
            spool.clone(),
        );
        e.on_finding(&finding(100, Some("firing")));
        e.tick(10_000);
        assert_eq!(e.active(), 1, "silence does not resolve an anomaly");
        e.on_finding(&finding(20_000, Some("resolved")));
        assert_eq!(e.active(), 0);
        assert_eq!(spool.lock().unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }
}
