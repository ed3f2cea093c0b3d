//! The configured sinks: each with its spool and delivery thread, the transport each kind
//! uses, `apiwatch test-alerts`, and the spools of sinks no longer configured.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{
    AlertMetrics, AlertNotice, Route, SinkHealth, SinkQueue, SinkSpec, Spool, SpoolError, alertmanager,
    delivery, file, fingerprint, hostname, pagerduty, slack, spec, spec::SinkTarget, webhook,
};
use crate::finding::{Lifecycle, Severity};

/// The configured sinks, each with its spool (state_dir/alerts/NAME.spool, opened first so
/// what a previous run did not deliver goes out now) and its delivery thread.
pub struct Sinks {
    pub queues: Vec<SinkQueue>,
    /// Dropping these stops the delivery threads.
    pub deliveries: Vec<delivery::Delivery>,
    /// Spools left by sinks no longer configured (a rename, a removal), with what they hold.
    pub orphaned: Vec<(String, usize)>,
}

impl Sinks {
    pub fn start(
        specs: &[SinkSpec],
        spool_max: usize,
        state_dir: &std::path::Path,
        metrics: &AlertMetrics,
    ) -> Result<Self, SpoolError> {
        let mut out = Sinks {
            queues: Vec::new(),
            deliveries: Vec::new(),
            orphaned: Vec::new(),
        };
        for spec in specs {
            let name = spec.name();
            let path = state_dir.join("alerts").join(format!("{name}.spool"));
            let spool = Spool::open(&path, spool_max)?;
            if !spool.is_empty() {
                log::info!(
                    "sink {name}: {} alert notification(s) from a previous run are still to be delivered",
                    spool.len()
                );
            }
            let spool = Arc::new(Mutex::new(spool));
            let health = Arc::new(SinkHealth::default());
            metrics.add_sink(&name);
            let (sink, default_rate) = driver(spec);
            let rate = spec.rate_limit.as_deref().or(default_rate);
            out.deliveries.push(delivery::Delivery::start(
                delivery::DeliveryConfig {
                    name: name.clone(),
                    rate_limit: rate.and_then(crate::clock::parse_rate),
                },
                sink,
                spool.clone(),
                health.clone(),
                metrics.clone(),
            )?);
            out.queues.push(SinkQueue {
                name,
                route: Route {
                    min_severity: spec.min_severity.as_deref().and_then(Severity::parse),
                    kinds: spec.kinds.clone(),
                    exclude_kinds: spec.exclude_kinds.clone(),
                },
                resend: spec
                    .resend
                    .unwrap_or(matches!(spec.target(), Some(SinkTarget::Alertmanager { .. }))),
                spool,
                health,
            });
        }
        out.orphaned = orphaned_spools(&state_dir.join("alerts"), specs, spool_max);
        for (name, n) in &out.orphaned {
            log::warn!(
                "the alert spool of sink {name} holds {n} undelivered notification(s), but no sink is named {name} any more; they go out if one is configured again"
            );
        }
        Ok(out)
    }
}

/// The transport of a sink, and its default rate limit.
fn driver(spec: &SinkSpec) -> (Box<dyn delivery::Sink>, Option<&'static str>) {
    let name = spec.name();
    let timeout = std::time::Duration::from_secs(spec.timeout_secs.unwrap_or(10));
    // Validated with the configuration; a value that no longer resolves sends nothing (each
    // attempt fails and ApiwatchAlertSinkFailing tells the other sinks).
    let secret = |v: &str| {
        spec::resolve_secret(v).unwrap_or_else(|e| {
            log::error!("sink {name}: {e}");
            String::new()
        })
    };
    let Some(target) = spec.target() else {
        // Refused by the configuration check; only a spec built in code gets here.
        log::error!(
            "sink {name}: unknown type {:?}; its alerts go to standard output",
            spec.kind
        );
        return (Box::new(file::JsonLinesFile::new("-")), None);
    };
    match target {
        SinkTarget::Alertmanager { url } => (
            Box::new(alertmanager::Alertmanager::new(&secret(url), timeout)),
            None,
        ),
        // PagerDuty: 120 events a minute per integration; Slack: 1 message a second.
        SinkTarget::PagerDuty { url, routing_key } => (
            Box::new(pagerduty::PagerDuty::new(
                &url.map_or(pagerduty::DEFAULT_URL.to_string(), secret),
                &secret(routing_key),
                timeout,
            )),
            Some("120/min"),
        ),
        SinkTarget::Slack { webhook_url } => (
            Box::new(slack::Slack::new(&secret(webhook_url), timeout)),
            Some("1/s"),
        ),
        SinkTarget::Webhook { url, secret: key } => (
            Box::new(webhook::Webhook::new(
                &secret(url),
                key.map(secret).as_deref(),
                timeout,
            )),
            None,
        ),
        SinkTarget::File { path } => (Box::new(file::JsonLinesFile::new(path)), None),
    }
}

/// `apiwatch test-alerts`: a test alert, firing then resolved, straight to every configured
/// sink (routes and spools bypassed), with what each answered. True if every sink took both.
pub fn send_test_alerts(specs: &[SinkSpec], out: &mut dyn std::io::Write) -> bool {
    let now = crate::clock::unix_now_ns();
    let host = hostname();
    let labels = BTreeMap::from([
        ("alertname".to_string(), "ApiwatchTestAlert".to_string()),
        ("severity".to_string(), "info".to_string()),
        ("service".to_string(), "apiwatch".to_string()),
        ("host".to_string(), host.clone()),
    ]);
    let notice = AlertNotice {
        fingerprint: fingerprint(&labels),
        status: Lifecycle::Firing,
        labels,
        annotations: BTreeMap::from([
            (
                "summary".to_string(),
                format!("apiwatch test alert from {host}: the sink works"),
            ),
            (
                "description".to_string(),
                "Sent by `apiwatch test-alerts`; resolved right after. Nothing is wrong.".to_string(),
            ),
        ]),
        starts_at: now,
        ends_at: None,
    };
    let mut all_ok = true;
    for spec in specs {
        let (mut sink, _) = driver(spec);
        let firing = sink.send(std::slice::from_ref(&notice));
        let mut resolved_notice = notice.clone();
        resolved_notice.status = Lifecycle::Resolved;
        resolved_notice.ends_at = Some(crate::clock::unix_now_ns());
        let resolved = sink.send(std::slice::from_ref(&resolved_notice));
        let word = |o: &delivery::Outcome| match o {
            delivery::Outcome::Delivered => "delivered".to_string(),
            delivery::Outcome::Retry { why, .. } => format!("failed ({why}; the agent would retry)"),
            delivery::Outcome::Rejected(why) => format!("rejected ({why}; the agent would not retry)"),
        };
        let ok = firing == delivery::Outcome::Delivered && resolved == delivery::Outcome::Delivered;
        all_ok &= ok;
        let _ = writeln!(
            out,
            "{} ({}): firing {}, resolved {}",
            spec.name(),
            spec.kind,
            word(&firing),
            word(&resolved)
        );
    }
    all_ok
}

/// Spools in `dir` that no configured sink owns and that still hold notifications.
fn orphaned_spools(dir: &std::path::Path, specs: &[SinkSpec], spool_max: usize) -> Vec<(String, usize)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".spool"))
        else {
            continue;
        };
        if specs.iter().any(|s| s.name() == name) {
            continue;
        }
        if let Ok(spool) = Spool::open(&path, spool_max) {
            if !spool.is_empty() {
                out.push((name.to_string(), spool.len()));
            }
        }
    }
    out.sort();
    out
}
