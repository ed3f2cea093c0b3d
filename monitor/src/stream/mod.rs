//! Stream: per-connection reassembly. Feeds each direction's bytes to its message parser, pairs
//! requests with responses, and turns them into exchanges.
use std::collections::VecDeque;

// foldhash, not SipHash: keys are kernel-assigned ids, and lookups are per event.
use hashbrown::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::capture::{BodyHint, CaptureEvent, ConnId, ConnOpen, DataChunk, Direction, Role};
use crate::exchange::{Exchange, version_str};
use crate::http::{Head, HttpOptions, MessageParser, ParseError, ParseEvent, RequestHead, RequestMethods};
use crate::stats::PipelineStats;

pub mod fuzzing;
pub mod h2;
use h2::H2Conn;

/// Chunks of a connection joined mid-way that may still show it is HTTP/2 (as the kernel's tries).
const H2_DETECT_TRIES: u8 = 8;

/// Requests awaiting their response on one connection (pipelining); more are dropped and counted.
pub const MAX_PENDING_REQUESTS: usize = 64;
/// A body with at least this much still to come is worth telling the kernel about (it skips
/// copying calls that lie wholly inside it).
pub const BODY_HINT_MIN: u64 = 8192;
/// Body hints waiting for the capture to take them; beyond it they are dropped (a dropped hint
/// only means bytes get copied that need not be).
pub const MAX_BODY_HINTS: usize = 4096;

#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Connections tracked at most; the least recently active is evicted beyond it.
    pub max_connections: usize,
    /// A connection silent this long is closed (its open exchanges are emitted).
    pub idle_timeout_ns: u64,
    /// Bytes all connections may buffer together (unfinished heads, HTTP/2 frames and header
    /// blocks). Past it the connections holding the most are evicted, down to 3/4 of it: a
    /// host full of connections that each send most of a head cannot make the agent hold
    /// max_connections x the per-connection caps.
    pub max_buffered_bytes: usize,
    /// What the policy tells the HTTP parsers (API-key header names); replaced on a reload
    /// through `ConnTable::set_http_options`.
    pub http: HttpOptions,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            max_connections: 65536,
            idle_timeout_ns: 120 * 1_000_000_000,
            max_buffered_bytes: 64 << 20,
            http: HttpOptions::default(),
        }
    }
}

struct PendingRequest {
    head: Box<RequestHead>,
    ts_ns: u64,
    bytes: u64,
    body_bytes: u64,
    ended: bool,
}

struct Pending(VecDeque<PendingRequest>);

impl RequestMethods for Pending {
    fn method_of_pending(&self, index: usize) -> Option<&str> {
        self.0.get(index).map(|p| p.head.method.as_str())
    }
}

struct Conn {
    role: Option<Role>,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    comm: Arc<str>,
    /// The process's cgroup v2 path, from the capture's process facts.
    cgroup: Arc<str>,
    ingress: MessageParser,
    egress: MessageParser,
    pending: Pending,
    /// The request stream is inside a message whose head went to `pending.back()`.
    request_open: bool,
    /// Head of the response in progress; None for 1xx or before any.
    response: Option<(u16, bool, Option<String>)>,
    last_ts: u64,
    /// The connection is TLS (handshake seen, or plaintext from the SSL uprobes).
    tls: bool,
    /// Plaintext of this TLS connection was seen: it is not a blind spot.
    tls_plaintext_seen: bool,
    /// The kernel's name for it in body hints; 0: no hints (a replay, or no open event).
    epoch: u32,
    /// Bytes received per direction ([ingress, egress]): the offsets body hints are given in.
    reported: [u64; 2],
    /// The furthest body end hinted per direction.
    hinted: [u64; 2],
    /// HTTP/2: the connection's streams; its bytes then bypass the HTTP/1 parsers.
    h2: Option<Box<H2Conn>>,
    /// Chunks left in which the connection may still turn out to be HTTP/2 (the first chunk of
    /// a connection seen from its start; a few for one joined mid-way). 0 once an HTTP/1
    /// message was seen.
    h2_tries: u8,
    /// Joined mid-way (opened before the agent, or its open event was lost).
    mid_stream: bool,
    /// A request offering `Upgrade: h2c` that a 101 answered: it becomes stream 1 of the
    /// HTTP/2 connection that the tunnel event starts.
    h2c_upgrade: Option<PendingRequest>,
}

