//! A fast path for the heads nearly every server and client writes: start line and fields in
//! printable ASCII, each line ending in CRLF, the whole head in the buffer. httparse spent about
//! 9 instructions per byte on them (1,400 per nginx response, the largest single cost per
//! exchange); this spends about 2. Anything else (a tab, obs-text, a bare LF, spaces where the
//! grammar has none, a head not complete yet, too many fields) is left to httparse: these
//! functions accept a subset of what httparse accepts and return what it would return for it,
//! which `tests` checks against httparse itself on generated and mutated heads.
use std::mem::MaybeUninit;

use httparse::Header;

/// The start line and fields of a complete simple head; `len` is the head's length.
pub(super) struct SimpleHead<'a, 'h> {
    pub version: u8,
    pub headers: &'h [Header<'a>],
    pub len: usize,
}

/// `HTTP/1.x SSS reason` and fields: (status code, head). None: not a simple head.
pub(super) fn response<'a, 'h>(
    buf: &'a [u8],
    headers: &'h mut [MaybeUninit<Header<'a>>],
) -> Option<(u16, SimpleHead<'a, 'h>)> {
    let line_end = line_end(buf, 0)?;
    let line = &buf[..line_end];
    // "HTTP/1.1 200" at least; the line is printable ASCII (line_end checked).
    if line.len() < 12 || line[8] != b' ' {
        return None;
    }
    let version = version(&line[..8])?;
    let code = &line[9..12];
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // A reason phrase after one space (any printable text), or none.
    if line.len() > 12 && line[12] != b' ' {
        return None;
    }
    let status = (code[0] - b'0') as u16 * 100 + (code[1] - b'0') as u16 * 10 + (code[2] - b'0') as u16;
    let (n, len) = fields(buf, line_end + 2, headers)?;
    Some((status, simple(version, headers, n, len)))
}

/// `METHOD target HTTP/1.x` and fields: (method, target, head). None: not a simple head.
#[allow(
    clippy::type_complexity,
    reason = "the start line's parts beside the head, as httparse's Request holds them"
)]
pub(super) fn request<'a, 'h>(
    buf: &'a [u8],
    headers: &'h mut [MaybeUninit<Header<'a>>],
) -> Option<(&'a str, &'a str, SimpleHead<'a, 'h>)> {
    let line_end = line_end(buf, 0)?;
    let line = &buf[..line_end];
    // The method is a token; the target any printable ASCII but a space, both non-empty.
    let sp1 = token_len(line);
    if sp1 == 0 || line.get(sp1) != Some(&b' ') {
        return None;
    }
    let rest = &line[sp1 + 1..];
    let sp2 = rest.iter().position(|&b| b == b' ')?;
    if sp2 == 0 || rest.len() != sp2 + 9 {
        return None;
    }
    let version = version(&rest[sp2 + 1..])?;
    let method = ascii(&line[..sp1]);
    let target = ascii(&rest[..sp2]);
    let (n, len) = fields(buf, line_end + 2, headers)?;
    Some((method, target, simple(version, headers, n, len)))
}

