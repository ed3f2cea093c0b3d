//! Reassembly tests: byte streams in, exchanges out.
use super::*;
use crate::capture::{ConnOpen, DataChunk};

const ID: ConnId = ConnId { tgid: 100, fd: 5 };

/// One piece of a stream: direction, bytes seen, bytes not seen after them.
type Piece<'a> = (Direction, &'a [u8], u64);

fn run_with(role: Role, pieces: &[Piece], close: bool) -> (Vec<Exchange>, PipelineStats) {
    let mut table = ConnTable::new(StreamConfig::default());
    let mut stats = PipelineStats::default();
    let mut out = Vec::new();
    table.process(
        CaptureEvent::Open(ConnOpen {
            ts_ns: 1,
            id: ID,
            role,
            local: Some("127.0.0.1:8080".parse().unwrap()),
            peer: Some("127.0.0.1:40000".parse().unwrap()),
            comm: "srv".into(),
            seeded: false,
            epoch: 0,
        }),
        &mut stats,
        &mut out,
    );
    for (i, (dir, bytes, gap)) in pieces.iter().enumerate() {
        table.process(
            CaptureEvent::Data(DataChunk {
                ts_ns: 10 + i as u64 * 1000,
                id: ID,
                direction: *dir,
                total_len: bytes.len() as u64 + gap,
                bytes: bytes::BytesMut::from(&bytes[..]),
                tls: false,
            }),
            &mut stats,
            &mut out,
        );
    }
    if close {
        table.process(
            CaptureEvent::Close {
                ts_ns: 1_000_000,
                id: ID,
            },
            &mut stats,
            &mut out,
        );
    }
    (out, stats)
}

fn run(pieces: &[Piece]) -> Vec<Exchange> {
    run_with(Role::Server, pieces, true).0
}

/// (method, path, status, req_bytes, resp_bytes, complete)
fn summary(ex: &[Exchange]) -> Vec<(String, String, Option<u16>, u64, u64, bool)> {
    ex.iter()
        .map(|e| {
            (
                e.method.clone(),
                e.path.clone(),
                e.status,
                e.req_bytes,
                e.resp_bytes,
                e.complete,
            )
        })
        .collect()
}

const IN: Direction = Direction::Ingress;
const OUT: Direction = Direction::Egress;

const REQS: &[u8] = b"GET /users/42?x=1 HTTP/1.1\r\nHost: a\r\n\r\n\
POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n\
HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n\
PUT /p HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody";
const RESPS: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndone\r\n0\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n";

fn expected() -> Vec<(String, String, Option<u16>, u64, u64, bool)> {
    let s = |m: &str, p: &str, st, rq, rs| (m.to_string(), p.to_string(), Some(st), rq, rs, true);
    vec![
        s("GET", "/users/42", 200, 39, 40),
        s("POST", "/upload", 201, 105, 66),
        s("HEAD", "/h", 200, 29, 41),
        s("PUT", "/p", 204, 42, 27),
    ]
}

#[test]
fn pipelined_keepalive_chunked_head_and_204() {
    assert_eq!(summary(&run(&[(IN, REQS, 0), (OUT, RESPS, 0)])), expected());
}

#[test]
fn split_at_every_byte_offset() {
    for i in 0..=REQS.len() {
        for j in [0, i.min(RESPS.len()), RESPS.len() / 2, RESPS.len()] {
            let pieces = [
                (IN, &REQS[..i], 0),
                (IN, &REQS[i..], 0),
                (OUT, &RESPS[..j], 0),
                (OUT, &RESPS[j..], 0),
            ];
            let pieces: Vec<Piece> = pieces.into_iter().filter(|p| !p.1.is_empty()).collect();
            assert_eq!(
                summary(&run(&pieces)),
                expected(),
                "split request at {i}, response at {j}"
            );
        }
    }
}

#[test]
fn one_byte_at_a_time() {
    let mut pieces: Vec<Piece> = REQS.chunks(1).map(|c| (IN, c, 0)).collect();
    pieces.extend(RESPS.chunks(1).map(|c| (OUT, c, 0)));
    assert_eq!(summary(&run(&pieces)), expected());
}

#[test]
fn interleaved_request_response() {
    // The realistic order on a keep-alive connection: request, response, request, response.
    let (r1, rest) = REQS.split_at(39);
    let (s1, srest) = RESPS.split_at(40);
    let ex = run(&[(IN, r1, 0), (OUT, s1, 0), (IN, rest, 0), (OUT, srest, 0)]);
    assert_eq!(summary(&ex), expected());
}

