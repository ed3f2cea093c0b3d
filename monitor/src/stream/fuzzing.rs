//! The drivers of the reassembly and http2 fuzz targets (fuzz/fuzz_targets), here so that the
//! inputs they crashed on replay as unit tests (stream/tests.rs, fuzz/regressions/TARGET).
//! reassembly: arbitrary capture events on a few connections, never a panic, the table within
//! its bound, every exchange's byte counts adding up. http2: HTTP/2 as a hostile peer writes it,
//! arbitrary bytes after the client preface cut into chunks with capture gaps, through the
//! stage and the recording redactor: never a panic, buffers bounded, redaction keeping every
//! chunk's length, exchanges bounded by what was seen.
use super::{ConnTable, StreamConfig};
use crate::capture::{CaptureEvent, ConnId, ConnOpen, DataChunk, Direction, Role};
use crate::redact::Redactor;
use crate::stats::PipelineStats;

/// Each op byte is an event on one of 8 connections of a process (its bits: kind, connection,
/// direction, role, gap); a data op is followed by a length byte and the bytes.
pub fn reassembly(data: &[u8]) {
    let mut table = ConnTable::new(StreamConfig {
        max_connections: 4,
        idle_timeout_ns: 1_000_000_000,
        ..StreamConfig::default()
    });
    let (mut stats, mut out) = (PipelineStats::default(), Vec::new());
    let mut ts = 1_000_000_000u64;
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        ts += u64::from(op) * 1_000_000;
        let id = ConnId {
            tgid: 7,
            fd: u32::from(op & 0x7),
        };
        let ev = match op >> 5 {
            0 => CaptureEvent::Open(ConnOpen {
                ts_ns: ts,
                id,
                role: if op & 0x8 != 0 { Role::Server } else { Role::Client },
                local: Some("127.0.0.1:8080".parse().unwrap()),
                peer: Some("127.0.0.1:40000".parse().unwrap()),
                comm: "fuzz".into(),
                seeded: op & 0x10 != 0,
                epoch: 1,
            }),
            1..=5 => {
                let Some((&n, tail)) = rest.split_first() else {
                    break;
                };
                let n = usize::from(n).min(tail.len());
                let (bytes, tail) = tail.split_at(n);
                rest = tail;
                let gap = if op & 0x10 != 0 { u64::from(op) * 1000 } else { 0 };
                CaptureEvent::Data(DataChunk {
                    ts_ns: ts,
                    id,
                    direction: if op & 0x8 != 0 {
                        Direction::Ingress
                    } else {
                        Direction::Egress
                    },
                    total_len: bytes.len() as u64 + gap,
                    bytes: bytes.into(),
                    tls: op & 0x40 != 0 && op & 0x20 != 0,
                })
            }
            6 => CaptureEvent::Close { ts_ns: ts, id },
            _ if op & 0x8 != 0 => CaptureEvent::Tls { ts_ns: ts, id },
            _ => CaptureEvent::ProcessExit { ts_ns: ts, tgid: 7 },
        };
        table.process(ev, &mut stats, &mut out);
        assert!(table.len() <= 4);
        if op == 0xff {
            table.expire(ts + 10_000_000_000, &mut stats, &mut out);
        }
    }
    table.flush(ts, &mut stats, &mut out);
    for ex in &out {
        assert!(ex.req_body_bytes <= ex.req_bytes, "{ex:?}");
        assert!(ex.resp_body_bytes <= ex.resp_bytes, "{ex:?}");
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Each chunk: a control byte (direction, gap), a length byte (times 4), the bytes; the first
/// ingress chunk starts with the client preface.
pub fn http2(data: &[u8]) {
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
    while let Some((&op, tail)) = rest.split_first() {
        let Some((&n, tail)) = tail.split_first() else {
            break;
        };
        let n = (usize::from(n) * 4).min(tail.len());
        let (body, tail) = tail.split_at(n);
        rest = tail;
        ts += 1000;
        let dir = if op & 1 == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
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
    // A connection whose first chunk is egress and not HTTP/2 is HTTP/1, where one chunk can hold
    // many pipelined heads: every exchange is an HTTP/2 stream or took an HTTP/1 head of at least
    // MIN_HEAD bytes ("A * HTTP/1.1\n\n").
    const MIN_HEAD: u64 = 14;
    assert!(
        out.len() as u64 <= stats.h2.streams + stats.bytes_seen / MIN_HEAD + 1,
        "{} exchanges, {} streams, {} bytes",
        out.len(),
        stats.h2.streams,
        stats.bytes_seen
    );
}