fn simple<'a, 'h>(
    version: u8,
    headers: &'h [MaybeUninit<Header<'a>>],
    n: usize,
    len: usize,
) -> SimpleHead<'a, 'h> {
    // SAFETY: `fields` initialised the first `n` entries (and n <= headers.len()); MaybeUninit<T>
    // has T's layout.
    let headers = unsafe { std::slice::from_raw_parts(headers.as_ptr().cast::<Header<'a>>(), n) };
    SimpleHead {
        version,
        headers,
        len,
    }
}

fn version(b: &[u8]) -> Option<u8> {
    match b {
        b"HTTP/1.1" => Some(1),
        b"HTTP/1.0" => Some(0),
        _ => None,
    }
}

/// Fields from `at` to the empty line: (how many, the head's length).
fn fields<'a>(
    buf: &'a [u8],
    mut at: usize,
    headers: &mut [MaybeUninit<Header<'a>>],
) -> Option<(usize, usize)> {
    let mut n = 0;
    loop {
        let end = line_end(buf, at)?;
        if end == at {
            return Some((n, end + 2));
        }
        let line = &buf[at..end];
        let colon = token_len(line);
        if colon == 0 || line.get(colon) != Some(&b':') {
            return None;
        }
        let mut value = &line[colon + 1..];
        // httparse's value: leading and trailing spaces off (tabs never get here).
        while let [b' ', rest @ ..] = value {
            value = rest;
        }
        while let [rest @ .., b' '] = value {
            value = rest;
        }
        let slot = headers.get_mut(n)?;
        *slot = MaybeUninit::new(Header {
            name: ascii(&line[..colon]),
            value,
        });
        n += 1;
        at = end + 2;
    }
}

/// Where the line starting at `at` ends: the offset of its CRLF, when every byte before it is
/// printable ASCII (0x20-0x7e). None: a byte outside that (a tab, obs-text, a bare CR or LF)
/// or no line end in the buffer.
fn line_end(buf: &[u8], at: usize) -> Option<usize> {
    let stop = at + first_unprintable(&buf[at..])?;
    (buf[stop] == b'\r' && buf.get(stop + 1) == Some(&b'\n')).then_some(stop)
}

/// The offset of the first byte of `b` outside 0x20-0x7e. Sixteen bytes at a time where SSE2 is
/// there (always on x86_64): a signed compare below 0x20 takes 0x00-0x1f and 0x80-0xff at once.
fn first_unprintable(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        while i + 16 <= b.len() {
            // SAFETY: SSE2 is part of the x86_64 baseline; the unaligned load reads b[i..i + 16],
            // inside `b` (checked by the loop condition).
            let mask = unsafe {
                let v = _mm_loadu_si128(b.as_ptr().add(i).cast::<__m128i>());
                let low_or_high = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
                let del = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f));
                _mm_movemask_epi8(_mm_or_si128(low_or_high, del)) as u32
            };
            if mask != 0 {
                return Some(i + mask.trailing_zeros() as usize);
            }
            i += 16;
        }
    }
    b[i..]
        .iter()
        .position(|&c| !(0x20..0x7f).contains(&c))
        .map(|off| i + off)
}

/// Bytes of `b` that are RFC 9110 tchars, from its start.
fn token_len(b: &[u8]) -> usize {
    b.iter().position(|&c| !TOKEN[c as usize]).unwrap_or(b.len())
}

/// RFC 9110 tchar, by byte.
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        c += 1;
    }
    t
};