#[test]
fn body_beyond_the_captured_prefix_is_counted() {
    // A 100 000-byte response of which the kernel copied only the head and 10 body bytes.
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789";
    let ex = run(&[
        (IN, b"GET /big HTTP/1.1\r\n\r\n", 0),
        (OUT, head, 99_990),
        (IN, b"GET /next HTTP/1.1\r\n\r\n", 0),
        (OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0),
    ]);
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].resp_bytes, (head.len() - 10) as u64 + 100_000);
    assert!(ex[0].complete);
    assert_eq!(ex[1].path, "/next");
    assert!(ex[1].complete);
}

#[test]
fn sendfile_body_is_a_gap() {
    // nginx: headers by writev, the file by sendfile (counted, not copied).
    let ex = run(&[
        (IN, b"GET /f HTTP/1.1\r\n\r\n", 0),
        (OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", 0),
        (OUT, b"", 5000),
        (IN, b"GET /g HTTP/1.1\r\n\r\n", 0),
        (OUT, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 0),
    ]);
    assert_eq!(
        summary(&ex).iter().map(|s| s.2).collect::<Vec<_>>(),
        vec![Some(200), Some(404)]
    );
    assert!(ex.iter().all(|e| e.complete));
}

#[test]
fn chunked_data_in_gaps() {
    // writev of "1f4\r\n", 500 data bytes, "\r\n" with only the first iovec copied.
    let ex = run(&[
        (IN, b"GET /c HTTP/1.1\r\n\r\n", 0),
        (OUT, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0),
        (OUT, b"1f4\r\n", 502),
        (OUT, b"0\r\n\r\n", 0),
    ]);
    assert_eq!(ex.len(), 1);
    assert!(ex[0].complete);
    assert_eq!(ex[0].status, Some(200));
}

#[test]
fn expect_100_continue() {
    let ex = run(&[
        (
            IN,
            b"POST /up HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
            0,
        ),
        (OUT, b"HTTP/1.1 100 Continue\r\n\r\n", 0),
        (IN, b"abc", 0),
        (OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0),
    ]);
    assert_eq!(
        summary(&ex),
        vec![("POST".into(), "/up".into(), Some(200), 65, 40, true)]
    );
}

#[test]
fn upgrade_stops_parsing() {
    let (ex, stats) = run_with(
        Role::Server,
        &[
            (
                IN,
                b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                0,
            ),
            (
                OUT,
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                0,
            ),
            (IN, b"\x81\x85garbage that is websocket frames", 0),
            (OUT, b"\x81\x05hello", 0),
        ],
        true,
    );
    assert_eq!(
        summary(&ex),
        vec![("GET".into(), "/ws".into(), Some(101), 61, 56, true)]
    );
    assert_eq!(stats.parse_errors.total(), 0);
    assert_eq!(stats.tunnels, 1);
}

#[test]
fn response_until_close() {
    let ex = run(&[
        (IN, b"GET /old HTTP/1.0\r\n\r\n", 0),
        (OUT, b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nsome body", 0),
        (OUT, b" and more", 0),
    ]);
    assert_eq!(
        summary(&ex),
        vec![("GET".into(), "/old".into(), Some(200), 21, 48, true)]
    );
}

#[test]
fn truncated_headers_are_flagged() {
    // A request head longer than the prefix: the kernel copied 60 bytes of 3000.
    let head = b"GET /long?a=1 HTTP/1.1\r\nHost: h\r\nCookie: aaaaaaaaaaaaaaaaaaaaaaaaa";
    let ex = run(&[
        (IN, head, 3000 - head.len() as u64),
        (OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0),
        (IN, b"GET /after HTTP/1.1\r\n\r\n", 0),
        (OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0),
    ]);
    assert_eq!(ex.len(), 2, "{ex:?}");
    assert!(ex[0].truncated);
    assert_eq!(ex[0].path, "/long");
    assert_eq!(ex[0].status, Some(200));
    assert_eq!(ex[0].req_bytes, 3000);
    assert_eq!(ex[1].path, "/after");
    assert!(!ex[1].truncated);
}

#[test]
fn garbage_then_a_valid_request() {
    for garbage in [
        &b"\x16\x03\x01\x02\x00garbage"[..],
        b"NOT HTTP AT ALL\r\n\r\n",
        b"\0\0\0\0",
    ] {
        let mut both = garbage.to_vec();
        both.extend_from_slice(b"GET /ok HTTP/1.1\r\n\r\n");
        for pieces in [
            vec![(IN, garbage, 0), (IN, &b"GET /ok HTTP/1.1\r\n\r\n"[..], 0)],
            vec![(IN, &both[..], 0)],
        ] {
            let mut pieces = pieces;
            pieces.push((OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0));
            let (ex, stats) = run_with(Role::Server, &pieces, true);
            assert_eq!(ex.len(), 1, "garbage {garbage:?}: {ex:?}");
            assert_eq!(ex[0].path, "/ok");
            assert!(stats.parse_errors.total() >= 1);
        }
    }
}

#[test]
fn hostile_input_never_panics_and_stays_bounded() {
    // Deterministic pseudo-random bytes, heads that never end, huge chunk sizes.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut noise = vec![0u8; 200_000];
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x & 0xff) as u8;
    }
    let endless_head: Vec<u8> = b"GET / HTTP/1.1\r\n"
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'a', 100_000))
        .collect();
    let mut table = ConnTable::new(StreamConfig::default());
    let mut stats = PipelineStats::default();
    let mut out = Vec::new();
    for (i, input) in [
        &noise[..],
        &endless_head[..],
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
    ]
    .iter()
    .enumerate()
    {
        for (k, piece) in input.chunks(997).enumerate() {
            table.process(
                CaptureEvent::Data(DataChunk {
                    ts_ns: (i * 10_000 + k) as u64,
                    id: ConnId {
                        tgid: 1,
                        fd: i as u32,
                    },
                    direction: IN,
                    total_len: piece.len() as u64 + (k % 3) as u64,
                    bytes: bytes::BytesMut::from(piece),
                    tls: false,
                }),
                &mut stats,
                &mut out,
            );
            for c in table.conns.values() {
                assert!(c.ingress.buffered() <= 2 * crate::http::parser::MAX_HEAD_BYTES);
            }
        }
    }
    assert!(stats.parse_errors.total() > 0);
}