impl Conn {
    fn new(role: Option<Role>, mid_stream: bool) -> Self {
        let parser = || {
            if mid_stream {
                MessageParser::resyncing()
            } else {
                MessageParser::new()
            }
        };
        Self {
            role,
            local: None,
            peer: None,
            comm: "".into(),
            cgroup: "".into(),
            ingress: parser(),
            egress: parser(),
            pending: Pending(VecDeque::new()),
            request_open: false,
            response: None,
            last_ts: 0,
            tls: false,
            tls_plaintext_seen: false,
            epoch: 0,
            reported: [0, 0],
            hinted: [0, 0],
            h2: None,
            h2_tries: if mid_stream { H2_DETECT_TRIES } else { 1 },
            mid_stream,
            h2c_upgrade: None,
        }
    }

    fn request_direction(&self) -> Option<Direction> {
        match self.role? {
            Role::Server => Some(Direction::Ingress),
            Role::Client => Some(Direction::Egress),
        }
    }
}

/// Process facts kept at most (about 100 bytes each), see `ConnTable::remember_process`.
const MAX_PROCESSES: usize = 32_768;

/// A process's facts, as its connections share them.
struct ProcessInfo {
    comm: Arc<str>,
    cgroup: Arc<str>,
    /// Its TLS libraries, for its blind spots (empty: not said).
    tls_library: Arc<str>,
}

/// The reassembly stage: capture events in, exchanges out.
pub struct ConnTable {
    cfg: StreamConfig,
    conns: HashMap<ConnId, Conn>,
    /// Processes that opened a connection since their last exit event (see `note_tgid`).
    tgids: hashbrown::HashSet<u32>,
    /// What the capture said of each process (CaptureEvent::Process); bounded like `tgids`
    /// (see `remember_process`).
    processes: HashMap<u32, ProcessInfo>,
    events: Vec<ParseEvent>,
    /// What the connections buffer together (the sum of `conn_buffered`), kept as events
    /// change it, for `max_buffered_bytes`.
    buffered: usize,
    last_expiry_ns: u64,
    /// Body hints for the kernel (only when a live capture takes them).
    hints: Option<Vec<BodyHint>>,
}

impl ConnTable {
    pub fn new(cfg: StreamConfig) -> Self {
        Self {
            cfg,
            conns: HashMap::new(),
            tgids: hashbrown::HashSet::new(),
            processes: HashMap::new(),
            events: Vec::new(),
            buffered: 0,
            last_expiry_ns: 0,
            hints: None,
        }
    }

    /// A reloaded policy's HTTP options, for every message parsed from now on (connections
    /// already open included).
    pub fn set_http_options(&mut self, http: HttpOptions) {
        self.cfg.http = http;
    }

    pub fn http_options(&self) -> &HttpOptions {
        &self.cfg.http
    }

    /// Remembers a process with a connection, for its exit event. An exit may not come (the
    /// kernel's table of processes to report is bounded), so the set is rebuilt from the table
    /// when it outgrows it: bounded by the connections, not by every process ever seen.
    fn note_tgid(&mut self, tgid: u32) {
        self.tgids.insert(tgid);
        if self.tgids.len() > 2 * self.conns.len() + 1024 {
            self.tgids = self.conns.keys().map(|id| id.tgid).chain([tgid]).collect();
        }
    }

    /// Keeps a process's facts. Past MAX_PROCESSES, only those of processes with a connection
    /// are kept (the capture sends each process's facts once, so a process without one that
    /// connects later gets its name from its open event and no cgroup).
    fn remember_process(&mut self, facts: crate::capture::event::ProcessFacts) {
        if self.processes.len() >= MAX_PROCESSES {
            let live: hashbrown::HashSet<u32> = self.conns.keys().map(|id| id.tgid).collect();
            self.processes.retain(|tgid, _| live.contains(tgid));
        }
        // Facts sent again without the TLS libraries (the capture's set of described processes
        // started again) keep those already said.
        let tls_library = match (facts.tls_library.is_empty(), self.processes.get(&facts.tgid)) {
            (true, Some(known)) => known.tls_library.clone(),
            _ => facts.tls_library.into(),
        };
        let info = ProcessInfo {
            comm: facts.comm.into(),
            cgroup: facts.cgroup.into(),
            tls_library,
        };
        self.processes.insert(facts.tgid, info);
    }

    /// Collect body hints for a live capture (see `take_hints`).
    pub fn enable_body_hints(&mut self) {
        self.hints = Some(Vec::new());
    }

