//! Incremental HTTP/1.x message parser for one direction of one connection.
//!
//! Input is a sequence of chunks, each made of the bytes the kernel copied followed by a number of
//! bytes it counted but did not copy (a `gap`). Body bytes may fall into gaps without harm: framing
//! is by count. A gap inside a head or a chunk-size line loses the framing; the parser then says
//! so and resynchronises on the next thing that looks like the start of a message.

use super::head::{
    Framing, Head, HeadParse, HttpOptions, find_message_start, parse_head, parse_truncated_head,
    response_framing, starts_like_message,
};

/// Bytes of one head buffered at most; a larger head is treated as malformed.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// A chunk-size or trailer line longer than this is malformed.
const MAX_LINE_BYTES: usize = 1024;

/// What the parser found, in stream order.
#[allow(
    clippy::large_enum_variant,
    reason = "transient: drained right after each feed (see Head)"
)]
#[derive(Debug, PartialEq, Eq)]
pub enum ParseEvent {
    /// A message head; `ts_ns` is when its first byte was seen.
    Head { head: Head, ts_ns: u64 },
    /// The message that began with the last `Head` ended; `bytes` counts head and body on the
    /// wire; `complete` is false when it ended at a close or a loss of framing.
    End {
        bytes: u64,
        head_bytes: u64,
        ts_ns: u64,
        complete: bool,
    },
    /// The connection switched protocols (101, CONNECT): nothing more is parsed on it.
    Tunnel,
    /// Bytes that could not be parsed; the parser is resynchronising.
    Error(ParseError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Bytes that do not form an HTTP head.
    Malformed,
    /// A head longer than MAX_HEAD_BYTES.
    HeadTooLarge,
    /// Bytes of a head or chunk framing were not captured.
    FramingLost,
    /// A chunk-size line or chunk terminator is malformed.
    BadChunk,
}

impl ParseError {
    pub fn as_str(self) -> &'static str {
        match self {
            ParseError::Malformed => "malformed",
            ParseError::HeadTooLarge => "head_too_large",
            ParseError::FramingLost => "framing_lost",
            ParseError::BadChunk => "bad_chunk",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between messages.
    Idle,
    /// Inside a head (bytes in `head_buf`).
    Head,
    Body {
        remaining: u64,
    },
    ChunkSize,
    ChunkData {
        remaining: u64,
    },
    ChunkDataEnd {
        remaining: u8,
    },
    Trailer,
    UntilClose,
    Tunnel,
    /// Framing lost: skip bytes until something looks like a message start.
    Resync,
}

/// Tells the response parser the method of the request a response answers (HEAD and CONNECT
/// responses are framed differently). `index` counts final responses already ended in this feed.
pub trait RequestMethods {
    fn method_of_pending(&self, index: usize) -> Option<&str>;
}

impl RequestMethods for () {
    fn method_of_pending(&self, _index: usize) -> Option<&str> {
        None
    }
}

pub struct MessageParser {
    state: State,
    head_buf: Vec<u8>,
    line_buf: Vec<u8>,
    /// Wire bytes of the current message so far.
    msg_bytes: u64,
    /// Bytes of the current message's head (the rest of msg_bytes is body).
    head_bytes: u64,
    /// Final responses ended during the current `feed` (see `RequestMethods`).
    ended_in_feed: usize,
    /// The message in progress is a final (non-1xx) response: its end answers a request.
    in_final_response: bool,
    head_ts: u64,
    /// Bytes skipped while resynchronising (for the caller's counters).
    pub skipped_bytes: u64,
    /// Where in the last `feed`'s bytes the stream stopped being HTTP/1 (after a 101 or a
    /// CONNECT's 2xx): the caller may hand the rest to what the connection became (HTTP/2 after
    /// an `Upgrade: h2c`).
    pub tunnel_from: Option<usize>,
}

impl Default for MessageParser {
    fn default() -> Self {
        Self::new()
    }
}

impl MessageParser {
    pub fn new() -> Self {
        Self {
            state: State::Idle,
            head_buf: Vec::new(),
            line_buf: Vec::new(),
            msg_bytes: 0,
            head_bytes: 0,
            ended_in_feed: 0,
            in_final_response: false,
            head_ts: 0,
            skipped_bytes: 0,
            tunnel_from: None,
        }
    }

    /// A parser for a connection seen mid-stream: it starts by looking for a message start.
    pub fn resyncing() -> Self {
        Self {
            state: State::Resync,
            ..Self::new()
        }
    }

    /// Body bytes still to come that are only counted, never parsed: the rest of a
    /// Content-Length body or of a chunk's data. The capture need not copy them.
    pub fn body_remaining(&self) -> Option<u64> {
        match self.state {
            State::Body { remaining } | State::ChunkData { remaining } => Some(remaining),
            _ => None,
        }
    }