#[test]
fn client_role_pairs_egress_requests() {
    let (ex, _) = run_with(
        Role::Client,
        &[
            (OUT, b"DELETE /x/1 HTTP/1.1\r\n\r\n", 0),
            (IN, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", 0),
        ],
        true,
    );
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].role, Role::Client);
    assert_eq!(ex[0].status, Some(403));
}

#[test]
fn unanswered_request_is_reported_at_close() {
    let ex = run(&[(IN, b"GET /hang HTTP/1.1\r\n\r\n", 0)]);
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].status, None);
    assert!(!ex[0].complete);
}

#[test]
fn connection_seen_mid_stream_resyncs() {
    // No open event (started before us, not seeded): the first bytes are the tail of a body.
    let mut table = ConnTable::new(StreamConfig::default());
    let mut stats = PipelineStats::default();
    let mut out = Vec::new();
    for (dir, bytes) in [
        (IN, &b"ail of an earlier body"[..]),
        (IN, b"GET /next HTTP/1.1\r\n\r\n"),
        (OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ] {
        table.process(
            CaptureEvent::Data(DataChunk {
                ts_ns: 5,
                id: ID,
                direction: dir,
                total_len: bytes.len() as u64,
                bytes: bytes::BytesMut::from(bytes),
                tls: false,
            }),
            &mut stats,
            &mut out,
        );
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].role, Role::Server);
    assert_eq!(out[0].path, "/next");
}

#[test]
fn idle_connections_expire_and_table_is_bounded() {
    let mut table = ConnTable::new(StreamConfig {
        max_connections: 16,
        idle_timeout_ns: 1_000,
        ..Default::default()
    });
    let mut stats = PipelineStats::default();
    let mut out = Vec::new();
    for fd in 0..100 {
        table.process(
            CaptureEvent::Data(DataChunk {
                ts_ns: 10,
                id: ConnId { tgid: 1, fd },
                direction: IN,
                total_len: 20,
                bytes: bytes::BytesMut::from(&b"GET /a HTTP/1.1\r\n\r\n"[..]),
                tls: false,
            }),
            &mut stats,
            &mut out,
        );
        assert!(table.len() <= 16);
    }
    assert_eq!(stats.connections_evicted, 84);
    table.expire(1_000_000, &mut stats, &mut out);
    assert!(table.is_empty());
    assert_eq!(out.len(), 100, "every request is still reported");
}

