//! The stages above capture, driven event by event (reassembly, enrich, boundary, baselines,
//! alerts, metrics, sinks), for a live capture and for a replay; and the `--pid` filter.
use std::io::BufRead;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use super::{AgentOptions, Summary, http_options};
use crate::alert::AlertEngine;
use crate::audit::AuditLog;
use crate::baseline::live::Baselines;
use crate::boundary::{Evaluator, Policy};
use crate::capture::CaptureEvent;
use crate::enrich::RouteTable;
use crate::finding::Finding;
use crate::metrics::Metrics;
use crate::output::{ExchangeSink, FindingSink};
use crate::record::{RecordError, RecordReader};
use crate::stats::PipelineStats;
use crate::stream::{ConnTable, StreamConfig};

/// The stages above capture, driven event by event: reassembly, enrich, metrics, sink.
pub struct Pipeline {
    /// Visible to the agent's tests (the HTTP options a policy sets).
    pub(super) table: ConnTable,
    routes: RouteTable,
    metrics: Option<Arc<Metrics>>,
    pub stats: PipelineStats,
    sink: Box<dyn ExchangeSink>,
    evaluator: Option<Evaluator>,
    baselines: Option<Baselines>,
    baselines_saved_ns: u64,
    baselines_save: crate::state::SaveHealth,
    /// Event time: the latest capture timestamp processed, and whether any event came since the
    /// last tick (see `baseline_clock`).
    event_clock_ns: u64,
    events_since_tick: bool,
    alerts: Option<AlertEngine>,
    finding_sink: Option<Box<dyn FindingSink>>,
    findings: Vec<Finding>,
    pub pid_filter: PidFilter,
    scratch: Vec<crate::exchange::Exchange>,
    /// Body hints to the live capture (none in a replay).
    hints: Option<SyncSender<Vec<crate::capture::BodyHint>>>,
    audit: Option<AuditLog>,
}

impl Pipeline {
    pub fn new(
        opts: &AgentOptions,
        sink: Box<dyn ExchangeSink>,
        finding_sink: Option<Box<dyn FindingSink>>,
    ) -> Self {
        Self {
            table: ConnTable::new(StreamConfig {
                http: http_options(opts.policy.as_deref()),
                ..opts.stream.clone()
            }),
            routes: RouteTable::new(opts.routes.max_services, opts.routes.max_routes_per_service),
            metrics: opts.metrics.clone(),
            stats: PipelineStats::default(),
            sink,
            // Without a policy the built-in detectors still run (secrets and PII in URLs, JWTs).
            evaluator: Some(Evaluator::new(opts.policy.clone().unwrap_or_default())),
            finding_sink,
            baselines: opts.baselines.clone().map(Baselines::new),
            baselines_saved_ns: 0,
            baselines_save: Default::default(),
            event_clock_ns: 0,
            events_since_tick: false,
            alerts: opts.alerts.clone().map(|(o, sinks)| {
                let m = opts
                    .metrics
                    .as_ref()
                    .map(|m| m.alerts.clone())
                    .unwrap_or_default();
                AlertEngine::new(o, sinks, m)
            }),
            findings: Vec::new(),
            pid_filter: PidFilter::new(&opts.pids),
            scratch: Vec::new(),
            hints: None,
            audit: None,
        }
    }

    /// Server-side exchanges also go to the audit trail.
    pub fn set_audit(&mut self, audit: AuditLog) {
        self.audit = Some(audit);
    }

    /// Sends body hints to the live capture after each batch.
    pub fn send_hints(&mut self, to: SyncSender<Vec<crate::capture::BodyHint>>) {
        self.table.enable_body_hints();
        self.hints = Some(to);
    }

    pub fn process(&mut self, ev: CaptureEvent) {
        self.event_clock_ns = self.event_clock_ns.max(ev.ts_ns());
        self.events_since_tick = true;
        if !self.pid_filter.admits(&ev) {
            return;
        }
        self.table.process(ev, &mut self.stats, &mut self.scratch);
        self.emit();
    }