    pub fn is_tunnel(&self) -> bool {
        self.state == State::Tunnel
    }

    pub fn set_tunnel(&mut self) {
        self.state = State::Tunnel;
        self.head_buf = Vec::new();
    }

    /// Bytes this parser holds on the heap (for per-connection caps).
    pub fn buffered(&self) -> usize {
        self.head_buf.capacity() + self.line_buf.capacity()
    }

    /// Feeds one chunk: `data` seen, then `gap` bytes not seen.
    pub fn feed(
        &mut self,
        ts_ns: u64,
        data: &[u8],
        gap: u64,
        methods: &dyn RequestMethods,
        http: &HttpOptions,
        out: &mut Vec<ParseEvent>,
    ) {
        self.ended_in_feed = 0;
        self.tunnel_from = None;
        self.feed_seen(ts_ns, data, methods, http, out);
        if gap > 0 {
            self.feed_gap(ts_ns, gap, http, out);
        }
    }

    /// The connection closed: end whatever is in progress.
    pub fn finish(&mut self, ts_ns: u64, http: &HttpOptions, out: &mut Vec<ParseEvent>) {
        match self.state {
            State::Head => {
                if let Some(head) = parse_truncated_head(&self.head_buf, http) {
                    self.msg_bytes = self.head_buf.len() as u64;
                    self.head_bytes = self.msg_bytes;
                    self.in_final_response = is_final_response(&head);
                    out.push(ParseEvent::Head {
                        head,
                        ts_ns: self.head_ts,
                    });
                    self.end(ts_ns, false, out);
                }
            }
            State::UntilClose => self.end(ts_ns, true, out),
            State::Body { .. }
            | State::ChunkSize
            | State::ChunkData { .. }
            | State::ChunkDataEnd { .. }
            | State::Trailer => self.end(ts_ns, false, out),
            State::Idle | State::Tunnel | State::Resync => {}
        }
        self.state = State::Idle;
        self.head_buf = Vec::new();
        self.line_buf = Vec::new();
    }

    fn feed_seen(
        &mut self,
        ts_ns: u64,
        mut data: &[u8],
        methods: &dyn RequestMethods,
        http: &HttpOptions,
        out: &mut Vec<ParseEvent>,
    ) {
        let total = data.len();
        while !data.is_empty() {
            match self.state {
                State::Idle => {
                    // RFC 9112 2.2: ignore empty lines before a request line.
                    let skip = data.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
                    data = &data[skip..];
                    if data.is_empty() {
                        break;
                    }
                    self.state = State::Head;
                    self.head_ts = ts_ns;
                    self.msg_bytes = 0;
                }
                State::Head => {
                    let prev = self.head_buf.len();
                    let room = MAX_HEAD_BYTES - prev;
                    let take = data.len().min(room);
                    // Most heads arrive whole in one chunk: parse them where they lie. Copying
                    // every head into head_buf first was the largest copy on the per-event path.
                    if prev == 0
                        && let Ok(HeadParse::Complete { head, len }) = parse_head(&data[..take], http)
                    {
                        data = &data[len..];
                        self.msg_bytes = len as u64;
                        self.head_bytes = len as u64;
                        self.start_body(head, ts_ns, methods, out);
                        continue;
                    }
                    self.head_buf.extend_from_slice(&data[..take]);
                    match parse_head(&self.head_buf, http) {
                        Ok(HeadParse::Complete { head, len }) => {
                            // head_buf never holds a complete head (resync_from_head keeps only
                            // a partial one), so the head ends in this chunk's bytes.
                            debug_assert!(len >= prev, "a complete head was buffered: {len} < {prev}");
                            let used = len.saturating_sub(prev);
                            data = &data[used..];
                            self.msg_bytes = len as u64;
                            self.head_bytes = len as u64;
                            self.head_buf.clear();
                            self.start_body(head, ts_ns, methods, out);
                        }
                        Ok(HeadParse::Partial) => {
                            if !starts_like_message(&self.head_buf) {
                                self.lose_sync(ParseError::Malformed, out);
                                data = self.resync_from_head(data, take, http);
                            } else if self.head_buf.len() >= MAX_HEAD_BYTES {
                                self.lose_sync(ParseError::HeadTooLarge, out);
                                self.head_buf = Vec::new();
                                data = &data[take..];
                            } else {
                                data = &data[take..];
                            }
                        }
                        Err(_) => {
                            self.lose_sync(ParseError::Malformed, out);
                            data = self.resync_from_head(data, take, http);
                        }
                    }
                }
                State::Body { remaining } => {
                    let take = remaining.min(data.len() as u64);
                    data = &data[take as usize..];
                    self.msg_bytes += take;
                    if take == remaining {
                        self.end(ts_ns, true, out);
                    } else {
                        self.state = State::Body {
                            remaining: remaining - take,
                        };
                    }
                }
                State::ChunkData { remaining } => {
                    let take = remaining.min(data.len() as u64);
                    data = &data[take as usize..];
                    self.msg_bytes += take;
                    self.state = if take == remaining {
                        State::ChunkDataEnd { remaining: 2 }
                    } else {
                        State::ChunkData {
                            remaining: remaining - take,
                        }
                    };
                }
                State::ChunkDataEnd { remaining } => {
                    // The CRLF after chunk data. A bare LF is tolerated.
                    let b = data[0];
                    if b == b'\n' {
                        data = &data[1..];
                        self.msg_bytes += 1;
                        self.state = State::ChunkSize;
                    } else if b == b'\r' && remaining == 2 {
                        data = &data[1..];
                        self.msg_bytes += 1;
                        self.state = State::ChunkDataEnd { remaining: 1 };
                    } else {
                        self.lose_sync(ParseError::BadChunk, out);
                    }
                }
                State::ChunkSize | State::Trailer => {
                    if self.take_line(&mut data).is_none() {
                        if self.line_buf.len() > MAX_LINE_BYTES {
                            self.lose_sync(ParseError::BadChunk, out);
                        }
                        continue;
                    }
                    let line = std::mem::take(&mut self.line_buf);
                    if self.state == State::ChunkSize {
                        match parse_chunk_size(&line) {
                            Some(0) => self.state = State::Trailer,
                            Some(n) => self.state = State::ChunkData { remaining: n },
                            None => self.lose_sync(ParseError::BadChunk, out),
                        }
                    } else if line == b"\r\n" || line == b"\n" {
                        self.end(ts_ns, true, out);
                    }
                    self.line_buf = line;
                    self.line_buf.clear();
                }
                State::UntilClose => {
                    self.msg_bytes += data.len() as u64;
                    data = &[];
                }
                State::Tunnel => {
                    self.tunnel_from.get_or_insert(total - data.len());
                    data = &[];
                }
                State::Resync => match find_message_start(data) {
                    Some(i) => {
                        self.skipped_bytes += i as u64;
                        data = &data[i..];
                        self.state = State::Idle;
                    }
                    None => {
                        self.skipped_bytes += data.len() as u64;
                        data = &[];
                    }
                },
            }
        }
    }

