//! The capture-event contract as userspace sees it, and the decoder from ring-buffer records.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::BytesMut;
use monitor_common as common;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub tgid: u32,
    pub fd: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Bytes the process received.
    Ingress,
    /// Bytes the process sent.
    Egress,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnOpen {
    /// Unix time in nanoseconds.
    pub ts_ns: u64,
    pub id: ConnId,
    pub role: Role,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub comm: String,
    /// The connection existed before the agent started (seeded from /proc, or adopted by the
    /// socket layer on its first I/O): its stream may begin inside a message.
    pub seeded: bool,
    /// The kernel's name for this connection in body hints (0: none, e.g. in a replay).
    pub epoch: u32,
}

/// Userspace to kernel: in `direction` of connection `id` (as named by `epoch`), the bytes up to
/// stream offset `until` are body the parser only counts, so the kernel need not copy them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyHint {
    pub id: ConnId,
    pub direction: Direction,
    pub epoch: u32,
    pub until: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataChunk {
    pub ts_ns: u64,
    pub id: ConnId,
    pub direction: Direction,
    /// Bytes the syscall moved; `bytes` holds the first of them.
    pub total_len: u64,
    /// A view of the capture's arena (see `Arena`): no allocation of its own.
    pub bytes: BytesMut,
    /// Plaintext of a TLS connection (from the OpenSSL uprobes).
    pub tls: bool,
}

impl DataChunk {
    /// Bytes moved but not copied.
    pub fn gap(&self) -> u64 {
        self.total_len.saturating_sub(self.bytes.len() as u64)
    }
}

/// What the capture learnt of a process when it first saw it (from /proc, on the live host), so
/// the stages above need no /proc of their own and a recording replays the same anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessFacts {
    pub ts_ns: u64,
    pub tgid: u32,
    /// The thread group's name (/proc/PID/comm).
    pub comm: String,
    /// Its cgroup v2 path (the `0::` line of /proc/PID/cgroup), empty when unknown.
    pub cgroup: String,
    /// The TLS libraries it has loaded (`tls_library`), said beside its TLS blind spots; empty
    /// until its first TLS connection (the facts are sent again then, with it).
    pub tls_library: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptureEvent {
    Open(ConnOpen),
    Data(DataChunk),
    Close {
        ts_ns: u64,
        id: ConnId,
    },
    /// The connection began with a TLS handshake.
    Tls {
        ts_ns: u64,
        id: ConnId,
    },
    /// The process exited: every connection of its that is still open is over.
    ProcessExit {
        ts_ns: u64,
        tgid: u32,
    },
    /// A process's facts, before the first event of it (see ProcessFacts).
    Process(ProcessFacts),
}

