//! Wiring of the stages: kernel capture -> (bounded channel) -> reassembly -> sinks; or a
//! recording file -> the same reassembly (replay); or capture -> redaction -> a recording file.
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::alert::{AlertOptions, SinkQueue};
use crate::audit::AuditLog;
use crate::baseline::live::BaselineOptions;
use crate::boundary::Policy;
use crate::capture::CaptureEvent;
use crate::capture::kernel::{CaptureError, KernelCapture, KernelConfig, KernelStats};
use crate::clock::agent_now_ns;
use crate::enrich::RouteLimits;
use crate::metrics::Metrics;
use crate::output::{ExchangeSink, FindingSink};
use crate::record::RecordWriter;
use crate::redact::Redactor;
use crate::stats::PipelineStats;
use crate::stream::StreamConfig;

mod pipeline;
pub use pipeline::{PidFilter, Pipeline, replay};
use std::sync::Arc;

/// Batches in flight between capture and the pipeline; when full, capture stops draining the
/// ring and the kernel counts what it cannot write (`ring_full`), so nothing is lost unseen.
const CHANNEL_BATCHES: usize = 64;
const BATCH_EVENTS: usize = 1024;

#[derive(Clone, Default)]
pub struct AgentOptions {
    pub kernel: KernelConfig,
    pub stream: StreamConfig,
    pub routes: RouteLimits,
    /// Only these processes (tgids); empty means all.
    pub pids: Vec<u32>,
    /// Where exchanges and counters are also recorded for /metrics, when enabled.
    pub metrics: Option<Arc<Metrics>>,
    /// The boundary policy, when one is configured, and the file it is reloaded from.
    pub policy: Option<Arc<Policy>>,
    pub policy_path: Option<std::path::PathBuf>,
    /// Where the last good policy is kept (see Policy::load_or_last_good).
    pub state_dir: Option<std::path::PathBuf>,
    /// Rate, error, auth-failure and latency baselines, when enabled.
    pub baselines: Option<BaselineOptions>,
    /// Findings become alerts in the sinks' spools (their delivery threads send from there).
    pub alerts: Option<(AlertOptions, Vec<SinkQueue>)>,
    /// The audit trail of server-side exchanges, when enabled (opened by the live agent).
    pub audit: Option<crate::audit::AuditOptions>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// The kernel data path a live capture ran on: "socket" or "syscall".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<&'static str>,
    pub seconds: f64,
    pub pipeline: PipelineStats,
    pub kernel: Option<KernelStats>,
    /// Ring records the capture took and decoded; with `ring_decode_errors`, exactly the
    /// kernel's `events_submitted` (every record written is read, or counted as undecodable).
    pub ring_records_read: u64,
    pub ring_decode_errors: u64,
    /// Events dropped by the userspace `--pid` filter.
    pub filtered_events: u64,
}

impl Summary {
    /// One line: `apiwatch summary {json}`.
    pub fn line(&self) -> String {
        format!(
            "apiwatch summary {}",
            serde_json::to_string(self).unwrap_or_default()
        )
    }
}

enum Msg {
    Events(Vec<CaptureEvent>),
    /// A reloaded policy (rate and burst state carry over).
    Policy(Arc<Policy>),
    /// Once a second from the capture thread.
    Tick {
        /// Agent-clock time (Unix ns), so idle connections expire when no events come.
        now_ns: u64,
        /// Events lost in the kernel or in decoding so far, for the ApiwatchEventsDropped alert.
        events_lost: u64,
    },
}

/// What consumes capture events on the pipeline thread.
pub enum Consumer {
    /// Exchanges to the first sink; findings, when a policy is set, to the second.
    Exchanges(Box<dyn ExchangeSink>, Option<Box<dyn FindingSink>>),
    Record(RecordWriter<Box<dyn std::io::Write + Send>>),
}

/// A live capture running on its own threads until `stop`.
pub struct LiveAgent {
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<Summary, CaptureError>>>,
}

