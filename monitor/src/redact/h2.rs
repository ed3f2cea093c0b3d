//! Redaction of HTTP/2 bytes before they reach a recording: header blocks are HPACK, so a
//! secret is a string literal (raw or Huffman-coded) inside a HEADERS, PUSH_PROMISE or
//! CONTINUATION frame. Each secret literal is rewritten in place at the same length: the
//! recording keeps its framing and its HPACK state (the table learns the rewritten value, so a
//! later reference by index replays as the rewritten value too). What cannot be parsed here (a
//! representation cut by a chunk boundary, framing lost to a capture gap) is blanked whole.
use crate::http::HttpOptions;
use crate::http::h2::hpack::{integer, literal_values};

const HEADER_LEN: usize = 9;
const HEADERS: u8 = 1;
const PUSH_PROMISE: u8 = 5;
const CONTINUATION: u8 = 9;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// One direction of one HTTP/2 connection, as the redactor follows it.
pub(super) struct H2Side {
    /// Client preface bytes still to skip.
    preface_left: usize,
    header: [u8; HEADER_LEN],
    have: usize,
    /// The frame in progress: (type, flags, payload bytes left, payload bytes seen so far).
    frame: Option<(u8, u8, u64, u64)>,
    /// Inside a header block whose remaining fragments cannot be parsed: blank them.
    blank_block: bool,
    /// A gap swallowed a frame header: everything is blanked until a chunk starts with frames.
    lost: bool,
}

impl H2Side {
    pub(super) fn new(first: &[u8]) -> Self {
        Self {
            preface_left: if first.starts_with(&crate::http::h2::PREFACE[..4]) {
                crate::http::h2::PREFACE.len()
            } else {
                0
            },
            header: [0; HEADER_LEN],
            have: 0,
            frame: None,
            blank_block: false,
            lost: false,
        }
    }

    /// Redacts one chunk in place (`unseen`: bytes the chunk lacks at its end).
    pub(super) fn redact(&mut self, buf: &mut [u8], unseen: u64, http: &HttpOptions) {
        if self.lost {
            if crate::http::h2::starts_with_frames(buf) {
                *self = Self::new(&[]);
            } else {
                blank_all(buf);
                return;
            }
        }
        let mut pos = 0usize;
        if self.preface_left > 0 {
            let n = self.preface_left.min(buf.len());
            self.preface_left -= n;
            pos = n;
        }
        while pos < buf.len() {
            match self.frame {
                None => {
                    let n = (HEADER_LEN - self.have).min(buf.len() - pos);
                    self.header[self.have..self.have + n].copy_from_slice(&buf[pos..pos + n]);
                    self.have += n;
                    pos += n;
                    if self.have == HEADER_LEN {
                        let h = self.header;
                        let len = u64::from(u32::from_be_bytes([0, h[0], h[1], h[2]]));
                        self.have = 0;
                        self.frame = Some((h[3], h[4], len, 0));
                        if len == 0 {
                            self.end_frame(h[3], h[4]);
                        }
                    }
                }
                Some((kind, flags, left, seen)) => {
                    let n = (left.min((buf.len() - pos) as u64)) as usize;
                    let payload = &mut buf[pos..pos + n];
                    if matches!(kind, HEADERS | PUSH_PROMISE | CONTINUATION) {
                        self.redact_fragment(kind, flags, payload, seen, n as u64 == left, http);
                    }
                    pos += n;
                    let left = left - n as u64;
                    self.frame = Some((kind, flags, left, seen + n as u64));
                    if left == 0 {
                        self.end_frame(kind, flags);
                    }
                }
            }
        }
        if unseen > 0 {
            match self.frame {
                Some((kind, flags, left, seen)) if unseen <= left => {
                    if matches!(kind, HEADERS | PUSH_PROMISE | CONTINUATION) {
                        // The rest of this block was not captured: a later fragment cannot
                        // be parsed on its own.
                        self.blank_block = true;
                    }
                    self.frame = Some((kind, flags, left - unseen, seen + unseen));
                    if left == unseen {
                        self.end_frame(kind, flags);
                    }
                }
                _ => self.lost = true,
            }
        }
    }

    fn end_frame(&mut self, kind: u8, flags: u8) {
        self.frame = None;
        if matches!(kind, HEADERS | PUSH_PROMISE | CONTINUATION) && flags & FLAG_END_HEADERS != 0 {
            self.blank_block = false;
        }
    }

