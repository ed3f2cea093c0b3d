//! Per-connection reassembly and the message framer (chunked, pipelining, upgrades, gaps) fed an
//! arbitrary sequence of capture events on a few connections: never a panic, the table stays
//! within its bound, and every exchange's byte counts add up (monitor::stream::fuzzing, which
//! the crashes kept in fuzz/regressions/reassembly replay through as unit tests).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| monitor::stream::fuzzing::reassembly(data));