    /// The body hints since the last call.
    pub fn take_hints(&mut self) -> Vec<BodyHint> {
        self.hints.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Bytes the connections hold between events (parser buffers, HTTP/2 frame buffers).
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn process(&mut self, ev: CaptureEvent, stats: &mut PipelineStats, out: &mut Vec<Exchange>) {
        stats.events += 1;
        let ts = ev.ts_ns();
        match ev {
            CaptureEvent::Open(open) => self.open(open, stats, out),
            CaptureEvent::Data(chunk) => self.data(chunk, stats, out),
            CaptureEvent::Close { ts_ns, id } => {
                if let Some(conn) = self.conns.remove(&id) {
                    self.close_conn(id, conn, ts_ns, stats, out);
                }
            }
            CaptureEvent::Tls { id, .. } => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.tls = true;
                }
            }
            CaptureEvent::Process(facts) => self.remember_process(facts),
            CaptureEvent::ProcessExit { ts_ns, tgid } => {
                // Most exiting processes never had a connection: skip them without a scan.
                if self.tgids.remove(&tgid) {
                    let mut gone: Vec<ConnId> =
                        self.conns.keys().filter(|id| id.tgid == tgid).copied().collect();
                    gone.sort();
                    for id in gone {
                        if let Some(conn) = self.conns.remove(&id) {
                            self.close_conn(id, conn, ts_ns, stats, out);
                        }
                    }
                }
                // After the closes: a blind spot among them is said with the process's libraries.
                self.processes.remove(&tgid);
            }
        }
        // Idle expiry runs on event time (so replay behaves as live), at most once a second.
        if ts >= self.last_expiry_ns + 1_000_000_000 {
            self.last_expiry_ns = ts;
            self.expire(ts, stats, out);
        }
        stats.connections = self.conns.len() as u64;
    }

    /// Closes connections idle longer than the timeout.
    pub fn expire(&mut self, now_ns: u64, stats: &mut PipelineStats, out: &mut Vec<Exchange>) {
        let limit = self.cfg.idle_timeout_ns;
        let idle: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| now_ns.saturating_sub(c.last_ts) > limit)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            if let Some(conn) = self.conns.remove(&id) {
                stats.connections_idle_closed += 1;
                self.close_conn(id, conn, now_ns, stats, out);
            }
        }
    }

    /// Ends every connection (at shutdown or the end of a replay).
    pub fn flush(&mut self, now_ns: u64, stats: &mut PipelineStats, out: &mut Vec<Exchange>) {
        let mut all: Vec<(ConnId, Conn)> = self.conns.drain().collect();
        all.sort_by_key(|(id, _)| *id);
        for (id, conn) in all {
            self.close_conn(id, conn, now_ns, stats, out);
        }
        stats.connections = 0;
    }

    fn open(&mut self, open: ConnOpen, stats: &mut PipelineStats, out: &mut Vec<Exchange>) {
        // An fd reused without a close we saw: finish the old connection first.
        if let Some(old) = self.conns.remove(&open.id) {
            self.close_conn(open.id, old, open.ts_ns, stats, out);
        }
        self.make_room(open.ts_ns, stats, out);
        let mut conn = Conn::new(Some(open.role), open.seeded);
        conn.local = open.local;
        conn.peer = open.peer;
        // The kernel names the process at open; share the facts' copy when it is the same name.
        match self.processes.get(&open.id.tgid) {
            Some(p) => {
                conn.comm = if *p.comm == *open.comm {
                    p.comm.clone()
                } else {
                    open.comm.into()
                };
                conn.cgroup = p.cgroup.clone();
            }
            None => conn.comm = open.comm.into(),
        }
        conn.last_ts = open.ts_ns;
        conn.epoch = open.epoch;
        self.note_tgid(open.id.tgid);
        self.conns.insert(open.id, conn);
        stats.connections_opened += 1;
    }

    fn make_room(&mut self, now_ns: u64, stats: &mut PipelineStats, out: &mut Vec<Exchange>) {
        if self.conns.len() < self.cfg.max_connections {
            return;
        }
        // Rare (the table is full): evict the least recently active connection.
        if let Some(id) = self
            .conns
            .iter()
            .min_by_key(|(_, c)| c.last_ts)
            .map(|(id, _)| *id)
        {
            if let Some(conn) = self.conns.remove(&id) {
                stats.connections_evicted += 1;
                self.close_conn(id, conn, now_ns, stats, out);
            }
        }
    }

    fn data(&mut self, chunk: DataChunk, stats: &mut PipelineStats, out: &mut Vec<Exchange>) {
        let ts_ns = chunk.ts_ns;
        if let Some((before, after)) = self.feed_data(chunk, stats, out) {
            self.buffered = (self.buffered + after).saturating_sub(before);
        }
        if self.buffered > self.cfg.max_buffered_bytes {
            self.shed(ts_ns, stats, out);
        }
    }

    /// Over the buffer budget: evicts the connections that buffer the most until the table
    /// holds at most 3/4 of it (so that a steady attack pays one scan per quarter budget of
    /// new bytes, not one per event). Their next bytes start a connection seen mid-stream.
    fn shed(&mut self, now_ns: u64, stats: &mut PipelineStats, out: &mut Vec<Exchange>) {
        let mut by_size: Vec<(usize, ConnId)> = self
            .conns
            .iter()
            .map(|(id, c)| (conn_buffered(c), *id))
            .filter(|(b, _)| *b > 0)
            .collect();
        by_size.sort_unstable_by(|a, b| b.cmp(a));
        let target = self.cfg.max_buffered_bytes / 4 * 3;
        for (_, id) in by_size {
            if self.buffered <= target {
                break;
            }
            if let Some(conn) = self.conns.remove(&id) {
                stats.connections_shed += 1;
                self.close_conn(id, conn, now_ns, stats, out);
            }
        }
    }

    /// Feeds one chunk to its connection; returns the bytes the connection buffered before and
    /// after (measured here, where the connection is at hand, to keep the budget's running
    /// total without two more lookups per event).
    fn feed_data(
        &mut self,
        chunk: DataChunk,
        stats: &mut PipelineStats,
        out: &mut Vec<Exchange>,
    ) -> Option<(usize, usize)> {
        stats.data_events += 1;
        stats.bytes_seen += chunk.bytes.len() as u64;
        stats.bytes_not_seen += chunk.gap();
        if !self.conns.contains_key(&chunk.id) {
            // Opened before we watched, or its open event was lost: parse from the next start.
            self.make_room(chunk.ts_ns, stats, out);
            let mut conn = Conn::new(None, true);
            // The name the capture recorded for the process: no /proc read here, so a
            // recording replays the same anywhere.
            if let Some(p) = self.processes.get(&chunk.id.tgid) {
                conn.comm = p.comm.clone();
                conn.cgroup = p.cgroup.clone();
            }
            self.note_tgid(chunk.id.tgid);
            self.conns.insert(chunk.id, conn);
            stats.connections_opened += 1;
        }
        let conn = self.conns.get_mut(&chunk.id)?;
        let before = conn_buffered(conn);
        conn.last_ts = chunk.ts_ns;
        if chunk.tls {
            conn.tls = true;
            conn.tls_plaintext_seen = true;
        }
        if conn.h2.is_none() && conn.h2_tries > 0 {
            conn.h2_tries -= 1;
            let bytes = &chunk.bytes;
            if crate::http::h2::starts_connection(bytes) {
                let fresh = !conn.mid_stream || bytes.starts_with(crate::http::h2::PREFACE);
                conn.h2 = Some(Box::new(H2Conn::new(fresh, chunk.direction, bytes, conn.role)));
            } else if conn.mid_stream && crate::http::h2::starts_with_frames(bytes) {
                conn.h2 = Some(Box::new(H2Conn::new(false, chunk.direction, bytes, conn.role)));
            }
            if conn.h2.is_some() {
                stats.h2.connections += 1;
                conn.h2_tries = 0;
            }
        }
        if feed_h2(conn, &chunk, 0, &self.cfg.http, stats, out) {
            return Some((before, conn_buffered(conn)));
        }
        let parser = match chunk.direction {
            Direction::Ingress => &mut conn.ingress,
            Direction::Egress => &mut conn.egress,
        };
        let skipped = parser.skipped_bytes;
        self.events.clear();
        parser.feed(
            chunk.ts_ns,
            &chunk.bytes,
            chunk.gap(),
            &conn.pending,
            &self.cfg.http,
            &mut self.events,
        );
        stats.bytes_skipped += parser.skipped_bytes - skipped;
        let body_left = parser.body_remaining();
        let tunnel_from = parser.tunnel_from;
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            handle(chunk.id, conn, chunk.direction, ev, stats, out);
        }
        self.events = events;
        // Upgraded to HTTP/2 by this chunk: what follows the 101 in it are frames.
        if let Some(from) = tunnel_from
            && feed_h2(conn, &chunk, from, &self.cfg.http, stats, out)
        {
            return Some((before, conn_buffered(conn)));
        }
        let d = match chunk.direction {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        };
        conn.reported[d] += chunk.total_len;
        if let (Some(hints), Some(left)) = (&mut self.hints, body_left) {
            let until = conn.reported[d] + left;
            if conn.epoch != 0
                && left >= BODY_HINT_MIN
                && until > conn.hinted[d]
                && hints.len() < MAX_BODY_HINTS
            {
                conn.hinted[d] = until;
                hints.push(BodyHint {
                    id: chunk.id,
                    direction: chunk.direction,
                    epoch: conn.epoch,
                    until,
                });
            }
        }
        Some((before, conn_buffered(conn)))
    }

    fn close_conn(
        &mut self,
        id: ConnId,
        mut conn: Conn,
        ts_ns: u64,
        stats: &mut PipelineStats,
        out: &mut Vec<Exchange>,
    ) {
        self.buffered = self.buffered.saturating_sub(conn_buffered(&conn));
        if let Some(mut h2) = conn.h2.take() {
            h2.close(id, &conn, ts_ns, stats, out);
            return;
        }
        for dir in [Direction::Ingress, Direction::Egress] {
            self.events.clear();
            match dir {
                Direction::Ingress => conn.ingress.finish(ts_ns, &self.cfg.http, &mut self.events),
                Direction::Egress => conn.egress.finish(ts_ns, &self.cfg.http, &mut self.events),
            }
            let mut events = std::mem::take(&mut self.events);
            for ev in events.drain(..) {
                handle(id, &mut conn, dir, ev, stats, out);
            }
            self.events = events;
        }
        if conn.tls && !conn.tls_plaintext_seen {
            let library = self.processes.get(&id.tgid).map_or("", |p| &p.tls_library);
            let library = if library.is_empty() {
                crate::capture::tls_library::UNKNOWN
            } else {
                library
            };
            stats.record_tls_blind_spot(&conn.comm, library);
        }
        // Requests that never got a response still happened: report them without a status.
        while let Some(req) = conn.pending.0.pop_front() {
            stats.requests_unanswered += 1;
            out.push(build_exchange(
                id,
                &conn,
                req,
                None,
                ts_ns,
                ResponseSize::default(),
            ));
            stats.exchanges += 1;
        }
    }
}

