//! The JSON-lines sink: one `{"type":"alert",...}` line per notice, to a file (appended, synced
//! before the notices count as delivered) or to standard output ("-").
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use super::AlertNotice;
use super::delivery::{Outcome, Sink};

pub struct JsonLinesFile {
    /// None: standard output.
    path: Option<PathBuf>,
    file: Option<File>,
}

impl JsonLinesFile {
    pub fn new(path: &str) -> Self {
        Self {
            path: (path != "-").then(|| PathBuf::from(path)),
            file: None,
        }
    }

    fn lines(notices: &[AlertNotice]) -> Vec<u8> {
        let mut out = Vec::new();
        for n in notices {
            let mut v = n.to_json();
            v["type"] = "alert".into();
            out.extend_from_slice(v.to_string().as_bytes());
            out.push(b'\n');
        }
        out
    }
}

impl Sink for JsonLinesFile {
    fn batch_max(&self) -> usize {
        64
    }

    fn send(&mut self, notices: &[AlertNotice]) -> Outcome {
        let bytes = Self::lines(notices);
        let Some(path) = &self.path else {
            // One write under the lock: lines never interleave with the exchange lines.
            let mut out = std::io::stdout().lock();
            return match out.write_all(&bytes).and_then(|_| out.flush()) {
                Ok(()) => Outcome::Delivered,
                Err(e) => Outcome::Retry {
                    why: format!("standard output: {}", e.kind()),
                    after: None,
                },
            };
        };
        if self.file.is_none() {
            match OpenOptions::new().create(true).append(true).open(path) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    return Outcome::Retry {
                        why: format!("cannot open {}: {e}", path.display()),
                        after: None,
                    };
                }
            }
        }
        let f = self.file.as_mut().expect("opened above");
        match f.write_all(&bytes).and_then(|_| f.sync_data()) {
            Ok(()) => Outcome::Delivered,
            Err(e) => {
                // Reopen next time (the file may have been rotated away or the disk filled).
                self.file = None;
                Outcome::Retry {
                    why: format!("cannot write {}: {e}", path.display()),
                    after: None,
                }
            }
        }
    }
}
