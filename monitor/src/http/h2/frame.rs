//! HTTP/2 framing (RFC 9113 section 4 and 6) of one direction of a connection, from captured
//! chunks that may end in a gap (bytes the kernel counted but did not copy).
//!
//! Frame lengths say where the next frame starts, so a gap inside a DATA payload costs nothing
//! and a gap inside a header block loses that block only (the HPACK decoder is told). A gap that
//! swallows a frame header loses the framing: the reader then waits for a chunk that starts with
//! plausible frames (writers emit whole frames per call), and counts the loss.

/// The client connection preface (RFC 9113 section 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A header block (HEADERS or PUSH_PROMISE and its CONTINUATIONs) larger than this is dropped,
/// and the frames that continue it are skipped: an endless CONTINUATION costs no memory.
pub const MAX_HEADER_BLOCK: usize = 65536;
/// Control frame payload bytes kept (SETTINGS with 42 parameters, GOAWAY's first 8 bytes, ...).
const MAX_CONTROL_PAYLOAD: usize = 256;
/// Frames longer than this are not believed when looking for frames in unknown bytes (16 KiB is
/// the default SETTINGS_MAX_FRAME_SIZE; peers rarely raise it past 1 MiB).
const PLAUSIBLE_MAX_LEN: u32 = 1 << 20;
const HEADER_LEN: usize = 9;

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const PRIORITY: u8 = 2;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PUSH_PROMISE: u8 = 5;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// SETTINGS_HEADER_TABLE_SIZE (RFC 9113 section 6.5.2).
const SETTING_HEADER_TABLE_SIZE: u16 = 0x1;

#[derive(Debug, PartialEq, Eq)]
pub enum FrameEvent<'a> {
    /// A complete header block. `block` None: it was lost (a gap, too large, or cut by another
    /// frame); its HPACK changes are then unknown. `promised`: a PUSH_PROMISE's new stream.
    /// `wire`: the bytes of its frames.
    Headers {
        stream: u32,
        end_stream: bool,
        block: Option<&'a [u8]>,
        promised: Option<u32>,
        wire: u64,
    },
    /// A piece of a DATA frame's content: `seen` bytes then `unseen` ones; `wire` the bytes this
    /// piece moved on the wire (frame header on the first piece, padding included);
    /// `end_stream` on the last piece of a frame that ends the stream.
    Data {
        stream: u32,
        seen: &'a [u8],
        unseen: u64,
        wire: u64,
        end_stream: bool,
    },
    RstStream {
        stream: u32,
        code: u32,
    },
    Settings {
        ack: bool,
        header_table_size: Option<u32>,
    },
    GoAway {
        last_stream: u32,
        code: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FrameHeader {
    len: u32,
    kind: u8,
    flags: u8,
    stream: u32,
}

fn frame_header(b: &[u8]) -> FrameHeader {
    FrameHeader {
        len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
        kind: b[3],
        flags: b[4],
        stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
    }
}

/// Whether a frame header can be one (`max_len`: the longest frame believed).
fn plausible(h: &FrameHeader, reserved_bit: bool, max_len: u32) -> bool {
    if reserved_bit || h.len > max_len {
        return false;
    }
    match h.kind {
        SETTINGS => h.stream == 0 && h.len.is_multiple_of(6) && h.flags & !FLAG_ACK == 0,
        PING => h.stream == 0 && h.len == 8,
        GOAWAY => h.stream == 0 && h.len >= 8,
        WINDOW_UPDATE => h.len == 4,
        RST_STREAM => h.stream != 0 && h.len == 4,
        PRIORITY => h.stream != 0 && h.len == 5,
        DATA | HEADERS | CONTINUATION | PUSH_PROMISE => h.stream != 0,
        _ => false,
    }
}

/// True if `bytes` start with HTTP/2 frames: each frame header found by following the lengths
/// (up to four, within `bytes`) is plausible. At least one complete header is needed.
pub fn starts_with_frames(bytes: &[u8]) -> bool {
    let mut at = 0usize;
    for i in 0..4 {
        let Some(h) = bytes.get(at..at + HEADER_LEN) else {
            return i > 0;
        };
        if !plausible(&frame_header(h), h[5] & 0x80 != 0, PLAUSIBLE_MAX_LEN) {
            return false;
        }
        at += HEADER_LEN + frame_header(h).len as usize;
    }
    true
}

/// True if `bytes` start a connection's HTTP/2 traffic: the client preface (or as much of it as
/// there is), or, from the server, a SETTINGS frame on stream 0.
pub fn starts_connection(bytes: &[u8]) -> bool {
    let n = bytes.len().min(PREFACE.len());
    if n >= 4 && bytes[..n] == PREFACE[..n] {
        return true;
    }
    bytes.len() >= HEADER_LEN && bytes[3] == SETTINGS && starts_with_frames(bytes)
}

enum State {
    /// Bytes of the client preface still to come.
    Preface(usize),
    Header {
        buf: [u8; HEADER_LEN],
        have: usize,
    },
    Payload {
        h: FrameHeader,
        left: u32,
        /// DATA: its first payload byte is the pad length, not yet read.
        pad_byte_pending: bool,
        /// DATA: content bytes still to come in this frame (then padding).
        content_left: u32,
        /// The frame's header bytes are not yet accounted for in a Data event.
        first_piece: bool,
    },
    /// Framing lost: waiting for a chunk that starts with frames.
    Desync,
}

/// Counters of what the reader could not follow.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameLosses {
    /// Times the framing was lost (a gap over a frame header, or bytes that are not frames).
    pub desyncs: u64,
    /// Header blocks lost to a gap or cut by another frame.
    pub blocks_lost: u64,
    /// Header blocks dropped for being larger than MAX_HEADER_BLOCK.
    pub blocks_too_large: u64,
}

