//! The agent's configuration: YAML, every field optional, defaults embedded.
//!
//! Errors name the file, line, column and field; validation reports every problem at once.
use std::path::Path;

use serde::Deserialize;

pub use crate::alert::spec::{SinkSpec, resolve_secret};
use crate::capture::kernel::KernelConfig;
use crate::stream::StreamConfig;
pub use crate::yaml::{ConfigError, ConfigErrors, located_serde_error, parse_yaml, read_file};

/// The configuration used when no file is given. `Config::default()` equals it (tested).
pub const DEFAULT_CONFIG: &str = r#"# apiwatch configuration (all fields optional; these are the defaults)
capture:
  # Where the data path hooks the kernel: socket (the socket tracepoints: only socket I/O pays),
  # syscall (the syscall tracepoints, for kernels before 6.3: every syscall on the host pays),
  # or auto (socket where the kernel has it).
  mode: auto
  # Bytes copied from each socket read/write: enough for request and response heads.
  bytes: 4096
  # Kernel ring buffer between the probes and the agent (power of two).
  ring_bytes: 16777216
  # How often the ring is drained when the kernel did not wake us.
  drain_interval_ms: 10
  # Only connections of these processes (names as in ps -o comm, e.g. [nginx, gunicorn]);
  # empty: every process. Applied in the kernel: the others cost almost nothing.
  processes: []
stream:
  # Connections tracked at once; the least recently active is evicted beyond it.
  max_connections: 65536
  # A connection silent this long is closed and its open exchanges reported.
  idle_timeout_secs: 120
  # Bytes all connections may buffer together (unfinished heads, HTTP/2 frames); beyond it the
  # connections holding the most are evicted (counted: apiwatch_events_dropped_total{reason="buffer_budget"}).
  max_buffered_bytes: 67108864
metrics:
  # Address of /metrics, /healthz, /readyz and /api/v1/routes; "off" turns the endpoint off.
  listen: "127.0.0.1:9464"
  # Label sets per HTTP metric family; beyond it observations fold into one __other__ set.
  max_series: 2000
  # Services named at most (server: comm:port, client: comm); the rest fold into __other__.
  max_services: 256
  # Routes per service; the rest fold into the route __other__.
  max_routes_per_service: 200
  # (service, route, method) entries in /api/v1/routes.
  max_inventory_routes: 4096
# Boundary policy (see docs/policy.md); without one only the built-in detectors run
# (secrets and personal data in URLs, unsigned and expired JWTs).
policy: null
# State kept across restarts: the key that makes credential fingerprints unique to this install,
# the last good policy, the learnt baselines.
state_dir: /var/lib/apiwatch
# Rate, 5xx-ratio, 401/403-ratio and p99-latency baselines per service and route (see
# docs/anomaly-detection.md). Findings: rate_anomaly, error_ratio_anomaly, auth_failure_anomaly,
# latency_anomaly, firing then resolved.
baselines:
  enabled: true
  window_secs: 60
  # 168 buckets of an hour: a weekly profile (daily included).
  season_buckets: 168
  bucket_secs: 3600
  # Windows before any verdict.
  warmup: 30
  # z-score of an anomaly, judged against the series' own tail (the score is 0.5 there; see
  # docs/anomaly-detection.md). After an alarm a series stays quiet for 120 windows.
  threshold: 4.0
  # Series at most (4 per route).
  max_series: 20000
# Alerts (see docs/alerts.md): findings become alerts (deduplicated, firing then resolved), kept
# in a durable spool per sink in state_dir until that sink took them.
alerts:
  # A boundary finding that does not recur for this long resolves its alert.
  resolve_after_secs: 300
  # A firing alert is sent again this often to sinks that want re-sends (Alertmanager).
  resend_secs: 60
  # Alerts each sink's spool holds at most; beyond, new ones are refused, counted and raised
  # as an ApiwatchAlertSpoolOverflow alert.
  spool_max: 10000
  # A sink failing for this long raises ApiwatchAlertSinkFailing on the other sinks.
  sink_failing_after_secs: 120
  # Added to every alert as the "dashboard" annotation; {dashboard}, {service}, {route}, {host}
  # and {alertname} are replaced (URL-encoded), e.g.
  # "http://grafana:3000/d/{dashboard}?var-service={service}&var-route={route}"
  dashboard_url: null
  # Where alerts go: alertmanager, pagerduty, slack, webhook, file. Each takes name,
  # min_severity, kinds, exclude_kinds, rate_limit ("N/s", "N/min", "N/hour"), timeout_secs.
  # e.g. - {type: alertmanager, url: "http://127.0.0.1:9093"}
  #      - {type: file, path: "-"}
  sinks: []
