//! What the kernel cannot tell and /proc can, added to the event stream on the pipeline's thread
//! (not the ring-draining capture thread): each process's facts (name, cgroup) before its first
//! event, again with its TLS libraries before its first TLS connection's event (for the
//! blind-spot count), and the addresses of a connection the probes opened without them (an
//! accept without an address buffer, IPv6 adopted by the socket layer). Reading /proc
//! costs from microseconds (a process's comm) to milliseconds (/proc/PID/net/tcp on a host with
//! many sockets); on the capture thread the ring would fill meanwhile.
use hashbrown::HashSet;

use super::event::{CaptureEvent, ConnOpen};
use super::procfs;
use super::tls_library::TlsLibraries;

/// Processes remembered as described, at most: past it the set starts again, so a process seen
/// again is described again (bounded memory whatever the churn of pids).
const MAX_DESCRIBED: usize = 16_384;

/// Resolves a stream of capture events in order. Pure bookkeeping besides the /proc reads, so
/// it is tested on this process's own facts and sockets.
#[derive(Default)]
pub struct Resolver {
    /// Processes whose facts went out; an exit forgets the process (its pid may come back as
    /// another).
    described: HashSet<u32>,
    /// Processes whose facts went out with their TLS libraries (same lifetime as `described`).
    tls_described: HashSet<u32>,
    tls_libraries: TlsLibraries,
}

impl Resolver {
    /// `events`, with a process's facts before its first event and the missing addresses of
    /// the connections they open filled in. In place: a batch gets a new vector only when facts
    /// go into it (once per process), so the usual batch passes through without a copy.
    pub fn resolve(&mut self, mut events: Vec<CaptureEvent>) -> Vec<CaptureEvent> {
        let mut facts = Vec::new();
        for (i, ev) in events.iter_mut().enumerate() {
            if let CaptureEvent::Open(open) = ev {
                complete_addresses(open);
            }
            if let Some(f) = self.describe(ev) {
                facts.push((i, f));
            }
        }
        if facts.is_empty() {
            return events;
        }
        let mut out = Vec::with_capacity(events.len() + facts.len());
        let mut facts = facts.into_iter().peekable();
        for (i, ev) in events.into_iter().enumerate() {
            if let Some((_, f)) = facts.next_if(|(at, _)| *at == i) {
                out.push(f);
            }
            out.push(ev);
        }
        out
    }

    /// The facts to send before `ev`, when it is its process's first event.
    fn describe(&mut self, ev: &CaptureEvent) -> Option<CaptureEvent> {
        let (tgid, ts_ns) = match ev {
            CaptureEvent::Open(o) => (o.id.tgid, o.ts_ns),
            CaptureEvent::Data(d) => (d.id.tgid, d.ts_ns),
            CaptureEvent::Tls { id, ts_ns } => {
                if self.tls_described.len() >= MAX_DESCRIBED {
                    self.tls_described.clear();
                }
                if !self.tls_described.insert(id.tgid) {
                    return None;
                }
                self.described.insert(id.tgid);
                let mut facts = procfs::process_facts(id.tgid, *ts_ns);
                facts.tls_library = self.tls_libraries.of_process(id.tgid);
                return Some(CaptureEvent::Process(facts));
            }
            CaptureEvent::ProcessExit { tgid, .. } => {
                self.described.remove(tgid);
                self.tls_described.remove(tgid);
                return None;
            }
            _ => return None,
        };
        if self.described.len() >= MAX_DESCRIBED {
            self.described.clear();
        }
        self.described
            .insert(tgid)
            .then(|| CaptureEvent::Process(procfs::process_facts(tgid, ts_ns)))
    }
}

/// The kernel could not see an address: ask /proc while the socket is (most likely) still open.
fn complete_addresses(open: &mut ConnOpen) {
    if open.local.is_none() || open.peer.is_none() {
        if let Some(sock) = procfs::resolve(open.id.tgid, open.id.fd) {
            open.local.get_or_insert(sock.local);
            open.peer.get_or_insert(sock.remote);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::capture::{ConnId, DataChunk, Direction, Role};

    fn open(tgid: u32, fd: u32) -> CaptureEvent {
        CaptureEvent::Open(ConnOpen {
            ts_ns: 1,
            id: ConnId { tgid, fd },
            role: Role::Client,
            local: None,
            peer: None,
            comm: String::new(),
            seeded: false,
            epoch: 0,
        })
    }

    fn data(tgid: u32) -> CaptureEvent {
        CaptureEvent::Data(DataChunk {
            ts_ns: 2,
            id: ConnId { tgid, fd: 3 },
            direction: Direction::Egress,
            total_len: 1,
            bytes: bytes::BytesMut::from(&b"G"[..]),
            tls: false,
        })
    }

    #[test]
    fn facts_come_once_before_a_process_s_first_event_and_again_after_its_exit() {
        let me = std::process::id();
        let mut r = Resolver::default();
        let out = r.resolve(vec![data(me), data(me)]);
        assert_eq!(out.len(), 3);
        let CaptureEvent::Process(facts) = &out[0] else {
            panic!("no facts first: {out:?}");
        };
        assert_eq!(facts.tgid, me);
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(facts.comm, comm.trim_end());
        assert!(matches!(out[1], CaptureEvent::Data(_)) && matches!(out[2], CaptureEvent::Data(_)));
        // Known: no facts again. Exited: the pid may be another process's next time.
        assert_eq!(r.resolve(vec![data(me)]).len(), 1);
        let out = r.resolve(vec![CaptureEvent::ProcessExit { ts_ns: 3, tgid: me }, data(me)]);
        assert!(matches!(out[1], CaptureEvent::Process(_)), "{out:?}");
    }

    /// A process's first TLS connection sends its facts again, with its TLS libraries (this
    /// test binary links rustls, for the HTTPS sinks); its next ones do not.
    #[test]
    fn a_first_tls_connection_sends_the_process_s_tls_libraries() {
        let me = std::process::id();
        let tls = |fd| CaptureEvent::Tls {
            ts_ns: 3,
            id: ConnId { tgid: me, fd },
        };
        let mut r = Resolver::default();
        let out = r.resolve(vec![data(me), tls(3), tls(4)]);
        assert_eq!(out.len(), 5, "{out:?}");
        let (CaptureEvent::Process(first), CaptureEvent::Process(again)) = (&out[0], &out[2]) else {
            panic!("{out:?}");
        };
        assert_eq!(first.tls_library, "");
        assert_eq!((again.tgid, again.tls_library.as_str()), (me, "rustls"));
        assert!(matches!(out[3], CaptureEvent::Tls { .. }) && matches!(out[4], CaptureEvent::Tls { .. }));
    }

    #[test]
    fn an_open_without_addresses_gets_them_from_proc() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = client.as_raw_fd() as u32;
        let out = Resolver::default().resolve(vec![open(std::process::id(), fd)]);
        let Some(CaptureEvent::Open(o)) = out.last() else {
            panic!("{out:?}");
        };
        assert_eq!(o.local, Some(client.local_addr().unwrap()));
        assert_eq!(o.peer, Some(listener.local_addr().unwrap()));
    }
}
