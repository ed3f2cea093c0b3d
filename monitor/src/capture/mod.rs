//! Capture: the kernel programs, their ring buffer and the events they produce.
pub mod event;
pub mod kernel;
pub mod procfs;
pub mod resolve;
pub mod tls;
pub mod tls_library;
pub mod tls_sites;

pub use event::{BodyHint, CaptureEvent, ConnId, ConnOpen, DataChunk, Decoder, Direction, Role};

/// A process name as the kernel keeps it (comm): at most 15 bytes, NUL-padded to 16. Shared by
/// the loader (the `capture.processes` filter map) and the TLS scans (which processes to probe).
pub fn comm_key(name: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    let n = name.len().min(15);
    key[..n].copy_from_slice(&name.as_bytes()[..n]);
    key
}
