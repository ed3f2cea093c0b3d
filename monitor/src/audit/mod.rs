//! The audit trail: who accessed what, when. One minimised record per server-side exchange
//! (no secret, no body, no query, the route template rather than the path unless configured),
//! hash-chained, in rotated, compressed segments kept for a set time and size (see
//! `segment.rs` for the format and docs/audit.md for the guarantees).
//!
//! The pipeline never waits on the disk: records go in batches through a bounded queue to a
//! writer thread (a full queue drops the batch, counted, and the trail says so with a `gap`
//! line). The writer commits one group per wake-up (one fdatasync); when the disk fails it
//! keeps up to `max_pending` records in memory, retries every second, and raises
//! ApiwatchAuditWriteFailing until a write succeeds again.
pub mod segment;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::Serialize;

use crate::capture::Role;
use crate::clock::unix_now_ns;
use crate::exchange::Exchange;
use crate::http::AuthScheme;
use segment::{Item, SegmentWriter};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditOptions {
    pub dir: PathBuf,
    /// Record the request path (never the query) besides the route template.
    pub include_paths: bool,
    pub segment_max_bytes: u64,
    pub segment_max_age_secs: u64,
    pub retention_max_age_secs: u64,
    pub retention_max_bytes: u64,
    /// Records held in memory while the disk refuses writes; beyond, the oldest are dropped
    /// (counted, and a `gap` line says how many once writes work again).
    pub max_pending: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/apiwatch/audit"),
            include_paths: false,
            segment_max_bytes: 64 << 20,
            segment_max_age_secs: 3600,
            retention_max_age_secs: 90 * 86_400,
            retention_max_bytes: 4 << 30,
            max_pending: 100_000,
        }
    }
}

/// One exchange in the trail. Minimised: what answers "who accessed what, when, and was it
/// allowed", nothing that could be a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    #[serde(serialize_with = "crate::exchange::rfc3339")]
    pub ts: u64,
    pub service: String,
    pub route: String,
    pub method: String,
    /// Only with `include_paths`, and never where a URL detector saw a secret or personal data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub status: Option<u16>,
    pub source: Option<String>,
    pub zones: Vec<String>,
    /// The credential's keyed fingerprint, never the credential.
    pub identity: Option<String>,
    pub auth: AuthScheme,
    pub tls: bool,
    pub latency_us: Option<u64>,
    /// Kinds of the boundary findings this exchange raised.
    pub findings: Vec<&'static str>,
}

impl AuditRecord {
    pub fn new(ex: &Exchange, zones: Vec<String>, findings: Vec<&'static str>, include_paths: bool) -> Self {
        Self {
            ts: ex.ts,
            service: ex.service.to_string(),
            route: ex.route.to_string(),
            method: ex.method.clone(),
            path: (include_paths && ex.url_detectors.is_empty()).then(|| ex.path.clone()),
            status: ex.status,
            source: ex.peer.map(|p| p.ip().to_string()),
            zones,
            identity: ex.fingerprint.clone(),
            auth: ex.auth_scheme,
            tls: ex.tls,
            latency_us: ex.latency_us,
            findings,
        }
    }
}

/// Handles shared by the pipeline and the writer thread; registered on /metrics when there is
/// a registry.
#[derive(Clone)]
pub struct AuditMetrics {
    pub records: IntCounter,
    pub dropped: IntCounterVec,
    pub write_errors: IntCounter,
    pub failing: IntGauge,
    pub bytes: IntGauge,
    pub segments: IntGauge,
    pub segments_deleted: IntCounter,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        Self::new(None)
    }
}

impl AuditMetrics {
    pub fn new(registry: Option<&Registry>) -> Self {
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: Option<&Registry>, m: T) -> T {
            if let Some(r) = r {
                r.register(Box::new(m.clone())).expect("unique metric name");
            }
            m
        }
        let counter =
            |name: &str, help: &str| reg(registry, IntCounter::new(name, help).expect("valid metric"));
        let gauge = |name: &str, help: &str| reg(registry, IntGauge::new(name, help).expect("valid metric"));
        let m = Self {
            records: counter(
                "apiwatch_audit_records_total",
                "Exchanges written (durably) to the audit trail.",
            ),
            dropped: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "apiwatch_audit_records_dropped_total",
                        "Audit records lost before reaching the disk, by reason (queue_full: the writer fell behind; disk: the disk refused writes longer than the memory bound).",
                    ),
                    &["reason"],
                )
                .expect("valid metric"),
            ),
            write_errors: counter(
                "apiwatch_audit_write_errors_total",
                "Audit group writes that failed (a full or read-only disk); the records are kept and retried.",
            ),
            failing: gauge(
                "apiwatch_audit_write_failing",
                "1 while the audit trail cannot be written.",
            ),
            bytes: gauge("apiwatch_audit_bytes", "Bytes of audit segments on disk."),
            segments: gauge("apiwatch_audit_segments", "Audit segments on disk."),
            segments_deleted: counter(
                "apiwatch_audit_segments_deleted_total",
                "Audit segments deleted by the retention policy (each recorded in the trail).",
            ),
        };
        // Both reasons exported from the start, at 0: a rule on them has a series to watch.
        for reason in ["queue_full", "disk"] {
            m.dropped.with_label_values(&[reason]);
        }
        m
    }
}

