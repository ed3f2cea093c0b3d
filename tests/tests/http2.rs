//! HTTP/2 and gRPC tier: real servers and clients on loopback (nginx with http2 over TLS and
//! h2c, curl, h2load, python's grpcio and h2), the real probes attached. Needs root; one at a
//! time (`--test-threads=1`).
use std::process::Command;
use std::time::Duration;

use apiwatch_tests::*;
use monitor::exchange::Exchange;

const SECRET: &str = "h2-bearer-5ecret-value";
const N: usize = 20;

/// The `N` URLs the clients fetch: every fourth one is missing.
fn urls(base: &str) -> Vec<String> {
    (0..N)
        .map(|i| {
            if i % 4 == 3 {
                format!("{base}/missing-{i}")
            } else {
                format!("{base}/data.json?i={i}")
            }
        })
        .collect()
}

/// curl fetching the `N` URLs of `base` in one invocation: one connection, HTTP/2 streams.
fn curl_h2(base: &str, extra: &[&str]) {
    let auth = format!("Authorization: Bearer {SECRET}");
    let urls = urls(base);
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["-H", &auth]);
    for u in &urls {
        args.extend(["-o", "/dev/null", u.as_str()]);
    }
    curl(&args);
}

const BODY: &[u8] = b"{\"over\":\"http/2\",\"padding\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}";

fn check_curl_side(side: &[&Exchange], tls: bool) {
    assert_eq!(side.len(), N, "{side:#?}");
    let mut streams: Vec<u32> = side.iter().map(|e| e.stream_id.expect("a stream id")).collect();
    streams.sort_unstable();
    streams.dedup();
    assert_eq!(streams.len(), N, "one stream per request: {streams:?}");
    for e in side {
        assert_eq!(
            (e.http_version, e.tls, e.method.as_str()),
            ("2", tls, "GET"),
            "{e:?}"
        );
        assert!(e.complete, "{e:?}");
        if e.path.starts_with("/missing-") {
            assert_eq!(e.status, Some(404), "{e:?}");
        } else {
            assert_eq!((e.path.as_str(), e.status), ("/data.json", Some(200)), "{e:?}");
            assert_eq!(e.query_keys, vec!["i".to_string()]);
            assert_eq!(e.resp_body_bytes, BODY.len() as u64, "{e:?}");
        }
        assert_eq!(e.auth_scheme, monitor::http::AuthScheme::Bearer, "{e:?}");
    }
    // The same credential, whether sent literally or by HPACK index: one fingerprint.
    let fps: std::collections::BTreeSet<_> = side.iter().map(|e| e.fingerprint.clone()).collect();
    assert_eq!(fps.len(), 1, "{fps:?}");
    // Every path is one curl asked for, in the order of its streams.
    let mut by_stream: Vec<&&Exchange> = side.iter().collect();
    by_stream.sort_by_key(|e| e.stream_id);
    for (i, e) in by_stream.iter().enumerate() {
        let want = if i % 4 == 3 {
            format!("/missing-{i}")
        } else {
            "/data.json".into()
        };
        assert_eq!(e.path, want, "stream {:?}", e.stream_id);
    }
}

