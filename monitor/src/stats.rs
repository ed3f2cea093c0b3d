//! Counters of the userspace pipeline (the kernel's own are in capture::kernel).
use std::collections::BTreeMap;

use serde::Serialize;

use crate::http::ParseError;

#[derive(Clone, Debug, Default, Serialize)]
pub struct ParseErrors {
    pub malformed: u64,
    pub head_too_large: u64,
    pub framing_lost: u64,
    pub bad_chunk: u64,
}

impl ParseErrors {
    pub fn record(&mut self, e: ParseError) {
        match e {
            ParseError::Malformed => self.malformed += 1,
            ParseError::HeadTooLarge => self.head_too_large += 1,
            ParseError::FramingLost => self.framing_lost += 1,
            ParseError::BadChunk => self.bad_chunk += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.malformed + self.head_too_large + self.framing_lost + self.bad_chunk
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PipelineStats {
    pub events: u64,
    pub data_events: u64,
    pub bytes_seen: u64,
    pub bytes_not_seen: u64,
    pub bytes_skipped: u64,
    pub exchanges: u64,
    pub parse_errors: ParseErrors,
    pub heads_truncated: u64,
    pub orphan_responses: u64,
    pub requests_unanswered: u64,
    pub pending_overflow: u64,
    pub informational_responses: u64,
    pub tunnels: u64,
    pub connections: u64,
    pub connections_opened: u64,
    pub connections_evicted: u64,
    pub connections_idle_closed: u64,
    /// Connections evicted because all together buffered more than stream.max_buffered_bytes.
    pub connections_shed: u64,
    /// TLS connections whose plaintext was never seen (a TLS library we do not probe), by
    /// process name and then by the TLS libraries it had loaded (capture::tls_library); at most
    /// MAX_BLIND_SPOT_PROCESSES names, the rest under "__other__".
    pub tls_blind_spots: BTreeMap<String, BTreeMap<String, u64>>,
    pub findings: u64,
    /// Exchange and finding lines the outputs could not write.
    pub output_write_errors: u64,
    /// Exchanges of services beyond the route table's cap, folded into the overflow service.
    pub services_folded: u64,
    /// Baseline series not created because the cap on series was reached.
    pub baseline_series_refused: u64,
    /// Saves of state files that failed (full or read-only state_dir), by file.
    pub state_write_errors: StateWriteErrors,
    pub h2: crate::stream::h2::H2Stats,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct StateWriteErrors {
    pub baselines: u64,
    pub firing_alerts: u64,
}

const MAX_BLIND_SPOT_PROCESSES: usize = 256;
/// Library labels per process name, at most (a name shared by many different programs).
const MAX_LIBRARY_LABELS: usize = 8;

impl PipelineStats {
    pub fn record_tls_blind_spot(&mut self, comm: &str, library: &str) {
        let full = self.tls_blind_spots.len() >= MAX_BLIND_SPOT_PROCESSES;
        let key = if full && !self.tls_blind_spots.contains_key(comm) {
            "__other__"
        } else {
            comm
        };
        let libraries = self.tls_blind_spots.entry(key.to_string()).or_default();
        // Labels come from a short fixed list, joined; the cap only guards "__other__".
        let library = if libraries.len() >= MAX_LIBRARY_LABELS && !libraries.contains_key(library) {
            "__other__"
        } else {
            library
        };
        *libraries.entry(library.to_string()).or_default() += 1;
    }

    /// Blind-spot connections of a process, whatever its libraries.
    pub fn tls_blind_spots_of(&self, comm: &str) -> u64 {
        self.tls_blind_spots.get(comm).map_or(0, |l| l.values().sum())
    }
}