/// Many connections that each send most of a head: together they stay within the buffer
/// budget (the ones holding the most are evicted and counted), and a well-formed exchange on
/// another connection is still seen.
#[test]
fn unfinished_heads_on_many_connections_stay_within_the_buffer_budget() {
    let budget = 1 << 20;
    let mut table = ConnTable::new(StreamConfig {
        max_buffered_bytes: budget,
        ..Default::default()
    });
    let mut stats = PipelineStats::default();
    let mut out = Vec::new();
    let mut partial = b"GET /never-ends HTTP/1.1\r\nX-Pad: ".to_vec();
    partial.resize(30 * 1024, b'a');
    for fd in 0..200 {
        let id = ConnId { tgid: 7, fd };
        for piece in partial.chunks(4096) {
            table.process(data_event(id, IN, piece, 0), &mut stats, &mut out);
            assert!(
                table.buffered_bytes() <= budget + 64 * 1024,
                "{} bytes buffered",
                table.buffered_bytes()
            );
        }
    }
    assert!(stats.connections_shed > 0);
    // The running total is the real sum.
    let sum: usize = table.conns.values().map(conn_buffered).sum();
    assert_eq!(table.buffered_bytes(), sum);
    let id = ConnId { tgid: 8, fd: 1 };
    table.process(
        data_event(id, IN, b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n", 0),
        &mut stats,
        &mut out,
    );
    table.process(
        data_event(id, OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0),
        &mut stats,
        &mut out,
    );
    assert!(out.iter().any(|e| e.path == "/ok" && e.status == Some(200)));
    table.flush(1, &mut stats, &mut out);
    assert_eq!(table.buffered_bytes(), 0);
}

fn open_event(id: ConnId, epoch: u32) -> CaptureEvent {
    CaptureEvent::Open(ConnOpen {
        ts_ns: 1,
        id,
        role: Role::Client,
        local: Some("127.0.0.1:40000".parse().unwrap()),
        peer: Some("127.0.0.1:8080".parse().unwrap()),
        comm: "cli".into(),
        seeded: false,
        epoch,
    })
}

fn data_event(id: ConnId, direction: Direction, bytes: &[u8], gap: u64) -> CaptureEvent {
    CaptureEvent::Data(DataChunk {
        ts_ns: 10,
        id,
        direction,
        total_len: bytes.len() as u64 + gap,
        bytes: bytes::BytesMut::from(bytes),
        tls: false,
    })
}

fn exit_event(ts_ns: u64, tgid: u32) -> CaptureEvent {
    CaptureEvent::ProcessExit { ts_ns, tgid }
}

#[test]
fn a_process_exit_ends_its_connections_and_only_its() {
    let mut table = ConnTable::new(StreamConfig::default());
    let (mut stats, mut out) = (PipelineStats::default(), Vec::new());
    let other = ConnId { tgid: 200, fd: 5 };
    for id in [ID, other] {
        table.process(open_event(id, 0), &mut stats, &mut out);
        table.process(
            data_event(id, Direction::Egress, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 0),
            &mut stats,
            &mut out,
        );
    }
    table.process(exit_event(50, ID.tgid), &mut stats, &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].pid, out[0].status), (ID.tgid, None));
    assert_eq!(table.len(), 1);
    // An exit of a process that had no connection is a no-op.
    table.process(exit_event(60, 999), &mut stats, &mut out);
    assert_eq!(table.len(), 1);
}

#[test]
fn processes_remembered_for_exits_stay_bounded_by_the_table() {
    let mut table = ConnTable::new(StreamConfig::default());
    let (mut stats, mut out) = (PipelineStats::default(), Vec::new());
    // 10,000 short-lived processes, each one connection opened and closed (no exit events, as on
    // the socket layer).
    for tgid in 1..=10_000 {
        let id = ConnId { tgid, fd: 3 };
        table.process(open_event(id, 0), &mut stats, &mut out);
        table.process(CaptureEvent::Close { ts_ns: 2, id }, &mut stats, &mut out);
    }
    assert!(table.tgids.len() <= 1025, "{}", table.tgids.len());
}

#[test]
fn a_large_body_is_hinted_once_with_its_end_offset() {
    let mut table = ConnTable::new(StreamConfig::default());
    table.enable_body_hints();
    let (mut stats, mut out) = (PipelineStats::default(), Vec::new());
    table.process(open_event(ID, 7), &mut stats, &mut out);
    table.process(
        data_event(ID, Direction::Egress, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0),
        &mut stats,
        &mut out,
    );
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
    // The head and the body's first 1,000 bytes (not copied) in one call, then more body.
    table.process(
        data_event(ID, Direction::Ingress, head, 1000),
        &mut stats,
        &mut out,
    );
    table.process(
        data_event(ID, Direction::Ingress, b"", 50_000),
        &mut stats,
        &mut out,
    );
    let hints = table.take_hints();
    assert_eq!(
        hints,
        vec![BodyHint {
            id: ID,
            direction: Direction::Ingress,
            epoch: 7,
            until: head.len() as u64 + 100_000,
        }]
    );
    // A connection without an epoch (a replay) is never hinted.
    let other = ConnId { tgid: 1, fd: 1 };
    table.process(open_event(other, 0), &mut stats, &mut out);
    table.process(
        data_event(other, Direction::Ingress, head, 0),
        &mut stats,
        &mut out,
    );
    assert!(table.take_hints().is_empty());
}

/// HTTP/2: frames and HPACK blocks built by hand (literal encodings; RFC 7541 section 6).
mod http2 {
    use super::*;
    use crate::http::AuthScheme;
    use crate::http::h2::PREFACE;

    use crate::http::h2::frame::encode_frame as frame;

    /// A literal field: `indexing` adds it to the table (0x40), else without indexing (0x00).
    fn literal(name: &str, value: &str, indexing: bool) -> Vec<u8> {
        let mut b = vec![if indexing { 0x40 } else { 0x00 }, name.len() as u8];
        b.extend(name.as_bytes());
        b.push(value.len() as u8);
        b.extend(value.as_bytes());
        b
    }