    fn feed_gap(&mut self, ts_ns: u64, mut gap: u64, http: &HttpOptions, out: &mut Vec<ParseEvent>) {
        while gap > 0 {
            match self.state {
                State::Body { remaining } => {
                    let take = remaining.min(gap);
                    gap -= take;
                    self.msg_bytes += take;
                    if take == remaining {
                        self.end(ts_ns, true, out);
                    } else {
                        self.state = State::Body {
                            remaining: remaining - take,
                        };
                    }
                }
                State::ChunkData { remaining } => {
                    let take = remaining.min(gap);
                    gap -= take;
                    self.msg_bytes += take;
                    self.state = if take == remaining {
                        State::ChunkDataEnd { remaining: 2 }
                    } else {
                        State::ChunkData {
                            remaining: remaining - take,
                        }
                    };
                }
                State::ChunkDataEnd { remaining } => {
                    // Assume the unseen terminator is the CRLF it must be.
                    let take = (remaining as u64).min(gap);
                    gap -= take;
                    self.msg_bytes += take;
                    self.state = if take == remaining as u64 {
                        State::ChunkSize
                    } else {
                        State::ChunkDataEnd {
                            remaining: remaining - take as u8,
                        }
                    };
                }
                State::UntilClose => {
                    self.msg_bytes += gap;
                    gap = 0;
                }
                State::Tunnel => gap = 0,
                State::Resync => {
                    self.skipped_bytes += gap;
                    gap = 0;
                }
                State::Head => {
                    // The rest of the head was not captured: keep what we have, flagged.
                    let head = parse_truncated_head(&self.head_buf, http);
                    match head {
                        Some(head) => {
                            // Part of the gap is the rest of the head, part maybe a body: unknown.
                            self.msg_bytes = self.head_buf.len() as u64 + gap;
                            self.head_bytes = self.msg_bytes;
                            self.in_final_response = is_final_response(&head);
                            out.push(ParseEvent::Head {
                                head,
                                ts_ns: self.head_ts,
                            });
                            self.end(ts_ns, false, out);
                        }
                        None => out.push(ParseEvent::Error(ParseError::FramingLost)),
                    }
                    self.head_buf.clear();
                    self.skipped_bytes += gap;
                    self.state = State::Resync;
                    gap = 0;
                }
                State::Idle | State::ChunkSize | State::Trailer => {
                    // A message start or chunk framing we did not see.
                    self.lose_sync(ParseError::FramingLost, out);
                    self.skipped_bytes += gap;
                    gap = 0;
                }
            }
        }
    }

