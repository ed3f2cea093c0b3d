//! HTTP/2 as a hostile peer writes it: arbitrary bytes after the client preface, cut into
//! chunks with capture gaps, through the reassembly stage (frames, HPACK, streams, gRPC) and
//! the recording redactor. Never a panic; the connection's buffers and streams stay bounded;
//! redaction keeps every chunk's length. Endless CONTINUATION, huge header blocks and HPACK
//! table-size bombs are all inputs of this shape (seeds in fuzz/seeds/http2).
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::capture::{CaptureEvent, ConnId, ConnOpen, DataChunk, Direction, Role};
use monitor::redact::Redactor;
use monitor::stats::PipelineStats;
use monitor::stream::{ConnTable, StreamConfig};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let mut table = ConnTable::new(StreamConfig::default());
    let mut redactor = Redactor::default();
    let mut stats = PipelineStats::default();
    let mut out = Vec::new();
    let id = ConnId { tgid: 9, fd: 3 };
    table.process(
        CaptureEvent::Open(ConnOpen {
            ts_ns: 1,
            id,
            role: Role::Server,
            local: Some("127.0.0.1:8080".parse().unwrap()),
            peer: Some("127.0.0.1:40000".parse().unwrap()),
            comm: "fuzz".into(),
            seeded: false,
            epoch: 1,
        }),
        &mut stats,
        &mut out,
    );
    let mut first = [true, true];
    let mut rest = data;
    let mut ts = 10u64;
    // Each chunk: a control byte (direction, gap), a length byte, the bytes.
    while let Some((&op, tail)) = rest.split_first() {
        let Some((&n, tail)) = tail.split_first() else { break };
        let n = (usize::from(n) * 4).min(tail.len());
        let (body, tail) = tail.split_at(n);
        rest = tail;
        ts += 1000;
        let dir = if op & 1 == 0 { Direction::Ingress } else { Direction::Egress };
        let d = usize::from(op & 1);
        let mut bytes = Vec::new();
        if first[d] && dir == Direction::Ingress {
            bytes.extend_from_slice(PREFACE);
        }
        first[d] = false;
        bytes.extend_from_slice(body);
        let gap = if op & 2 != 0 { u64::from(op >> 2) * 97 } else { 0 };
        let mut ev = CaptureEvent::Data(DataChunk {
            ts_ns: ts,
            id,
            direction: dir,
            total_len: bytes.len() as u64 + gap,
            bytes: bytes[..].into(),
            tls: false,
        });
        let mut copy = ev.clone();
        redactor.redact(&mut copy);
        if let (CaptureEvent::Data(a), CaptureEvent::Data(b)) = (&ev, &copy) {
            assert_eq!(a.bytes.len(), b.bytes.len(), "redaction changed a length");
        }
        table.process(std::mem::replace(&mut ev, copy), &mut stats, &mut out);
        assert!(table.buffered_bytes() <= 1 << 20, "{}", table.buffered_bytes());
    }
    table.flush(ts + 1, &mut stats, &mut out);
    // (A connection whose first chunk is egress and not HTTP/2 is HTTP/1: both kinds come out.)
    assert!(out.len() as u64 <= stats.h2.streams + stats.data_events);
});