# Audit trail (see docs/audit.md): one minimised, hash-chained record per server-side exchange
# (who accessed what, when, allowed or not; never a secret, a body or a query), in rotated,
# gzip'd segments kept for a set time. `apiwatch audit verify DIR` checks the chain,
# `apiwatch audit query DIR` answers who accessed what, when.
audit:
  enabled: false
  # Default (null): the audit directory in state_dir.
  dir: null
  # Also record the request path (never the query) beside the route template; paths where a
  # detector saw a secret or personal data are still left out.
  include_paths: false
  # A segment is closed (and gzip'd) at this size or age.
  segment_max_bytes: 67108864
  segment_max_age_secs: 3600
  # Closed segments older than this, or beyond the total size, are deleted, oldest first;
  # each deletion is recorded in the trail.
  retention_days: 90
  retention_max_bytes: 4294967296
  # Records held in memory while the disk refuses writes; beyond, the oldest are dropped
  # (counted, and recorded in the trail as a gap).
  max_pending: 100000
"#;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub capture: CaptureSection,
    pub stream: StreamSection,
    pub metrics: MetricsSection,
    /// Boundary policy file (zones, services, endpoints, rules); relative paths are relative to
    /// the configuration file. None: only the built-in detectors run.
    pub policy: Option<String>,
    /// Where apiwatch keeps state across restarts (the credential-fingerprint key, the last
    /// good policy, the learnt baselines).
    pub state_dir: String,
    pub baselines: BaselinesSection,
    pub alerts: AlertsSection,
    pub audit: AuditSection,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    pub enabled: bool,
    /// None: `state_dir/audit`.
    pub dir: Option<String>,
    pub include_paths: bool,
    pub segment_max_bytes: u64,
    pub segment_max_age_secs: u64,
    pub retention_days: u64,
    pub retention_max_bytes: u64,
    pub max_pending: usize,
}