    /// Moves bytes up to and including the next LF into `line_buf`; Some if the line is complete.
    fn take_line(&mut self, data: &mut &[u8]) -> Option<()> {
        match data.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.line_buf.extend_from_slice(&data[..=i]);
                self.msg_bytes += i as u64 + 1;
                *data = &data[i + 1..];
                Some(())
            }
            None => {
                let room = (MAX_LINE_BYTES + 1).saturating_sub(self.line_buf.len());
                let take = data.len().min(room);
                self.line_buf.extend_from_slice(&data[..take]);
                self.msg_bytes += data.len() as u64;
                *data = &[];
                None
            }
        }
    }

    fn start_body(
        &mut self,
        head: Head,
        ts_ns: u64,
        methods: &dyn RequestMethods,
        out: &mut Vec<ParseEvent>,
    ) {
        let framing = match &head {
            Head::Request(r) => {
                self.in_final_response = false;
                r.framing
            }
            Head::Response(r) => {
                self.in_final_response = !(100..200).contains(&r.status) || r.status == 101;
                response_framing(r, methods.method_of_pending(self.ended_in_feed))
            }
        };
        out.push(ParseEvent::Head {
            head,
            ts_ns: self.head_ts,
        });
        match framing {
            Framing::None => self.end(ts_ns, true, out),
            Framing::Length(n) => self.state = State::Body { remaining: n },
            Framing::Chunked => self.state = State::ChunkSize,
            Framing::UntilClose => self.state = State::UntilClose,
            Framing::Tunnel => {
                self.end(ts_ns, true, out);
                out.push(ParseEvent::Tunnel);
                self.state = State::Tunnel;
            }
        }
    }

    fn end(&mut self, ts_ns: u64, complete: bool, out: &mut Vec<ParseEvent>) {
        if self.in_final_response {
            self.ended_in_feed += 1;
            self.in_final_response = false;
        }
        let head_bytes = self.head_bytes.min(self.msg_bytes);
        out.push(ParseEvent::End {
            bytes: self.msg_bytes,
            head_bytes,
            ts_ns,
            complete,
        });
        self.msg_bytes = 0;
        self.head_bytes = 0;
        self.state = State::Idle;
    }

    /// Framing is lost: end any message in progress (incomplete) and look for the next start.
    fn lose_sync(&mut self, err: ParseError, out: &mut Vec<ParseEvent>) {
        if matches!(
            self.state,
            State::Body { .. }
                | State::ChunkSize
                | State::ChunkData { .. }
                | State::ChunkDataEnd { .. }
                | State::Trailer
        ) {
            let ts_ns = self.head_ts;
            self.end(ts_ns, false, out);
        }
        out.push(ParseEvent::Error(err));
        self.msg_bytes = 0;
        self.line_buf.clear();
        self.state = State::Resync;
    }

    /// After a malformed head: look for a message start inside the buffered head (past its first
    /// byte) and restart there; the rest of `data` (after the `take` bytes already buffered)
    /// follows. A start in bytes buffered earlier is kept as the new head only while it is
    /// still partial: bytes kept unparsed that already held a whole head (and what followed it)
    /// made the next parse end before them (found by fuzzing: an underflow); such bytes are
    /// skipped, counted, and the search goes on in what comes next.
    fn resync_from_head<'a>(&mut self, data: &'a [u8], take: usize, http: &HttpOptions) -> &'a [u8] {
        let buf = std::mem::take(&mut self.head_buf);
        if buf.is_empty() {
            return &data[take..];
        }
        let prev = buf.len() - take;
        match find_message_start(&buf[1..]) {
            Some(i) if i + 1 >= prev => {
                // The new start lies in this chunk's bytes: continue from there.
                let start_in_data = i + 1 - prev;
                self.skipped_bytes += (i + 1) as u64;
                self.state = State::Idle;
                &data[start_in_data..]
            }
            Some(i) if matches!(parse_head(&buf[i + 1..], http), Ok(HeadParse::Partial)) => {
                // The new start lies in bytes buffered earlier: keep them as the new head.
                self.skipped_bytes += (i + 1) as u64;
                self.head_buf = buf[i + 1..].to_vec();
                self.state = State::Head;
                &data[take..]
            }
            Some(_) => {
                self.skipped_bytes += buf.len() as u64;
                self.state = State::Resync;
                &data[take..]
            }
            None => {
                self.skipped_bytes += buf.len() as u64;
                &data[take..]
            }
        }
    }
}

fn is_final_response(head: &Head) -> bool {
    match head {
        Head::Request(_) => false,
        Head::Response(r) => !(100..200).contains(&r.status) || r.status == 101,
    }
}

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let size = line.split(|&b| b == b';').next()?.trim_ascii();
    if size.is_empty() || size.len() > 15 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()
}
