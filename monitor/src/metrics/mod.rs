//! Metrics: Prometheus families named after the OpenTelemetry HTTP semantic conventions, the
//! agent's own health, and the route inventory; served by `server`.
//!
//! Cardinality is bounded twice: the enrich stage caps services and routes per service, and each
//! HTTP family here caps its label sets at `max_series`; an exchange that would open a label set
//! beyond it is recorded in the single overflow set (every label `__other__`), so a family never
//! holds more than `max_series + 1` label sets.
pub mod inventory;
pub mod openapi;
pub mod server;

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::capture::Role;
use crate::capture::kernel::KernelStats;
use crate::exchange::Exchange;
use crate::finding::{Finding, Lifecycle};
use crate::http::KNOWN_METHODS;
use crate::stats::PipelineStats;
use monitor_common::Stat;

pub use inventory::Inventory;

pub const OVERFLOW: &str = "__other__";

/// A panic elsewhere while a lock was held must not stop the metrics: the data behind it are
/// counters and caches, still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Seconds; OTel's recommended boundaries with finer steps below 5 ms for local APIs.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const SIZE_BUCKETS: &[f64] = &[
    0.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
];

#[derive(Clone, Debug)]
pub struct MetricsOptions {
    pub listen: std::net::SocketAddr,
    pub max_series: usize,
    pub max_inventory_routes: usize,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".parse().expect("static address"),
            max_series: 2000,
            max_inventory_routes: 4096,
        }
    }
}

struct Family {
    hist: HistogramVec,
    seen: HashSet<Vec<String>>,
}

impl Family {
    /// The histogram of these label values, or of the overflow set (true) once the family holds
    /// `max_series` label sets.
    fn handle(&mut self, labels: Vec<String>, max_series: usize) -> (Histogram, bool) {
        let (labels, overflowed) = if self.seen.contains(&labels) {
            (labels, false)
        } else if self.seen.len() < max_series {
            self.seen.insert(labels.clone());
            (labels, false)
        } else {
            (vec![OVERFLOW.to_string(); labels.len()], true)
        };
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        (self.hist.with_label_values(&refs), overflowed)
    }
}

/// The label values an exchange gives the HTTP families, borrowed from it.
#[derive(Clone, Copy, Hash, PartialEq, Eq)]
struct SeriesKey<'a> {
    role: Role,
    service: &'a str,
    /// Already folded: a known method or `_OTHER`.
    method: &'a str,
    route: &'a str,
    status: Option<u16>,
    /// The server's address for a client (server_address); none for a server.
    addr: Option<std::net::IpAddr>,
    /// The local port for a server, the server's port for a client.
    port: Option<u16>,
    tls: bool,
}

impl<'a> SeriesKey<'a> {
    fn of(ex: &'a Exchange) -> Self {
        let method = if KNOWN_METHODS.contains(&ex.method.as_str()) {
            ex.method.as_str()
        } else {
            "_OTHER"
        };
        let (addr, port) = match ex.role {
            Role::Server => (None, ex.local.map(|a| a.port())),
            Role::Client => (ex.peer.map(|a| a.ip()), ex.peer.map(|a| a.port())),
        };
        Self {
            role: ex.role,
            service: &ex.service,
            method,
            route: &ex.route,
            status: ex.status,
            addr,
            port,
            tls: ex.tls,
        }
    }
}

/// The histograms one label set observes into, resolved once: prometheus's own lookup hashes
/// and allocates every label value, and was the pipeline's largest cost per exchange.
struct Series {
    role: Role,
    service: String,
    method: String,
    route: String,
    status: Option<u16>,
    addr: Option<std::net::IpAddr>,
    port: Option<u16>,
    tls: bool,
    /// None without a response status (the duration families want one).
    duration: Option<Histogram>,
    request_body: Histogram,
    response_body: Histogram,
    /// How many of the three went to the overflow set: counted at every observation.
    overflowed: u64,
}

impl Series {
    fn key(&self) -> SeriesKey<'_> {
        SeriesKey {
            role: self.role,
            service: &self.service,
            method: &self.method,
            route: &self.route,
            status: self.status,
            addr: self.addr,
            port: self.port,
            tls: self.tls,
        }
    }
}

/// Resolved label sets, at most `max` of them (then it starts afresh: a miss costs only the
/// lookup the cache saves). Distinct keys are bounded upstream except the client's server
/// address, hence the bound.
struct SeriesCache {
    table: hashbrown::HashTable<Series>,
    hasher: hashbrown::DefaultHashBuilder,
    max: usize,
}

