//! HTTP/2 as a hostile peer writes it: arbitrary bytes after the client preface, cut into
//! chunks with capture gaps, through the reassembly stage (frames, HPACK, streams, gRPC) and
//! the recording redactor. Never a panic; the connection's buffers and streams stay bounded;
//! redaction keeps every chunk's length. Endless CONTINUATION, huge header blocks and HPACK
//! table-size bombs are all inputs of this shape (seeds in fuzz/seeds/http2). The driver is
//! monitor::stream::fuzzing::http2, which the crashes kept in fuzz/regressions/http2 replay
//! through as unit tests.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| monitor::stream::fuzzing::http2(data));