impl LiveAgent {
    /// Loads and attaches the probes; returns once they are attached (or failed to).
    pub fn start(opts: AgentOptions, consumer: Consumer) -> Result<Self, CaptureError> {
        let (ready_tx, ready_rx) = sync_channel::<Result<(), String>>(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("apiwatch-capture".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(capture_loop(opts, consumer, ready_tx, stop_rx))
            })
            .map_err(CaptureError::Io)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                stop_tx: Some(stop_tx),
                thread: Some(thread),
            }),
            _ => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => Err(CaptureError::Io(std::io::Error::other(
                    "capture thread ended early",
                ))),
            },
        }
    }

    /// Stops capturing, drains what is in flight, and returns the summary.
    pub fn stop(mut self) -> Result<Summary, CaptureError> {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err(CaptureError::Io(std::io::Error::other("capture thread panicked"))),
        }
    }
}

async fn capture_loop(
    opts: AgentOptions,
    consumer: Consumer,
    ready: SyncSender<Result<(), String>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<Summary, CaptureError> {
    let start = Instant::now();
    // The audit trail opens first: a directory it cannot write is a clear error at start.
    let audit = match (&opts.audit, &consumer) {
        (Some(a), Consumer::Exchanges(..)) => {
            let metrics = opts.metrics.as_ref().map(|m| m.audit.clone()).unwrap_or_default();
            match AuditLog::start(a.clone(), metrics) {
                Ok(log) => Some(log),
                Err(e) => {
                    let msg = format!("cannot open the audit trail in {}: {e}", a.dir.display());
                    let _ = ready.send(Err(msg.clone()));
                    return Err(CaptureError::Io(std::io::Error::new(e.kind(), msg)));
                }
            }
        }
        _ => None,
    };
    let (mut capture, seeded) = match KernelCapture::start(&opts.kernel) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return Err(e);
        }
    };
    // capture (this thread) -> pipeline (which resolves first), one bounded channel, in order.
    let (tx, rx) = sync_channel::<Msg>(CHANNEL_BATCHES);
    let (hint_tx, hint_rx) = sync_channel(CHANNEL_BATCHES);
    let worker_opts = opts.clone();
    let worker = std::thread::Builder::new()
        .name("apiwatch-pipeline".into())
        .spawn(move || consume(rx, consumer, &worker_opts, hint_tx, audit))?;
    if !seeded.is_empty() {
        let _ = tx.send(Msg::Events(seeded));
    }
    let _ = ready.send(Ok(()));
    if let Some(m) = &opts.metrics {
        m.set_capture_mode(capture.mode().as_str());
        m.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut policy_mtime = opts.policy_path.as_deref().and_then(mtime);
    let mut batch = Vec::with_capacity(BATCH_EVENTS);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hangup.recv() => {
                if let Some(path) = &opts.policy_path {
                    reload_policy(path, opts.state_dir.as_deref(), &tx);
                }
            }
            r = capture.next_batch(&mut batch, BATCH_EVENTS) => {
                r?;
                for hints in hint_rx.try_iter() {
                    capture.apply_hints(&hints);
                }
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_EVENTS));
                // Blocking send is the backpressure: while the pipeline is behind, the ring fills.
                if tx.send(Msg::Events(full)).is_err() {
                    break;
                }
            }
            _ = tick.tick() => {
                let k = capture.kernel_stats();
                let _ = tx.send(Msg::Tick {
                    now_ns: agent_now_ns(),
                    events_lost: k.lost_events() + capture.decode_errors,
                });
                capture.rescan_tls();
                // Reload the policy when its file changes.
                if let Some(path) = &opts.policy_path {
                    let now = mtime(path);
                    if now != policy_mtime {
                        policy_mtime = now;
                        reload_policy(path, opts.state_dir.as_deref(), &tx);
                    }
                }
                if let Some(m) = &opts.metrics {
                    m.set_tls_slow_sites(capture.tls_slow_sites());
                    m.update_kernel(&k, capture.decode_errors);
                }
            }
        }
    }
    // Drain what the kernel already wrote, so stopping right after traffic loses nothing.
    tokio::time::sleep(opts.kernel.drain_interval).await;
    loop {
        let mut rest = Vec::new();
        capture.drain(&mut rest, BATCH_EVENTS);
        if rest.is_empty() {
            break;
        }
        let _ = tx.send(Msg::Events(rest));
    }
    drop(tx);
    // A pipeline that panicked lost what it held: an error, not an empty summary.
    let (pipeline, filtered) = worker.join().map_err(|_| {
        CaptureError::Io(std::io::Error::other(
            "the pipeline thread panicked (see the log above); its counts are lost",
        ))
    })?;
    let kernel = capture.kernel_stats();
    // The last counts, as in the summary: what was drained after the last tick is exported too.
    if let Some(m) = &opts.metrics {
        m.update_kernel(&kernel, capture.decode_errors);
    }
    Ok(Summary {
        capture_mode: Some(capture.mode().as_str()),
        seconds: start.elapsed().as_secs_f64(),
        pipeline,
        kernel: Some(kernel),
        ring_records_read: capture.records_read,
        ring_decode_errors: capture.decode_errors,
        filtered_events: filtered,
    })
}