impl Default for AuditSection {
    fn default() -> Self {
        let d = crate::audit::AuditOptions::default();
        Self {
            enabled: false,
            dir: None,
            include_paths: d.include_paths,
            segment_max_bytes: d.segment_max_bytes,
            segment_max_age_secs: d.segment_max_age_secs,
            retention_days: d.retention_max_age_secs / 86_400,
            retention_max_bytes: d.retention_max_bytes,
            max_pending: d.max_pending,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    pub resolve_after_secs: u64,
    pub resend_secs: u64,
    /// Alerts each sink's on-disk spool holds at most; beyond, new ones are refused and counted.
    pub spool_max: usize,
    pub sink_failing_after_secs: u64,
    /// A link template for the "dashboard" annotation.
    pub dashboard_url: Option<String>,
    pub sinks: Vec<SinkSpec>,
}

impl Default for AlertsSection {
    fn default() -> Self {
        Self {
            resolve_after_secs: 300,
            resend_secs: 60,
            spool_max: 10_000,
            sink_failing_after_secs: 120,
            dashboard_url: None,
            sinks: Vec::new(),
        }
    }
}

/// Sink types and the fields each requires.
const SINK_TYPES: &[(&str, &[&str])] = &[
    ("alertmanager", &["url"]),
    ("pagerduty", &["routing_key"]),
    ("slack", &["webhook_url"]),
    ("webhook", &["url"]),
    ("file", &["path"]),
];

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BaselinesSection {
    pub enabled: bool,
    pub window_secs: u64,
    pub season_buckets: usize,
    pub bucket_secs: u64,
    pub warmup: u32,
    pub threshold: f64,
    pub max_series: usize,
}

impl Default for BaselinesSection {
    fn default() -> Self {
        Self {
            enabled: true,
            window_secs: 60,
            season_buckets: 168,
            bucket_secs: 3600,
            warmup: 30,
            threshold: 4.0,
            max_series: 20_000,
        }
    }
}

// Only floats in BaselinesSection keep Config from deriving Eq; thresholds are never NaN.
impl Eq for BaselinesSection {}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    pub listen: String,
    pub max_series: usize,
    pub max_services: usize,
    pub max_routes_per_service: usize,
    pub max_inventory_routes: usize,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            max_series: 2000,
            max_services: 256,
            max_routes_per_service: 200,
            max_inventory_routes: 4096,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureSection {
    pub mode: crate::capture::kernel::CaptureMode,
    pub bytes: u32,
    pub ring_bytes: u32,
    pub drain_interval_ms: u64,
    pub processes: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSection {
    pub max_connections: usize,
    pub idle_timeout_secs: u64,
    pub max_buffered_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            capture: CaptureSection::default(),
            stream: StreamSection::default(),
            metrics: MetricsSection::default(),
            policy: None,
            state_dir: "/var/lib/apiwatch".into(),
            baselines: BaselinesSection::default(),
            alerts: AlertsSection::default(),
            audit: AuditSection::default(),
        }
    }
}

impl Default for CaptureSection {
    fn default() -> Self {
        Self {
            mode: crate::capture::kernel::CaptureMode::Auto,
            bytes: 4096,
            ring_bytes: 16 << 20,
            drain_interval_ms: 10,
            processes: Vec::new(),
        }
    }
}

impl Default for StreamSection {
    fn default() -> Self {
        Self {
            max_connections: 65536,
            idle_timeout_secs: 120,
            max_buffered_bytes: 64 << 20,
        }
    }
}

impl Config {
    /// The policy file's path, resolved against the directory of the configuration file.
    pub fn policy_path(&self, config_file: Option<&Path>) -> Option<std::path::PathBuf> {
        let p = Path::new(self.policy.as_deref()?);
        Some(match config_file.and_then(Path::parent) {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        })
    }

    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let (file, text) = read_file(path)?;
        Self::parse(&file, &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigErrors> {
        let cfg: Config = parse_yaml(file, text)?;
        let errors = cfg.validate(file, text);
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Every semantic problem, each located by the line of its field.
    fn validate(&self, file: &str, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, path: &[&str], message: String| {
            if !ok {
                errors.push(ConfigError::at(file, text, path, message));
            }
        };
        let max = monitor_common::CAPTURE_MAX as u32;
        check(
            (64..=max).contains(&self.capture.bytes),
            &["capture", "bytes"],
            format!("must be between 64 and {max}, is {}", self.capture.bytes),
        );
        check(
            self.capture.ring_bytes.is_power_of_two() && self.capture.ring_bytes >= 1 << 16,
            &["capture", "ring_bytes"],
            format!(
                "must be a power of two of at least 65536, is {}",
                self.capture.ring_bytes
            ),
        );
        check(
            (1..=1000).contains(&self.capture.drain_interval_ms),
            &["capture", "drain_interval_ms"],
            format!(
                "must be between 1 and 1000, is {}",
                self.capture.drain_interval_ms
            ),
        );
        for p in &self.capture.processes {
            check(
                !p.is_empty() && p.len() <= 15 && !p.contains('/'),
                &["capture", "processes"],
                format!("{p:?} is not a process name (comm: 1 to 15 bytes, no '/')"),
            );
        }
        check(
            self.capture.processes.len() <= 64,
            &["capture", "processes"],
            format!("at most 64 names, has {}", self.capture.processes.len()),
        );
        check(
            self.stream.max_connections >= 16,
            &["stream", "max_connections"],
            format!("must be at least 16, is {}", self.stream.max_connections),
        );
        check(
            self.stream.max_buffered_bytes >= 1 << 20,
            &["stream", "max_buffered_bytes"],
            format!(
                "must be at least 1048576 (1 MiB), is {}",
                self.stream.max_buffered_bytes
            ),
        );
        check(
            self.metrics.listen == "off" || self.metrics.listen.parse::<std::net::SocketAddr>().is_ok(),
            &["metrics", "listen"],
            format!("must be ip:port or \"off\", is {:?}", self.metrics.listen),
        );
        for (name, value, min) in [
            ("max_series", self.metrics.max_series, 10),
            ("max_services", self.metrics.max_services, 1),
            ("max_routes_per_service", self.metrics.max_routes_per_service, 1),
            ("max_inventory_routes", self.metrics.max_inventory_routes, 1),
        ] {
            check(
                value >= min,
                &["metrics", name],
                format!("must be at least {min}, is {value}"),
            );
        }
        let b = &self.baselines;
        check(
            b.window_secs >= 1,
            &["baselines", "window_secs"],
            "must be at least 1".into(),
        );
        check(
            b.season_buckets >= 1,
            &["baselines", "season_buckets"],
            "must be at least 1".into(),
        );
        check(
            b.bucket_secs >= 1,
            &["baselines", "bucket_secs"],
            "must be at least 1".into(),
        );
        check(
            b.threshold.is_finite() && b.threshold > 0.0,
            &["baselines", "threshold"],
            format!("must be a positive number, is {}", b.threshold),
        );
        check(
            self.stream.idle_timeout_secs >= 1,
            &["stream", "idle_timeout_secs"],
            "must be at least 1".into(),
        );
        check(
            self.alerts.spool_max >= 1,
            &["alerts", "spool_max"],
            "must be at least 1".into(),
        );
        let a = &self.audit;
        for (name, value, min) in [
            ("segment_max_bytes", a.segment_max_bytes, 4096),
            ("segment_max_age_secs", a.segment_max_age_secs, 1),
            ("retention_days", a.retention_days, 1),
            (
                "retention_max_bytes",
                a.retention_max_bytes,
                a.segment_max_bytes.max(4096),
            ),
            ("max_pending", a.max_pending as u64, 1),
        ] {
            check(
                value >= min,
                &["audit", name],
                format!("must be at least {min}, is {value}"),
            );
        }
        check(
            a.dir.as_deref().is_none_or(|d| !d.is_empty()),
            &["audit", "dir"],
            "must be a directory path, or null for state_dir/audit".into(),
        );
        errors.extend(self.validate_sinks(file, text));
        errors
    }

    fn validate_sinks(&self, file: &str, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.alerts.sinks.iter().enumerate() {
            let idx = i.to_string();
            let mut err = |field: &str, message: String| {
                errors.push(ConfigError::at(
                    file,
                    text,
                    &["alerts", "sinks", &idx, field],
                    message,
                ));
            };
            let Some((_, required)) = SINK_TYPES.iter().find(|(t, _)| *t == s.kind) else {
                let known: Vec<&str> = SINK_TYPES.iter().map(|t| t.0).collect();
                err(
                    "type",
                    format!("must be one of {}, is {:?}", known.join(", "), s.kind),
                );
                continue;
            };
            let given = |f: &str| match f {
                "url" => s.url.is_some(),
                "routing_key" => s.routing_key.is_some(),
                "webhook_url" => s.webhook_url.is_some(),
                "path" => s.path.is_some(),
                _ => true,
            };
            for f in required.iter().filter(|f| !given(f)) {
                err("type", format!("a {} sink needs {f}", s.kind));
            }
            for (f, v) in [
                ("url", &s.url),
                ("webhook_url", &s.webhook_url),
                ("routing_key", &s.routing_key),
                ("secret", &s.secret),
            ] {
                let Some(v) = v else { continue };
                match resolve_secret(v) {
                    Err(e) => err(f, e),
                    Ok(v)
                        if f.ends_with("url") && !(v.starts_with("http://") || v.starts_with("https://")) =>
                    {
                        // The value may be a secret (Slack's URL is): not repeated here.
                        err(f, "must start with http:// or https://".into());
                    }
                    Ok(v) if v.is_empty() => err(f, "is empty".into()),
                    Ok(_) => {}
                }
            }
            let name = s.name();
            // A defaulted name is the type's: point there.
            let name_field = if s.name.is_some() { "name" } else { "type" };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                err(
                    name_field,
                    format!("must be letters, digits, '-', '_' or '.', is {name:?}"),
                );
            } else if !names.insert(name.clone()) {
                err(
                    name_field,
                    format!("{name:?} names two sinks; give each its own name"),
                );
            }
            if let Some(sev) = &s.min_severity {
                if crate::finding::Severity::parse(sev).is_none() {
                    err(
                        "min_severity",
                        format!("must be info, warning, high or critical, is {sev:?}"),
                    );
                }
            }
            for (field, names) in [("kinds", &s.kinds), ("exclude_kinds", &s.exclude_kinds)] {
                for k in names
                    .iter()
                    .filter(|k| !crate::alert::alert_names().any(|n| n == k.as_str()))
                {
                    err(
                        field,
                        format!(
                            "unknown alert name {k:?}; known: {}",
                            crate::alert::alert_names().collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
            }
            if let Some(r) = &s.rate_limit {
                if crate::clock::parse_rate(r).is_none() {
                    err("rate_limit", format!("must be N/s, N/min or N/hour, is {r:?}"));
                }
            }
            if s.timeout_secs == Some(0) {
                err("timeout_secs", "must be at least 1".into());
            }
        }
        errors
    }

    pub fn kernel(&self) -> KernelConfig {
        KernelConfig {
            mode: self.capture.mode,
            capture_bytes: self.capture.bytes,
            ring_bytes: self.capture.ring_bytes,
            drain_interval: std::time::Duration::from_millis(self.capture.drain_interval_ms),
            processes: self.capture.processes.clone(),
        }
    }

    /// None when the endpoint is off.
    pub fn metrics(&self) -> Option<crate::metrics::MetricsOptions> {
        let listen = self.metrics.listen.parse().ok()?;
        Some(crate::metrics::MetricsOptions {
            listen,
            max_series: self.metrics.max_series,
            max_inventory_routes: self.metrics.max_inventory_routes,
        })
    }

    pub fn routes(&self) -> crate::enrich::RouteLimits {
        crate::enrich::RouteLimits {
            max_services: self.metrics.max_services,
            max_routes_per_service: self.metrics.max_routes_per_service,
        }
    }

    pub fn baselines(&self) -> Option<crate::baseline::live::BaselineOptions> {
        let b = &self.baselines;
        b.enabled.then(|| crate::baseline::live::BaselineOptions {
            window_secs: b.window_secs,
            detector: crate::baseline::DetectorConfig {
                season_buckets: b.season_buckets,
                bucket_secs: b.bucket_secs,
                warmup: b.warmup,
                threshold: b.threshold,
                ..Default::default()
            },
            max_series: b.max_series,
            state_file: Some(Path::new(&self.state_dir).join("baselines.json")),
            ..Default::default()
        })
    }

    pub fn alert_options(&self) -> crate::alert::AlertOptions {
        crate::alert::AlertOptions {
            resolve_after_ns: self.alerts.resolve_after_secs * 1_000_000_000,
            resend_ns: self.alerts.resend_secs.max(1) * 1_000_000_000,
            sink_failing_after_ns: self.alerts.sink_failing_after_secs * 1_000_000_000,
            dashboard_url: self.alerts.dashboard_url.clone(),
            state_file: Some(Path::new(&self.state_dir).join("alerts").join("firing.json")),
        }
    }

    /// The audit trail's options, when it is enabled.
    pub fn audit(&self) -> Option<crate::audit::AuditOptions> {
        let a = &self.audit;
        a.enabled.then(|| crate::audit::AuditOptions {
            dir: match &a.dir {
                Some(d) => d.into(),
                None => Path::new(&self.state_dir).join("audit"),
            },
            include_paths: a.include_paths,
            segment_max_bytes: a.segment_max_bytes,
            segment_max_age_secs: a.segment_max_age_secs,
            retention_max_age_secs: a.retention_days.saturating_mul(86_400),
            retention_max_bytes: a.retention_max_bytes,
            max_pending: a.max_pending,
        })
    }

    pub fn stream(&self) -> StreamConfig {
        StreamConfig {
            max_connections: self.stream.max_connections,
            idle_timeout_ns: self.stream.idle_timeout_secs * 1_000_000_000,
            max_buffered_bytes: self.stream.max_buffered_bytes,
            // From the policy, by the pipeline that loads it.
            http: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_the_default() {
        assert_eq!(
            Config::parse("<default>", DEFAULT_CONFIG).unwrap(),
            Config::default()
        );
        assert_eq!(Config::parse("<empty>", "").unwrap(), Config::default());
    }

    #[test]
    fn every_error_is_reported_with_its_line_and_field() {
        let text = "capture:\n  bytes: 5\n  ring_bytes: 1000\nstream:\n  idle_timeout_secs: 0\n";
        let errs = Config::parse("agent.yml", text).unwrap_err().0;
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert!(
            shown[0].starts_with("agent.yml:2:3: capture.bytes: must be between 64"),
            "{shown:?}"
        );
        assert!(
            shown[1].starts_with("agent.yml:3:3: capture.ring_bytes:"),
            "{shown:?}"
        );
        assert!(
            shown[2].starts_with("agent.yml:5:3: stream.idle_timeout_secs:"),
            "{shown:?}"
        );
    }

    #[test]
    fn every_sink_error_is_located_and_secrets_are_not_repeated() {
        let text = "alerts:
  sinks:
    - type: pagerduty
      min_severity: severe
    - type: slack
      webhook_url: \"hooks.example/T0/SECRETPATH\"
    - type: sms
    - type: file
      path: \"-\"
      rate_limit: lots
      kinds: [source_outside_bondary]
    - type: file
      path: alerts.jsonl
";
        let errs = Config::parse("agent.yml", text).unwrap_err().0;
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let known = crate::alert::alert_names().collect::<Vec<_>>().join(", ");
        assert_eq!(
            shown,
            [
                "agent.yml:3:7: alerts.sinks.0.type: a pagerduty sink needs routing_key".to_string(),
                "agent.yml:4:7: alerts.sinks.0.min_severity: must be info, warning, high or critical, is \"severe\"".into(),
                "agent.yml:6:7: alerts.sinks.1.webhook_url: must start with http:// or https://".into(),
                "agent.yml:7:7: alerts.sinks.2.type: must be one of alertmanager, pagerduty, slack, webhook, file, is \"sms\"".into(),
                format!("agent.yml:11:7: alerts.sinks.3.kinds: unknown alert name \"source_outside_bondary\"; known: {known}"),
                "agent.yml:10:7: alerts.sinks.3.rate_limit: must be N/s, N/min or N/hour, is \"lots\"".into(),
                "agent.yml:12:7: alerts.sinks.4.type: \"file\" names two sinks; give each its own name".into(),
            ]
        );
        assert!(!shown.concat().contains("SECRETPATH"));
        let spec = SinkSpec {
            kind: "slack".into(),
            webhook_url: Some("https://hooks.example/T0/SECRETPATH".into()),
            ..SinkSpec::default()
        };
        assert!(!format!("{spec:?}").contains("SECRETPATH"));
        // Secrets may come from the environment or a file instead of the configuration.
        let dir = std::env::temp_dir().join(format!("aw-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key"), "0123456789abcdef\n").unwrap();
        assert_eq!(
            resolve_secret(&format!("file:{}", dir.join("key").display())).unwrap(),
            "0123456789abcdef"
        );
        assert_eq!(
            resolve_secret("env:APIWATCH_TEST_UNSET_VARIABLE").unwrap_err(),
            "environment variable APIWATCH_TEST_UNSET_VARIABLE is not set"
        );
        let text = format!(
            "alerts:\n  sinks:\n    - type: pagerduty\n      routing_key: \"file:{}\"\n    - type: slack\n      webhook_url: \"env:APIWATCH_TEST_UNSET_VARIABLE\"\n",
            dir.join("nope").display()
        );
        let shown: Vec<String> = Config::parse("a.yml", &text)
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(
            shown[0].starts_with("a.yml:4:7: alerts.sinks.0.routing_key: cannot read"),
            "{shown:?}"
        );
        assert_eq!(
            shown[1],
            "a.yml:6:7: alerts.sinks.1.webhook_url: environment variable APIWATCH_TEST_UNSET_VARIABLE is not set"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn process_names_are_kernel_comms() {
        let errs = Config::parse(
            "a.yml",
            "capture:\n  processes: [nginx, /usr/sbin/nginx, a-name-longer-than-15]\n",
        )
        .unwrap_err()
        .0;
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(
            shown[0].starts_with("a.yml:2:3: capture.processes: \"/usr/sbin/nginx\" is not a process name")
        );
        assert!(shown[1].contains("\"a-name-longer-than-15\""));
        let ok = Config::parse("a.yml", "capture:\n  processes: [nginx, gunicorn]\n").unwrap();
        assert_eq!(ok.kernel().processes, ["nginx", "gunicorn"]);
        assert_eq!(&crate::capture::comm_key("nginx")[..6], b"nginx\0");
    }

    #[test]
    fn unknown_field_is_located() {
        let errs = Config::parse("a.yml", "capture:\n  byts: 100\n").unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(2));
        assert!(errs[0].to_string().contains("byts"), "{}", errs[0]);
    }

    /// Every type the check accepts has its typed form (and only those).
    #[test]
    fn every_accepted_sink_type_has_a_typed_target() {
        for (kind, _) in SINK_TYPES {
            let spec = SinkSpec {
                kind: kind.to_string(),
                ..SinkSpec::default()
            };
            assert!(spec.target().is_some(), "{kind}");
        }
        let odd = SinkSpec {
            kind: "carrier-pigeon".into(),
            ..SinkSpec::default()
        };
        assert!(odd.target().is_none());
    }
}
