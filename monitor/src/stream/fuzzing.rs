//! The reassembly fuzz target's driver (fuzz/fuzz_targets/reassembly.rs), here so that the
//! inputs it crashed on replay as unit tests (stream/tests.rs, fuzz/regressions/reassembly):
//! arbitrary capture events on a few connections, never a panic, the table within its bound,
//! every exchange's byte counts adding up.
use super::{ConnTable, StreamConfig};
use crate::capture::{CaptureEvent, ConnId, ConnOpen, DataChunk, Direction, Role};
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