    /// `kernel_dropped`: events the probes could not deliver so far.
    pub fn tick(&mut self, now_ns: u64, kernel_dropped: u64) {
        self.table.expire(now_ns, &mut self.stats, &mut self.scratch);
        self.emit();
        let baseline_now = self.baseline_clock(now_ns);
        self.baseline_tick(baseline_now);
        if let Some(a) = &mut self.alerts {
            a.check_audit(now_ns, self.audit.as_ref().and_then(|l| l.health.failing_since()));
            a.tick(now_ns, kernel_dropped + self.stats.pending_overflow);
            a.flush();
        }
        self.sink.flush();
    }

    pub fn finish(&mut self, now_ns: u64) {
        self.table.flush(now_ns, &mut self.stats, &mut self.scratch);
        self.emit();
        if let Some(b) = &mut self.baselines {
            // Windows that ended before the last event are complete: judge them before
            // stopping. Later ones are not (silence after the last event is not a drop to zero).
            b.advance(self.event_clock_ns, &mut self.findings);
        }
        self.emit_findings();
        if let Some(audit) = &mut self.audit {
            audit.finish();
        }
        if let Some(b) = &self.baselines {
            self.baselines_save
                .record("the baselines (baselines.json)", b.save());
        }
        if let Some(a) = &mut self.alerts {
            a.flush();
            a.save_counted();
        }
        self.sink.flush();
        if let Some(f) = &mut self.finding_sink {
            f.flush();
        }
        self.refresh_stats();
    }

    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.table.set_http_options(policy.http_options());
        match &mut self.evaluator {
            Some(e) => e.set_policy(policy),
            None => self.evaluator = Some(Evaluator::new(policy)),
        }
    }

    /// After a batch: flush the sinks, bring the metrics' counters up to date.
    pub fn end_batch(&mut self) {
        self.refresh_stats();
        if let Some(audit) = &mut self.audit {
            audit.end_batch();
        }
        if let Some(tx) = &self.hints {
            let hints = self.table.take_hints();
            if !hints.is_empty() {
                // Never wait on the capture: a hint not taken only costs a copy.
                let _ = tx.try_send(hints);
            }
        }
        if let Some(a) = &mut self.alerts {
            a.flush(); // one fsync per sink for the alerts this batch raised
        }
        self.sink.flush();
        if let Some(f) = &mut self.finding_sink {
            f.flush();
        }
        if let Some(m) = &self.metrics {
            m.update_pipeline(&self.stats, self.routes.routes_folded);
        }
    }

    /// Counters kept by the stages themselves, into the pipeline's.
    fn refresh_stats(&mut self) {
        self.stats.output_write_errors =
            self.sink.write_errors() + self.finding_sink.as_ref().map_or(0, |f| f.write_errors());
        self.stats.services_folded = self.routes.services_folded;
        self.stats.baseline_series_refused = self.baselines.as_ref().map_or(0, |b| b.series_refused);
        self.stats.state_write_errors.baselines = self.baselines_save.errors;
        self.stats.state_write_errors.firing_alerts =
            self.alerts.as_ref().map_or(0, |a| a.save_health.errors);
    }

    fn emit(&mut self) {
        let mut scratch = std::mem::take(&mut self.scratch);
        for mut ex in scratch.drain(..) {
            self.routes.enrich(&mut ex);
            if let Some(m) = &self.metrics {
                m.observe(&ex);
            }
            let raised = self.findings.len();
            let sensitive = match &mut self.evaluator {
                Some(eval) => eval.evaluate(&ex, &mut self.findings),
                None => false,
            };
            if let Some(audit) = &mut self.audit {
                let zones = match (&self.evaluator, ex.peer) {
                    (Some(eval), Some(peer)) => eval.zones_of(peer.ip()),
                    _ => Vec::new(),
                };
                let kinds = self.findings[raised..].iter().map(|f| f.kind.as_str()).collect();
                audit.record(&ex, zones, kinds);
            }
            if let Some(b) = &mut self.baselines {
                b.observe(&ex, sensitive, &mut self.findings);
            }
            self.sink.write(&ex);
            self.emit_findings();
        }
        self.scratch = scratch;
    }

    /// Boundary and baseline findings go the same way: counted, into metrics, to the sink.
    fn emit_findings(&mut self) {
        for f in self.findings.drain(..) {
            self.stats.findings += 1;
            if let Some(m) = &self.metrics {
                m.observe_finding(&f);
            }
            if let Some(sink) = &mut self.finding_sink {
                sink.write(&f);
            }
            if let Some(a) = &mut self.alerts {
                a.on_finding(&f);
            }
        }
    }

    /// The time up to which the baselines' windows may close at a tick. Windows hold exchanges by
    /// their own timestamps, so they close on event time: while events are flowing, the latest
    /// one processed (a pipeline working through a backlog must not close a window before its
    /// exchanges arrive: a burst would land in the window after it, or in none at a stop). A
    /// tick with no event since the last one means the capture is idle and caught up: the wall
    /// clock, less the ring's drain delay, moves the windows on, so silence is seen too.
    fn baseline_clock(&mut self, now_ns: u64) -> u64 {
        let busy = std::mem::take(&mut self.events_since_tick);
        if busy {
            self.event_clock_ns
        } else {
            now_ns.saturating_sub(IDLE_CLOCK_LAG_NS)
        }
    }

    /// Baselines move on with the clock (a series that goes silent is seen) and are saved
    /// every minute.
    fn baseline_tick(&mut self, now_ns: u64) {
        let Some(b) = &mut self.baselines else { return };
        b.advance(now_ns, &mut self.findings);
        if now_ns.saturating_sub(self.baselines_saved_ns) >= 60_000_000_000 {
            self.baselines_saved_ns = now_ns;
            self.baselines_save
                .record("the baselines (baselines.json)", b.save());
        }
        self.emit_findings();
    }
}