/// The HTTP options a policy gives (none without one).
pub(crate) fn http_options(policy: Option<&Policy>) -> crate::http::HttpOptions {
    policy.map(Policy::http_options).unwrap_or_default()
}

fn mtime(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A broken policy never takes the agent down: the policy in use stays, every error is logged.
fn reload_policy(path: &std::path::Path, state_dir: Option<&std::path::Path>, tx: &SyncSender<Msg>) {
    match Policy::load(path) {
        Ok(p) => {
            log::info!(
                "policy reloaded from {} ({} services)",
                path.display(),
                p.services.len()
            );
            if let Some(dir) = state_dir {
                Policy::keep_as_last_good(path, dir);
            }
            let _ = tx.send(Msg::Policy(Arc::new(p)));
        }
        Err(errors) => {
            for e in &errors.0 {
                log::error!("policy not reloaded, the one in use stays: {e}");
            }
        }
    }
}

fn consume(
    rx: Receiver<Msg>,
    consumer: Consumer,
    opts: &AgentOptions,
    hints: SyncSender<Vec<crate::capture::BodyHint>>,
    audit: Option<AuditLog>,
) -> (PipelineStats, u64) {
    // Process facts and missing addresses from /proc, on this thread: a slow /proc read holds
    // the pipeline, not the ring's drain (the channel between them holds CHANNEL_BATCHES). A
    // thread of its own cost two more wakeups per batch, ~10% of the agent's CPU.
    let mut resolver = crate::capture::resolve::Resolver::default();
    match consumer {
        Consumer::Exchanges(sink, findings) => {
            let mut p = Pipeline::new(opts, sink, findings);
            p.send_hints(hints);
            if let Some(log) = audit {
                p.set_audit(log);
            }
            while let Ok(msg) = rx.recv() {
                match msg {
                    Msg::Events(batch) => {
                        for ev in resolver.resolve(batch) {
                            p.process(ev);
                        }
                        p.end_batch();
                    }
                    Msg::Tick { now_ns, events_lost } => p.tick(now_ns, events_lost),
                    Msg::Policy(policy) => p.set_policy(policy),
                }
            }
            p.finish(agent_now_ns());
            (p.stats.clone(), p.pid_filter.filtered)
        }
        Consumer::Record(mut writer) => {
            let mut redactor = Redactor::new(http_options(opts.policy.as_deref()));
            let mut stats = PipelineStats::default();
            let mut filter = PidFilter::new(&opts.pids);
            while let Ok(msg) = rx.recv() {
                if let Msg::Policy(policy) = &msg {
                    redactor.set_http_options(policy.http_options());
                }
                if let Msg::Events(batch) = msg {
                    for mut ev in resolver.resolve(batch) {
                        if !filter.admits(&ev) {
                            continue;
                        }
                        stats.events += 1;
                        redactor.redact(&mut ev);
                        if let Err(e) = writer.write(&ev) {
                            log::error!("writing the recording failed: {e}");
                        }
                    }
                }
                let _ = writer.flush();
            }
            let _ = writer.flush();
            (stats, filter.filtered)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::DetectorConfig;
    use crate::capture::{ConnId, ConnOpen, DataChunk, Direction, Role};
    use crate::finding::Finding;
    use crate::http::AuthScheme;
    use crate::output::{Discard, SharedVec};

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_800_000_000 * S;

    /// One keep-alive server connection answering `GET /api/items` with 200.
    struct Traffic {
        id: ConnId,
    }

    impl Traffic {
        fn open(p: &mut Pipeline) -> Self {
            let id = ConnId { tgid: 77, fd: 9 };
            p.process(CaptureEvent::Open(ConnOpen {
                ts_ns: T0,
                id,
                role: Role::Server,
                local: Some("127.0.0.1:8080".parse().unwrap()),
                peer: Some("127.0.0.1:40000".parse().unwrap()),
                comm: "srv".into(),
                seeded: false,
                epoch: 0,
            }));
            Self { id }
        }

        /// `n` exchanges spread over [from, from + 1 s).
        fn second(&self, p: &mut Pipeline, from: u64, n: u64) {
            for i in 0..n {
                let ts = from + i * S / n;
                for (direction, bytes) in [
                    (
                        Direction::Ingress,
                        &b"GET /api/items HTTP/1.1\r\nHost: a\r\n\r\n"[..],
                    ),
                    (Direction::Egress, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
                ] {
                    p.process(CaptureEvent::Data(DataChunk {
                        ts_ns: ts,
                        id: self.id,
                        direction,
                        total_len: bytes.len() as u64,
                        bytes: bytes::BytesMut::from(bytes),
                        tls: false,
                    }));
                }
            }
            p.end_batch();
        }
    }

    fn pipeline(findings: &SharedVec<Finding>) -> Pipeline {
        let opts = AgentOptions {
            baselines: Some(BaselineOptions {
                window_secs: 1,
                detector: DetectorConfig {
                    season_buckets: 1,
                    warmup: 8,
                    cooldown: 5,
                    ..DetectorConfig::default()
                },
                ..BaselineOptions::default()
            }),
            ..AgentOptions::default()
        };
        Pipeline::new(&opts, Box::new(Discard), Some(Box::new(findings.clone())))
    }

    /// The windows (their starts) where a rate anomaly fired, with the rate observed there.
    fn rate_fired_at(findings: &SharedVec<Finding>) -> Vec<(u64, f64)> {
        findings
            .snapshot()
            .iter()
            .filter(|f| f.kind == "rate_anomaly" && f.state == Some(crate::finding::Lifecycle::Firing))
            .map(|f| {
                let observed = f.evidence.split("observed ").nth(1).unwrap_or_default();
                let n = observed.split(',').next().unwrap_or_default();
                (f.ts, n.parse().unwrap_or(f64::NAN))
            })
            .collect()
    }

    /// The pipeline is seconds behind the capture (a burst it works through): a tick carries a
    /// wall clock far ahead of the events still to come. Windows close on event time, so the
    /// burst is judged in its own windows (up to the last complete one before a stop), and the
    /// windows the tick jumped over are not taken for silence.
    #[test]
    fn a_burst_processed_late_is_judged_in_its_own_windows() {
        let findings = SharedVec::default();
        let mut p = pipeline(&findings);
        let conn = Traffic::open(&mut p);
        let mut t = T0;
        for i in 0..12 {
            conn.second(&mut p, t, 20);
            t += S;
            if i < 11 {
                p.tick(t + S / 10, 0);
            }
        }
        assert!(
            rate_fired_at(&findings).is_empty(),
            "steady traffic: {:?}",
            findings.snapshot()
        );
        // Sent while the burst was still in the ring: a tick 5 s ahead of it.
        p.tick(t + 5 * S, 0);
        conn.second(&mut p, t, 1000);
        conn.second(&mut p, t + S, 1000);
        conn.second(&mut p, t + 2 * S, 20);
        p.finish(t + 7 * S);
        assert_eq!(
            rate_fired_at(&findings),
            [(t, 1000.0)],
            "{:#?}",
            findings.snapshot()
        );
    }

    /// With no event at all, ticks still move the windows on (a silent series is seen), a
    /// little behind the wall clock.
    #[test]
    fn an_idle_capture_moves_the_windows_on_the_wall_clock() {
        let findings = SharedVec::default();
        let mut p = pipeline(&findings);
        let conn = Traffic::open(&mut p);
        let mut t = T0;
        for _ in 0..20 {
            conn.second(&mut p, t, 50);
            t += S;
            p.tick(t + S / 10, 0);
        }
        assert!(findings.snapshot().is_empty(), "{:?}", findings.snapshot());
        for s in 1..=10 {
            p.tick(t + s * S, 0);
        }
        assert!(
            matches!(rate_fired_at(&findings)[..], [(_, 0.0)]),
            "the drop to zero: {:?}",
            findings.snapshot()
        );
    }

    /// The API-key headers a policy declares hold for the pipeline that uses the policy, and a
    /// reload replaces them: once, a parsed policy added them to a process-wide list that never
    /// shrank (`apiwatch check` included), and every unmatched header took its lock.
    #[test]
    fn a_reloaded_policy_replaces_the_api_key_headers_of_the_parsers() {
        let with_key = |header: &str| {
            let text = format!(
                "services:\n  - name: shop\n    match:\n      port: 8080\n    undeclared: allow\n    defaults:\n      auth:\n        scheme: apikey\n        headers: [{header}]\n"
            );
            Arc::new(Policy::parse("p.yml", &text).unwrap())
        };
        let exchanges: SharedVec<crate::exchange::Exchange> = SharedVec::default();
        let opts = AgentOptions {
            policy: Some(with_key("X-Shop-Key")),
            ..AgentOptions::default()
        };
        let mut p = Pipeline::new(&opts, Box::new(exchanges.clone()), None);
        let id = Traffic::open(&mut p).id;
        let mut ts = T0;
        let mut exchange = |p: &mut Pipeline| {
            for (direction, bytes) in [
                (
                    Direction::Ingress,
                    &b"GET /cart HTTP/1.1\r\nX-Shop-Key: shopkey-VALUE-123\r\n\r\n"[..],
                ),
                (Direction::Egress, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            ] {
                ts += 1000;
                p.process(CaptureEvent::Data(DataChunk {
                    ts_ns: ts,
                    id,
                    direction,
                    total_len: bytes.len() as u64,
                    bytes: bytes::BytesMut::from(bytes),
                    tls: false,
                }));
            }
            p.end_batch();
        };
        exchange(&mut p);
        p.set_policy(with_key("X-Other-Key"));
        exchange(&mut p);
        let seen: Vec<_> = exchanges
            .snapshot()
            .iter()
            .map(|e| (e.auth_scheme, e.api_key_header.clone()))
            .collect();
        assert_eq!(
            seen,
            [
                (AuthScheme::Apikey, Some("x-shop-key".to_string())),
                (AuthScheme::None, None)
            ]
        );
        // A policy parsed elsewhere (as `apiwatch check` does) changes no other parser.
        let plain = Pipeline::new(&AgentOptions::default(), Box::new(Discard), None);
        assert_eq!(plain.table.http_options(), &crate::http::HttpOptions::default());

        // The recorder's redaction follows the same options.
        let mut chunk = CaptureEvent::Data(DataChunk {
            ts_ns: T0,
            id,
            direction: Direction::Ingress,
            total_len: 0,
            bytes: bytes::BytesMut::from(&b"GET /cart HTTP/1.1\r\nX-Shop-Key: shopkey-VALUE-123\r\n\r\n"[..]),
            tls: false,
        });
        Redactor::new(with_key("X-Shop-Key").http_options()).redact(&mut chunk);
        let CaptureEvent::Data(d) = &chunk else {
            unreachable!()
        };
        assert!(!String::from_utf8_lossy(&d.bytes).contains("shopkey-VALUE"));
    }
}