/// Bytes a connection holds between events: parser buffers, HTTP/2 frame buffers.
fn conn_buffered(c: &Conn) -> usize {
    c.ingress.buffered() + c.egress.buffered() + c.h2.as_ref().map_or(0, |h| h.buffered())
}

/// Feeds `chunk`'s bytes from `from` on to the connection's HTTP/2 decoder, if it has one (false:
/// it is not HTTP/2).
fn feed_h2(
    conn: &mut Conn,
    chunk: &DataChunk,
    from: usize,
    http: &HttpOptions,
    stats: &mut PipelineStats,
    out: &mut Vec<Exchange>,
) -> bool {
    // Taken out for the call: the decoder reads the connection's other fields.
    let Some(mut h2) = conn.h2.take() else {
        return false;
    };
    h2.feed(
        chunk.id,
        conn,
        chunk.direction,
        chunk.ts_ns,
        &chunk.bytes[from..],
        chunk.gap(),
        http,
        stats,
        out,
    );
    conn.h2 = Some(h2);
    true
}

fn handle(
    id: ConnId,
    conn: &mut Conn,
    dir: Direction,
    // By value: the heads move into the connection's state instead of being copied.
    ev: ParseEvent,
    stats: &mut PipelineStats,
    out: &mut Vec<Exchange>,
) {
    match ev {
        ParseEvent::Head {
            head: Head::Request(req),
            ts_ns,
        } => {
            if conn.role.is_none() {
                conn.role = Some(if dir == Direction::Ingress {
                    Role::Server
                } else {
                    Role::Client
                });
            }
            if conn.request_direction() != Some(dir) {
                stats.parse_errors.record(ParseError::Malformed);
                return;
            }
            conn.h2_tries = 0;
            if req.truncated {
                stats.heads_truncated += 1;
            }
            if conn.pending.0.len() >= MAX_PENDING_REQUESTS {
                stats.pending_overflow += 1;
                conn.request_open = false;
                return;
            }
            conn.pending.0.push_back(PendingRequest {
                head: req,
                ts_ns,
                bytes: 0,
                body_bytes: 0,
                ended: false,
            });
            conn.request_open = true;
        }
        ParseEvent::Head {
            head: Head::Response(resp),
            ..
        } => {
            if conn.role.is_none() {
                conn.role = Some(if dir == Direction::Ingress {
                    Role::Client
                } else {
                    Role::Server
                });
            }
            if resp.truncated {
                stats.heads_truncated += 1;
            }
            conn.response = if (100..200).contains(&resp.status) && resp.status != 101 {
                stats.informational_responses += 1;
                None
            } else {
                Some((resp.status, resp.truncated, resp.content_type))
            };
        }
        ParseEvent::End {
            bytes,
            head_bytes,
            ts_ns,
            complete,
        } => {
            if conn.request_direction() == Some(dir) {
                if conn.request_open {
                    if let Some(req) = conn.pending.0.back_mut() {
                        req.bytes = bytes;
                        req.body_bytes = bytes - head_bytes;
                        req.ended = complete;
                    }
                    conn.request_open = false;
                }
                return;
            }
            let Some((status, truncated, content_type)) = conn.response.take() else {
                return;
            };
            let Some(req) = conn.pending.0.pop_front() else {
                stats.orphan_responses += 1;
                return;
            };
            if status == 101 && req.head.upgrade_h2c {
                // Not an exchange of its own: the request's answer comes on HTTP/2's stream 1.
                conn.h2c_upgrade = Some(req);
                return;
            }
            let resp = ResponseSize {
                bytes,
                body_bytes: bytes - head_bytes,
                complete,
                content_type,
            };
            let mut ex = build_exchange(id, conn, req, Some(status), ts_ns, resp);
            ex.truncated |= truncated;
            out.push(ex);
            stats.exchanges += 1;
        }
        ParseEvent::Tunnel => {
            conn.ingress.set_tunnel();
            conn.egress.set_tunnel();
            match (conn.h2c_upgrade.take(), conn.request_direction()) {
                (Some(req), Some(client)) => {
                    conn.h2 = Some(Box::new(H2Conn::upgraded(
                        client,
                        req.head,
                        req.ts_ns,
                        [req.bytes, req.body_bytes],
                        req.ended,
                        stats,
                    )));
                    conn.h2_tries = 0;
                    stats.h2.connections += 1;
                    stats.h2.upgrades += 1;
                }
                _ => stats.tunnels += 1,
            }
        }
        ParseEvent::Error(e) => stats.parse_errors.record(e),
    }
}

