//! HPACK (RFC 7541) for a passive observer: one decoder per direction of a connection.
//!
//! An observer may start in the middle of a connection (it was open before the agent) or lose a
//! header block (a capture gap): the entries the encoder added meanwhile are unknown. Entries
//! added since are still exact, because the dynamic table is indexed from the newest entry
//! (index 62) and the unknown ones are all older. So the decoder keeps what it saw, calls a
//! reference past it `Unknown` instead of failing, and carries on. Keeping entries the encoder
//! has already evicted is harmless (the encoder never refers to them), so when the table's size
//! is not known the decoder keeps up to its own bound; what it must never do is drop an entry the
//! encoder still has, which would shift every older index onto the wrong header.
//!
//! The values held here (credentials included) stay in this process: the head builder turns them
//! into fingerprints and drops them.
use crate::http::HttpOptions;
use std::collections::VecDeque;
use std::sync::Arc;

/// The most a table may hold, whatever the peers announce (a table-size bomb is capped here).
pub const MAX_TABLE_BYTES: usize = 65536;
/// The longest string literal decoded; a header block is bounded before this anyway.
const MAX_STRING: usize = 16384;
/// A Huffman string's coded bytes and what they decode to.
type CachedHuffman = (Box<[u8]>, Arc<[u8]>);

/// Huffman strings remembered per decoder, and the longest one remembered (coded bytes).
const HUFFMAN_CACHE_ENTRIES: usize = 16;
const HUFFMAN_CACHE_MAX_LEN: usize = 128;
/// RFC 7541 section 4.1: an entry's size is its name and value lengths plus 32.
const ENTRY_OVERHEAD: usize = 32;
/// SETTINGS_HEADER_TABLE_SIZE's initial value (RFC 9113 section 6.5.2).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// RFC 7541 appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The name of a static-table entry (1-based), for callers that look at encoded blocks.
pub fn static_name(index: usize) -> Option<&'static str> {
    STATIC_TABLE.get(index.checked_sub(1)?).map(|e| e.0)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HpackError {
    #[error("truncated header block")]
    Truncated,
    #[error("integer overflow")]
    Integer,
    #[error("string too long")]
    StringTooLong,
    #[error("bad Huffman code")]
    Huffman,
    #[error("index 0")]
    ZeroIndex,
    #[error("index beyond the table")]
    BadIndex,
}

/// Bytes of a decoded name or value, without a copy where there is one to share: the static
/// table's, or a dynamic-table entry's (shared with the table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bytes {
    Static(&'static [u8]),
    Shared(Arc<[u8]>),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Static(b) => b,
            Bytes::Shared(b) => b,
            Bytes::Owned(b) => b,
        }
    }
}

impl Bytes {
    fn shared(&self) -> Arc<[u8]> {
        match self {
            Bytes::Shared(b) => b.clone(),
            other => Arc::from(&other[..]),
        }
    }
}

/// One decoded field. `name` None: the name came from a table entry this decoder never saw.
/// `value` None: likewise for the value.
#[derive(Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Option<Bytes>,
    pub value: Option<Bytes>,
}

struct Entry {
    name: Option<Arc<[u8]>>,
    value: Option<Arc<[u8]>>,
    size: usize,
}

pub struct Decoder {
    /// Newest first (index 62 is `table[0]`).
    table: VecDeque<Entry>,
    size: usize,
    /// The table's maximum size as the encoder last set it.
    max_size: usize,
    /// The limit the encoder may raise it to (the decoder side's SETTINGS_HEADER_TABLE_SIZE).
    limit: usize,
    /// Entries older than those held may exist that were never seen (a mid-connection start, or
    /// a lost block): a reference past the held entries is unknown, not an error, and the table
    /// is kept up to MAX_TABLE_BYTES instead of `max_size` (see the module comment).
    partial: bool,
    /// The last Huffman strings decoded, by their coded bytes: servers re-send the same coded
    /// values on every response (nginx its `date` for a whole second, `server`, `etag`...), each
    /// a literal with incremental indexing, which must be decoded for the table's accounting.
    huffman_cache: Vec<CachedHuffman>,
    /// References to entries never seen, since the start.
    pub unknown_refs: u64,
    /// Size updates beyond the limit (capped at it).
    pub size_updates_refused: u64,
}