    /// `payload`: the part of a header-block frame's payload in this chunk, starting `seen`
    /// bytes into the payload; `ends`: the frame's payload ends in this chunk.
    #[allow(
        clippy::too_many_arguments,
        reason = "the frame in progress, as `redact` found it, and the options"
    )]
    fn redact_fragment(
        &mut self,
        kind: u8,
        flags: u8,
        payload: &mut [u8],
        seen: u64,
        ends: bool,
        http: &HttpOptions,
    ) {
        if seen > 0 || self.blank_block {
            // The frame's start was in an earlier chunk: its representations cannot be found.
            blank_all(payload);
            return;
        }
        // Where the fragment starts: after the pad length, priority and promised stream.
        let mut from = 0usize;
        let mut pad = 0usize;
        if kind != CONTINUATION && flags & FLAG_PADDED != 0 {
            pad = payload.first().copied().unwrap_or(0) as usize;
            from = 1;
        }
        if kind == HEADERS && flags & FLAG_PRIORITY != 0 {
            from += 5;
        }
        if kind == PUSH_PROMISE {
            from += 4;
        }
        let to = if ends {
            payload.len().saturating_sub(pad)
        } else {
            payload.len()
        };
        if from >= to {
            return;
        }
        let fragment = &mut payload[from..to];
        let (found, stopped) = literal_values(fragment, |name| {
            std::str::from_utf8(name).is_ok_and(|n| http.is_secret_header(n)) || name == b":path"
        });
        for (at, end) in found {
            rewrite(&mut fragment[at..end]);
        }
        if let Some(at) = stopped {
            blank_all(&mut fragment[at..]);
        }
        if stopped.is_some() || !ends {
            self.blank_block = true;
        }
    }
}

/// Rewrites one string literal (its length prefix and bytes) at the same length: a `:path`
/// keeps its path and query keys with the values emptied; a credential keeps its scheme word
/// (`Bearer`, `Basic`) and loses the rest; anything else with a secret name is emptied.
fn rewrite(literal: &mut [u8]) {
    let Some(&first) = literal.first() else {
        return;
    };
    let huffman = first & 0x80 != 0;
    let mut rest: &[u8] = literal;
    let Ok(len) = integer(&mut rest, 7) else {
        blank_all(literal);
        return;
    };
    let prefix_len = literal.len() - rest.len();
    if rest.len() != len {
        blank_all(literal);
        return;
    }
    let raw = if huffman {
        let mut out = Vec::new();
        if httlib_huffman::decode(rest, &mut out, httlib_huffman::DecoderSpeed::FiveBits).is_err() {
            blank_all(&mut literal[prefix_len..]);
            return;
        }
        out
    } else {
        rest.to_vec()
    };
    let replacement = redacted_value(&raw);
    let bytes = &mut literal[prefix_len..];
    if huffman && encode_padded(&replacement, bytes) {
        return;
    }
    // Raw: the replacement, '*'-padded or cut to the same length; the H bit cleared (the
    // length prefix keeps its value).
    literal[0] &= 0x7f;
    let bytes = &mut literal[prefix_len..];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = replacement.get(i).copied().unwrap_or(b'*');
    }
}

/// What a secret or a path becomes: see `rewrite`.
fn redacted_value(raw: &[u8]) -> Vec<u8> {
    if raw.starts_with(b"/") {
        // A path: the query's values go, its keys stay.
        let Some(q) = raw.iter().position(|&b| b == b'?') else {
            return raw.to_vec();
        };
        let mut out = raw[..=q].to_vec();
        let mut in_value = false;
        for &c in &raw[q + 1..] {
            match c {
                b'&' => {
                    in_value = false;
                    out.push(c);
                }
                b'=' if !in_value => {
                    in_value = true;
                    out.push(c);
                }
                _ if in_value => {}
                _ => out.push(c),
            }
        }
        return out;
    }
    match raw.iter().position(|&b| b == b' ') {
        Some(sp) if raw[..sp].iter().all(u8::is_ascii_alphabetic) => raw[..=sp].to_vec(),
        _ => Vec::new(),
    }
}

/// Huffman-codes `value` into exactly `out.len()` bytes, filling the room left with '0' (a 5-bit
/// code, RFC 7541 appendix B: each one adds less than a byte, so every length is reached) and
/// the end with EOS padding. False if `value` alone does not fit.
fn encode_padded(value: &[u8], out: &mut [u8]) -> bool {
    let mut encoded = Vec::new();
    if httlib_huffman::encode(value, &mut encoded).is_err() || encoded.len() > out.len() {
        return false;
    }
    // `value` takes more than 8 * (len - 1) bits, so the room left is 8 * (N - len) bits plus
    // less than 8: the zeros that fit are this many, or one or two more. A few encodings, not
    // one per zero (a hostile 16 KiB value must not cost a quadratic loop).
    let k0 = (out.len() - encoded.len()) * 8 / 5;
    let mut full = value.to_vec();
    full.extend(std::iter::repeat_n(b'0', k0));
    for _ in 0..3 {
        encoded.clear();
        if httlib_huffman::encode(&full, &mut encoded).is_err() || encoded.len() > out.len() {
            return false;
        }
        if encoded.len() == out.len() {
            out.copy_from_slice(&encoded);
            return true;
        }
        full.push(b'0');
    }
    false
}