#[derive(Default)]
struct ResponseSize {
    bytes: u64,
    body_bytes: u64,
    complete: bool,
    content_type: Option<String>,
}

fn build_exchange(
    id: ConnId,
    conn: &Conn,
    req: PendingRequest,
    status: Option<u16>,
    end_ts: u64,
    resp: ResponseSize,
) -> Exchange {
    let PendingRequest {
        head,
        ts_ns,
        bytes,
        body_bytes,
        ended,
    } = req;
    Exchange {
        ts: ts_ns,
        pid: id.tgid,
        comm: conn.comm.clone(),
        cgroup: conn.cgroup.clone(),
        role: conn.role.unwrap_or(Role::Server),
        local: conn.local,
        peer: conn.peer,
        tls: conn.tls,
        method: head.method,
        path: head.path,
        query_keys: head.query_keys,
        host: head.host,
        status,
        service: crate::exchange::unnamed(),
        route: crate::exchange::unnamed(),
        req_bytes: bytes,
        resp_bytes: resp.bytes,
        req_body_bytes: body_bytes,
        resp_body_bytes: resp.body_bytes,
        latency_us: status.map(|_| end_ts.saturating_sub(ts_ns) / 1000),
        auth_scheme: head.auth_scheme,
        fingerprint: head.fingerprint,
        jwt: head.jwt,
        url_detectors: head.url_detectors,
        api_key_header: head.api_key_header,
        http_version: version_str(head.version),
        user_agent: head.user_agent,
        req_content_type: head.content_type,
        resp_content_type: resp.content_type,
        truncated: head.truncated,
        complete: status.is_some() && ended && resp.complete,
        stream_id: None,
        reset_code: None,
        grpc: None,
    }
}

#[cfg(test)]
mod tests;
