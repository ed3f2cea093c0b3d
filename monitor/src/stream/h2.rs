//! HTTP/2 connections: each stream one exchange. Frames from both directions (http::h2::frame),
//! header blocks through each direction's HPACK decoder, requests paired with responses by
//! stream id, gRPC calls recognised by their content type.
use hashbrown::HashMap;
use serde::Serialize;

use super::Conn;
use crate::capture::{ConnId, Direction, Role};
use crate::exchange::{Exchange, GrpcCall};
use crate::http::h2::hpack::{self, Field};
use crate::http::h2::{FrameEvent, FrameReader, GrpcMessages, grpc_method, is_grpc_content_type};
use crate::http::head::RequestHeadBuilder;
use crate::http::{AuthScheme, HttpOptions, RequestHead};
use crate::stats::PipelineStats;

/// Streams tracked per connection (servers allow ~100 concurrent); more are refused and counted.
pub const MAX_STREAMS: usize = 256;
/// The longest grpc-message kept (it is the server's error text).
const MAX_GRPC_MESSAGE: usize = 256;

/// What the HTTP/2 decoding could not follow, and how much it saw.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct H2Stats {
    pub connections: u64,
    /// Of those, HTTP/1.1 connections upgraded in cleartext (`Upgrade: h2c`, then 101).
    pub upgrades: u64,
    pub streams: u64,
    /// Header fields that referred to HPACK table entries never seen (a connection joined
    /// mid-way, or a lost block).
    pub unknown_fields: u64,
    /// Streams not reported because their method or path was unknown (never a wrong path).
    pub streams_unattributed: u64,
    pub streams_refused: u64,
    pub streams_reset: u64,
    pub framing_lost: u64,
    pub header_blocks_lost: u64,
    pub header_blocks_too_large: u64,
    pub hpack_errors: u64,
    pub table_size_updates_refused: u64,
}

#[derive(Default)]
struct H2Stream {
    req: Option<Box<RequestHead>>,
    /// The request's method or path was unknown, or its header block was lost.
    unattributed: bool,
    ts_ns: u64,
    grpc: bool,
    status: Option<u16>,
    wire: [u64; 2],
    body: [u64; 2],
    ended: [bool; 2],
    grpc_status: Option<u32>,
    grpc_message: Option<String>,
    resp_content_type: Option<String>,
    messages: [GrpcMessages; 2],
    reset: Option<u32>,
}

pub struct H2Conn {
    /// By direction: [ingress, egress].
    readers: [FrameReader; 2],
    /// Apart from the readers, so their frame events can borrow the readers' buffers.
    state: Streams,
    /// Losses already added to the stats.
    counted: (u64, u64, u64, u64, u64),
}

/// The HPACK decoders and the streams of one connection.
struct Streams {
    hpack: [hpack::Decoder; 2],
    streams: HashMap<u32, H2Stream>,
    fields: Vec<Field>,
    /// Which direction carries requests, once known (the preface's, the role's, or the first
    /// request block's).
    client_dir: Option<usize>,
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

fn dir_of(i: usize) -> Direction {
    if i == 0 {
        Direction::Ingress
    } else {
        Direction::Egress
    }
}

impl H2Conn {
    /// A connection seen from its start (`first_dir` sent the first bytes; the preface if it is
    /// the client), or joined mid-way (`fresh` false: every reader resyncs, HPACK is partial).
    pub fn new(fresh: bool, first_dir: Direction, first: &[u8], role: Option<Role>) -> Self {
        let preface_dir =
            (fresh && first.starts_with(&crate::http::h2::PREFACE[..4])).then(|| dir_index(first_dir));
        let role_dir = role.map(|r| match r {
            Role::Server => 0,
            Role::Client => 1,
        });
        let client_dir = preface_dir.or(role_dir);
        let reader = |i: usize| {
            if !fresh {
                FrameReader::resyncing()
            } else {
                // The client's side starts with the preface; the server's with frames.
                FrameReader::new(client_dir == Some(i))
            }
        };
        Self {
            readers: [reader(0), reader(1)],
            state: Streams {
                hpack: [hpack::Decoder::new(!fresh), hpack::Decoder::new(!fresh)],
                streams: HashMap::new(),
                fields: Vec::new(),
                client_dir,
            },
            counted: (0, 0, 0, 0, 0),
        }
    }