fn blank_all(b: &mut [u8]) {
    b.iter_mut().for_each(|c| *c = b'*');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::h2::hpack::{Decoder, Field};

    use crate::http::h2::frame::encode_frame as frame;

    fn huffman_literal(first: u8, value: &str) -> Vec<u8> {
        let mut coded = Vec::new();
        httlib_huffman::encode(value.as_bytes(), &mut coded).unwrap();
        let mut b = vec![first, 0x80 | coded.len() as u8];
        b.extend(coded);
        b
    }

    fn raw_literal(first: u8, value: &str) -> Vec<u8> {
        let mut b = vec![first, value.len() as u8];
        b.extend(value.as_bytes());
        b
    }

    fn decode(block: &[u8]) -> Vec<(String, String)> {
        let mut out: Vec<Field> = Vec::new();
        Decoder::new(false)
            .decode(block, &mut out, &HttpOptions::default())
            .unwrap();
        out.into_iter()
            .map(|f| {
                (
                    String::from_utf8(f.name.unwrap().to_vec()).unwrap(),
                    String::from_utf8_lossy(&f.value.unwrap()).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn secrets_rewritten_in_place_and_still_decodable() {
        let mut block = vec![0x82];
        // :path (static 4) with incremental indexing, Huffman; authorization (23) likewise;
        // cookie (32) raw, never indexed; x-api-key literal name.
        block.extend(huffman_literal(0x44, "/users/42?token=s3cr3t&page=2"));
        block.push(0x40 | 23);
        block.extend(
            huffman_literal(0x80, "Bearer tok-s3cr3t-0123456789")[1..]
                .iter()
                .copied(),
        );
        block.extend([0x1f, 32 - 15]);
        block.extend(raw_literal(0, "sid=s3cr3t")[1..].iter().copied());
        block.extend([0x00, 9]);
        block.extend(b"x-api-key");
        block.extend(raw_literal(0, "k3y-s3cr3t")[1..].iter().copied());
        let mut bytes = crate::http::h2::PREFACE.to_vec();
        bytes.extend(frame(HEADERS, FLAG_END_HEADERS, 1, &block));
        let before = bytes.len();
        H2Side::new(&bytes).redact(&mut bytes, 0, &HttpOptions::default());
        assert_eq!(bytes.len(), before);
        let got = decode(&bytes[24 + 9..]);
        let text = format!("{got:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(got[1].1.starts_with("/users/42?token=&page="), "{got:?}");
        assert!(got[2].1.starts_with("Bearer "), "{got:?}");
        assert_eq!(got[2].0, "authorization");
    }

    #[test]
    fn a_block_cut_by_the_chunk_end_is_blanked_on() {
        // authorization (static 23) without indexing: a 4-bit prefix, so 15 and then 8.
        let mut block = vec![0x82, 0x0f, 23 - 15];
        block.extend(raw_literal(0, "Basic czNjcjN0OnBhc3M=")[1..].iter().copied());
        let bytes = frame(HEADERS, FLAG_END_HEADERS, 1, &block);
        let (mut a, mut b) = (bytes[..14].to_vec(), bytes[14..].to_vec());
        let mut side = H2Side::new(&a);
        side.redact(&mut a, 0, &HttpOptions::default());
        side.redact(&mut b, 0, &HttpOptions::default());
        let all = [a, b].concat();
        assert!(!String::from_utf8_lossy(&all).contains("czNjcjN0"), "{all:?}");
    }

    #[test]
    fn a_gap_over_a_frame_header_blanks_until_frames_again() {
        let mut side = H2Side::new(&[]);
        let mut first = frame(0, 0, 1, &[0u8; 10]);
        first.truncate(12);
        side.redact(&mut first, 40, &HttpOptions::default());
        let mut junk = b"authorization: Bearer s3cr3t".to_vec();
        side.redact(&mut junk, 0, &HttpOptions::default());
        assert!(junk.iter().all(|&c| c == b'*'));
    }
}