    const HEADERS: u8 = 1;
    const DATA: u8 = 0;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;

    fn settings() -> Vec<u8> {
        frame(4, 0, 0, &[0, 3, 0, 0, 0, 100])
    }

    fn client_requests() -> Vec<u8> {
        let mut b = PREFACE.to_vec();
        b.extend(settings());
        // Stream 1: GET /users/42?token=s3cr3t with a bearer token (indexed for later use).
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
        block.extend(literal(":path", "/users/42?token=s3cr3t", true));
        block.extend(literal(":authority", "api.local", true));
        // authorization (static 23) with incremental indexing, Huffman-coded value.
        let mut coded = Vec::new();
        httlib_huffman::encode(b"Bearer tok-secret-1", &mut coded).unwrap();
        block.extend([0x40 | 23, 0x80 | coded.len() as u8]);
        block.extend(coded);
        b.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &block));
        // Stream 3: the same request by index only (62 = authorization, 63 = :authority,
        // 64 = :path): the dynamic table must give the path and the credential.
        b.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &[0x82, 0x86, 0x80 | 64, 0x80 | 63, 0x80 | 62],
        ));
        b
    }

    fn server_responses() -> Vec<u8> {
        let mut b = settings();
        b.extend(frame(HEADERS, END_HEADERS, 1, &[0x88])); // :status 200
        b.extend(frame(DATA, 0, 1, b"hello "));
        b.extend(frame(DATA, END_STREAM, 1, b"world"));
        b.extend(frame(HEADERS, END_HEADERS, 3, &[0x8d])); // :status 404
        b.extend(frame(DATA, END_STREAM, 3, b"no"));
        b
    }

    #[test]
    fn h2c_prior_knowledge_streams_are_exchanges() {
        let req = client_requests();
        let resp = server_responses();
        let (ex, stats) = run_with(Role::Server, &[(IN, &req, 0), (OUT, &resp, 0)], true);
        assert_eq!(ex.len(), 2, "{ex:?}");
        assert_eq!(ex[0].http_version, "2");
        assert_eq!(
            (ex[0].stream_id, ex[0].path.as_str(), ex[0].status),
            (Some(1), "/users/42", Some(200))
        );
        assert_eq!(ex[0].query_keys, vec!["token".to_string()]);
        assert_eq!(ex[0].host.as_deref(), Some("api.local"));
        assert_eq!(ex[0].auth_scheme, AuthScheme::Bearer);
        assert_eq!(ex[0].resp_body_bytes, 11);
        assert!(ex[0].complete);
        assert_eq!(
            (ex[1].stream_id, ex[1].path.as_str(), ex[1].status),
            (Some(3), "/users/42", Some(404))
        );
        assert_eq!(ex[1].auth_scheme, AuthScheme::Bearer);
        assert_eq!(ex[1].fingerprint, ex[0].fingerprint);
        assert_eq!(stats.h2.connections, 1);
        assert_eq!(stats.h2.unknown_fields, 0);
        // No secret in the output.
        let json: String = ex.iter().map(Exchange::to_json).collect();
        assert!(!json.contains("s3cr3t") && !json.contains("tok-secret"), "{json}");
        // Split at every byte past the preface's first 4 (what recognises it; writers send it
        // whole): the same exchanges.
        for cut in 4..req.len() {
            let (ex2, _) = run_with(
                Role::Server,
                &[(IN, &req[..cut], 0), (IN, &req[cut..], 0), (OUT, &resp, 0)],
                true,
            );
            assert_eq!(summary(&ex2), summary(&ex), "cut {cut}");
        }
    }

    #[test]
    fn an_h2c_upgrade_makes_the_request_stream_1_and_the_rest_http2() {
        let upgrade = b"GET /users/7?token=s3cr3t HTTP/1.1\r\nHost: api.local\r\n\
            Authorization: Bearer tok-secret-1\r\nConnection: Upgrade, HTTP2-Settings\r\n\
            Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
        // The 101 and the first frames in one write, as a server may send them: its SETTINGS
        // and stream 1's answer; stream 3's comes after the client asked.
        let mut resp =
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
        let frames = server_responses();
        let stream3 = frames.len() - 2 * 9 - 2 - 1;
        resp.extend(&frames[..stream3]);
        let resp3 = &frames[stream3..];
        // After the 101, the client's preface; its stream 3 as in client_requests, by literals.
        let mut after = PREFACE.to_vec();
        after.extend(settings());
        let mut block = vec![0x82, 0x86];
        block.extend(literal(":path", "/orders/9", false));
        after.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &block));
        let run_split = |cut: usize| {
            run_with(
                Role::Server,
                &[
                    (IN, upgrade, 0),
                    (OUT, &resp[..cut], 0),
                    (IN, &after, 0),
                    (OUT, &resp[cut..], 0),
                    (OUT, resp3, 0),
                ],
                true,
            )
        };
        let (ex, stats) = run_split(resp.len());
        assert_eq!(ex.len(), 2, "{ex:?}");
        assert_eq!(
            (
                ex[0].stream_id,
                ex[0].path.as_str(),
                ex[0].status,
                ex[0].http_version
            ),
            (Some(1), "/users/7", Some(200), "2")
        );
        assert_eq!(ex[0].auth_scheme, AuthScheme::Bearer);
        assert_eq!(ex[0].host.as_deref(), Some("api.local"));
        assert_eq!(ex[0].resp_body_bytes, 11);
        assert!(ex[0].complete, "{:?}", ex[0]);
        assert_eq!(
            (ex[1].stream_id, ex[1].path.as_str(), ex[1].status),
            (Some(3), "/orders/9", Some(404))
        );
        assert_eq!(
            (stats.h2.connections, stats.h2.upgrades, stats.tunnels),
            (1, 1, 0)
        );
        let json: String = ex.iter().map(Exchange::to_json).collect();
        assert!(!json.contains("s3cr3t") && !json.contains("tok-secret"), "{json}");
        // The 101 alone in its write, and the frames split anywhere after it: the same.
        let head_len = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        for cut in head_len..resp.len() {
            let (e2, _) = run_split(cut);
            assert_eq!(summary(&e2), summary(&ex), "cut {cut}");
        }
        // A 101 to another protocol stays a tunnel, with its exchange.
        let ws = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let (ex, stats) = run_with(Role::Server, &[(IN, ws, 0), (OUT, &resp, 0)], true);
        assert_eq!(
            (ex.len(), ex[0].status, stats.tunnels, stats.h2.upgrades),
            (1, Some(101), 1, 0)
        );
    }

    #[test]
    fn server_settings_first_is_recognised() {
        // nginx writes its SETTINGS before reading the client's preface.
        let req = client_requests();
        let resp = server_responses();
        let (ex, _) = run_with(
            Role::Server,
            &[(OUT, &resp[..15], 0), (IN, &req, 0), (OUT, &resp[15..], 0)],
            true,
        );
        assert_eq!(ex.len(), 2, "{ex:?}");
    }

    #[test]
    fn mid_connection_never_misattributes_a_path() {
        // Joined after stream 1: stream 3 refers to table entries we never saw; stream 5 is
        // all literals.
        let mut req = frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &[0x82, 0x86, 0x80 | 64, 0x80 | 63],
        );
        let mut block = vec![0x82, 0x86];
        block.extend(literal(":path", "/fresh", false));
        req.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &block));
        let mut resp = frame(HEADERS, END_HEADERS | END_STREAM, 3, &[0x88]);
        resp.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &[0x88]));
        let mut table = ConnTable::new(StreamConfig::default());
        let mut stats = PipelineStats::default();
        let mut out = Vec::new();
        for (dir, bytes) in [(IN, &req), (OUT, &resp)] {
            table.process(
                CaptureEvent::Data(DataChunk {
                    ts_ns: 10,
                    id: ID,
                    direction: dir,
                    total_len: bytes.len() as u64,
                    bytes: bytes::BytesMut::from(&bytes[..]),
                    tls: false,
                }),
                &mut stats,
                &mut out,
            );
        }
        table.flush(100, &mut stats, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].path.as_str(), out[0].stream_id, out[0].role),
            ("/fresh", Some(5), Role::Server)
        );
        assert_eq!(stats.h2.unknown_fields, 2);
        assert_eq!(stats.h2.streams_unattributed, 1);
    }

    #[test]
    fn grpc_call_with_trailers_and_messages() {
        let mut req = PREFACE.to_vec();
        let mut block = vec![0x83, 0x86]; // POST, http
        block.extend(literal(":path", "/helloworld.Greeter/SayHello", false));
        block.extend(literal("content-type", "application/grpc", false));
        req.extend(frame(HEADERS, END_HEADERS, 1, &block));
        req.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 3, 1, 2, 3]));
        let mut resp = frame(HEADERS, END_HEADERS, 1, &[0x88]);
        resp.extend(frame(DATA, 0, 1, &[0, 0, 0, 0, 1, 9, 0, 0, 0, 0, 0]));
        let mut trailers = literal("grpc-status", "5", false);
        trailers.extend(literal("grpc-message", "no such greeter", false));
        resp.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &trailers));
        let (ex, _) = run_with(Role::Server, &[(IN, &req, 0), (OUT, &resp, 0)], true);
        assert_eq!(ex.len(), 1);
        let g = ex[0].grpc.as_ref().expect("a gRPC call");
        assert_eq!(
            (g.service.as_str(), g.method.as_str(), g.status),
            ("helloworld.Greeter", "SayHello", Some(5))
        );
        assert_eq!(g.status_name(), "NOT_FOUND");
        assert_eq!((g.request_messages, g.response_messages), (Some(1), Some(2)));
        let j = ex[0].to_json();
        assert!(
            j.contains(r#""grpc_service":"helloworld.Greeter""#) && j.contains(r#""grpc_status":5"#),
            "{j}"
        );
    }

    #[test]
    fn hostile_peers_are_bounded_and_counted() {
        // Garbage after the preface: the framing is lost, counted, nothing reported.
        let mut junk = PREFACE.to_vec();
        junk.extend([0xffu8; 64]);
        let (ex, stats) = run_with(Role::Server, &[(IN, &junk, 0)], true);
        assert!(ex.is_empty());
        assert_eq!(stats.h2.framing_lost, 1, "{:?}", stats.h2);
        // A huge header block (HEADERS + 100 CONTINUATIONs of 16 KiB) and a table-size bomb:
        // dropped and counted; the stream after them is still read.
        let mut b = PREFACE.to_vec();
        b.extend(frame(HEADERS, 0, 1, &[0x3f, 0xff, 0xff, 0xff, 0x7f]));
        for _ in 0..100 {
            b.extend(frame(9, 0, 1, &[0x82; 16384]));
        }
        b.extend(frame(9, END_HEADERS, 1, &[0x82]));
        let mut block = vec![0x82, 0x86];
        block.extend(literal(":path", "/after", false));
        b.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &block));
        let resp = frame(HEADERS, END_HEADERS | END_STREAM, 3, &[0x88]);
        let (ex, stats) = run_with(Role::Server, &[(IN, &b, 0), (OUT, &resp, 0)], true);
        assert_eq!(stats.h2.header_blocks_too_large, 1, "{:?}", stats.h2);
        assert_eq!(ex.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(), ["/after"]);
        // More streams than the bound: refused and counted.
        let mut many = PREFACE.to_vec();
        for i in 0..300u32 {
            let mut block = vec![0x82, 0x86];
            block.extend(literal(":path", "/s", false));
            many.extend(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &block));
        }
        let (ex, stats) = run_with(Role::Server, &[(IN, &many, 0)], true);
        assert_eq!(stats.h2.streams_refused, 300 - h2::MAX_STREAMS as u64);
        assert_eq!(ex.len(), h2::MAX_STREAMS);
    }

    #[test]
    fn reset_and_close_end_streams() {
        let mut req = PREFACE.to_vec();
        let mut block = vec![0x82, 0x86];
        block.extend(literal(":path", "/slow", false));
        req.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &block));
        req.extend(frame(3, 0, 1, &[0, 0, 0, 8])); // RST_STREAM CANCEL
        let mut block = vec![0x82, 0x86];
        block.extend(literal(":path", "/open", false));
        req.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &block));
        let (ex, stats) = run_with(Role::Server, &[(IN, &req, 0)], true);
        assert_eq!(summary(&ex).len(), 2);
        assert_eq!(
            (ex[0].path.as_str(), ex[0].reset_code, ex[0].complete),
            ("/slow", Some(8), false)
        );
        assert_eq!((ex[1].path.as_str(), ex[1].status), ("/open", None));
        assert_eq!(stats.h2.streams_reset, 1);
        assert_eq!(stats.requests_unanswered, 1);
    }
}