/// One line per exchange with `port` at either end: who saw it, what and how it ended.
fn on_port(ex: &[Exchange], port: u16) -> String {
    ex.iter()
        .filter(|e| {
            [e.local, e.peer]
                .iter()
                .any(|a| a.map(|a| a.port()) == Some(port))
        })
        .map(|e| {
            format!(
                "{:?} {} local={:?} peer={:?} HTTP/{} stream={:?} {} {} -> {:?} complete={}",
                e.role,
                e.comm,
                e.local,
                e.peer,
                e.http_version,
                e.stream_id,
                e.method,
                e.path,
                e.status,
                e.complete
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_no_secret(ex: &[Exchange]) {
    let json: String = ex.iter().map(Exchange::to_json).collect();
    assert!(!json.contains(SECRET), "the bearer token leaked");
}

#[test]
fn nginx_http2_over_tls_and_curl_both_sides() {
    let nginx = Nginx::start_h2(&[("data.json", BODY)], true);
    let agent = Agent::start();
    curl_h2(&format!("https://127.0.0.1:{}", nginx.port), &["-k", "--http2"]);
    std::thread::sleep(Duration::from_millis(200));
    let (ex, summary) = agent.stop();
    assert_eq!(nginx.access_log_lines(), N);
    check_curl_side(&server_side(&ex, nginx.port), true);
    check_curl_side(&client_side(&ex, nginx.port), true);
    assert!(server_side(&ex, nginx.port).iter().all(|e| &*e.comm == "nginx"));
    assert!(client_side(&ex, nginx.port).iter().all(|e| &*e.comm == "curl"));
    assert_no_secret(&ex);
    assert_eq!(summary.pipeline.h2.unknown_fields, 0, "{:?}", summary.pipeline.h2);
    assert_eq!(summary.pipeline.h2.framing_lost, 0, "{:?}", summary.pipeline.h2);
}

/// The exchanges of `side` whose user agent starts with `ua`.
fn by<'a>(side: &[&'a Exchange], ua: &str) -> Vec<&'a Exchange> {
    side.iter()
        .copied()
        .filter(|e| e.user_agent.as_deref().is_some_and(|u| u.starts_with(ua)))
        .collect()
}

/// nghttp fetching the `N` URLs of `base` on one connection.
fn nghttp(base: &str) {
    let auth = format!("authorization: Bearer {SECRET}");
    let out = Command::new("nghttp")
        .args(["-n", "-t", "10", "-H", &auth])
        .args(urls(base))
        .output()
        .expect("nghttp (nghttp2-client; cargo xtask setup installs it)");
    // nghttp exits non-zero when a response is not 2xx: the 404s are wanted.
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn h2c_prior_knowledge_curl_nghttp_and_h2load() {
    let nginx = Nginx::start_h2(&[("data.json", BODY)], false);
    let agent = Agent::start();
    let base = format!("http://127.0.0.1:{}", nginx.port);
    // curl 7.88 cannot reuse an h2c prior-knowledge connection ("Error in the HTTP2 framing
    // layer", without the agent too): one invocation per request; nghttp reuses one.
    for i in 0..4 {
        let url = format!("{base}/data.json?i={i}");
        assert_eq!(curl(&["--http2-prior-knowledge", &url]).as_bytes(), BODY);
    }
    nghttp(&base);
    // h2load: 2 connections, 200 requests, 10 streams in flight on each.
    let out = Command::new("h2load")
        .args(["-n", "200", "-c", "2", "-m", "10", &format!("{base}/data.json")])
        .output()
        .expect("h2load (nghttp2-client; cargo xtask setup installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    std::thread::sleep(Duration::from_millis(200));
    let (ex, summary) = agent.stop();
    assert_eq!(nginx.access_log_lines(), 4 + N + 200);
    let srv = server_side(&ex, nginx.port);
    let cli = client_side(&ex, nginx.port);
    for side in [&srv, &cli] {
        let curl_side = by(side, "curl");
        assert_eq!(curl_side.len(), 4, "{curl_side:#?}");
        assert!(curl_side.iter().all(|e| e.http_version == "2"
            && e.path == "/data.json"
            && e.status == Some(200)
            && e.resp_body_bytes == BODY.len() as u64
            && e.complete));
        check_curl_side(&by(side, "nghttp2"), false);
        let load = by(side, "h2load");
        assert_eq!(load.len(), 200, "every h2load request");
        assert!(
            load.iter().all(|e| e.path == "/data.json"
                && e.status == Some(200)
                && e.complete
                && e.http_version == "2"),
            "{load:#?}"
        );
    }
    assert!(
        cli.iter()
            .all(|e| ["curl", "nghttp", "h2load"].contains(&&*e.comm)),
        "{cli:#?}"
    );
    assert_no_secret(&ex);
    assert_eq!(summary.pipeline.h2.framing_lost, 0, "{:?}", summary.pipeline.h2);
    assert_eq!(summary.pipeline.h2.unknown_fields, 0, "{:?}", summary.pipeline.h2);
}

/// `curl --http2 http://...` asks for HTTP/2 with `Upgrade: h2c` on its first request (RFC 7540
/// section 3.2), then sends the others as streams of the upgraded connection. The server:
/// python's h2 (Debian's python3-h2) behind a few lines that accept the upgrade (nginx and
/// nghttpd do not offer it).
#[test]
fn an_h2c_upgrade_from_http1_is_followed_into_its_streams() {
    let port = free_port();
    let body = std::str::from_utf8(BODY).unwrap();
    let _server = spawn_server(
        Command::new("/usr/bin/python3")
            .arg(workspace_root().join("tests/fixtures/h2c_upgrade_server.py"))
            .args([&port.to_string(), body]),
        port,
        "python3-h2 must be installed (cargo xtask setup installs it)",
    );
    let agent = Agent::start();
    curl_h2(&format!("http://127.0.0.1:{port}"), &["--http2"]);
    std::thread::sleep(Duration::from_millis(200));
    let (ex, summary) = agent.stop();
    // CI once saw no server side at all: when a side is short, say everything the agent saw.
    let (servers, clients) = (server_side(&ex, port).len(), client_side(&ex, port).len());
    assert!(
        servers == N && clients == N,
        "server side {servers}, client side {clients} of {N}; every exchange on the port:\n{}\n{}",
        on_port(&ex, port),
        summary.line()
    );
    for side in [server_side(&ex, port), client_side(&ex, port)] {
        // Stream 1 is the request that carried the upgrade: its answer came as HTTP/2.
        check_curl_side(&side, false);
        assert!(side.iter().any(|e| e.stream_id == Some(1)), "{side:#?}");
    }
    assert!(client_side(&ex, port).iter().all(|e| &*e.comm == "curl"));
    assert_no_secret(&ex);
    let h2 = &summary.pipeline.h2;
    assert_eq!(
        (h2.upgrades, summary.pipeline.tunnels),
        (2, 0),
        "both sides: {h2:?}"
    );
    assert_eq!((h2.framing_lost, h2.unknown_fields), (0, 0), "{h2:?}");
}

/// The gRPC demo (tests/fixtures/grpc_demo.py) run by Debian's python3.
fn grpc_demo(args: &[&str]) -> Command {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(workspace_root().join("tests/fixtures/grpc_demo.py"))
        .args(args);
    cmd
}

#[test]
fn grpc_unary_streaming_both_ways_errors_and_deadlines_per_call() {
    let port = free_port();
    let _server = spawn_server(
        &mut grpc_demo(&["server", &port.to_string()]),
        port,
        "python3-grpcio must be installed (cargo xtask setup installs it)",
    );
    let agent = Agent::start();
    let out = grpc_demo(&["client", &port.to_string(), SECRET])
        .output()
        .expect("python3");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("Missing NOT_FOUND") && printed.contains("Slow DEADLINE_EXCEEDED"),
        "{printed}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let (ex, summary) = agent.stop();
    for (side, name) in [
        (server_side(&ex, port), "server"),
        (client_side(&ex, port), "client"),
    ] {
        let calls: Vec<(&str, Option<u32>)> = side
            .iter()
            .map(|e| {
                let g = e
                    .grpc
                    .as_ref()
                    .unwrap_or_else(|| panic!("not a gRPC call: {e:?}"));
                assert_eq!(g.service, "demo.v1.Greeter");
                assert_eq!((e.http_version, e.method.as_str()), ("2", "POST"));
                assert_eq!(e.auth_scheme, monitor::http::AuthScheme::Bearer);
                (g.method.as_str(), g.status)
            })
            .collect();
        let count = |m: &str| calls.iter().filter(|c| c.0 == m).count();
        assert_eq!(
            (
                count("SayHello"),
                count("Missing"),
                count("ListThings"),
                count("Collect"),
                count("Chat"),
                count("Slow")
            ),
            (5, 1, 1, 1, 1, 1),
            "{name}: {calls:?}"
        );
        for e in &side {
            let g = e.grpc.as_ref().unwrap();
            match g.method.as_str() {
                "SayHello" => {
                    assert_eq!(
                        (g.status, g.request_messages, g.response_messages),
                        (Some(0), Some(1), Some(1)),
                        "{e:?}"
                    );
                    assert!(e.complete);
                }
                "Missing" => {
                    assert_eq!(g.status_name(), "NOT_FOUND", "{e:?}");
                    assert_eq!(g.message.as_deref(), Some("no such greeter"));
                }
                // Server, client and bidirectional streams: every message counted each way.
                "ListThings" => assert_eq!((g.status, g.response_messages), (Some(0), Some(3)), "{e:?}"),
                "Collect" => assert_eq!(
                    (g.status, g.request_messages, g.response_messages),
                    (Some(0), Some(4), Some(1)),
                    "{e:?}"
                ),
                "Chat" => assert_eq!(
                    (g.status, g.request_messages, g.response_messages),
                    (Some(0), Some(3), Some(3)),
                    "{e:?}"
                ),
                // The client gives up after 0.2 s: it resets the stream (CANCEL), or the
                // server's own deadline ends it with DEADLINE_EXCEEDED.
                "Slow" => assert!(e.reset_code == Some(8) || g.status == Some(4), "{e:?}"),
                _ => unreachable!(),
            }
        }
    }
    assert_no_secret(&ex);
    assert_eq!(summary.pipeline.h2.unknown_fields, 0, "{:?}", summary.pipeline.h2);
}

/// Waits until `log` (a file a child writes its stderr to) contains `marker`, at most 30 s.
fn wait_for_log(log: &std::path::Path, marker: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(log).unwrap_or_default().contains(marker) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {marker:?} in {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn recordings_of_http2_keep_no_secret_and_replay_to_the_same_exchanges() {
    let nginx = Nginx::start_h2(&[("data.json", BODY)], true);
    let dir = TempDir::new("h2rec");
    let rec = dir.path().join("h2.rec");
    let log = dir.path().join("record.log");
    let mut record = Command::new(apiwatch_bin())
        .args(["record", "--duration", "4", "--out", rec.to_str().unwrap()])
        .args(capture_mode_args())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for_log(&log, "recording to");
    let base = format!("https://127.0.0.1:{}", nginx.port);
    curl_h2(&base, &["-k", "--http2"]);
    assert!(
        record.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );

    let bytes = std::fs::read(&rec).unwrap();
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(SECRET.as_bytes()), "the raw token is in the recording");
    // HPACK Huffman-codes header values: the coded token must not be there either.
    let mut coded = Vec::new();
    httlib_huffman::encode(format!("Bearer {SECRET}").as_bytes(), &mut coded).unwrap();
    assert!(
        !contains(&coded[3..coded.len() - 1]),
        "the Huffman-coded token is in the recording"
    );

    let out = Command::new(apiwatch_bin())
        .args(["replay", rec.to_str().unwrap(), "--exchanges", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replayed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| {
            e["local"]
                .as_str()
                .is_some_and(|a| a.ends_with(&format!(":{}", nginx.port)))
        })
        .collect();
    assert_eq!(replayed.len(), N, "server-side exchanges replayed");
    for e in &replayed {
        assert_eq!(e["http_version"], "2");
        assert_eq!(e["auth_scheme"], "bearer", "{e}");
        let path = e["path"].as_str().unwrap();
        assert!(path == "/data.json" || path.starts_with("/missing-"), "{e}");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(SECRET));
}

#[test]
fn joined_mid_connection_no_wrong_path_and_what_was_missed_is_counted() {
    use std::io::{BufRead, BufReader, Write};
    let nginx = Nginx::start_h2(&[("data.json", BODY)], false);
    let mut client = Command::new("/usr/bin/python3")
        .arg(workspace_root().join("tests/fixtures/h2_mid_connection.py"))
        .arg(nginx.port.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3-h2 (cargo xtask setup installs it)");
    let mut out = BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    // The connection and its first three requests exist before the agent.
    let agent = Agent::start();
    writeln!(client.stdin.as_mut().unwrap()).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    assert!(client.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(200));
    let (ex, summary) = agent.stop();
    assert_eq!(nginx.access_log_lines(), 9);
    let h2 = &summary.pipeline.h2;
    for (side, name) in [
        (server_side(&ex, nginx.port), "server"),
        (client_side(&ex, nginx.port), "client"),
    ] {
        let paths: Vec<&str> = side.iter().map(|e| e.path.as_str()).collect();
        // The new paths are literals: seen, exactly. The repeated ones are HPACK table
        // references to entries made before the agent: not reported rather than guessed.
        assert_eq!(paths, ["/after-0", "/after-1", "/after-2"], "{name}: {side:#?}");
        assert!(
            side.iter()
                .all(|e| e.status == Some(404) && e.http_version == "2"),
            "{side:#?}"
        );
    }
    assert!(h2.unknown_fields > 0, "{h2:?}");
    assert!(
        h2.streams_unattributed >= 6,
        "the repeated requests, both sides, are counted: {h2:?}"
    );
}

#[test]
fn a_grpc_method_called_from_outside_its_zone_is_a_finding() {
    let port = free_port();
    let _server = spawn_server(
        &mut grpc_demo(&["server", &port.to_string()]),
        port,
        "python3-grpcio must be installed (cargo xtask setup installs it)",
    );
    // Only SayHello is fenced (to 10.0.0.0/8): the loopback caller is outside it. The other
    // methods are declared open, so they raise nothing.
    let policy = format!(
        "zones:\n  corp: [\"10.0.0.0/8\"]\n  local: [\"127.0.0.0/8\"]\nservices:\n  - name: greeter\n    match:\n      port: {port}\n    undeclared: allow\n    defaults:\n      allowed_sources: [corp, local]\n    endpoints:\n      - route: /demo.v1.Greeter/SayHello\n        methods: [POST]\n        allowed_sources: [corp]\n"
    );
    let policy = monitor::boundary::Policy::parse("grpc-policy", &policy).unwrap();
    let agent = Agent::start_with(monitor::agent::AgentOptions {
        policy: Some(std::sync::Arc::new(policy)),
        ..Default::default()
    });
    let out = grpc_demo(&["client", &port.to_string(), SECRET])
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(300));
    let (_, findings, _) = agent.stop_all();
    let ours: Vec<_> = findings
        .iter()
        .filter(|f| f.rule.starts_with("greeter "))
        .collect();
    assert!(!ours.is_empty(), "no finding for the gRPC method: {findings:#?}");
    assert!(
        ours.iter()
            .all(|f| f.route == "/demo.v1.Greeter/SayHello" && f.kind == "source_outside_boundary"),
        "{ours:#?}"
    );
    let json = serde_json::to_string(&findings).unwrap();
    assert!(!json.contains(SECRET));
}
