//! Where exchanges go: JSON lines to a writer, or a shared vector (tests, embedding).
use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::exchange::{ConnectionTexts, Exchange};
use crate::finding::Finding;

/// Where records of one kind go.
pub trait Sink<T>: Send {
    fn write(&mut self, record: &T);
    fn flush(&mut self) {}
    /// Records or flushes that failed so far (a full disk, a closed pipe).
    fn write_errors(&self) -> u64 {
        0
    }
}

pub trait ExchangeSink: Sink<Exchange> {}
impl<S: Sink<Exchange>> ExchangeSink for S {}
pub trait FindingSink: Sink<Finding> {}
impl<S: Sink<Finding>> FindingSink for S {}

/// A record that is written as one JSON line, straight into the sink's line buffer (no String
/// per record).
pub trait JsonLine: serde::Serialize {
    /// The line, with what recent lines of the same connection already wrote at hand (only
    /// exchanges use it).
    fn write_json_with(&self, out: &mut Vec<u8>, _texts: &mut ConnectionTexts) {
        self.write_json(out);
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        // These records always serialize (string keys only); were one not to, an empty object
        // stands in rather than half a line.
        let start = out.len();
        if serde_json::to_writer(&mut *out, self).is_err() {
            out.truncate(start);
            out.extend_from_slice(b"{}");
        }
    }
}

/// By hand (Exchange::write_json): one per exchange, the agent's main output.
impl JsonLine for Exchange {
    fn write_json(&self, out: &mut Vec<u8>) {
        Exchange::write_json(self, out);
    }
    fn write_json_with(&self, out: &mut Vec<u8>, texts: &mut ConnectionTexts) {
        Exchange::write_json_with(self, out, Some(texts));
    }
}
impl JsonLine for Finding {}

/// One JSON object per line. Write errors (a full disk, a closed pipe) are counted and the
/// first is logged with its cause; never fatal (the metrics and alerts go on).
pub struct JsonLines<W: Write + Send> {
    out: W,
    /// One record's line, reused.
    line: Vec<u8>,
    texts: ConnectionTexts,
    pub write_errors: u64,
}

impl<W: Write + Send> JsonLines<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            line: Vec::with_capacity(1024),
            texts: ConnectionTexts::default(),
            write_errors: 0,
        }
    }

    fn failed(&mut self, e: std::io::Error) {
        if self.write_errors == 0 {
            log::error!(
                "cannot write JSON lines ({e}): they are lost until the output takes them again \
                 (counted in apiwatch_output_write_errors_total)"
            );
        }
        self.write_errors += 1;
    }
}

impl<T: JsonLine, W: Write + Send> Sink<T> for JsonLines<W> {
    fn write(&mut self, record: &T) {
        self.line.clear();
        record.write_json_with(&mut self.line, &mut self.texts);
        self.line.push(b'\n');
        if let Err(e) = self.out.write_all(&self.line) {
            self.failed(e);
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.failed(e);
        }
    }

    fn write_errors(&self) -> u64 {
        self.write_errors
    }
}

/// Drops every record unseen (`--exchanges off`).
pub struct Discard;

impl<T> Sink<T> for Discard {
    fn write(&mut self, _: &T) {}
}

/// Collects records in memory, for tests and for callers embedding the pipeline.
pub struct SharedVec<T = Exchange>(pub Arc<Mutex<Vec<T>>>);

impl<T> Default for SharedVec<T> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Vec::new())))
    }
}

impl<T> Clone for SharedVec<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Clone> SharedVec<T> {
    pub fn snapshot(&self) -> Vec<T> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl<T: Clone + Send> Sink<T> for SharedVec<T> {
    fn write(&mut self, record: &T) {
        if let Ok(mut v) = self.0.lock() {
            v.push(record.clone());
        }
    }
}

/// A sink shared with its owner, who reads it back after the pipeline is done.
pub struct Shared<S>(pub Arc<Mutex<S>>);

impl<T, S: Sink<T> + Send> Sink<T> for Shared<S> {
    fn write(&mut self, record: &T) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .write(record);
    }

    fn flush(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .flush();
    }

    fn write_errors(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .write_errors()
    }
}