#[test]
fn process_facts_from_the_capture_name_mid_stream_connections_without_proc() {
    // The test's own pid: a /proc read would find this test binary's name.
    let own = ConnId {
        tgid: std::process::id(),
        fd: 9,
    };
    let request = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let exchange = |facts: Option<CaptureEvent>| {
        let mut table = ConnTable::new(StreamConfig::default());
        let (mut stats, mut out) = (PipelineStats::default(), Vec::new());
        if let Some(f) = facts {
            table.process(f, &mut stats, &mut out);
        }
        // No open event: a connection joined mid-way.
        table.process(
            data_event(own, Direction::Ingress, request, 0),
            &mut stats,
            &mut out,
        );
        table.process(
            data_event(own, Direction::Egress, response, 0),
            &mut stats,
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:?}");
        out.remove(0)
    };
    let described = exchange(Some(CaptureEvent::Process(crate::capture::event::ProcessFacts {
        ts_ns: 1,
        tgid: own.tgid,
        comm: "shop-api".into(),
        cgroup: "/system.slice/shop.service".into(),
        tls_library: String::new(),
    })));
    assert_eq!(&*described.comm, "shop-api");
    assert_eq!(&*described.cgroup, "/system.slice/shop.service");
    // Without facts (an older recording): unnamed, the same on every machine.
    let bare = exchange(None);
    assert_eq!((&*bare.comm, &*bare.cgroup), ("", ""));
}

