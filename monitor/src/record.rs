//! Recording files: the capture-event stream written to disk and read back for replay.
//!
//! Format: the magic `APIWREC2`, then records `[u32 LE body length][body]`. A body is a kind byte
//! and the event's fields, little endian. A file cut short by a crash ends in a partial record;
//! the reader stops there and says so instead of failing. Data bytes are redacted by
//! `redact::Redactor` before they are written: secrets never reach the disk.
use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, SocketAddr};

use crate::capture::event::Arena;
use crate::capture::{CaptureEvent, ConnId, ConnOpen, DataChunk, Direction, Role};

pub const MAGIC: &[u8; 8] = b"APIWREC2";
/// Largest record accepted on read (a data event holds at most CAPTURE_MAX bytes).
const MAX_RECORD: usize = 1 << 20;
/// Replay copies data bytes into blocks of this size, as the live capture does (capture::event::Arena).
const REPLAY_ARENA_BLOCK: usize = 512 * 1024;

const KIND_OPEN: u8 = 1;
const KIND_DATA: u8 = 2;
const KIND_CLOSE: u8 = 3;
const KIND_TLS: u8 = 4;
const KIND_EXIT: u8 = 5;
const KIND_PROCESS: u8 = 6;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not an apiwatch recording (bad magic)")]
    BadMagic,
    #[error("record {index}: {reason}")]
    Corrupt { index: u64, reason: &'static str },
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

pub struct RecordWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> RecordWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        Ok(Self {
            out,
            buf: Vec::with_capacity(8192),
        })
    }

    pub fn write(&mut self, ev: &CaptureEvent) -> io::Result<()> {
        self.buf.clear();
        encode(ev, &mut self.buf);
        self.out.write_all(&(self.buf.len() as u32).to_le_bytes())?;
        self.out.write_all(&self.buf)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

pub fn encode(ev: &CaptureEvent, b: &mut Vec<u8>) {
    match ev {
        CaptureEvent::Open(o) => {
            b.push(KIND_OPEN);
            put_head(b, o.ts_ns, o.id);
            b.push(match o.role {
                Role::Server => 0,
                Role::Client => 1,
            });
            b.push(o.seeded as u8);
            put_addr(b, o.local);
            put_addr(b, o.peer);
            let comm = &o.comm.as_bytes()[..o.comm.len().min(255)];
            b.push(comm.len() as u8);
            b.extend_from_slice(comm);
        }
        CaptureEvent::Data(d) => {
            b.push(KIND_DATA);
            put_head(b, d.ts_ns, d.id);
            b.push(match d.direction {
                Direction::Ingress => 0,
                Direction::Egress => 1,
            });
            b.push(d.tls as u8);
            b.extend_from_slice(&d.total_len.to_le_bytes());
            b.extend_from_slice(&(d.bytes.len() as u32).to_le_bytes());
            b.extend_from_slice(&d.bytes);
        }
        CaptureEvent::Close { ts_ns, id } => {
            b.push(KIND_CLOSE);
            put_head(b, *ts_ns, *id);
        }
        CaptureEvent::Tls { ts_ns, id } => {
            b.push(KIND_TLS);
            put_head(b, *ts_ns, *id);
        }
        CaptureEvent::ProcessExit { ts_ns, tgid } => {
            b.push(KIND_EXIT);
            put_head(
                b,
                *ts_ns,
                ConnId {
                    tgid: *tgid,
                    fd: u32::MAX,
                },
            );
        }
        CaptureEvent::Process(p) => {
            b.push(KIND_PROCESS);
            put_head(
                b,
                p.ts_ns,
                ConnId {
                    tgid: p.tgid,
                    fd: u32::MAX,
                },
            );
            let comm = &p.comm.as_bytes()[..p.comm.len().min(255)];
            b.push(comm.len() as u8);
            b.extend_from_slice(comm);
            let cgroup = &p.cgroup.as_bytes()[..p.cgroup.len().min(u16::MAX as usize)];
            b.extend_from_slice(&(cgroup.len() as u16).to_le_bytes());
            b.extend_from_slice(cgroup);
            // Added after the format's first files: a reader finds it absent in those.
            if !p.tls_library.is_empty() {
                let lib = &p.tls_library.as_bytes()[..p.tls_library.len().min(255)];
                b.push(lib.len() as u8);
                b.extend_from_slice(lib);
            }
        }
    }
}

fn put_head(b: &mut Vec<u8>, ts: u64, id: ConnId) {
    b.extend_from_slice(&ts.to_le_bytes());
    b.extend_from_slice(&id.tgid.to_le_bytes());
    b.extend_from_slice(&id.fd.to_le_bytes());
}

fn put_addr(b: &mut Vec<u8>, a: Option<SocketAddr>) {
    match a {
        None => b.push(0),
        Some(SocketAddr::V4(v4)) => {
            b.push(4);
            b.extend_from_slice(&v4.ip().octets());
            b.extend_from_slice(&v4.port().to_le_bytes());
        }
        Some(SocketAddr::V6(v6)) => {
            b.push(6);
            b.extend_from_slice(&v6.ip().octets());
            b.extend_from_slice(&v6.port().to_le_bytes());
        }
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn addr(&mut self) -> Option<Option<SocketAddr>> {
        let ip: IpAddr = match self.u8()? {
            0 => return Some(None),
            4 => <[u8; 4]>::try_from(self.take(4)?).ok()?.into(),
            6 => <[u8; 16]>::try_from(self.take(16)?).ok()?.into(),
            _ => return None,
        };
        Some(Some(SocketAddr::new(ip, self.u16()?)))
    }
}

/// One record's body; data bytes copied into `arena`.
pub fn decode(body: &[u8], arena: &mut Arena) -> Option<CaptureEvent> {
    let mut c = Cursor(body);
    let kind = c.u8()?;
    let ts_ns = c.u64()?;
    let id = ConnId {
        tgid: c.u32()?,
        fd: c.u32()?,
    };
    let ev = match kind {
        KIND_OPEN => {
            let role = if c.u8()? == 0 { Role::Server } else { Role::Client };
            let seeded = c.u8()? != 0;
            let local = c.addr()?;
            let peer = c.addr()?;
            let n = c.u8()? as usize;
            let comm = String::from_utf8_lossy(c.take(n)?).into_owned();
            CaptureEvent::Open(ConnOpen {
                ts_ns,
                id,
                role,
                local,
                peer,
                comm,
                seeded,
                // A live connection's name in the kernel, meaningless in a replay: not recorded.
                epoch: 0,
            })
        }
        KIND_DATA => {
            let direction = if c.u8()? == 0 {
                Direction::Ingress
            } else {
                Direction::Egress
            };
            let tls = c.u8()? != 0;
            let total_len = c.u64()?;
            let n = c.u32()? as usize;
            let bytes = arena.copy(c.take(n)?);
            CaptureEvent::Data(DataChunk {
                ts_ns,
                id,
                direction,
                total_len,
                bytes,
                tls,
            })
        }
        KIND_CLOSE => CaptureEvent::Close { ts_ns, id },
        KIND_TLS => CaptureEvent::Tls { ts_ns, id },
        KIND_EXIT => CaptureEvent::ProcessExit { ts_ns, tgid: id.tgid },
        KIND_PROCESS => {
            let n = c.u8()? as usize;
            let comm = String::from_utf8_lossy(c.take(n)?).into_owned();
            let n = c.u16()? as usize;
            let cgroup = String::from_utf8_lossy(c.take(n)?).into_owned();
            let tls_library = match c.0.is_empty() {
                true => String::new(),
                false => {
                    let n = c.u8()? as usize;
                    String::from_utf8_lossy(c.take(n)?).into_owned()
                }
            };
            CaptureEvent::Process(crate::capture::event::ProcessFacts {
                ts_ns,
                tgid: id.tgid,
                comm,
                cgroup,
                tls_library,
            })
        }
        _ => return None,
    };
    if !c.0.is_empty() {
        return None;
    }
    Some(ev)
}

pub struct RecordReader<R: BufRead> {
    input: R,
    index: u64,
    body: Vec<u8>,
    arena: Arena,
    /// The file ended inside a record (a crash while writing): the rest was ignored.
    pub truncated_tail: bool,
}

impl<R: BufRead> RecordReader<R> {
    pub fn new(mut input: R) -> Result<Self, RecordError> {
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(|_| RecordError::BadMagic)?;
        if &magic != MAGIC {
            return Err(RecordError::BadMagic);
        }
        Ok(Self {
            input,
            index: 0,
            body: Vec::new(),
            arena: Arena::new(REPLAY_ARENA_BLOCK),
            truncated_tail: false,
        })
    }

    pub fn next_event(&mut self) -> Result<Option<CaptureEvent>, RecordError> {
        let mut len = [0u8; 4];
        match read_full(&mut self.input, &mut len)? {
            0 => return Ok(None),
            4 => {}
            _ => {
                self.truncated_tail = true;
                return Ok(None);
            }
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_RECORD {
            return Err(RecordError::Corrupt {
                index: self.index,
                reason: "record too large",
            });
        }
        self.body.resize(len, 0);
        if read_full(&mut self.input, &mut self.body)? < len {
            self.truncated_tail = true;
            return Ok(None);
        }
        let ev = decode(&self.body, &mut self.arena).ok_or(RecordError::Corrupt {
            index: self.index,
            reason: "undecodable record",
        })?;
        self.index += 1;
        Ok(Some(ev))
    }
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<CaptureEvent> {
        let id = ConnId { tgid: 42, fd: 7 };
        vec![
            CaptureEvent::Open(ConnOpen {
                ts_ns: 1,
                id,
                role: Role::Server,
                local: Some("127.0.0.1:80".parse().unwrap()),
                peer: Some("[::1]:5000".parse().unwrap()),
                comm: "nginx".into(),
                seeded: true,
                epoch: 0,
            }),
            CaptureEvent::Data(DataChunk {
                ts_ns: 2,
                id,
                direction: Direction::Egress,
                total_len: 1000,
                bytes: bytes::BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]),
                tls: true,
            }),
            CaptureEvent::Tls { ts_ns: 2, id },
            CaptureEvent::Open(ConnOpen {
                ts_ns: 3,
                id,
                role: Role::Client,
                local: None,
                peer: None,
                comm: String::new(),
                seeded: false,
                epoch: 0,
            }),
            CaptureEvent::Close { ts_ns: 4, id },
            CaptureEvent::ProcessExit { ts_ns: 5, tgid: 7 },
            CaptureEvent::Process(crate::capture::event::ProcessFacts {
                ts_ns: 6,
                tgid: 7,
                comm: "python3".into(),
                cgroup: "/system.slice/shop.service".into(),
                tls_library: String::new(),
            }),
            CaptureEvent::Process(crate::capture::event::ProcessFacts {
                ts_ns: 7,
                tgid: 7,
                comm: "java".into(),
                cgroup: String::new(),
                tls_library: "java".into(),
            }),
        ]
    }

    #[test]
    fn round_trip_every_kind() {
        let mut file = Vec::new();
        let mut w = RecordWriter::new(&mut file).unwrap();
        for e in events() {
            w.write(&e).unwrap();
        }
        drop(w);
        let mut r = RecordReader::new(&file[..]).unwrap();
        let mut back = Vec::new();
        while let Some(e) = r.next_event().unwrap() {
            back.push(e);
        }
        assert_eq!(back, events());
        assert!(!r.truncated_tail);
    }

    #[test]
    fn torn_tail_is_detected_not_fatal() {
        let mut file = Vec::new();
        let mut w = RecordWriter::new(&mut file).unwrap();
        for e in events() {
            w.write(&e).unwrap();
        }
        drop(w);
        for cut in MAGIC.len()..file.len() {
            let mut r = RecordReader::new(&file[..cut]).unwrap();
            let mut n = 0;
            while r.next_event().unwrap().is_some() {
                n += 1;
            }
            assert!(n < events().len());
        }
    }

    #[test]
    fn bad_magic() {
        assert!(matches!(
            RecordReader::new(&b"NOTAREC!"[..]),
            Err(RecordError::BadMagic)
        ));
    }
}