/// What the writer tells the pipeline (for the ApiwatchAuditWriteFailing self-alert).
#[derive(Default)]
pub struct AuditHealth {
    /// Unix ns of the first failed write of the current failure; 0 while writes succeed.
    failing_since_ns: AtomicU64,
    /// Records dropped because the queue was full, not yet reported by a `gap` line.
    queue_dropped: AtomicU64,
}

impl AuditHealth {
    pub fn failing_since(&self) -> Option<u64> {
        match self.failing_since_ns.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }
}

/// Batches between the pipeline and the writer: at 1,024 records a batch, ~256k records of
/// slack (about one second at the bench's saturation rates) before anything is dropped.
const QUEUE_BATCHES: usize = 256;

/// The pipeline's end of the trail.
pub struct AuditLog {
    tx: Option<SyncSender<Vec<AuditRecord>>>,
    batch: Vec<AuditRecord>,
    include_paths: bool,
    pub health: Arc<AuditHealth>,
    metrics: AuditMetrics,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl AuditLog {
    /// Opens the trail (checking the open segment, cutting a crash's torn tail) and starts the
    /// writer thread.
    pub fn start(opts: AuditOptions, metrics: AuditMetrics) -> std::io::Result<Self> {
        let writer = SegmentWriter::open(&opts, unix_now_ns())?;
        if writer.torn_bytes > 0 {
            log::warn!(
                "audit: {} bytes a crash left unverifiable at the end of segment {} were cut off",
                writer.torn_bytes,
                writer.segment()
            );
        }
        let (tx, rx) = sync_channel(QUEUE_BATCHES);
        let health = Arc::new(AuditHealth::default());
        let h = health.clone();
        let m = metrics.clone();
        let max_pending = opts.max_pending;
        let thread = std::thread::Builder::new()
            .name("apiwatch-audit".into())
            .spawn(move || write_loop(writer, rx, h, m, max_pending))?;
        Ok(Self {
            tx: Some(tx),
            batch: Vec::new(),
            include_paths: opts.include_paths,
            health,
            metrics,
            writer: Some(thread),
        })
    }

    /// Adds one exchange (server side only: the trail is who accessed this host's APIs).
    pub fn record(&mut self, ex: &Exchange, zones: Vec<String>, findings: Vec<&'static str>) {
        if ex.role != Role::Server {
            return;
        }
        self.batch
            .push(AuditRecord::new(ex, zones, findings, self.include_paths));
    }

    /// Hands the batch to the writer without waiting: a full queue drops it, counted.
    pub fn end_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let Some(tx) = &self.tx else { return };
        match tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => {
                let n = b.len() as u64;
                self.health.queue_dropped.fetch_add(n, Ordering::Relaxed);
                self.metrics.dropped.with_label_values(&["queue_full"]).inc_by(n);
            }
        }
    }

    /// Writes what is left and waits for the writer (at a stop: nothing accepted is lost).
    pub fn finish(&mut self) {
        if !self.batch.is_empty() {
            if let Some(tx) = &self.tx {
                let _ = tx.send(std::mem::take(&mut self.batch));
            }
        }
        self.tx = None;
        if let Some(t) = self.writer.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The writer thread: one group commit per wake-up, maintenance (rotation, retention) after.
fn write_loop(
    mut w: SegmentWriter,
    rx: Receiver<Vec<AuditRecord>>,
    health: Arc<AuditHealth>,
    m: AuditMetrics,
    max_pending: usize,
) {
    // Only exchanges wait here; losses not yet written into the trail are counted apart and
    // go in front of the next group that is written.
    let mut pending: std::collections::VecDeque<Item> = std::collections::VecDeque::new();
    let (mut queue_lost, mut disk_lost) = (0u64, 0u64);
    let mut open = true;
    let mut last_warn_ns = 0u64;
    let (mut last_attempt_ns, mut last_maintain_ns) = (0u64, 0u64);
    let (bytes, segments) = w.disk_usage();
    m.bytes.set(bytes as i64);
    m.segments.set(segments as i64);
    while open || !pending.is_empty() || queue_lost + disk_lost > 0 {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(b) => pending.extend(b.into_iter().map(Item::Exchange)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        while let Ok(b) = rx.try_recv() {
            pending.extend(b.into_iter().map(Item::Exchange));
        }
        // Bounded while the disk refuses writes: the oldest go first.
        while pending.len() > max_pending {
            pending.pop_front();
            disk_lost += 1;
            m.dropped.with_label_values(&["disk"]).inc();
        }
        queue_lost += health.queue_dropped.swap(0, Ordering::Relaxed);
        let now = unix_now_ns();
        // While the disk refuses writes, one attempt a second (and a last one at the stop).
        let retry_wait =
            health.failing_since().is_some() && open && now.saturating_sub(last_attempt_ns) < 1_000_000_000;
        if (!pending.is_empty() || queue_lost + disk_lost > 0) && !retry_wait {
            last_attempt_ns = now;
            // Losses go into the trail itself, before what follows them.
            let mut gaps = 0;
            for (dropped, reason) in [(queue_lost, "queue_full"), (disk_lost, "disk")] {
                if dropped > 0 {
                    pending.push_front(Item::Gap { dropped, reason });
                    gaps += 1;
                }
            }
            let before = w.counts.records;
            match w.append(pending.make_contiguous(), now) {
                Ok(()) => {
                    pending.clear();
                    (queue_lost, disk_lost) = (0, 0);
                    m.records.inc_by(w.counts.records - before);
                    if health.failing_since_ns.swap(0, Ordering::Relaxed) != 0 {
                        log::info!("audit: writing again");
                    }
                    m.failing.set(0);
                }
                Err(e) => {
                    pending.drain(..gaps);
                    m.write_errors.inc();
                    m.failing.set(1);
                    let _ = health.failing_since_ns.compare_exchange(
                        0,
                        now,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    if now.saturating_sub(last_warn_ns) >= 60_000_000_000 {
                        last_warn_ns = now;
                        log::warn!(
                            "audit: cannot write to {} ({e}); {} records held in memory, retried every second",
                            w.dir().display(),
                            pending.len()
                        );
                    }
                    if !open {
                        // Stopping with the disk still refusing: say what is lost.
                        log::error!(
                            "audit: {} records could not be written before the stop",
                            pending.len()
                        );
                        m.dropped
                            .with_label_values(&["disk"])
                            .inc_by(pending.len() as u64);
                        return;
                    }
                    continue;
                }
            }
        }
        if now.saturating_sub(last_maintain_ns) < 1_000_000_000 && open {
            continue;
        }
        last_maintain_ns = now;
        let deleted_before = w.counts.segments_deleted;
        if let Err(e) = w.maintain(now) {
            m.write_errors.inc();
            log::warn!("audit: rotation or retention failed ({e}); retried later");
        }
        m.segments_deleted
            .inc_by(w.counts.segments_deleted - deleted_before);
        let (bytes, segments) = w.disk_usage();
        m.bytes.set(bytes as i64);
        m.segments.set(segments as i64);
    }
}

/// Records written per second through the real segment writer in `dir` (one core, groups of
/// 1,024 with an fdatasync each, rotation and compression included): (records, seconds,
/// bytes on disk at the end).
pub fn bench(dir: &std::path::Path, records: u64) -> std::io::Result<(u64, f64, u64)> {
    let _ = std::fs::remove_dir_all(dir);
    let opts = AuditOptions {
        dir: dir.to_path_buf(),
        ..AuditOptions::default()
    };
    let mut w = SegmentWriter::open(&opts, unix_now_ns())?;
    let mut ex = Exchange::example();
    ex.service = "nginx:8080".into();
    ex.route = "/users/{id}".into();
    let start = std::time::Instant::now();
    let mut group = Vec::with_capacity(1024);
    let mut n = 0;
    while n < records {
        group.clear();
        for _ in 0..1024.min(records - n) {
            ex.ts += 1000;
            group.push(Item::Exchange(AuditRecord::new(
                &ex,
                vec!["internal".into()],
                vec![],
                false,
            )));
        }
        n += group.len() as u64;
        w.append(&group, ex.ts)?;
        w.maintain(ex.ts)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let (bytes, _) = w.disk_usage();
    drop(w);
    let _ = std::fs::remove_dir_all(dir);
    Ok((n, secs, bytes))
}

#[cfg(test)]
mod tests;