    /// An HTTP/1.1 connection a 101 turned into HTTP/2 (`Upgrade: h2c`, RFC 7540 section 3.2):
    /// the upgrading request is stream 1, half-closed by the client when it `ended`; `sizes` are
    /// its wire and body bytes. Next come the client's preface and the server's SETTINGS; both
    /// HPACK tables start empty, as on any fresh connection.
    pub fn upgraded(
        client: Direction,
        req: Box<RequestHead>,
        ts_ns: u64,
        sizes: [u64; 2],
        ended: bool,
        stats: &mut PipelineStats,
    ) -> Self {
        let c = dir_index(client);
        let mut conn = Self {
            readers: [FrameReader::new(c == 0), FrameReader::new(c == 1)],
            state: Streams {
                hpack: [hpack::Decoder::new(false), hpack::Decoder::new(false)],
                streams: HashMap::new(),
                fields: Vec::new(),
                client_dir: Some(c),
            },
            counted: (0, 0, 0, 0, 0),
        };
        if let Some(s) = conn.state.stream_mut(1, ts_ns, stats) {
            s.req = Some(req);
            s.wire[c] = sizes[0];
            s.body[c] = sizes[1];
            s.ended[c] = ended;
        }
        conn
    }

    /// Memory held beyond the streams (frame buffers).
    pub fn buffered(&self) -> usize {
        self.readers.iter().map(FrameReader::buffered).sum()
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the connection's parts the stage borrows at once, split so each can be borrowed"
    )]
    pub(super) fn feed(
        &mut self,
        id: ConnId,
        conn: &Conn,
        dir: Direction,
        ts_ns: u64,
        bytes: &[u8],
        unseen: u64,
        http: &HttpOptions,
        stats: &mut PipelineStats,
        out: &mut Vec<Exchange>,
    ) {
        let d = dir_index(dir);
        let desyncs = self.readers[d].losses.desyncs;
        let state = &mut self.state;
        self.readers[d].feed(bytes, unseen, &mut |e| {
            state.on_frame(id, conn, d, ts_ns, e, http, stats, out)
        });
        if self.readers[d].losses.desyncs > desyncs {
            // Whatever the lost frames held, header blocks may have been among them.
            self.state.hpack[d].lost_block();
        }
        self.count_losses(stats);
    }

    fn count_losses(&mut self, stats: &mut PipelineStats) {
        let l = |r: &FrameReader| r.losses;
        let (a, b) = (l(&self.readers[0]), l(&self.readers[1]));
        let now = (
            a.desyncs + b.desyncs,
            a.blocks_lost + b.blocks_lost,
            a.blocks_too_large + b.blocks_too_large,
            self.state.hpack[0].unknown_refs + self.state.hpack[1].unknown_refs,
            self.state.hpack[0].size_updates_refused + self.state.hpack[1].size_updates_refused,
        );
        let h = &mut stats.h2;
        h.framing_lost += now.0 - self.counted.0;
        h.header_blocks_lost += now.1 - self.counted.1;
        h.header_blocks_too_large += now.2 - self.counted.2;
        h.unknown_fields += now.3 - self.counted.3;
        h.table_size_updates_refused += now.4 - self.counted.4;
        self.counted = now;
    }
}