impl Decoder {
    /// A decoder from the first byte of the connection, or (`partial`) from somewhere inside it.
    pub fn new(partial: bool) -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE,
            limit: DEFAULT_TABLE_SIZE,
            partial,
            huffman_cache: Vec::new(),
            unknown_refs: 0,
            size_updates_refused: 0,
        }
    }

    /// A header block was lost: the entries it added are unknown, and they are newer than every
    /// entry held, so each held entry's index is unknown too. Only what is added from now on
    /// can be trusted: the table starts over, as on a mid-connection start.
    pub fn lost_block(&mut self) {
        self.partial = true;
        self.table.clear();
        self.size = 0;
    }

    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// The decoder side announced SETTINGS_HEADER_TABLE_SIZE: the encoder may now use up to it
    /// (it says so with a size update in its next block).
    pub fn set_limit(&mut self, limit: u32) {
        self.limit = (limit as usize).min(MAX_TABLE_BYTES);
    }

    /// Decodes one complete header block into `out`. On an error the block's remaining fields
    /// are lost and so is the table's state: the decoder goes on as `partial`.
    pub fn decode(
        &mut self,
        mut block: &[u8],
        out: &mut Vec<Field>,
        http: &HttpOptions,
    ) -> Result<(), HpackError> {
        let r = self.decode_inner(&mut block, out, http);
        if r.is_err() {
            // The rest of the block may have added entries: as for a lost block.
            self.lost_block();
        }
        r
    }

    fn decode_inner(
        &mut self,
        block: &mut &[u8],
        out: &mut Vec<Field>,
        http: &HttpOptions,
    ) -> Result<(), HpackError> {
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                // 6.1 indexed field.
                let index = integer(block, 7)?;
                out.push(self.field_at(index)?);
            } else if first & 0x40 != 0 {
                // 6.2.1 literal with incremental indexing.
                let field = self.literal(block, 6, http)?;
                out.push(self.insert(field));
            } else if first & 0x20 != 0 {
                // 6.3 dynamic table size update.
                let size = integer(block, 5)?;
                if size > self.limit {
                    self.size_updates_refused += 1;
                }
                self.max_size = size.min(self.limit);
                self.evict(self.bound());
            } else {
                // 6.2.2 without indexing, 6.2.3 never indexed: same layout, 4-bit prefix.
                let field = self.literal(block, 4, http)?;
                out.push(field);
            }
        }
        Ok(())
    }

    fn bound(&self) -> usize {
        if self.partial {
            MAX_TABLE_BYTES
        } else {
            self.max_size
        }
    }

    fn field_at(&mut self, index: usize) -> Result<Field, HpackError> {
        match index {
            0 => Err(HpackError::ZeroIndex),
            1..=61 => {
                let (n, v) = STATIC_TABLE[index - 1];
                Ok(Field {
                    name: Some(Bytes::Static(n.as_bytes())),
                    value: Some(Bytes::Static(v.as_bytes())),
                })
            }
            _ => match self.table.get(index - 62) {
                Some(e) => Ok(Field {
                    name: e.name.clone().map(Bytes::Shared),
                    value: e.value.clone().map(Bytes::Shared),
                }),
                None if self.partial => {
                    self.unknown_refs += 1;
                    Ok(Field {
                        name: None,
                        value: None,
                    })
                }
                None => Err(HpackError::BadIndex),
            },
        }
    }

    fn literal(&mut self, block: &mut &[u8], prefix: u8, http: &HttpOptions) -> Result<Field, HpackError> {
        let index = integer(block, prefix)?;
        let name = if index == 0 {
            Some(self.string(block)?)
        } else {
            self.field_at(index)?.name
        };
        // A value that is not added to the table (prefix 4: without indexing, never indexed) and
        // whose field nobody reads (`date`, `etag`, `server`...) is skipped, not Huffman-decoded:
        // decoding was a quarter of the HTTP/2 replay's time.
        if prefix == 4 && name.as_deref().is_some_and(|n| !is_read(n, http)) {
            skip_string(block)?;
            return Ok(Field {
                name,
                value: Some(Bytes::Static(b"")),
            });
        }
        let value = Some(self.string(block)?);
        Ok(Field { name, value })
    }

    /// A string literal, through the cache of recent Huffman strings.
    fn string(&mut self, block: &mut &[u8]) -> Result<Bytes, HpackError> {
        let huffman = block.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
        if !huffman {
            return Ok(Bytes::Owned(string(block)?));
        }
        let mut probe = *block;
        let len = integer(&mut probe, 7)?;
        let coded = probe.get(..len).ok_or(HpackError::Truncated)?;
        if let Some((_, decoded)) = self.huffman_cache.iter().find(|(c, _)| &c[..] == coded) {
            let decoded = decoded.clone();
            *block = &probe[len..];
            return Ok(Bytes::Shared(decoded));
        }
        let decoded: Arc<[u8]> = string(block)?.into();
        if len <= HUFFMAN_CACHE_MAX_LEN {
            if self.huffman_cache.len() == HUFFMAN_CACHE_ENTRIES {
                self.huffman_cache.remove(0);
            }
            self.huffman_cache.push((coded.into(), decoded.clone()));
        }
        Ok(Bytes::Shared(decoded))
    }

    /// Adds a literal's field to the table; returns it, sharing the table's copy.
    fn insert(&mut self, field: Field) -> Field {
        // An entry with an unknown name still takes its place (so later indices stay right);
        // its size is a guess, which only matters when the table's size is known, and then no
        // name is unknown.
        let size = field.name.as_ref().map_or(0, |n| n.len())
            + field.value.as_ref().map_or(0, |v| v.len())
            + ENTRY_OVERHEAD;
        let bound = self.bound();
        if size > bound {
            // RFC 7541 section 4.4: an entry larger than the table empties it.
            self.table.clear();
            self.size = 0;
            return field;
        }
        self.evict(bound - size);
        let name = field.name.as_ref().map(Bytes::shared);
        let value = field.value.as_ref().map(Bytes::shared);
        self.table.push_front(Entry {
            name: name.clone(),
            value: value.clone(),
            size,
        });
        self.size += size;
        Field {
            name: name.map(Bytes::Shared),
            value: value.map(Bytes::Shared),
        }
    }

    fn evict(&mut self, to: usize) {
        while self.size > to {
            match self.table.pop_back() {
                Some(e) => self.size -= e.size,
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }

    /// Bytes the table holds (for bounds tests).
    pub fn table_bytes(&self) -> usize {
        self.size
    }
}

/// RFC 7541 section 5.1: an integer with an N-bit prefix. At most 4 continuation bytes (2^28),
/// plenty for any index, length or size here.
pub fn integer(block: &mut &[u8], prefix: u8) -> Result<usize, HpackError> {
    let (&first, rest) = block.split_first().ok_or(HpackError::Truncated)?;
    *block = rest;
    let max = (1usize << prefix) - 1;
    let mut value = (first as usize) & max;
    if value < max {
        return Ok(value);
    }
    for shift in (0..4).map(|i| i * 7) {
        let (&b, rest) = block.split_first().ok_or(HpackError::Truncated)?;
        *block = rest;
        value += ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(HpackError::Integer)
}

/// Whether the pipeline reads this field (stream/h2.rs and the head builder): pseudo-headers,
/// identity, framing and gRPC. Other fields that are not indexed are skipped undecoded (their
/// value reads as empty).
pub fn is_read(name: &[u8], http: &HttpOptions) -> bool {
    const READ: &[&[u8]] = &[
        b"host",
        b"content-type",
        b"content-length",
        b"transfer-encoding",
        b"authorization",
        b"proxy-authorization",
        b"cookie",
        b"user-agent",
        b"expect",
        b"upgrade",
        b"grpc-status",
        b"grpc-message",
    ];
    name.first() == Some(&b':')
        || READ.iter().any(|r| name.eq_ignore_ascii_case(r))
        || std::str::from_utf8(name).is_ok_and(|n| http.is_api_key_header(n))
}

/// Passes over a string literal without decoding it.
fn skip_string(block: &mut &[u8]) -> Result<(), HpackError> {
    let len = integer(block, 7)?;
    if block.len() < len {
        return Err(HpackError::Truncated);
    }
    *block = &block[len..];
    Ok(())
}

/// RFC 7541 section 5.2: a string literal, Huffman-coded or raw.
fn string(block: &mut &[u8]) -> Result<Vec<u8>, HpackError> {
    let huffman = block.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(block, 7)?;
    if len > MAX_STRING {
        return Err(HpackError::StringTooLong);
    }
    if block.len() < len {
        return Err(HpackError::Truncated);
    }
    let (raw, rest) = block.split_at(len);
    *block = rest;
    if !huffman {
        return Ok(raw.to_vec());
    }
    let mut out = Vec::with_capacity(len * 8 / 5);
    httlib_huffman::decode(raw, &mut out, httlib_huffman::DecoderSpeed::FiveBits)
        .map_err(|_| HpackError::Huffman)?;
    Ok(out)
}

/// Where the value string of each literal field with one of `names` lies in `block` (offset of
/// its length prefix, and the end of the string), for redaction. Names come from the static
/// table or a literal; a literal whose name is a dynamic-table reference is reported too (its
/// name cannot be known here, so it is treated as secret). Stops at the first thing it cannot
/// read, reporting the offset from which nothing was checked.
pub fn literal_values(
    block: &[u8],
    is_secret: impl Fn(&[u8]) -> bool,
) -> (Vec<(usize, usize)>, Option<usize>) {
    let mut found = Vec::new();
    let mut rest = block;
    let offset = |rest: &[u8]| block.len() - rest.len();
    while let Some(&first) = rest.first() {
        let start = offset(rest);
        let prefix = if first & 0x80 != 0 {
            if integer(&mut rest, 7).is_err() {
                return (found, Some(start));
            }
            continue;
        } else if first & 0x40 != 0 {
            6
        } else if first & 0x20 != 0 {
            if integer(&mut rest, 5).is_err() {
                return (found, Some(start));
            }
            continue;
        } else {
            4
        };
        let Ok(index) = integer(&mut rest, prefix) else {
            return (found, Some(start));
        };
        let secret = if index == 0 {
            let name_at = offset(rest);
            let Ok(name) = string(&mut rest) else {
                return (found, Some(name_at));
            };
            is_secret(&name)
        } else {
            match static_name(index) {
                Some(n) => is_secret(n.as_bytes()),
                None => true,
            }
        };
        let value_at = offset(rest);
        let mut probe = rest;
        let Ok(len) = integer(&mut probe, 7) else {
            return (found, Some(value_at));
        };
        if probe.len() < len {
            return (found, Some(value_at));
        }
        rest = &probe[len..];
        if secret {
            found.push((value_at, offset(rest)));
        }
    }
    (found, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(d: &mut Decoder, block: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        d.decode(block, &mut out, &HttpOptions::default()).unwrap();
        out.into_iter()
            .map(|f| {
                let s = |v: Option<Bytes>| v.map_or("?".into(), |v| String::from_utf8(v.to_vec()).unwrap());
                (s(f.name), s(f.value))
            })
            .collect()
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc7541_c4_requests_with_huffman() {
        // RFC 7541 C.4.1 - C.4.3: three requests on one connection, Huffman-coded.
        let mut d = Decoder::new(false);
        let first = decode_all(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"));
        assert_eq!(first[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(d.table_bytes(), 57);
        let second = decode_all(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf"));
        assert_eq!(second[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(second[4], ("cache-control".into(), "no-cache".into()));
        let third = decode_all(
            &mut d,
            &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
        );
        assert_eq!(third[2], (":path".into(), "/index.html".into()));
        assert_eq!(third[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(third[4], ("custom-key".into(), "custom-value".into()));
        assert_eq!(d.table_bytes(), 164);
    }

    #[test]
    fn rfc7541_c5_responses_evict_at_256_bytes() {
        // C.5: responses with a 256-byte table: the third evicts.
        let mut d = Decoder::new(false);
        d.set_limit(256);
        // A size update to 256 first (the example assumes the table starts at 256).
        let mut block = vec![0x3f, 0xe1, 0x01];
        block.extend(hex(
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
             6c65 2e63 6f6d",
        ));
        let r = decode_all(&mut d, &block);
        assert_eq!(r[0], (":status".into(), "302".into()));
        assert_eq!(d.table_bytes(), 222);
        let r = decode_all(&mut d, &hex("4803 3330 37c1 c0bf"));
        assert_eq!(r[0], (":status".into(), "307".into()));
        assert_eq!(r[3].0, "location");
        assert_eq!(d.table_bytes(), 222);
    }

    #[test]
    fn mid_connection_references_are_unknown_and_later_entries_exact() {
        let mut d = Decoder::new(true);
        // Index 70 was added before we started: unknown, counted, no error.
        let r = decode_all(&mut d, &[0x80 | 70]);
        assert_eq!(r, vec![("?".into(), "?".into())]);
        assert_eq!(d.unknown_refs, 1);
        // A new entry (literal name, incremental indexing) is then index 62, exactly.
        let mut block = vec![0x40, 0x05];
        block.extend(b":path");
        block.extend([0x04]);
        block.extend(b"/new");
        decode_all(&mut d, &block);
        assert_eq!(
            decode_all(&mut d, &[0x80 | 62]),
            vec![(":path".into(), "/new".into())]
        );
        // Without `partial` the same unknown reference is an error, and makes the decoder partial.
        let mut strict = Decoder::new(false);
        assert_eq!(
            strict.decode(&[0x80 | 70], &mut Vec::new(), &HttpOptions::default()),
            Err(HpackError::BadIndex)
        );
        assert!(strict.is_partial());
    }

    #[test]
    fn cached_huffman_strings_and_skipped_unread_values() {
        let mut coded = Vec::new();
        httlib_huffman::encode(b"Tue, 01 Dec 2026 22:00:00 GMT", &mut coded).unwrap();
        // date (static 33) with incremental indexing, twice (the second from the cache), then
        // without indexing (not read: skipped, empty), then content-type without indexing (read).
        let mut block = Vec::new();
        for _ in 0..2 {
            block.extend([0x40 | 33, 0x80 | coded.len() as u8]);
            block.extend(&coded);
        }
        block.extend([0x0f, 33 - 15, 0x80 | coded.len() as u8]);
        block.extend(&coded);
        block.extend([0x0f, 31 - 15, 16]);
        block.extend(b"application/grpc");
        let mut d = Decoder::new(false);
        let got = decode_all(&mut d, &block);
        assert_eq!(got[0], ("date".into(), "Tue, 01 Dec 2026 22:00:00 GMT".into()));
        assert_eq!(got[1], got[0]);
        assert_eq!(got[2], ("date".into(), "".into()));
        assert_eq!(got[3], ("content-type".into(), "application/grpc".into()));
        // Both indexed copies are in the table, at their decoded size.
        assert_eq!(d.table_bytes(), 2 * (4 + 29 + 32));
        assert_eq!(
            decode_all(&mut d, &[0x80 | 62])[0].1,
            "Tue, 01 Dec 2026 22:00:00 GMT"
        );
    }

    #[test]
    fn table_size_bomb_is_capped() {
        let mut d = Decoder::new(false);
        // A size update to 2^28 - 1 and a flood of 4 KiB entries: the table stays within limits.
        let mut block = vec![0x3f];
        block.extend([0xff, 0xff, 0xff, 0x7f]);
        for i in 0..100u8 {
            block.extend([0x40, 0x01, b'a' + (i % 26), 0x7f, 0xa1, 0x1e]);
            block.extend(std::iter::repeat_n(b'x', 4000));
        }
        decode_all(&mut d, &block);
        assert_eq!(d.size_updates_refused, 1);
        assert!(d.table_bytes() <= DEFAULT_TABLE_SIZE, "{}", d.table_bytes());
        // Partial decoders keep more, but never past MAX_TABLE_BYTES.
        let mut p = Decoder::new(true);
        decode_all(&mut p, &block);
        assert!(p.table_bytes() <= MAX_TABLE_BYTES);
    }

    #[test]
    fn integers_reject_overflow_and_truncation() {
        assert_eq!(integer(&mut &[0x1f, 0x9a, 0x0a][..], 5), Ok(1337));
        assert_eq!(
            integer(&mut &[0x1f, 0xff, 0xff, 0xff, 0xff, 0x01][..], 5),
            Err(HpackError::Integer)
        );
        assert_eq!(integer(&mut &[0x1f, 0xff][..], 5), Err(HpackError::Truncated));
        assert_eq!(integer(&mut &[][..], 5), Err(HpackError::Truncated));
    }

    #[test]
    fn literal_values_finds_secret_values() {
        // authorization (static 23) without indexing, then :path literal, then cookie literal name.
        let mut block = vec![0x0f, 0x08, 0x05];
        block.extend(b"Basic");
        block.extend([0x44, 0x02]);
        block.extend(b"/a");
        block.extend([0x00, 0x06]);
        block.extend(b"cookie");
        block.extend([0x03]);
        block.extend(b"k=v");
        let (found, stopped) = literal_values(&block, |n| n == b"authorization" || n == b"cookie");
        assert_eq!(stopped, None);
        assert_eq!(found.len(), 2);
        assert_eq!(&block[found[0].0 + 1..found[0].1], b"Basic");
        assert_eq!(&block[found[1].0 + 1..found[1].1], b"k=v");
    }
}