/// How far behind the wall clock an idle capture may still deliver events (the ring is drained on
/// a timer, and kernel timestamps are converted to wall time with an offset taken at start).
const IDLE_CLOCK_LAG_NS: u64 = 2_000_000_000;

/// The `--pid` filter: events of the other processes are dropped, and counted.
#[derive(Clone, Debug, Default)]
pub struct PidFilter {
    /// Empty: every process.
    pids: Vec<u32>,
    pub filtered: u64,
}

impl PidFilter {
    pub fn new(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            filtered: 0,
        }
    }

    /// Whether `ev` passes; counted when it does not.
    pub fn admits(&mut self, ev: &CaptureEvent) -> bool {
        let tgid = match ev {
            CaptureEvent::Open(o) => o.id.tgid,
            CaptureEvent::Data(d) => d.id.tgid,
            CaptureEvent::Close { id, .. } | CaptureEvent::Tls { id, .. } => id.tgid,
            CaptureEvent::ProcessExit { tgid, .. } => *tgid,
            CaptureEvent::Process(p) => p.tgid,
        };
        let pass = self.pids.is_empty() || self.pids.contains(&tgid);
        if !pass {
            self.filtered += 1;
        }
        pass
    }
}

/// Runs the pipeline over a recording; returns the summary.
pub fn replay<R: BufRead>(
    input: R,
    opts: &AgentOptions,
    sink: Box<dyn ExchangeSink>,
    findings: Option<Box<dyn FindingSink>>,
) -> Result<Summary, RecordError> {
    let start = Instant::now();
    let mut reader = RecordReader::new(input)?;
    let mut pipeline = Pipeline::new(opts, sink, findings);
    let mut last_ts = 0;
    while let Some(ev) = reader.next_event()? {
        last_ts = ev.ts_ns();
        pipeline.process(ev);
    }
    if reader.truncated_tail {
        log::warn!("the recording ends inside a record (written during a crash?); the rest was ignored");
    }
    pipeline.finish(last_ts);
    Ok(Summary {
        seconds: start.elapsed().as_secs_f64(),
        pipeline: pipeline.stats.clone(),
        filtered_events: pipeline.pid_filter.filtered,
        ..Summary::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One filter for the pipeline and for recordings: what it drops, it counts.
    #[test]
    fn the_pid_filter_passes_its_processes_and_counts_the_rest() {
        let exit = |tgid| CaptureEvent::ProcessExit { ts_ns: 1, tgid };
        let mut all = PidFilter::new(&[]);
        assert!(all.admits(&exit(7)) && all.filtered == 0);
        let mut some = PidFilter::new(&[7, 9]);
        assert!(some.admits(&exit(7)) && some.admits(&exit(9)));
        assert!(!some.admits(&exit(8)) && !some.admits(&exit(10)));
        assert_eq!(some.filtered, 2);
    }
}