impl Streams {
    #[allow(
        clippy::too_many_arguments,
        reason = "as for feed: the parts of the connection borrowed separately"
    )]
    fn on_frame(
        &mut self,
        id: ConnId,
        conn: &Conn,
        d: usize,
        ts_ns: u64,
        e: FrameEvent<'_>,
        http: &HttpOptions,
        stats: &mut PipelineStats,
        out: &mut Vec<Exchange>,
    ) {
        match e {
            FrameEvent::Headers {
                stream,
                end_stream,
                block,
                promised,
                wire,
            } => {
                let Some(block) = block else {
                    // The block's table changes are unknown from now on.
                    self.hpack[d].lost_block();
                    if let Some(s) = self.stream_mut(stream, ts_ns, stats) {
                        s.wire[d] += wire;
                        if s.req.is_none() {
                            s.unattributed = true;
                        }
                        if end_stream {
                            s.ended[d] = true;
                        }
                    }
                    self.maybe_finish(id, conn, stream, ts_ns, stats, out);
                    return;
                };
                self.fields.clear();
                if self.hpack[d].decode(block, &mut self.fields, http).is_err() {
                    stats.h2.hpack_errors += 1;
                }
                let fields = std::mem::take(&mut self.fields);
                // A pushed response's request is the PUSH_PROMISE's block, on the new stream.
                let target = promised.unwrap_or(stream);
                self.on_block(target, d, ts_ns, &fields, wire, http, stats);
                self.fields = fields;
                if end_stream && promised.is_none() {
                    if let Some(s) = self.streams.get_mut(&stream) {
                        s.ended[d] = true;
                    }
                }
                self.maybe_finish(id, conn, stream, ts_ns, stats, out);
            }
            FrameEvent::Data {
                stream,
                seen,
                unseen,
                wire,
                end_stream,
            } => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    // A stream whose headers we never saw (joined mid-way): nothing to attribute.
                    return;
                };
                s.wire[d] += wire;
                s.body[d] += seen.len() as u64 + unseen;
                // Counted on every stream: a gRPC call may be known as one only from its
                // response's content type (its request's was an HPACK entry never seen).
                s.messages[d].feed(seen, unseen);
                if end_stream {
                    s.ended[d] = true;
                    self.maybe_finish(id, conn, stream, ts_ns, stats, out);
                }
            }
            FrameEvent::RstStream { stream, code } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.reset = Some(code);
                    stats.h2.streams_reset += 1;
                    self.finish(id, conn, stream, ts_ns, stats, out);
                }
            }
            FrameEvent::Settings {
                ack: false,
                header_table_size: Some(size),
            } => {
                // The sender's decoder allows this much: the other direction's encoder may use it.
                self.hpack[1 - d].set_limit(size);
            }
            FrameEvent::Settings { .. } => {}
            FrameEvent::GoAway { last_stream, .. } => {
                // Streams the sender will never process (RFC 9113 section 6.8) end here, unanswered.
                let mut gone: Vec<u32> = self
                    .streams
                    .keys()
                    .copied()
                    .filter(|&s| s > last_stream && self.initiated_by_other(s, d))
                    .collect();
                gone.sort_unstable();
                for s in gone {
                    self.finish(id, conn, s, ts_ns, stats, out);
                }
            }
        }
    }

    /// Whether stream `s` was opened by the peer of direction `d`'s sender: clients open odd
    /// streams, servers (pushes) even ones.
    fn initiated_by_other(&self, s: u32, d: usize) -> bool {
        let sender_is_client = self.client_dir == Some(d);
        (s % 2 == 1) != sender_is_client
    }

    fn stream_mut(&mut self, stream: u32, ts_ns: u64, stats: &mut PipelineStats) -> Option<&mut H2Stream> {
        if !self.streams.contains_key(&stream) {
            if self.streams.len() >= MAX_STREAMS {
                stats.h2.streams_refused += 1;
                return None;
            }
            stats.h2.streams += 1;
            self.streams.insert(
                stream,
                H2Stream {
                    ts_ns,
                    ..Default::default()
                },
            );
        }
        self.streams.get_mut(&stream)
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "as for feed: the frame's parts and the connection's, borrowed separately"
    )]
    fn on_block(
        &mut self,
        stream: u32,
        d: usize,
        ts_ns: u64,
        fields: &[Field],
        wire: u64,
        http: &HttpOptions,
        stats: &mut PipelineStats,
    ) {
        let pseudo = |name: &str| {
            fields
                .iter()
                .find(|f| f.name.as_deref() == Some(name.as_bytes()))
                .map(|f| f.value.as_deref())
        };
        let is_request = pseudo(":method").is_some();
        let status = pseudo(":status");
        if is_request && self.client_dir.is_none() {
            self.client_dir = Some(d);
        } else if status.is_some() && self.client_dir.is_none() {
            self.client_dir = Some(1 - d);
        }
        let Some(s) = self.stream_mut(stream, ts_ns, stats) else {
            return;
        };
        s.wire[d] += wire;
        if is_request {
            s.ts_ns = ts_ns;
            match request_head(fields, http) {
                Some((head, grpc)) => {
                    s.req = Some(head);
                    s.grpc = grpc;
                }
                None => s.unattributed = true,
            }
        } else if let Some(status) = status {
            let code = status.and_then(|v| std::str::from_utf8(v).ok()?.parse::<u16>().ok());
            match code {
                // Informational responses (100, 103) precede the real one.
                Some(c) if (100..200).contains(&c) => stats.informational_responses += 1,
                Some(c) => s.status = Some(c),
                None => {}
            }
        }
        // Trailers, or a trailers-only gRPC response: the call's status.
        for f in fields {
            match (f.name.as_deref(), &f.value) {
                (Some(b"content-type"), Some(v)) if status.is_some() => {
                    s.grpc |= is_grpc_content_type(v);
                    s.resp_content_type = crate::http::head::media_type(v);
                }
                (Some(b"grpc-status"), Some(v)) => {
                    s.grpc_status = std::str::from_utf8(v).ok().and_then(|v| v.trim().parse().ok());
                }
                (Some(b"grpc-message"), Some(v)) => {
                    let text = String::from_utf8_lossy(v);
                    s.grpc_message = Some(text.chars().take(MAX_GRPC_MESSAGE).collect());
                }
                _ => {}
            }
        }
    }

    fn maybe_finish(
        &mut self,
        id: ConnId,
        conn: &Conn,
        stream: u32,
        ts_ns: u64,
        stats: &mut PipelineStats,
        out: &mut Vec<Exchange>,
    ) {
        let Some(client) = self.client_dir else {
            return;
        };
        // The response's end ends the exchange (a server may answer before the request's end).
        if self.streams.get(&stream).is_some_and(|s| s.ended[1 - client]) {
            self.finish(id, conn, stream, ts_ns, stats, out);
        }
    }

    fn finish(
        &mut self,
        id: ConnId,
        conn: &Conn,
        stream: u32,
        ts_ns: u64,
        stats: &mut PipelineStats,
        out: &mut Vec<Exchange>,
    ) {
        let Some(s) = self.streams.remove(&stream) else {
            return;
        };
        let (Some(req), false) = (s.req, s.unattributed) else {
            stats.h2.streams_unattributed += 1;
            return;
        };
        let client = self.client_dir.unwrap_or(match conn.role {
            Some(Role::Client) => 1,
            _ => 0,
        });
        let server = 1 - client;
        let complete = s.status.is_some() && s.ended[client] && s.ended[server] && s.reset.is_none();
        let grpc = s.grpc.then(|| {
            let (service, method) = grpc_method(&req.path).unwrap_or(("", ""));
            GrpcCall {
                service: service.to_string(),
                method: method.to_string(),
                status: s.grpc_status,
                message: s.grpc_message.clone(),
                request_messages: (!s.messages[client].lost).then_some(s.messages[client].count),
                response_messages: (!s.messages[server].lost).then_some(s.messages[server].count),
            }
        });
        let role = conn.role.unwrap_or(if dir_of(client) == Direction::Ingress {
            Role::Server
        } else {
            Role::Client
        });
        out.push(Exchange {
            ts: s.ts_ns,
            pid: id.tgid,
            comm: conn.comm.clone(),
            cgroup: conn.cgroup.clone(),
            role,
            local: conn.local,
            peer: conn.peer,
            tls: conn.tls,
            method: req.method,
            path: req.path,
            query_keys: req.query_keys,
            host: req.host,
            service: crate::exchange::unnamed(),
            route: crate::exchange::unnamed(),
            status: s.status,
            req_bytes: s.wire[client],
            resp_bytes: s.wire[server],
            req_body_bytes: s.body[client],
            resp_body_bytes: s.body[server],
            latency_us: s.status.map(|_| ts_ns.saturating_sub(s.ts_ns) / 1000),
            auth_scheme: req.auth_scheme,
            fingerprint: req.fingerprint,
            jwt: req.jwt,
            url_detectors: req.url_detectors,
            api_key_header: req.api_key_header,
            http_version: "2",
            user_agent: req.user_agent,
            req_content_type: req.content_type,
            resp_content_type: s.resp_content_type,
            truncated: req.truncated,
            complete,
            stream_id: Some(stream),
            reset_code: s.reset,
            grpc: grpc.map(Box::new),
        });
        stats.exchanges += 1;
    }
}

