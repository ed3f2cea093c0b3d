//! Where exchanges go: JSON lines to a writer, or a shared vector (tests, embedding).
use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::exchange::Exchange;

pub trait ExchangeSink: Send {
    fn write(&mut self, ex: &Exchange);
    fn flush(&mut self) {}
}

/// One JSON object per line. Write errors (a closed pipe) are counted, never fatal.
pub struct JsonLines<W: Write + Send> {
    out: W,
    pub write_errors: u64,
}

impl<W: Write + Send> JsonLines<W> {
    pub fn new(out: W) -> Self {
        Self { out, write_errors: 0 }
    }
}

impl<W: Write + Send> ExchangeSink for JsonLines<W> {
    fn write(&mut self, ex: &Exchange) {
        let mut line = ex.to_json();
        line.push('\n');
        if self.out.write_all(line.as_bytes()).is_err() {
            self.write_errors += 1;
        }
    }

    fn flush(&mut self) {
        if self.out.flush().is_err() {
            self.write_errors += 1;
        }
    }
}

/// Collects exchanges in memory, for tests and for callers embedding the pipeline.
#[derive(Clone, Default)]
pub struct SharedVec(pub Arc<Mutex<Vec<Exchange>>>);

impl SharedVec {
    pub fn snapshot(&self) -> Vec<Exchange> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl ExchangeSink for SharedVec {
    fn write(&mut self, ex: &Exchange) {
        if let Ok(mut v) = self.0.lock() {
            v.push(ex.clone());
        }
    }
}
