//! Wiring of the stages: kernel capture -> (bounded channel) -> reassembly -> sinks; or a
//! recording file -> the same reassembly (replay); or capture -> redaction -> a recording file.
use std::io::BufRead;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::capture::CaptureEvent;
use crate::capture::kernel::{CaptureError, KernelCapture, KernelConfig, KernelStats, unix_now_ns};
use crate::output::ExchangeSink;
use crate::record::{RecordError, RecordReader, RecordWriter};
use crate::redact::Redactor;
use crate::stats::PipelineStats;
use crate::stream::{ConnTable, StreamConfig};

/// Batches in flight between capture and the pipeline; when full, capture stops draining the
/// ring and the kernel counts what it cannot write (`ring_full`), so nothing is lost unseen.
const CHANNEL_BATCHES: usize = 64;
const BATCH_EVENTS: usize = 1024;

#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    pub kernel: KernelConfig,
    pub stream: StreamConfig,
    /// Only these processes (tgids); empty means all.
    pub pids: Vec<u32>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub seconds: f64,
    pub pipeline: PipelineStats,
    pub kernel: Option<KernelStats>,
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
    /// Wall-clock time, so idle connections expire when no events come.
    Tick(u64),
}

/// What consumes capture events on the pipeline thread.
pub enum Consumer {
    Exchanges(Box<dyn ExchangeSink>),
    Record(RecordWriter<Box<dyn std::io::Write + Send>>),
}

/// The reassembly stage and its sink, driven event by event.
pub struct Pipeline {
    table: ConnTable,
    pub stats: PipelineStats,
    sink: Box<dyn ExchangeSink>,
    pids: Vec<u32>,
    pub filtered_events: u64,
    scratch: Vec<crate::exchange::Exchange>,
}

impl Pipeline {
    pub fn new(stream: StreamConfig, sink: Box<dyn ExchangeSink>, pids: Vec<u32>) -> Self {
        Self {
            table: ConnTable::new(stream),
            stats: PipelineStats::default(),
            sink,
            pids,
            filtered_events: 0,
            scratch: Vec::new(),
        }
    }

    pub fn process(&mut self, ev: CaptureEvent) {
        if !self.pids.is_empty() && !self.pids.contains(&event_tgid(&ev)) {
            self.filtered_events += 1;
            return;
        }
        self.table.process(ev, &mut self.stats, &mut self.scratch);
        self.emit();
    }

    pub fn tick(&mut self, now_ns: u64) {
        self.table.expire(now_ns, &mut self.stats, &mut self.scratch);
        self.emit();
        self.sink.flush();
    }

    pub fn finish(&mut self, now_ns: u64) {
        self.table.flush(now_ns, &mut self.stats, &mut self.scratch);
        self.emit();
        self.sink.flush();
    }

    pub fn flush_sink(&mut self) {
        self.sink.flush();
    }

    fn emit(&mut self) {
        for ex in self.scratch.drain(..) {
            self.sink.write(&ex);
        }
    }
}

fn event_tgid(ev: &CaptureEvent) -> u32 {
    match ev {
        CaptureEvent::Open(o) => o.id.tgid,
        CaptureEvent::Data(d) => d.id.tgid,
        CaptureEvent::Close { id, .. } => id.tgid,
    }
}

/// Runs the pipeline over a recording; returns the summary.
pub fn replay<R: BufRead>(
    input: R,
    opts: &AgentOptions,
    sink: Box<dyn ExchangeSink>,
) -> Result<Summary, RecordError> {
    let start = Instant::now();
    let mut reader = RecordReader::new(input)?;
    let mut pipeline = Pipeline::new(opts.stream.clone(), sink, opts.pids.clone());
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
        filtered_events: pipeline.filtered_events,
        ..Summary::default()
    })
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
    let (mut capture, seeded) = match KernelCapture::start(&opts.kernel) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return Err(e);
        }
    };
    let (tx, rx) = sync_channel::<Msg>(CHANNEL_BATCHES);
    let pids = opts.pids.clone();
    let stream = opts.stream.clone();
    let worker = std::thread::Builder::new()
        .name("apiwatch-pipeline".into())
        .spawn(move || consume(rx, consumer, stream, pids))?;
    if !seeded.is_empty() {
        let _ = tx.send(Msg::Events(seeded));
    }
    let _ = ready.send(Ok(()));

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut batch = Vec::with_capacity(BATCH_EVENTS);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            r = capture.next_batch(&mut batch, BATCH_EVENTS) => {
                r?;
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_EVENTS));
                // Blocking send is the backpressure: while the pipeline is behind, the ring fills.
                if tx.send(Msg::Events(full)).is_err() {
                    break;
                }
            }
            _ = tick.tick() => {
                let _ = tx.send(Msg::Tick(unix_now_ns()));
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
    let (pipeline, filtered) = worker.join().unwrap_or_default();
    Ok(Summary {
        seconds: start.elapsed().as_secs_f64(),
        pipeline,
        kernel: Some(capture.kernel_stats()),
        ring_decode_errors: capture.decode_errors,
        filtered_events: filtered,
    })
}

fn consume(
    rx: Receiver<Msg>,
    consumer: Consumer,
    stream: StreamConfig,
    pids: Vec<u32>,
) -> (PipelineStats, u64) {
    match consumer {
        Consumer::Exchanges(sink) => {
            let mut p = Pipeline::new(stream, sink, pids);
            while let Ok(msg) = rx.recv() {
                match msg {
                    Msg::Events(batch) => {
                        for ev in batch {
                            p.process(ev);
                        }
                        p.flush_sink();
                    }
                    Msg::Tick(now) => p.tick(now),
                }
            }
            p.finish(unix_now_ns());
            (p.stats.clone(), p.filtered_events)
        }
        Consumer::Record(mut writer) => {
            let mut redactor = Redactor::default();
            let mut stats = PipelineStats::default();
            let mut filtered = 0;
            while let Ok(msg) = rx.recv() {
                if let Msg::Events(batch) = msg {
                    for mut ev in batch {
                        if !pids.is_empty() && !pids.contains(&event_tgid(&ev)) {
                            filtered += 1;
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
            (stats, filtered)
        }
    }
}