/// Bytes `line_end` or `token_len` vouched for: printable ASCII.
fn ascii(b: &[u8]) -> &str {
    debug_assert!(b.iter().all(|c| (0x20..0x7f).contains(c)));
    // SAFETY: every caller passes bytes of a line `line_end` checked to be 0x20-0x7e, which are
    // ASCII and so UTF-8 (std::str::from_utf8 was a tenth of the head's cost here).
    unsafe { std::str::from_utf8_unchecked(b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What httparse makes of a head (its own error kinds aside): the outcome the fast path must
    /// give wherever it gives one.
    #[derive(Debug, PartialEq)]
    enum Parsed {
        Complete {
            start: (String, String, u16, u8),
            headers: Vec<(String, Vec<u8>)>,
            len: usize,
        },
        NotComplete,
    }

    /// Both parsers' headers in one owned form, to compare.
    fn owned<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<(String, Vec<u8>)> {
        headers.map(|(n, v)| (n.to_string(), v.to_vec())).collect()
    }

    fn httparse_response(buf: &[u8]) -> Parsed {
        let mut h = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut h);
        match r.parse(buf) {
            Ok(httparse::Status::Complete(len)) => Parsed::Complete {
                start: (String::new(), String::new(), r.code.unwrap(), r.version.unwrap()),
                headers: owned(r.headers.iter().map(|h| (h.name, h.value))),
                len,
            },
            _ => Parsed::NotComplete,
        }
    }

    fn httparse_request(buf: &[u8]) -> Parsed {
        let mut h = [httparse::EMPTY_HEADER; 128];
        let mut r = httparse::Request::new(&mut h);
        match r.parse(buf) {
            Ok(httparse::Status::Complete(len)) => Parsed::Complete {
                start: (
                    r.method.unwrap().to_string(),
                    r.path.unwrap().to_string(),
                    0,
                    r.version.unwrap(),
                ),
                headers: owned(r.headers.iter().map(|h| (h.name, h.value))),
                len,
            },
            _ => Parsed::NotComplete,
        }
    }

    fn fast_response(buf: &[u8]) -> Option<Parsed> {
        let mut h = [const { MaybeUninit::uninit() }; 64];
        let (code, head) = response(buf, &mut h)?;
        Some(Parsed::Complete {
            start: (String::new(), String::new(), code, head.version),
            headers: owned(head.headers.iter().map(|h| (h.name, h.value))),
            len: head.len,
        })
    }

    fn fast_request(buf: &[u8]) -> Option<Parsed> {
        let mut h = [const { MaybeUninit::uninit() }; 128];
        let (method, target, head) = request(buf, &mut h)?;
        Some(Parsed::Complete {
            start: (method.to_string(), target.to_string(), 0, head.version),
            headers: owned(head.headers.iter().map(|h| (h.name, h.value))),
            len: head.len,
        })
    }

    const RESPONSES: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 12:32:15 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n",
        b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 204\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Spaces:   padded value   \r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ];

    const REQUESTS: &[&[u8]] = &[
        b"GET /api/v1/users/42 HTTP/1.1\r\nHost: 127.0.0.1:18700\r\n\r\n",
        b"POST /login?next=/home HTTP/1.1\r\nHost: shop\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 27\r\nAuthorization: Bearer abc.def.ghi\r\n\r\nuser=a&password=hunter2&x=1",
        b"OPTIONS * HTTP/1.0\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
        b"DELETE /a/b HTTP/1.1\r\nX-Api-Key:k\r\nCookie: a=b; c=d\r\n\r\n",
    ];

    /// Bytes a mutation writes: the grammar's edges (separators, line ends, tabs, obs-text, DEL).
    const EDGES: &[u8] = b" \t\r\n:\x00\x7f\x80\xff/aZ0\"(,;=@[\\]{}";

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Each seed whole, every prefix of it, and 20,000 mutations of it (bytes replaced, inserted,
    /// removed): wherever the fast path answers, httparse answers the same.
    fn check_against_httparse(
        seeds: &[&[u8]],
        fast: fn(&[u8]) -> Option<Parsed>,
        reference: fn(&[u8]) -> Parsed,
    ) {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        let mut answered = 0;
        for seed in seeds {
            assert_eq!(
                fast(seed),
                Some(reference(seed)),
                "{:?}",
                String::from_utf8_lossy(seed)
            );
            for cut in 0..seed.len() {
                if let Some(p) = fast(&seed[..cut]) {
                    assert_eq!(p, reference(&seed[..cut]));
                }
            }
            for _ in 0..20_000 {
                let mut b = seed.to_vec();
                for _ in 0..1 + xorshift(&mut state) % 3 {
                    let at = (xorshift(&mut state) % b.len() as u64) as usize;
                    let byte = EDGES[(xorshift(&mut state) % EDGES.len() as u64) as usize];
                    match xorshift(&mut state) % 3 {
                        0 => b[at] = byte,
                        1 => b.insert(at, byte),
                        _ => {
                            b.remove(at);
                        }
                    }
                    if b.is_empty() {
                        b.push(byte);
                    }
                }
                if let Some(p) = fast(&b) {
                    answered += 1;
                    assert_eq!(p, reference(&b), "{:?}", String::from_utf8_lossy(&b));
                }
            }
        }
        // The mutations must leave many heads simple, or the comparison says little.
        assert!(answered > seeds.len() * 2_000, "{answered}");
    }

    #[test]
    fn responses_parse_as_httparse_parses_them() {
        check_against_httparse(RESPONSES, fast_response, httparse_response);
    }

    #[test]
    fn requests_parse_as_httparse_parses_them() {
        check_against_httparse(REQUESTS, fast_request, httparse_request);
    }

    #[test]
    fn what_is_not_simple_is_left_to_httparse() {
        for head in [
            &b"HTTP/1.1 200 OK\r\nX: a\tb\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\nX: a\n\n",
            b"HTTP/1.1 200 OK\r\nX: caf\xc3\xa9\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n",
            b"HTTP/2 200\r\n\r\n",
        ] {
            assert!(
                fast_response(head).is_none(),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
        let many: Vec<u8> = [&b"HTTP/1.1 200 OK\r\n"[..], &b"X: y\r\n".repeat(65), b"\r\n"].concat();
        assert!(fast_response(&many).is_none(), "more fields than the array holds");
        assert!(fast_request(b"GET /a b HTTP/1.1\r\n\r\n").is_none());
        assert!(fast_request(b"GET  /a HTTP/1.1\r\n\r\n").is_none());
        assert!(fast_request(b"GET /a HTTP/1.1\r\nHost : x\r\n\r\n").is_none());
    }

    #[test]
    fn line_ends_found_at_every_offset() {
        // Every length around the 16-byte steps, every bad byte at every offset.
        for len in 0..40 {
            let mut b = vec![b'a'; len];
            b.extend_from_slice(b"\r\n");
            assert_eq!(line_end(&b, 0), Some(len));
            for bad in [0x00u8, 0x09, 0x1f, 0x7f, 0x80, 0xff, b'\n'] {
                for at in 0..len {
                    let mut c = b.clone();
                    c[at] = bad;
                    assert_eq!(line_end(&c, 0), None, "{bad:#x} at {at} of {len}");
                }
            }
        }
    }
}