impl SeriesCache {
    fn get_or_resolve(&mut self, key: SeriesKey<'_>, resolve: impl FnOnce() -> Series) -> &Series {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key);
        if self.table.len() >= self.max && self.table.find(hash, |s| s.key() == key).is_none() {
            self.table.clear();
        }
        let hasher = &self.hasher;
        self.table
            .entry(hash, |s| s.key() == key, |s| hasher.hash_one(s.key()))
            .or_insert_with(resolve)
            .into_mut()
    }
}

/// The HTTP families, behind one lock (observed from the pipeline thread, read at scrape time).
struct HttpFamilies {
    server_duration: Family,
    client_duration: Family,
    server_request_body: Family,
    server_response_body: Family,
    client_request_body: Family,
    client_response_body: Family,
}

impl HttpFamilies {
    fn resolve(&mut self, k: SeriesKey<'_>, max_series: usize) -> Series {
        let size_labels = vec![k.service.to_string(), k.method.to_string(), k.route.to_string()];
        let status = k.status.map(|s| s.to_string()).unwrap_or_default();
        let port = k.port.map(|p| p.to_string()).unwrap_or_default();
        let scheme = if k.tls { "https" } else { "http" }.to_string();
        let mut duration_labels = size_labels.clone();
        duration_labels.push(status);
        let (duration, request_body, response_body) = match k.role {
            Role::Server => {
                duration_labels.extend([port, scheme]);
                (
                    &mut self.server_duration,
                    &mut self.server_request_body,
                    &mut self.server_response_body,
                )
            }
            Role::Client => {
                let addr = k.addr.map(|a| a.to_string()).unwrap_or_default();
                duration_labels.extend([addr, port, scheme]);
                (
                    &mut self.client_duration,
                    &mut self.client_request_body,
                    &mut self.client_response_body,
                )
            }
        };
        let mut overflowed = 0;
        let duration = k.status.map(|_| {
            let (h, over) = duration.handle(duration_labels, max_series);
            overflowed += over as u64;
            h
        });
        let (request_body, over) = request_body.handle(size_labels.clone(), max_series);
        overflowed += over as u64;
        let (response_body, over) = response_body.handle(size_labels, max_series);
        overflowed += over as u64;
        Series {
            role: k.role,
            service: k.service.to_string(),
            method: k.method.to_string(),
            route: k.route.to_string(),
            status: k.status,
            addr: k.addr,
            port: k.port,
            tls: k.tls,
            duration,
            request_body,
            response_body,
            overflowed,
        }
    }
}

struct Http {
    families: HttpFamilies,
    cache: SeriesCache,
}

pub struct Metrics {
    pub registry: Registry,
    max_series: usize,
    http: Mutex<Http>,
    /// gRPC calls: [server, client] (OpenTelemetry RPC conventions; see RPC_LABELS).
    rpc: Mutex<[Family; 2]>,
    pub inventory: Mutex<Inventory>,
    server_exchanges: IntCounter,
    client_exchanges: IntCounter,
    /// HTTP/2 connections and streams seen, and what the decoding could not follow, by kind.
    http2_events: IntCounterVec,
    series_overflow: IntCounter,
    routes_folded: IntCounter,
    events: IntCounter,
    kernel_events: IntCounter,
    dropped: IntCounterVec,
    parse_errors: IntCounterVec,
    bytes_not_seen: IntCounter,
    output_write_errors: IntCounter,
    state_write_errors: IntCounterVec,
    services_folded: IntCounter,
    baseline_series_refused: IntCounter,
    tls_blind_spots: IntCounterVec,
    findings: IntCounterVec,
    /// The alert stage's metrics (apiwatch_alerts_*, apiwatch_alert_*).
    pub alerts: crate::alert::AlertMetrics,
    pub audit: crate::audit::AuditMetrics,
    finding_series: Mutex<HashSet<Vec<String>>>,
    anomalies_firing: prometheus::IntGaugeVec,
    connections: IntGauge,
    capture_mode: prometheus::IntGaugeVec,
    io_uring_connections: IntCounter,
    tls_slow_sites: IntGauge,
    ring_fill: Gauge,
    ring_bytes: f64,
    /// The totals last exported: counters advance by the difference.
    last: Mutex<Exported>,
    pub ready: std::sync::atomic::AtomicBool,
}