pub struct FrameReader {
    state: State,
    /// The frame payload being collected (header-block frames and control frames).
    frame: Vec<u8>,
    /// The header block being assembled across HEADERS/PUSH_PROMISE and CONTINUATION.
    block: Vec<u8>,
    /// A header block is open (no END_HEADERS yet): (stream, end_stream, promised, wire).
    open_block: Option<(u32, bool, Option<u32>, u64)>,
    /// The open block lost bytes: it will be reported as lost.
    block_lost: bool,
    /// The current frame's payload lost bytes.
    frame_lost: bool,
    pub losses: FrameLosses,
}

impl FrameReader {
    /// A reader at the start of a direction: `preface` for the client's side of a connection
    /// seen from its first byte.
    pub fn new(preface: bool) -> Self {
        Self {
            state: if preface {
                State::Preface(PREFACE.len())
            } else {
                State::Header {
                    buf: [0; HEADER_LEN],
                    have: 0,
                }
            },
            frame: Vec::new(),
            block: Vec::new(),
            open_block: None,
            block_lost: false,
            frame_lost: false,
            losses: FrameLosses::default(),
        }
    }

    /// A reader joining a direction at an unknown place (mid-connection).
    pub fn resyncing() -> Self {
        let mut r = Self::new(false);
        r.state = State::Desync;
        r
    }

    pub fn is_desynced(&self) -> bool {
        matches!(self.state, State::Desync)
    }

    /// Bytes held between chunks (bounded by MAX_HEADER_BLOCK twice and a frame header).
    pub fn buffered(&self) -> usize {
        self.frame.capacity() + self.block.capacity()
    }