impl H2Conn {
    /// The connection ended: every open stream is reported as it stands.
    pub(super) fn close(
        &mut self,
        id: ConnId,
        conn: &Conn,
        ts_ns: u64,
        stats: &mut PipelineStats,
        out: &mut Vec<Exchange>,
    ) {
        let mut open: Vec<u32> = self.state.streams.keys().copied().collect();
        open.sort_unstable();
        for s in open {
            if self.state.streams.get(&s).is_some_and(|s| s.req.is_some()) {
                stats.requests_unanswered += 1;
            }
            self.state.finish(id, conn, s, ts_ns, stats, out);
        }
        self.count_losses(stats);
    }
}

/// A request head from a request's fields; None when its method or path is unknown (an HPACK
/// reference to an entry never seen): such a request is not reported rather than misnamed.
fn request_head(fields: &[Field], http: &HttpOptions) -> Option<(Box<RequestHead>, bool)> {
    let value = |name: &str| -> Option<Option<&[u8]>> {
        fields
            .iter()
            .find(|f| f.name.as_deref() == Some(name.as_bytes()))
            .map(|f| f.value.as_deref())
    };
    let method = std::str::from_utf8(value(":method")??).ok()?;
    let path = match value(":path") {
        Some(p) => std::str::from_utf8(p?).ok()?,
        // CONNECT has no :path (RFC 9113 section 8.5).
        None if method == "CONNECT" => "",
        None => return None,
    };
    let mut b = RequestHeadBuilder::new(method, path, 2, false, http);
    let mut grpc = false;
    let mut unknown = false;
    for f in fields {
        match (&f.name, &f.value) {
            (Some(n), Some(v)) => {
                let Ok(name) = std::str::from_utf8(n) else {
                    continue;
                };
                if name == ":authority" {
                    b.authority(v);
                } else if name == "content-type" {
                    grpc |= is_grpc_content_type(v);
                } else if !name.starts_with(':') {
                    b.header(name, v);
                }
            }
            _ => unknown = true,
        }
    }
    let mut head = b.finish();
    // A field we could not read may have been the credential: say the head is incomplete
    // rather than claim "no auth".
    if unknown && head.auth_scheme == AuthScheme::None {
        head.truncated = true;
    }
    Some((head, grpc))
}