fn family(registry: &Registry, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> Family {
    let hist = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
        .expect("valid metric definition");
    registry
        .register(Box::new(hist.clone()))
        .expect("unique metric name");
    Family {
        hist,
        seen: HashSet::new(),
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric name");
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric name");
    c
}

/// `url_scheme` is https when apiwatch saw the exchange through the TLS probes (OTel url.scheme).
const SERVER_LABELS: &[&str] = &[
    "service",
    "http_request_method",
    "http_route",
    "http_response_status_code",
    "server_port",
    "url_scheme",
];
const CLIENT_LABELS: &[&str] = &[
    "service",
    "http_request_method",
    "http_route",
    "http_response_status_code",
    "server_address",
    "server_port",
    "url_scheme",
];
const SIZE_LABELS: &[&str] = &["service", "http_request_method", "http_route"];
/// gRPC calls, after the OpenTelemetry RPC conventions: the instrument names of semconv 1.40
/// (`rpc.server.call.duration`, `rpc.client.call.duration`, in seconds) with the attributes of
/// 1.37 (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`: the number, empty
/// when the call ended without a status, reset or cut), the set that dashboards for today's
/// gRPC instrumentations query.
const RPC_LABELS: &[&str] = &[
    "service",
    "rpc_system",
    "rpc_service",
    "rpc_method",
    "rpc_grpc_status_code",
];

impl Metrics {
    pub fn new(opts: &MetricsOptions, ring_bytes: u32) -> Self {
        let r = Registry::new();
        let http = HttpFamilies {
            server_duration: family(
                &r,
                "http_server_request_duration_seconds",
                "Duration of HTTP server requests seen on this host (first request byte to last response byte).",
                DURATION_BUCKETS,
                SERVER_LABELS,
            ),
            client_duration: family(
                &r,
                "http_client_request_duration_seconds",
                "Duration of HTTP client requests made from this host.",
                DURATION_BUCKETS,
                CLIENT_LABELS,
            ),
            server_request_body: family(
                &r,
                "http_server_request_body_size_bytes",
                "Size of HTTP server request bodies.",
                SIZE_BUCKETS,
                SIZE_LABELS,
            ),
            server_response_body: family(
                &r,
                "http_server_response_body_size_bytes",
                "Size of HTTP server response bodies.",
                SIZE_BUCKETS,
                SIZE_LABELS,
            ),
            client_request_body: family(
                &r,
                "http_client_request_body_size_bytes",
                "Size of HTTP client request bodies.",
                SIZE_BUCKETS,
                SIZE_LABELS,
            ),
            client_response_body: family(
                &r,
                "http_client_response_body_size_bytes",
                "Size of HTTP client response bodies.",
                SIZE_BUCKETS,
                SIZE_LABELS,
            ),
        };
        let connections = IntGauge::new(
            "apiwatch_connections_tracked",
            "Connections the reassembly stage tracks now.",
        )
        .expect("valid");
        r.register(Box::new(connections.clone())).expect("unique");
        let ring_fill = Gauge::new(
            "apiwatch_ring_buffer_fill_ratio",
            "Share of the kernel ring buffer waiting to be read, as last seen by the probes.",
        )
        .expect("valid");
        r.register(Box::new(ring_fill.clone())).expect("unique");
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = r.register(Box::new(pc));
        }
        let exchanges = counter_vec(
            &r,
            "apiwatch_exchanges_total",
            "HTTP exchanges reconstructed, by role.",
            &["role"],
        );
        let rpc = [
            family(
                &r,
                "rpc_server_call_duration_seconds",
                "Duration of gRPC calls served on this host (request headers to the response's end).",
                DURATION_BUCKETS,
                RPC_LABELS,
            ),
            family(
                &r,
                "rpc_client_call_duration_seconds",
                "Duration of gRPC calls made from this host.",
                DURATION_BUCKETS,
                RPC_LABELS,
            ),
        ];
        let m = Self {
            max_series: opts.max_series,
            rpc: Mutex::new(rpc),
            http: Mutex::new(Http {
                families: http,
                cache: SeriesCache {
                    table: hashbrown::HashTable::new(),
                    hasher: Default::default(),
                    max: opts.max_series.saturating_mul(2).max(1024),
                },
            }),
            inventory: Mutex::new(Inventory::new(opts.max_inventory_routes)),
            server_exchanges: exchanges.with_label_values(&["server"]),
            client_exchanges: exchanges.with_label_values(&["client"]),
            http2_events: counter_vec(
                &r,
                "apiwatch_http2_events_total",
                "HTTP/2 connections and streams seen, and what their decoding could not follow (unknown HPACK fields, unattributed or refused streams, lost framing or header blocks), by kind.",
                &["kind"],
            ),
            series_overflow: counter(
                &r,
                "apiwatch_metric_series_overflow_total",
                "Observations folded into the overflow label set because a family reached its series cap.",
            ),
            routes_folded: counter(
                &r,
                "apiwatch_routes_folded_total",
                "Exchanges whose route was folded into __other__ because their service reached its route cap.",
            ),
            events: counter(
                &r,
                "apiwatch_events_total",
                "Capture events the pipeline took in: from the kernel ring, plus the connections found open at start and the facts of each process (name, cgroup) the capture adds.",
            ),
            kernel_events: counter(
                &r,
                "apiwatch_kernel_events_submitted_total",
                "Events the kernel probes wrote to the ring buffer.",
            ),
            dropped: counter_vec(
                &r,
                "apiwatch_events_dropped_total",
                "Events or data lost, by reason.",
                &["reason"],
            ),
            parse_errors: counter_vec(
                &r,
                "apiwatch_parse_errors_total",
                "HTTP parse errors, by kind.",
                &["kind"],
            ),
            findings: counter_vec(
                &r,
                "apiwatch_findings_total",
                "Boundary findings, by kind, rule, severity, service and source zone.",
                &["kind", "rule", "severity", "service", "source_zone"],
            ),
            finding_series: Mutex::new(HashSet::new()),
            alerts: crate::alert::AlertMetrics::new(Some(&r)),
            audit: crate::audit::AuditMetrics::new(Some(&r)),
            anomalies_firing: {
                let g = prometheus::IntGaugeVec::new(
                    Opts::new(
                        "apiwatch_anomalies_firing",
                        "Baseline anomalies firing now (1) or resolved (0), by service, route and kind.",
                    ),
                    &["service", "http_route", "kind"],
                )
                .expect("valid metric definition");
                r.register(Box::new(g.clone())).expect("unique metric name");
                g
            },
            tls_blind_spots: counter_vec(
                &r,
                "apiwatch_tls_blind_spot_connections_total",
                "TLS connections whose plaintext apiwatch could not see, by process and the TLS libraries it had loaded (java, nss, rustls, ...: not decrypted; openssl, gnutls, go: probed, missed).",
                &["process", "library"],
            ),
            bytes_not_seen: counter(
                &r,
                "apiwatch_bytes_not_captured_total",
                "Bytes moved by sockets beyond the captured prefix (counted, not copied).",
            ),
            output_write_errors: counter(
                &r,
                "apiwatch_output_write_errors_total",
                "Exchange and finding lines the outputs (--exchanges, --findings) could not write: a full disk, a closed pipe.",
            ),
            state_write_errors: counter_vec(
                &r,
                "apiwatch_state_write_errors_total",
                "Saves of state files in state_dir that failed (full or read-only): baselines (baselines.json) or firing_alerts (firing.json). The state stays in memory and the next save retries.",
                &["file"],
            ),
            services_folded: counter(
                &r,
                "apiwatch_services_folded_total",
                "Exchanges of services beyond the route table's cap, folded into the __other__ service.",
            ),
            baseline_series_refused: counter(
                &r,
                "apiwatch_baseline_series_refused_total",
                "Baseline series not created because baselines.max_series was reached.",
            ),
            connections,
            capture_mode: {
                let g = prometheus::IntGaugeVec::new(
                    Opts::new(
                        "apiwatch_capture_mode",
                        "The kernel data path in use (1): socket (socket tracepoints) or syscall (the fallback).",
                    ),
                    &["mode"],
                )
                .expect("valid metric definition");
                r.register(Box::new(g.clone())).expect("unique metric name");
                g
            },
            io_uring_connections: counter(
                &r,
                "apiwatch_io_uring_connections_total",
                "Connections doing their socket I/O through io_uring: seen by the socket layer, not captured.",
            ),
            tls_slow_sites: {
                let g = IntGauge::new(
                    "apiwatch_tls_slow_probe_sites",
                    "TLS uprobes attached at an instruction the kernel must single-step (about 14 us a hit instead of 0.4 us).",
                )
                .expect("valid metric definition");
                r.register(Box::new(g.clone())).expect("unique metric name");
                g
            },
            ring_fill,
            ring_bytes: ring_bytes as f64,
            last: Mutex::new(Exported::default()),
            ready: std::sync::atomic::AtomicBool::new(false),
            registry: r,
        };
        // Every drop reason and parse error kind exists from the start, at zero.
        for reason in DROP_REASONS {
            m.dropped.with_label_values(&[reason.1]);
        }
        for kind in ["malformed", "head_too_large", "framing_lost", "bad_chunk"] {
            m.parse_errors.with_label_values(&[kind]);
        }
        for file in ["baselines", "firing_alerts"] {
            m.state_write_errors.with_label_values(&[file]);
        }
        m
    }

    /// Records one enriched exchange.
    pub fn observe(&self, ex: &Exchange) {
        match ex.role {
            Role::Server => self.server_exchanges.inc(),
            Role::Client => self.client_exchanges.inc(),
        }
        let seconds = ex.latency_us.unwrap_or(0) as f64 / 1e6;
        let max = self.max_series;
        {
            let mut http = lock(&self.http);
            let Http { families, cache } = &mut *http;
            let key = SeriesKey::of(ex);
            let series = cache.get_or_resolve(key, || families.resolve(key, max));
            if let Some(d) = &series.duration {
                d.observe(seconds);
            }
            series.request_body.observe(ex.req_body_bytes as f64);
            series.response_body.observe(ex.resp_body_bytes as f64);
            if series.overflowed > 0 {
                self.series_overflow.inc_by(series.overflowed);
            }
        }
        if let Some(g) = &ex.grpc {
            let status = g.status.map(|c| c.to_string()).unwrap_or_default();
            let labels = vec![
                ex.service.to_string(),
                "grpc".to_string(),
                g.service.clone(),
                g.method.clone(),
                status,
            ];
            let side = match ex.role {
                Role::Server => 0,
                Role::Client => 1,
            };
            let (h, overflowed) = lock(&self.rpc)[side].handle(labels, max);
            h.observe(seconds);
            if overflowed {
                self.series_overflow.inc();
            }
        }
        lock(&self.inventory).observe(ex);
    }

    /// Counts one finding (label sets capped like the HTTP families).
    pub fn observe_finding(&self, f: &Finding) {
        // The source as its zone (bounded by the policy), never the address (unbounded).
        let zone = f.source_zones.first().cloned().unwrap_or_else(|| "none".into());
        let mut labels = vec![
            f.kind.to_string(),
            f.rule.clone(),
            f.severity.as_str().to_string(),
            f.service.clone(),
            zone,
        ];
        {
            let mut seen = lock(&self.finding_series);
            if !seen.contains(&labels) {
                if seen.len() < self.max_series {
                    seen.insert(labels.clone());
                } else {
                    self.series_overflow.inc();
                    labels = vec![OVERFLOW.to_string(); 5];
                }
            }
        }
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        self.findings.with_label_values(&refs).inc();
        // Anomaly state, bounded like the findings (one label set per baseline series at most).
        if let Some(state) = f.state {
            if labels[0] != OVERFLOW {
                let g = self
                    .anomalies_firing
                    .with_label_values(&[&f.service, &f.route, f.kind.as_str()]);
                g.set((state == Lifecycle::Firing) as i64);
            }
        }
    }

    /// Brings the counters up to the pipeline's totals (called after each batch).
    pub fn update_pipeline(&self, s: &PipelineStats, routes_folded: u64) {
        let mut last = lock(&self.last);
        let p = &last.pipeline;
        self.events.inc_by(s.events.saturating_sub(p.events));
        self.bytes_not_seen
            .inc_by(s.bytes_not_seen.saturating_sub(p.bytes_not_seen));
        for (kind, now, before) in [
            ("malformed", s.parse_errors.malformed, p.parse_errors.malformed),
            (
                "head_too_large",
                s.parse_errors.head_too_large,
                p.parse_errors.head_too_large,
            ),
            (
                "framing_lost",
                s.parse_errors.framing_lost,
                p.parse_errors.framing_lost,
            ),
            ("bad_chunk", s.parse_errors.bad_chunk, p.parse_errors.bad_chunk),
        ] {
            self.parse_errors
                .with_label_values(&[kind])
                .inc_by(now.saturating_sub(before));
        }
        self.dropped
            .with_label_values(&["pending_request_overflow"])
            .inc_by(s.pending_overflow.saturating_sub(p.pending_overflow));
        self.dropped
            .with_label_values(&["connection_evicted"])
            .inc_by(s.connections_evicted.saturating_sub(p.connections_evicted));
        self.dropped
            .with_label_values(&["buffer_budget"])
            .inc_by(s.connections_shed.saturating_sub(p.connections_shed));
        self.routes_folded
            .inc_by(routes_folded.saturating_sub(last.routes_folded));
        for (process, libraries) in &s.tls_blind_spots {
            for (library, n) in libraries {
                let before = p
                    .tls_blind_spots
                    .get(process)
                    .and_then(|l| l.get(library))
                    .copied()
                    .unwrap_or(0);
                self.tls_blind_spots
                    .with_label_values(&[process, library])
                    .inc_by(n.saturating_sub(before));
            }
        }
        self.output_write_errors
            .inc_by(s.output_write_errors.saturating_sub(p.output_write_errors));
        let (w, pw) = (&s.state_write_errors, &p.state_write_errors);
        for (file, now, before) in [
            ("baselines", w.baselines, pw.baselines),
            ("firing_alerts", w.firing_alerts, pw.firing_alerts),
        ] {
            self.state_write_errors
                .with_label_values(&[file])
                .inc_by(now.saturating_sub(before));
        }
        self.services_folded
            .inc_by(s.services_folded.saturating_sub(p.services_folded));
        self.baseline_series_refused.inc_by(
            s.baseline_series_refused
                .saturating_sub(p.baseline_series_refused),
        );
        let (h, ph) = (&s.h2, &p.h2);
        for (kind, now, before) in [
            ("connections", h.connections, ph.connections),
            ("upgrades", h.upgrades, ph.upgrades),
            ("streams", h.streams, ph.streams),
            ("unknown_fields", h.unknown_fields, ph.unknown_fields),
            (
                "streams_unattributed",
                h.streams_unattributed,
                ph.streams_unattributed,
            ),
            ("streams_refused", h.streams_refused, ph.streams_refused),
            ("streams_reset", h.streams_reset, ph.streams_reset),
            ("framing_lost", h.framing_lost, ph.framing_lost),
            ("header_blocks_lost", h.header_blocks_lost, ph.header_blocks_lost),
            (
                "header_blocks_too_large",
                h.header_blocks_too_large,
                ph.header_blocks_too_large,
            ),
            ("hpack_errors", h.hpack_errors, ph.hpack_errors),
            (
                "table_size_updates_refused",
                h.table_size_updates_refused,
                ph.table_size_updates_refused,
            ),
        ] {
            self.http2_events
                .with_label_values(&[kind])
                .inc_by(now.saturating_sub(before));
        }
        self.connections.set(s.connections as i64);
        last.pipeline = s.clone();
        last.routes_folded = routes_folded;
    }

    /// The data path the capture runs on (`socket` or `syscall`).
    pub fn set_capture_mode(&self, mode: &str) {
        for m in ["socket", "syscall"] {
            self.capture_mode
                .with_label_values(&[m])
                .set(i64::from(m == mode));
        }
    }

    pub fn set_tls_slow_sites(&self, n: usize) {
        self.tls_slow_sites.set(n as i64);
    }

    /// Brings the kernel's counters up to date, and the ring records the capture could not
    /// decode (`decode_errors`, a running total).
    pub fn update_kernel(&self, k: &KernelStats, decode_errors: u64) {
        let mut last = lock(&self.last);
        self.dropped
            .with_label_values(&["decode_error"])
            .inc_by(decode_errors.saturating_sub(last.decode_errors));
        last.decode_errors = decode_errors;
        let before = &last.kernel;
        self.kernel_events.inc_by(
            k.get(Stat::EventsSubmitted)
                .saturating_sub(before.get(Stat::EventsSubmitted)),
        );
        for (stat, reason) in DROP_REASONS.iter().filter_map(|(s, r)| s.map(|s| (s, *r))) {
            self.dropped
                .with_label_values(&[reason])
                .inc_by(k.get(stat).saturating_sub(before.get(stat)));
        }
        self.io_uring_connections.inc_by(
            k.get(Stat::IoUringConnections)
                .saturating_sub(before.get(Stat::IoUringConnections)),
        );
        self.ring_fill
            .set(k.get(Stat::RingAvailBytes) as f64 / self.ring_bytes.max(1.0));
        last.kernel = k.clone();
    }
}

/// Totals as last exported, by the pipeline thread (pipeline, routes) and the capture thread
/// (kernel, decode errors).
#[derive(Default)]
struct Exported {
    pipeline: PipelineStats,
    routes_folded: u64,
    kernel: KernelStats,
    decode_errors: u64,
}

/// Drop reasons exported; the kernel ones map to a `Stat`, the userspace ones have none.
const DROP_REASONS: &[(Option<Stat>, &str)] = &[
    (Some(Stat::RingFull), "ring_full"),
    (Some(Stat::ReadUserFailed), "read_user_failed"),
    (Some(Stat::ConnMapInsertFailed), "conn_map_full"),
    (Some(Stat::ArgsMapFull), "args_map_full"),
    (Some(Stat::UnsupportedCall), "unsupported_call"),
    (None, "decode_error"),
    (None, "pending_request_overflow"),
    (None, "connection_evicted"),
    (None, "buffer_budget"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_calls_in_the_rpc_family_with_their_status() {
        let m = Metrics::new(&MetricsOptions::default(), 1 << 20);
        let mut ex = crate::exchange::tests::sample();
        ex.service = "greeter:50051".into();
        ex.http_version = "2";
        for status in [Some(0), Some(5), None] {
            ex.grpc = Some(Box::new(crate::exchange::GrpcCall {
                service: "demo.v1.Greeter".into(),
                method: "SayHello".into(),
                status,
                message: None,
                request_messages: Some(1),
                response_messages: Some(1),
            }));
            m.observe(&ex);
        }
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&m.registry.gather())
            .unwrap();
        for code in ["0", "5", ""] {
            let line = format!(
                r#"rpc_server_call_duration_seconds_count{{rpc_grpc_status_code="{code}",rpc_method="SayHello",rpc_service="demo.v1.Greeter",rpc_system="grpc",service="greeter:50051"}} 1"#
            );
            assert!(text.contains(&line), "{line} not in {text}");
        }
        // The HTTP family counts the calls too.
        assert!(text.contains("http_server_request_duration_seconds_count"));
    }

    #[test]
    fn series_are_capped_with_one_overflow_set() {
        let m = Metrics::new(
            &MetricsOptions {
                max_series: 50,
                ..MetricsOptions::default()
            },
            1 << 20,
        );
        let mut ex = crate::exchange::tests::sample();
        ex.service = "nginx:8080".into();
        for i in 0..1000 {
            ex.route = format!("/r{i}").into();
            m.observe(&ex);
        }
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&m.registry.gather())
            .unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("http_server_request_duration_seconds_count"))
            .count();
        assert_eq!(series, 51);
        assert!(text.contains(r#"http_route="__other__""#));
        // 950 folded observations in each of three families: duration, request and response body.
        assert!(
            text.contains("apiwatch_metric_series_overflow_total 2850"),
            "{text}"
        );
    }

    /// The resolved-series cache starts afresh when full: every observation still lands in its
    /// own label set, and the overflow set still counts each folded one.
    #[test]
    fn cached_series_count_every_observation() {
        let m = Metrics::new(
            &MetricsOptions {
                max_series: 600,
                ..MetricsOptions::default()
            },
            1 << 20,
        );
        let mut ex = crate::exchange::tests::sample();
        ex.role = Role::Client;
        ex.service = "curl".into();
        for _ in 0..2 {
            for port in 0..1500u16 {
                ex.peer = Some(std::net::SocketAddr::from(([10, 0, 0, 1], 1000 + port)));
                m.observe(&ex);
            }
        }
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&m.registry.gather())
            .unwrap();
        let counts: Vec<(bool, u64)> = text
            .lines()
            .filter(|l| l.starts_with("http_client_request_duration_seconds_count"))
            .map(|l| {
                let n = l.rsplit(' ').next().unwrap().parse().unwrap();
                (l.contains(OVERFLOW), n)
            })
            .collect();
        assert_eq!(counts.len(), 601, "600 label sets and the overflow set");
        assert!(counts.iter().all(|&(over, n)| over || n == 2), "{counts:?}");
        assert_eq!(counts.iter().find(|c| c.0).unwrap().1, 900 * 2);
        // Only the duration family folds: the body families have one label set.
        assert!(
            text.contains("apiwatch_metric_series_overflow_total 1800"),
            "{text}"
        );
        assert!(text.contains(r#"apiwatch_exchanges_total{role="client"} 3000"#));
    }
}