impl CaptureEvent {
    pub fn ts_ns(&self) -> u64 {
        match self {
            CaptureEvent::Open(o) => o.ts_ns,
            CaptureEvent::Data(d) => d.ts_ns,
            CaptureEvent::Process(p) => p.ts_ns,
            CaptureEvent::Close { ts_ns, .. }
            | CaptureEvent::Tls { ts_ns, .. }
            | CaptureEvent::ProcessExit { ts_ns, .. } => *ts_ns,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short")]
    TooShort(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("data record claims {claimed} captured bytes but holds {room}")]
    BadLength { claimed: u32, room: usize },
}

/// Where data chunks' bytes are copied out of the ring: one buffer that many chunks view, so a
/// chunk costs no allocation and no free. Profiled under load (nginx + wrk), one `Vec` per chunk
/// was a fifth of the agent's CPU: the allocation on the capture thread, and mimalloc's delayed
/// free when the pipeline thread dropped it. Once every chunk of a buffer is dropped, the buffer
/// is reused in place; while some are still in flight, the next block is a new buffer (the old
/// one freed with its last chunk), so memory is bounded by the chunks alive, plus a block.
pub struct Arena {
    buf: BytesMut,
    /// The next block's size: from 4 KiB, doubling up to `block` (a short replay or a one-off
    /// decode does not pay for a full block).
    next: usize,
    block: usize,
}

impl Arena {
    /// Blocks of up to `block` bytes (0: each chunk its own exact allocation).
    pub fn new(block: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            next: block.min(4096),
            block,
        }
    }

    pub fn copy(&mut self, data: &[u8]) -> BytesMut {
        if self.buf.capacity() < data.len() {
            self.buf.reserve(self.next.max(data.len()));
            self.next = (self.next * 2).min(self.block);
        }
        self.buf.extend_from_slice(data);
        self.buf.split()
    }
}

/// Turns ring-buffer records into events; kernel monotonic timestamps become Unix time.
pub struct Decoder {
    /// Unix time minus CLOCK_MONOTONIC, in nanoseconds: the agent clock's (crate::clock).
    pub mono_to_unix_ns: i128,
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            mono_to_unix_ns: crate::clock::mono_to_unix_ns(),
        }
    }

    fn unix(&self, mono: u64) -> u64 {
        (mono as i128 + self.mono_to_unix_ns).max(0) as u64
    }

    /// One record, its data bytes in an allocation of their own.
    pub fn decode(&self, rec: &[u8]) -> Result<CaptureEvent, DecodeError> {
        self.decode_in(rec, &mut Arena::new(0))
    }

    /// One record, its data bytes copied into `arena`.
    pub fn decode_in(&self, rec: &[u8], arena: &mut Arena) -> Result<CaptureEvent, DecodeError> {
        if rec.len() < 4 {
            return Err(DecodeError::TooShort(rec.len()));
        }
        let kind = u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]);
        match kind {
            common::EVENT_CONN_OPEN => {
                let ev: common::ConnOpenEvent = read_struct(rec)?;
                Ok(CaptureEvent::Open(ConnOpen {
                    ts_ns: self.unix(ev.ts_ns),
                    id: ConnId {
                        tgid: ev.tgid,
                        fd: ev.fd,
                    },
                    role: if ev.role == common::ROLE_SERVER {
                        Role::Server
                    } else {
                        Role::Client
                    },
                    local: sockaddr(&ev.local),
                    peer: sockaddr(&ev.peer),
                    comm: comm_string(&ev.comm),
                    seeded: ev.flags & common::OPEN_FLAG_MIDSTREAM != 0,
                    epoch: ev.epoch,
                }))
            }
            common::EVENT_PROC_EXIT => {
                let ev: common::ConnCloseEvent = read_struct(rec)?;
                Ok(CaptureEvent::ProcessExit {
                    ts_ns: self.unix(ev.ts_ns),
                    tgid: ev.tgid,
                })
            }
            common::EVENT_CONN_CLOSE | common::EVENT_CONN_TLS => {
                let ev: common::ConnCloseEvent = read_struct(rec)?;
                let (ts_ns, id) = (
                    self.unix(ev.ts_ns),
                    ConnId {
                        tgid: ev.tgid,
                        fd: ev.fd,
                    },
                );
                Ok(if kind == common::EVENT_CONN_TLS {
                    CaptureEvent::Tls { ts_ns, id }
                } else {
                    CaptureEvent::Close { ts_ns, id }
                })
            }
            common::EVENT_DATA => {
                let h: common::DataHeader = read_struct(rec)?;
                let hdr = size_of::<common::DataHeader>();
                let room = rec.len() - hdr;
                if h.captured as usize > room {
                    return Err(DecodeError::BadLength {
                        claimed: h.captured,
                        room,
                    });
                }
                Ok(CaptureEvent::Data(DataChunk {
                    ts_ns: self.unix(h.ts_ns),
                    id: ConnId {
                        tgid: h.tgid,
                        fd: h.fd,
                    },
                    direction: if h.direction == common::DIR_INGRESS {
                        Direction::Ingress
                    } else {
                        Direction::Egress
                    },
                    total_len: h.total_len,
                    bytes: arena.copy(&rec[hdr..hdr + h.captured as usize]),
                    tls: h.flags & common::DATA_FLAG_TLS != 0,
                }))
            }
            k => Err(DecodeError::UnknownKind(k)),
        }
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

fn read_struct<T: Copy>(rec: &[u8]) -> Result<T, DecodeError> {
    if rec.len() < size_of::<T>() {
        return Err(DecodeError::TooShort(rec.len()));
    }
    // SAFETY: length checked; T is a #[repr(C)] plain-old-data type from monitor-common.
    Ok(unsafe { std::ptr::read_unaligned(rec.as_ptr().cast::<T>()) })
}

pub fn sockaddr(a: &common::SockAddr) -> Option<SocketAddr> {
    let ip = match a.family {
        common::AF_INET => IpAddr::V4(Ipv4Addr::new(a.addr[0], a.addr[1], a.addr[2], a.addr[3])),
        common::AF_INET6 => {
            let v6 = Ipv6Addr::from(a.addr);
            // An IPv6 socket talking IPv4 reports mapped addresses; show them as IPv4.
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, a.port))
}

