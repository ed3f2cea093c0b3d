//! Capture: the kernel programs, their ring buffer and the events they produce.
pub mod event;
pub mod kernel;
pub mod procfs;
pub mod tls;
pub mod tls_sites;

pub use event::{BodyHint, CaptureEvent, ConnId, ConnOpen, DataChunk, Decoder, Direction, Role};
