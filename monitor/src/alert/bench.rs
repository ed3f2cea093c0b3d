//! The alert engine's benchmark (`cargo xtask bench`), apart from the engine it measures.
use std::sync::{Arc, Mutex};

use super::{AlertEngine, AlertMetrics, AlertOptions, Route, SinkHealth, SinkQueue, Spool};
use crate::finding::{Finding, Severity};

/// Alert engine throughput (for `cargo xtask bench`), one core, a real spool in `dir`:
/// repeats of a firing alert (the hot path when every request breaks one rule), and new alerts
/// with the pipeline's group commit (a flush per `per_flush` alerts) against an fsync per alert.
/// Returns (repeats/s, grouped alerts/s, fsync-each alerts/s).
pub fn bench(dir: &std::path::Path, repeats: usize, alerts: usize, per_flush: usize) -> (f64, f64, f64) {
    let finding = |i: usize| Finding {
        record: "finding",
        ts: 1_800_000_000_000_000_000 + i as u64,
        kind: crate::finding::FindingKind::SourceOutsideBoundary,
        rule: "shop".into(),
        severity: Severity::Critical,
        service: "nginx:8080".into(),
        route: format!("/api/r{}", i % alerts.max(1)),
        method: "GET".into(),
        source: Some("192.0.2.1".into()),
        source_zones: vec!["internet".into()],
        identity: Some("0123456789ab".into()),
        pid: 1,
        comm: "nginx".into(),
        evidence: "source 192.0.2.1 (internet) is not in corp".into(),
        state: None,
    };
    let engine = |tag: &str| {
        let _ = std::fs::remove_dir_all(dir.join(tag));
        let spool = Spool::open(&dir.join(tag).join("bench.spool"), alerts + 16).expect("bench spool");
        let q = SinkQueue {
            name: "bench".into(),
            route: Route::default(),
            resend: false,
            spool: Arc::new(Mutex::new(spool)),
            health: Arc::new(SinkHealth::default()),
        };
        AlertEngine::new(AlertOptions::default(), vec![q], AlertMetrics::default())
    };
    let mut e = engine("repeats");
    e.on_finding(&finding(0));
    let one = finding(0);
    let start = std::time::Instant::now();
    for _ in 0..repeats {
        e.on_finding(&one);
    }
    let repeats_per_sec = repeats as f64 / start.elapsed().as_secs_f64();
    let timed = |tag: &str, per_flush: usize| {
        let mut e = engine(tag);
        let start = std::time::Instant::now();
        for i in 0..alerts {
            e.on_finding(&finding(i));
            if (i + 1) % per_flush == 0 {
                e.flush();
            }
        }
        e.flush();
        alerts as f64 / start.elapsed().as_secs_f64()
    };
    let grouped = timed("grouped", per_flush.max(1));
    let each = timed("each", 1);
    let _ = std::fs::remove_dir_all(dir);
    (repeats_per_sec, grouped, each)
}