#[test]
fn an_opened_connection_takes_its_process_cgroup_and_an_exit_forgets_it() {
    let mut table = ConnTable::new(StreamConfig::default());
    let (mut stats, mut out) = (PipelineStats::default(), Vec::new());
    let facts = |tgid| {
        CaptureEvent::Process(crate::capture::event::ProcessFacts {
            ts_ns: 0,
            tgid,
            comm: "cli".into(),
            cgroup: "/user.slice/a".into(),
            tls_library: String::new(),
        })
    };
    table.process(facts(ID.tgid), &mut stats, &mut out);
    table.process(open_event(ID, 0), &mut stats, &mut out);
    table.process(
        data_event(ID, Direction::Egress, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 0),
        &mut stats,
        &mut out,
    );
    table.process(exit_event(50, ID.tgid), &mut stats, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(&*out[0].cgroup, "/user.slice/a");
    // The pid comes back as another process: the old facts do not stick to it.
    let again = ConnId { tgid: ID.tgid, fd: 4 };
    table.process(
        data_event(again, Direction::Egress, b"GET /y HTTP/1.1\r\nHost: a\r\n\r\n", 0),
        &mut stats,
        &mut out,
    );
    table.process(exit_event(90, ID.tgid), &mut stats, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!((&*out[1].comm, &*out[1].cgroup), ("", ""));
}

/// A TLS connection whose plaintext no probe saw is a blind spot of its process, said with the
/// libraries the capture found loaded; facts sent again without them keep them; a process exit
/// that ends the connection still knows them; a process never described is `unknown`.
#[test]
fn a_blind_spot_is_counted_by_process_and_tls_library() {
    let mut table = ConnTable::new(StreamConfig::default());
    let (mut stats, mut out) = (PipelineStats::default(), Vec::new());
    let facts = |tgid, tls_library: &str| {
        CaptureEvent::Process(crate::capture::event::ProcessFacts {
            ts_ns: 0,
            tgid,
            comm: "cli".into(),
            cgroup: String::new(),
            tls_library: tls_library.into(),
        })
    };
    let tls = |id| CaptureEvent::Tls { ts_ns: 2, id };
    let close_event = |id| CaptureEvent::Close { ts_ns: 3, id };
    table.process(facts(ID.tgid, ""), &mut stats, &mut out);
    table.process(open_event(ID, 0), &mut stats, &mut out);
    table.process(facts(ID.tgid, "java"), &mut stats, &mut out);
    table.process(tls(ID), &mut stats, &mut out);
    table.process(close_event(ID), &mut stats, &mut out);
    let second = ConnId { tgid: ID.tgid, fd: 6 };
    table.process(facts(ID.tgid, ""), &mut stats, &mut out);
    table.process(open_event(second, 0), &mut stats, &mut out);
    table.process(tls(second), &mut stats, &mut out);
    table.process(exit_event(10, ID.tgid), &mut stats, &mut out);
    let stranger = ConnId { tgid: 300, fd: 5 };
    table.process(open_event(stranger, 0), &mut stats, &mut out);
    table.process(tls(stranger), &mut stats, &mut out);
    table.process(close_event(stranger), &mut stats, &mut out);
    let counts: Vec<_> = stats.tls_blind_spots["cli"]
        .iter()
        .map(|(l, n)| (l.as_str(), *n))
        .collect();
    assert_eq!(
        counts,
        [("java", 2), ("unknown", 1)],
        "{:?}",
        stats.tls_blind_spots
    );
    assert_eq!(stats.tls_blind_spots_of("cli"), 3);
    // Plaintext seen through a TLS probe: no blind spot.
    let seen = ConnId { tgid: 400, fd: 5 };
    table.process(open_event(seen, 0), &mut stats, &mut out);
    table.process(tls(seen), &mut stats, &mut out);
    let mut chunk = data_event(seen, Direction::Egress, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0);
    if let CaptureEvent::Data(d) = &mut chunk {
        d.tls = true;
    }
    table.process(chunk, &mut stats, &mut out);
    table.process(close_event(seen), &mut stats, &mut out);
    assert_eq!(stats.tls_blind_spots_of("cli"), 3);
}

/// Inputs the reassembly fuzz target crashed on (fuzz/regressions/reassembly).
#[test]
fn fuzz_regressions_of_the_reassembly_target() {
    fuzzing::reassembly(include_bytes!(
        "../../../fuzz/regressions/reassembly/crash-ad0eeae07fd7e36f3616a35ec9d8c23429566d55"
    ));
}

/// Inputs the http2 fuzz target stopped on (fuzz/regressions/http2): HTTP/1 pipelining in one
/// chunk gave more exchanges than chunks, which the target's bound wrongly forbade.
#[test]
fn fuzz_regressions_of_the_http2_target() {
    fuzzing::http2(include_bytes!(
        "../../../fuzz/regressions/http2/crash-7c36c9402027dbf1936776e03402bd20a0424ba0"
    ));
}