fn comm_string(c: &[u8; 16]) -> String {
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks view one block; once all are dropped the block is reused in place; a chunk kept
    /// alive keeps its bytes while the arena moves on to a new block.
    #[test]
    fn the_arena_reuses_its_block_once_the_chunks_are_gone() {
        let mut arena = Arena::new(64);
        let a = arena.copy(b"GET / HTTP/1.1\r\n");
        let b = arena.copy(b"Host: a\r\n");
        assert_eq!(
            (&a[..], &b[..]),
            (&b"GET / HTTP/1.1\r\n"[..], &b"Host: a\r\n"[..])
        );
        let start = a.as_ptr();
        assert_eq!(b.as_ptr(), start.wrapping_add(a.len()), "one block");
        drop((a, b));
        let c = arena.copy(&[7; 40]);
        assert_eq!(c.as_ptr(), start, "reused in place");
        // `c` stays alive: the next chunk that does not fit goes to a new block, `c` intact.
        let d = arena.copy(&[9; 40]);
        assert_ne!(d.as_ptr(), start);
        assert!(c.iter().all(|&x| x == 7) && d.iter().all(|&x| x == 9));
        // Bigger than a block: its own allocation, whole.
        assert_eq!(arena.copy(&[1; 100]).len(), 100);
        assert_eq!(Arena::new(0).copy(b"xy"), &b"xy"[..]);
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a repr(C) value as bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn decodes_every_kind() {
        let d = Decoder {
            mono_to_unix_ns: 1000,
        };
        let mut local = common::SockAddr::EMPTY;
        local.family = common::AF_INET;
        local.port = 8080;
        local.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let open = common::ConnOpenEvent {
            kind: common::EVENT_CONN_OPEN,
            role: common::ROLE_SERVER,
            tgid: 7,
            fd: 3,
            ts_ns: 5,
            local,
            peer: common::SockAddr::EMPTY,
            comm: *b"nginx\0\0\0\0\0\0\0\0\0\0\0",
            listen_fd: 4,
            flags: common::OPEN_FLAG_MIDSTREAM,
            epoch: 77,
            _pad: 0,
        };
        match d.decode(&bytes_of(&open)).unwrap() {
            CaptureEvent::Open(o) => {
                assert_eq!(o.ts_ns, 1005);
                assert_eq!(o.local, Some("127.0.0.1:8080".parse().unwrap()));
                assert_eq!(o.peer, None);
                assert_eq!(o.comm, "nginx");
                assert_eq!(o.role, Role::Server);
                assert!(o.seeded, "an adopted connection is mid-stream");
                assert_eq!(o.epoch, 77);
            }
            e => panic!("{e:?}"),
        }
        let mut data = common::DataEventSmall {
            header: common::DataHeader {
                kind: common::EVENT_DATA,
                direction: common::DIR_EGRESS,
                tgid: 7,
                fd: 3,
                ts_ns: 9,
                total_len: 100,
                captured: 3,
                flags: 0,
            },
            data: [0; common::CAPTURE_SMALL],
        };
        data.data[..3].copy_from_slice(b"GET");
        match d.decode(&bytes_of(&data)).unwrap() {
            CaptureEvent::Data(c) => {
                assert_eq!(c.bytes, &b"GET"[..]);
                assert_eq!(c.gap(), 97);
                assert_eq!(c.direction, Direction::Egress);
            }
            e => panic!("{e:?}"),
        }
        data.header.captured = 9999;
        assert!(matches!(
            d.decode(&bytes_of(&data)),
            Err(DecodeError::BadLength { .. })
        ));
        assert_eq!(d.decode(&[1, 0]), Err(DecodeError::TooShort(2)));
        assert_eq!(d.decode(&[9, 0, 0, 0]), Err(DecodeError::UnknownKind(9)));
        let exit = common::ConnCloseEvent {
            kind: common::EVENT_PROC_EXIT,
            _pad: 0,
            tgid: 7,
            fd: u32::MAX,
            ts_ns: 1,
        };
        assert_eq!(
            d.decode(&bytes_of(&exit)).unwrap(),
            CaptureEvent::ProcessExit { ts_ns: 1001, tgid: 7 }
        );
    }
}
