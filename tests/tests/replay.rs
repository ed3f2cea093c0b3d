//! Replay tier (filled in below).
