//! apiwatch: HTTP API traffic seen by eBPF probes, reconstructed, checked and exported.
//!
//! Stages, one module each: `capture` (kernel programs, ring buffer, decoding) -> `stream`
//! (per-connection reassembly, request/response pairing, using `http`) -> `exchange` records ->
//! `output` sinks. `record`/`redact` write the capture stream to disk; `agent` wires it all.
pub mod agent;
pub mod alert;
pub mod alloc;
pub mod audit;
pub mod baseline;
pub mod boundary;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod enrich;
pub mod exchange;
pub mod finding;
pub mod http;
pub mod metrics;
pub mod output;
pub mod record;
pub mod redact;
pub mod state;
pub mod stats;
pub mod stream;
pub mod text;
pub mod yaml;