    /// Feeds one chunk: `bytes` as captured, then `unseen` bytes that were not.
    pub fn feed(&mut self, mut bytes: &[u8], unseen: u64, on: &mut impl FnMut(FrameEvent<'_>)) {
        if matches!(self.state, State::Desync) {
            if starts_with_frames(bytes) {
                self.state = State::Header {
                    buf: [0; HEADER_LEN],
                    have: 0,
                };
            } else {
                return;
            }
        }
        while !bytes.is_empty() {
            bytes = self.step(bytes, on);
            if matches!(self.state, State::Desync) {
                return;
            }
        }
        if unseen > 0 {
            self.skip(unseen, on);
        }
    }

    /// Consumes a prefix of `bytes`; returns the rest.
    fn step<'b>(&mut self, bytes: &'b [u8], on: &mut impl FnMut(FrameEvent<'_>)) -> &'b [u8] {
        match &mut self.state {
            State::Preface(left) => {
                let n = (*left).min(bytes.len());
                let at = PREFACE.len() - *left;
                if bytes[..n] != PREFACE[at..at + n] {
                    self.lose_framing();
                    return &[];
                }
                *left -= n;
                if *left == 0 {
                    self.state = State::Header {
                        buf: [0; HEADER_LEN],
                        have: 0,
                    };
                }
                &bytes[n..]
            }
            State::Header { buf, have } => {
                let n = (HEADER_LEN - *have).min(bytes.len());
                buf[*have..*have + n].copy_from_slice(&bytes[..n]);
                *have += n;
                if *have == HEADER_LEN {
                    let reserved = buf[5] & 0x80 != 0;
                    let h = frame_header(buf);
                    self.start_frame(h, reserved, on);
                }
                &bytes[n..]
            }
            State::Payload { .. } => self.payload(bytes, on),
            State::Desync => &[],
        }
    }

    fn lose_framing(&mut self) {
        self.losses.desyncs += 1;
        self.state = State::Desync;
        if self.open_block.take().is_some() {
            self.losses.blocks_lost += 1;
        }
        self.block.clear();
        self.frame.clear();
        self.block_lost = false;
        self.frame_lost = false;
    }

    fn start_frame(&mut self, h: FrameHeader, reserved: bool, on: &mut impl FnMut(FrameEvent<'_>)) {
        // Unknown frame types are extensions (ignored); a known one must make sense.
        if reserved || (h.kind <= CONTINUATION && !plausible(&h, false, u32::MAX)) {
            // Not a frame header: the bytes are not HTTP/2 (or we lost our place).
            self.lose_framing();
            return;
        }
        if self.open_block.is_some() && h.kind != CONTINUATION {
            // RFC 9113 section 6.10: nothing may come between a block's frames.
            self.end_block(true, on);
        }
        self.frame.clear();
        // A large header block's buffer is not kept between frames: idle connections hold little.
        if self.frame.capacity() > 16384 {
            self.frame = Vec::new();
        }
        self.frame_lost = false;
        self.state = State::Payload {
            h,
            left: h.len,
            pad_byte_pending: h.kind == DATA && h.flags & FLAG_PADDED != 0,
            content_left: h.len,
            first_piece: true,
        };
        if h.len == 0 {
            self.end_frame(h, on);
        }
    }

    fn payload<'b>(&mut self, bytes: &'b [u8], on: &mut impl FnMut(FrameEvent<'_>)) -> &'b [u8] {
        let State::Payload {
            h,
            left,
            pad_byte_pending,
            content_left,
            first_piece,
        } = &mut self.state
        else {
            return &[];
        };
        let h = *h;
        let n = (*left as usize).min(bytes.len());
        let (piece, rest) = bytes.split_at(n);
        *left -= n as u32;
        if h.kind == DATA {
            let mut content = piece;
            if *pad_byte_pending && !content.is_empty() {
                let pad = content[0] as u32;
                *pad_byte_pending = false;
                *content_left = (h.len - 1).saturating_sub(pad);
                content = &content[1..];
            }
            let c = (*content_left as usize).min(content.len());
            *content_left -= c as u32;
            let wire = n as u64 + if *first_piece { HEADER_LEN as u64 } else { 0 };
            *first_piece = false;
            let done = *left == 0;
            on(FrameEvent::Data {
                stream: h.stream,
                seen: &content[..c],
                unseen: 0,
                wire,
                end_stream: done && h.flags & FLAG_END_STREAM != 0,
            });
            if done {
                self.next_header();
            }
            return rest;
        }
        let cap = if is_block_frame(h.kind) {
            MAX_HEADER_BLOCK
        } else {
            MAX_CONTROL_PAYLOAD
        };
        let keep = n.min(cap.saturating_sub(self.frame.len()));
        self.frame.extend_from_slice(&piece[..keep]);
        if keep < n {
            self.frame_lost = true;
        }
        if *left == 0 {
            self.end_frame(h, on);
        }
        rest
    }

    /// Bytes not captured: skipped exactly when they end inside the current payload.
    fn skip(&mut self, unseen: u64, on: &mut impl FnMut(FrameEvent<'_>)) {
        let State::Payload {
            h,
            left,
            pad_byte_pending,
            content_left,
            first_piece,
        } = &mut self.state
        else {
            // A gap where a frame header (or the preface) should be.
            self.lose_framing();
            return;
        };
        let h = *h;
        let n = unseen.min(*left as u64);
        *left -= n as u32;
        if h.kind == DATA {
            if *pad_byte_pending {
                // The pad length was not seen: count the padding as content.
                *pad_byte_pending = false;
            }
            let c = n.min(*content_left as u64);
            *content_left -= c as u32;
            let wire = n + if *first_piece { HEADER_LEN as u64 } else { 0 };
            *first_piece = false;
            let done = *left == 0;
            on(FrameEvent::Data {
                stream: h.stream,
                seen: &[],
                unseen: c,
                wire,
                end_stream: done && h.flags & FLAG_END_STREAM != 0,
            });
            if done {
                self.next_header();
            }
        } else {
            self.frame_lost = true;
            if *left == 0 {
                self.end_frame(h, on);
            }
        }
        if unseen > n {
            self.lose_framing();
        }
    }

    fn next_header(&mut self) {
        self.state = State::Header {
            buf: [0; HEADER_LEN],
            have: 0,
        };
    }

    fn end_frame(&mut self, h: FrameHeader, on: &mut impl FnMut(FrameEvent<'_>)) {
        self.next_header();
        let wire = HEADER_LEN as u64 + h.len as u64;
        match h.kind {
            DATA => on(FrameEvent::Data {
                stream: h.stream,
                seen: &[],
                unseen: 0,
                wire,
                end_stream: h.flags & FLAG_END_STREAM != 0,
            }),
            HEADERS | PUSH_PROMISE => {
                let mut promised = None;
                let fragment = if self.frame_lost {
                    None
                } else {
                    block_fragment(&self.frame, h, &mut promised)
                };
                self.open_block = Some((h.stream, h.flags & FLAG_END_STREAM != 0, promised, wire));
                self.block.clear();
                self.block_lost = false;
                self.add_fragment(fragment, h, on);
            }
            CONTINUATION => {
                let Some((stream, _, _, w)) = &mut self.open_block else {
                    // A CONTINUATION with no block open (we joined mid-block): nothing to add to.
                    self.losses.blocks_lost += 1;
                    return;
                };
                if *stream != h.stream {
                    self.end_block(true, on);
                    return;
                }
                *w += wire;
                let fragment = if self.frame_lost {
                    None
                } else {
                    Some((0, self.frame.len()))
                };
                self.add_fragment(fragment, h, on);
            }
            RST_STREAM if self.frame.len() >= 4 => on(FrameEvent::RstStream {
                stream: h.stream,
                code: be32(&self.frame[..4]),
            }),
            SETTINGS => {
                let header_table_size = self
                    .frame
                    .chunks_exact(6)
                    .filter(|p| u16::from_be_bytes([p[0], p[1]]) == SETTING_HEADER_TABLE_SIZE)
                    .map(|p| be32(&p[2..6]))
                    .next_back();
                on(FrameEvent::Settings {
                    ack: h.flags & FLAG_ACK != 0,
                    header_table_size,
                })
            }
            GOAWAY if self.frame.len() >= 8 => on(FrameEvent::GoAway {
                last_stream: be32(&self.frame[..4]) & 0x7fff_ffff,
                code: be32(&self.frame[4..8]),
            }),
            // PING, WINDOW_UPDATE, PRIORITY and unknown types (ignored, RFC 9113 section 4.1)
            // say nothing about requests.
            _ => {}
        }
    }

    /// Adds a frame's fragment (a range of `self.frame`; None: lost) to the open block, and
    /// ends the block on END_HEADERS.
    fn add_fragment(
        &mut self,
        fragment: Option<(usize, usize)>,
        h: FrameHeader,
        on: &mut impl FnMut(FrameEvent<'_>),
    ) {
        match fragment {
            Some((from, to)) if !self.block_lost => {
                if self.block.len() + (to - from) > MAX_HEADER_BLOCK {
                    self.losses.blocks_too_large += 1;
                    self.block_lost = true;
                    self.block = Vec::new();
                } else {
                    self.block.extend_from_slice(&self.frame[from..to]);
                }
            }
            Some(_) => {}
            None => {
                if !self.block_lost {
                    self.losses.blocks_lost += 1;
                }
                self.block_lost = true;
            }
        }
        if h.flags & FLAG_END_HEADERS != 0 {
            self.end_block(false, on);
        }
    }

    /// Reports the open block; `cut`: another frame interrupted it (it is lost).
    fn end_block(&mut self, cut: bool, on: &mut impl FnMut(FrameEvent<'_>)) {
        let Some((stream, end_stream, promised, wire)) = self.open_block.take() else {
            return;
        };
        if cut && !self.block_lost {
            self.losses.blocks_lost += 1;
        }
        let lost = cut || self.block_lost;
        on(FrameEvent::Headers {
            stream,
            end_stream,
            block: if lost { None } else { Some(&self.block) },
            promised,
            wire,
        });
        self.block.clear();
        if self.block.capacity() > 4096 {
            self.block = Vec::new();
        }
        self.block_lost = false;
    }
}

fn is_block_frame(kind: u8) -> bool {
    matches!(kind, HEADERS | PUSH_PROMISE | CONTINUATION)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The header-block fragment inside a HEADERS or PUSH_PROMISE payload, without its pad length,
/// priority fields, promised stream id and padding (RFC 9113 sections 6.2 and 6.6).
fn block_fragment(p: &[u8], h: FrameHeader, promised: &mut Option<u32>) -> Option<(usize, usize)> {
    let mut from = 0usize;
    let mut to = p.len();
    if h.flags & FLAG_PADDED != 0 {
        let pad = *p.first()? as usize;
        from = 1;
        to = to.checked_sub(pad)?;
    }
    if h.kind == HEADERS && h.flags & FLAG_PRIORITY != 0 {
        from += 5;
    }
    if h.kind == PUSH_PROMISE {
        *promised = Some(be32(p.get(from..from + 4)?) & 0x7fff_ffff);
        from += 4;
    }
    (from <= to).then_some((from, to))
}

/// A frame's bytes, for the tests of every module that reads HTTP/2.
#[cfg(test)]
pub fn encode_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::encode_frame as frame;

    #[derive(Debug, PartialEq, Eq)]
    enum Ev {
        Headers(u32, bool, Option<Vec<u8>>, u64),
        Data(u32, Vec<u8>, u64, u64, bool),
        Rst(u32, u32),
        Settings(bool, Option<u32>),
        GoAway(u32, u32),
    }

    fn collect(r: &mut FrameReader, chunks: &[(&[u8], u64)]) -> Vec<Ev> {
        let mut out = Vec::new();
        for (bytes, unseen) in chunks {
            r.feed(bytes, *unseen, &mut |e| {
                out.push(match e {
                    FrameEvent::Headers {
                        stream,
                        end_stream,
                        block,
                        wire,
                        ..
                    } => Ev::Headers(stream, end_stream, block.map(<[u8]>::to_vec), wire),
                    FrameEvent::Data {
                        stream,
                        seen,
                        unseen,
                        wire,
                        end_stream,
                    } => Ev::Data(stream, seen.to_vec(), unseen, wire, end_stream),
                    FrameEvent::RstStream { stream, code } => Ev::Rst(stream, code),
                    FrameEvent::Settings {
                        ack,
                        header_table_size,
                    } => Ev::Settings(ack, header_table_size),
                    FrameEvent::GoAway { last_stream, code } => Ev::GoAway(last_stream, code),
                })
            });
        }
        out
    }

    fn client_bytes() -> Vec<u8> {
        let mut b = PREFACE.to_vec();
        b.extend(frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0]));
        // HEADERS, padded and with priority, no END_HEADERS; then a CONTINUATION.
        let mut p = vec![2u8];
        p.extend([0, 0, 0, 0, 16]);
        p.extend(b"abc");
        p.extend([0, 0]);
        b.extend(frame(HEADERS, FLAG_PADDED | FLAG_PRIORITY, 1, &p));
        b.extend(frame(CONTINUATION, FLAG_END_HEADERS, 1, b"de"));
        // DATA, padded, END_STREAM.
        b.extend(frame(DATA, FLAG_PADDED | FLAG_END_STREAM, 1, &[1, b'x', b'y', 0]));
        b.extend(frame(RST_STREAM, 0, 3, &[0, 0, 0, 8]));
        b.extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 5, 0, 0, 0, 0]));
        b
    }

    fn expected() -> Vec<Ev> {
        vec![
            Ev::Settings(false, Some(4096)),
            Ev::Headers(1, false, Some(b"abcde".to_vec()), 9 + 11 + 9 + 2),
            Ev::Data(1, b"xy".to_vec(), 0, 9 + 4, true),
            Ev::Rst(3, 8),
            Ev::GoAway(5, 0),
        ]
    }

    #[test]
    fn frames_of_every_kind_split_at_every_byte() {
        let all = client_bytes();
        assert_eq!(collect(&mut FrameReader::new(true), &[(&all, 0)]), expected());
        for cut in 1..all.len() {
            let mut r = FrameReader::new(true);
            let got = collect(&mut r, &[(&all[..cut], 0), (&all[cut..], 0)]);
            // DATA may arrive in two pieces: merge them for the comparison.
            let mut merged: Vec<Ev> = Vec::new();
            for e in got {
                match (merged.last_mut(), e) {
                    (Some(Ev::Data(s, b, u, w, end)), Ev::Data(s2, b2, u2, w2, end2))
                        if *s == s2 && !*end =>
                    {
                        b.extend(b2);
                        *u += u2;
                        *w += w2;
                        *end = end2;
                    }
                    (_, e) => merged.push(e),
                }
            }
            assert_eq!(merged, expected(), "cut at {cut}");
            assert_eq!(r.losses, FrameLosses::default());
        }
    }

    #[test]
    fn gap_inside_data_is_skipped_exactly() {
        let mut b = frame(DATA, 0, 1, &[7u8; 100]);
        b.truncate(9 + 10);
        let next = frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, b"t");
        let mut r = FrameReader::new(false);
        let got = collect(&mut r, &[(&b, 90), (&next, 0)]);
        assert_eq!(
            got,
            vec![
                Ev::Data(1, vec![7; 10], 0, 19, false),
                Ev::Data(1, vec![], 90, 90, false),
                Ev::Headers(1, true, Some(b"t".to_vec()), 10),
            ]
        );
        assert!(!r.is_desynced());
    }

    #[test]
    fn gap_over_a_frame_header_resyncs_on_the_next_frame_aligned_chunk() {
        let data = frame(DATA, 0, 1, &[0u8; 10]);
        let mut r = FrameReader::new(false);
        // 10 captured of a 19-byte frame and then 30 more unseen: the next header is lost.
        collect(&mut r, &[(&data[..10], 39)]);
        assert!(r.is_desynced());
        assert_eq!(r.losses.desyncs, 1);
        // Garbage does not resync; frames do.
        assert!(collect(&mut r, &[(b"garbage garbage", 0)]).is_empty());
        let h = frame(HEADERS, FLAG_END_HEADERS, 3, b"z");
        assert_eq!(
            collect(&mut r, &[(&h, 0)]),
            vec![Ev::Headers(3, false, Some(b"z".to_vec()), 10)]
        );
    }

    #[test]
    fn gap_inside_a_header_block_loses_the_block_only() {
        let h = frame(HEADERS, FLAG_END_HEADERS, 1, &[1u8; 40]);
        let d = frame(DATA, FLAG_END_STREAM, 1, b"ok");
        let mut r = FrameReader::new(false);
        let got = collect(&mut r, &[(&h[..20], 29), (&d, 0)]);
        assert_eq!(
            got,
            vec![
                Ev::Headers(1, false, None, 49),
                Ev::Data(1, b"ok".to_vec(), 0, 11, true)
            ]
        );
        assert_eq!(r.losses.blocks_lost, 1);
    }

    #[test]
    fn endless_continuation_is_bounded() {
        let mut r = FrameReader::new(false);
        let mut out = 0usize;
        let start = frame(HEADERS, 0, 1, &[0u8; 1000]);
        r.feed(&start, 0, &mut |_| out += 1);
        let cont = frame(CONTINUATION, 0, 1, &[0u8; 16000]);
        for _ in 0..1000 {
            r.feed(&cont, 0, &mut |_| out += 1);
            assert!(
                r.buffered() <= 2 * MAX_HEADER_BLOCK + 16384 + 64,
                "{}",
                r.buffered()
            );
        }
        assert_eq!(out, 0);
        assert_eq!(r.losses.blocks_too_large, 1);
        // Another frame cuts the block: it is reported lost.
        let got = collect(&mut r, &[(&frame(PING, 0, 0, &[0; 8]), 0)]);
        assert!(matches!(got[..], [Ev::Headers(1, false, None, _)]), "{got:?}");
    }

    #[test]
    fn detection() {
        assert!(starts_connection(PREFACE));
        assert!(starts_connection(&PREFACE[..8]));
        assert!(starts_connection(&frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])));
        assert!(!starts_connection(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!starts_connection(&frame(SETTINGS, 0, 1, &[])));
        assert!(starts_with_frames(&frame(DATA, 0, 1, b"abc")));
        assert!(!starts_with_frames(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
        ));
    }
}
