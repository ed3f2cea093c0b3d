//! Kernel tier: the real eBPF programs attached, real servers and clients on loopback.
//! Needs root; run one at a time (`--test-threads=1`): the programs see every socket on the host.
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use apiwatch_tests::*;
use monitor::agent::AgentOptions;
use monitor::capture::Role;
use monitor_common::Stat;

const N: usize = 25;

#[test]
fn python_server_and_curl_client_both_sides() {
    let server = PythonServer::start(&[("hello.txt", b"hello world\n")]);
    let agent = Agent::start();
    for i in 0..N {
        let url = format!("http://127.0.0.1:{}/hello.txt?i={i}&token=sekrit{i}", server.port);
        if i % 5 == 4 {
            curl(&["-o", "/dev/null", "-I", &url]); // HEAD
        } else if i % 5 == 3 {
            let missing = format!("http://127.0.0.1:{}/missing-{i}", server.port);
            curl(&["-o", "/dev/null", &missing]);
        } else {
            assert_eq!(curl(&[&url]), "hello world\n");
        }
    }
    let (ex, summary) = agent.stop();

    for side in [server_side(&ex, server.port), client_side(&ex, server.port)] {
        assert_eq!(
            side.len(),
            N,
            "expected exactly {N} exchanges per side: {side:#?}"
        );
        for (i, e) in side.iter().enumerate() {
            let (method, path, status) = match i % 5 {
                4 => ("HEAD", "/hello.txt".to_string(), 200),
                3 => ("GET", format!("/missing-{i}"), 404),
                _ => ("GET", "/hello.txt".to_string(), 200),
            };
            assert_eq!(
                (e.method.as_str(), e.path.as_str(), e.status),
                (method, path.as_str(), Some(status)),
                "{e:?}"
            );
            assert!(e.complete, "{e:?}");
            assert!(!e.tls);
        }
    }
    let srv = server_side(&ex, server.port);
    assert!(
        srv.iter()
            .all(|e| e.pid == server.proc.pid() && &*e.comm == "python3")
    );
    assert!(srv.iter().all(|e| e.peer.unwrap().ip().is_loopback()));
    let cli = client_side(&ex, server.port);
    assert!(cli.iter().all(|e| &*e.comm == "curl"));
    // The client's local port is the server's peer port: both sides of one connection.
    for (i, (s, c)) in srv.iter().zip(cli.iter()).enumerate() {
        assert_eq!(s.peer, c.local);
        let keys: &[&str] = if i % 5 == 3 { &[] } else { &["i", "token"] };
        assert_eq!(s.query_keys, keys);
    }
    let json: String = ex.iter().map(|e| e.to_json()).collect();
    assert!(!json.contains("sekrit"), "a query value leaked");
    let k = summary.kernel.unwrap();
    assert_eq!(k.get(Stat::RingFull), 0);
}

#[test]
fn nginx_keepalive_with_curl_and_wrk() {
    let body = vec![b'x'; 20_000];
    let nginx = Nginx::start(&[("small.json", b"{\"ok\":true}"), ("big.bin", &body)]);
    let agent = Agent::start();
    // curl reuses one connection for several URLs given together (keep-alive).
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let urls: Vec<String> = (0..10)
        .map(|i| {
            if i % 2 == 0 {
                format!("{base}/small.json")
            } else {
                format!("{base}/big.bin")
            }
        })
        .collect();
    let mut args: Vec<&str> = Vec::new();
    for u in &urls {
        args.extend(["-o", "/dev/null", u.as_str()]);
    }
    curl(&args);

    // wrk over one keep-alive connection, stopped by its script after exactly 500 responses.
    let dir = TempDir::new("wrk");
    let script = dir.path().join("stop.lua");
    std::fs::write(&script, "local n = 0\nfunction response(status, headers, body)\n  n = n + 1\n  if n >= 500 then wrk.thread:stop() end\nend\n").unwrap();
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c1",
            "-d4s",
            "-s",
            script.to_str().unwrap(),
            &format!("{base}/small.json"),
        ])
        .output()
        .expect("wrk");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(200));
    let (ex, summary) = agent.stop();

    let served = nginx.access_log_lines();
    assert_eq!(served, 510, "nginx itself logged this many requests");
    let srv = server_side(&ex, nginx.port);
    assert_eq!(srv.len(), served, "one server exchange per request nginx served");
    assert!(
        srv.iter()
            .all(|e| &*e.comm == "nginx" && e.status == Some(200) && e.method == "GET" && e.complete)
    );
    let big: Vec<_> = srv.iter().filter(|e| e.path == "/big.bin").collect();
    assert_eq!(big.len(), 5);
    // Body sent by sendfile, never copied, still counted.
    assert!(big.iter().all(|e| e.resp_bytes > 20_000), "{big:?}");

    let cli = client_side(&ex, nginx.port);
    let curl_side: Vec<_> = cli.iter().filter(|e| &*e.comm == "curl").collect();
    let wrk_side: Vec<_> = cli.iter().filter(|e| &*e.comm == "wrk").collect();
    assert_eq!(curl_side.len(), 10);
    assert_eq!(wrk_side.len(), 500);
    assert!(
        wrk_side
            .iter()
            .all(|e| e.status == Some(200) && e.path == "/small.json")
    );
    // One keep-alive connection each: every curl exchange has the same local port.
    assert!(curl_side.windows(2).all(|w| w[0].local == w[1].local));
    let k = summary.kernel.unwrap();
    assert_eq!(k.get(Stat::RingFull), 0);
    assert_eq!(summary.pipeline.parse_errors.total(), 0, "{:?}", summary.pipeline);
}

#[test]
fn keepalive_connection_from_before_start_on_nginx() {
    let nginx = Nginx::start(&[("a", b"A"), ("b", b"BB")]);
    let client_src = format!(
        "import http.client, sys\n\
         c = http.client.HTTPConnection('127.0.0.1', {port})\n\
         def get(p):\n    c.request('GET', p)\n    r = c.getresponse(); r.read(); print(p, r.status, flush=True)\n\
         get('/a')\n\
         sys.stdin.readline()\n\
         get('/b'); get('/a')\n",
        port = nginx.port
    );
    let mut client = Proc(
        Command::new(PYTHON)
            .args(["-c", &client_src])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(client.0.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "/a 200");
    let agent = Agent::start();
    client.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    for _ in 0..2 {
        stdout.read_line(&mut rest).unwrap();
    }
    assert_eq!(rest, "/b 200\n/a 200\n");
    let (ex, _) = agent.stop();
    // Both ends of the pre-existing connection: nginx (server) and python (client).
    let srv: Vec<&str> = server_side(&ex, nginx.port)
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    let cli: Vec<&str> = client_side(&ex, nginx.port)
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(srv, vec!["/b", "/a"]);
    assert_eq!(cli, vec!["/b", "/a"]);
    assert!(
        server_side(&ex, nginx.port)
            .iter()
            .all(|e| e.role == Role::Server && e.status == Some(200))
    );
}

#[test]
fn non_http_connection_produces_no_data_events() {
    // A line-echo server speaking a binary-ish protocol, started before the agent (pid known).
    let port = free_port();
    let src = format!(
        "import socket\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', {port})); s.listen(8)\n\
         while True:\n    c, _ = s.accept()\n    while True:\n        d = c.recv(4096)\n        if not d: break\n        c.sendall(d)\n    c.close()\n"
    );
    let server = Proc(Command::new(PYTHON).args(["-c", &src]).spawn().unwrap());
    wait_for_port(port);
    std::thread::sleep(Duration::from_millis(100));
    let agent = Agent::start_with(AgentOptions {
        pids: vec![server.pid()],
        ..AgentOptions::default()
    });
    let client = format!(
        "import socket\n\
         c = socket.create_connection(('127.0.0.1', {port}))\n\
         for i in range(20):\n    c.sendall(b'\\x00\\x01PING %d\\n' % i); c.recv(100)\n\
         c.close()\n"
    );
    let st = Command::new(PYTHON).args(["-c", &client]).status().unwrap();
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(100));
    let (ex, summary) = agent.stop();
    assert!(ex.is_empty());
    assert!(
        summary.pipeline.connections_opened >= 1,
        "the connection itself must be seen: {summary:?}"
    );
    assert_eq!(
        summary.pipeline.data_events, 0,
        "a non-HTTP connection must produce no data events"
    );
    assert!(summary.kernel.unwrap().get(Stat::ConnNotHttp) >= 1);
}

#[test]
fn only_the_named_processes_are_traced_and_the_filter_is_in_the_kernel() {
    let nginx = Nginx::start(&[("a.json", b"{}")]);
    let python = PythonServer::start(&[("b.json", b"{}")]);
    let mut opts = AgentOptions::default();
    opts.kernel.processes = vec!["nginx".into()];
    let agent = Agent::start_with(opts);
    for _ in 0..5 {
        curl(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{}/a.json", nginx.port),
        ]);
        curl(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{}/b.json", python.port),
        ]);
    }
    let (ex, summary) = agent.stop();
    // nginx's side of its 5 requests, nothing else: not python3's, not curl's.
    assert_eq!(server_side(&ex, nginx.port).len(), 5, "{ex:#?}");
    assert!(ex.iter().all(|e| &*e.comm == "nginx"), "{ex:#?}");
    assert!(server_side(&ex, python.port).is_empty());
    assert!(client_side(&ex, nginx.port).is_empty());
    // Filtered where connections begin: python3's and curl's events never reached the ring.
    // nginx's side is 5 events a request (accept, read, writev, sendfile, close) = 25; curl's
    // and python3's would add as many again each (measured by hand with the binary: 89 unfiltered, 20 with --process nginx).
    let k = summary.kernel.as_ref().unwrap();
    let submitted = k.get(Stat::EventsSubmitted);
    assert!(submitted <= 35, "{submitted} events submitted");
}

/// The mode asked for is the one that runs, and it is what it says: the socket layer loads no
/// syscall-tracepoint program (so processes doing no socket I/O pay nothing), the fallback does.
#[test]
fn the_capture_runs_on_the_layer_it_reports() {
    let agent = Agent::start();
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<String> = progs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect();
    let (_, summary) = agent.stop();
    assert_eq!(summary.capture_mode, Some(expected_capture_mode()));
    let has = |n: &str| names.iter().any(|x| x == n);
    if expected_capture_mode() == "socket" {
        assert!(
            has("sock_send") && has("sock_recv") && has("sock_lifecycle"),
            "{names:?}"
        );
        // The tests run one at a time: no other agent has these loaded.
        assert!(
            !has("exit_data") && !has("enter_read") && !has("enter_close"),
            "{names:?}"
        );
    } else {
        assert!(
            has("exit_data") && has("enter_read") && has("process_exit"),
            "{names:?}"
        );
        assert!(!has("sock_send") && !has("sock_recv"), "{names:?}");
    }
}

/// A client that exits without close() (as a Go program does): its connection still ends,
/// and the request it never saw answered is reported then, not when the agent stops.
#[test]
fn a_client_that_exits_without_close_ends_its_connection() {
    let port = free_port();
    // Reads a request, never answers, closes when the client's side is gone.
    let server_src = format!(
        "import socket\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', {port})); s.listen(8)\n\
         while True:\n    c, _ = s.accept()\n    while c.recv(4096): pass\n    c.close()\n"
    );
    let _server = Proc(Command::new(PYTHON).args(["-c", &server_src]).spawn().unwrap());
    wait_for_port(port);
    let agent = Agent::start();
    // os._exit: no close(), no destructor; the kernel closes the socket as the process ends.
    let client_src = format!(
        "import socket, os\n\
         c = socket.create_connection(('127.0.0.1', {port}))\n\
         c.sendall(b'GET /never-answered HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n\
         os._exit(0)\n"
    );
    let st = Command::new(PYTHON).args(["-c", &client_src]).status().unwrap();
    assert!(st.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let ex = agent.exchanges.snapshot();
        let cli: Vec<_> = client_side(&ex, port).into_iter().cloned().collect();
        if !cli.is_empty() || std::time::Instant::now() > deadline {
            break cli;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (_, summary) = agent.stop();
    assert_eq!(
        seen.len(),
        1,
        "the client's connection was not closed while the agent ran: {summary:?}"
    );
    assert_eq!(seen[0].path, "/never-answered");
    assert_eq!(seen[0].status, None);
    assert_eq!(&*seen[0].comm, "python3");
}

/// A process that had a connection is seen exiting, in both modes: its pid may name another
/// process next, which must get facts (its cgroup) of its own. On the socket layer, a process
/// that never owned a connection costs no record when it exits.
#[test]
fn a_process_that_had_a_connection_is_seen_exiting() {
    use monitor::capture::CaptureEvent;
    let nginx = Nginx::start(&[("hello.txt", b"hello\n")]);
    let dir = TempDir::new("exits");
    let rec = dir.path().join("exits.rec");
    let file = std::fs::File::create(&rec).unwrap();
    let writer = monitor::record::RecordWriter::new(Box::new(file) as Box<dyn Write + Send>).unwrap();
    let mut opts = AgentOptions::default();
    if let Some(mode) = capture_mode() {
        opts.kernel.mode = mode;
    }
    let agent = monitor::agent::LiveAgent::start(opts, monitor::agent::Consumer::Record(writer))
        .expect("the agent starts");
    let mut client = Command::new("curl")
        .args(["-s", "-o", "/dev/null"])
        .arg(format!("http://127.0.0.1:{}/hello.txt", nginx.port))
        .spawn()
        .unwrap();
    let client_pid = client.id();
    assert!(client.wait().unwrap().success());
    let mut idle = Command::new("true").spawn().unwrap();
    let idle_pid = idle.id();
    assert!(idle.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    let summary = agent.stop().expect("agent stop");
    assert_eq!(summary.capture_mode, Some(expected_capture_mode()));

    let mut reader =
        monitor::record::RecordReader::new(BufReader::new(std::fs::File::open(&rec).unwrap())).unwrap();
    let (mut client_data, mut exits) = (0, Vec::new());
    while let Some(ev) = reader.next_event().unwrap() {
        match ev {
            CaptureEvent::Data(d) if d.id.tgid == client_pid => client_data += 1,
            CaptureEvent::ProcessExit { tgid, .. } => exits.push(tgid),
            _ => {}
        }
    }
    assert!(
        client_data >= 2,
        "the client's request and response were not captured"
    );
    assert!(
        exits.contains(&client_pid),
        "curl ({client_pid}) was not seen exiting: {exits:?}"
    );
    if expected_capture_mode() == "socket" {
        assert!(
            !exits.contains(&idle_pid),
            "a process without a connection ({idle_pid}) cost a record: {exits:?}"
        );
    }
}

/// Heads are copied, bodies are not: once userspace has parsed a response head with a large
/// Content-Length, the kernel counts the body's calls without copying them (a body hint), and
/// the next response on the same connection is still read from its first byte.
#[test]
fn large_bodies_are_counted_not_copied_and_the_next_head_is_still_seen() {
    const BIG: usize = 16 << 20;
    let big: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    // sendfile off: nginx writes the file through writev, in 32 KiB buffers.
    let nginx = Nginx::start_with(
        &[("big.bin", &big), ("small.json", b"{\"after\":true}")],
        "location ~ \\.bin$ { sendfile off; }",
    );
    let agent = Agent::start();
    let base = format!("http://127.0.0.1:{}", nginx.port);
    // One keep-alive connection, paced so the body spans many calls (about 1.4 s; the hint
    // reaches the kernel within a drain interval or two).
    curl(&[
        "--limit-rate",
        "12M",
        "-o",
        "/dev/null",
        &format!("{base}/big.bin"),
        "-o",
        "/dev/null",
        &format!("{base}/small.json"),
    ]);
    std::thread::sleep(Duration::from_millis(100));
    let (ex, summary) = agent.stop();
    for side in [server_side(&ex, nginx.port), client_side(&ex, nginx.port)] {
        let paths: Vec<&str> = side.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/big.bin", "/small.json"], "{side:#?}");
        assert_eq!(side[0].resp_body_bytes, BIG as u64, "the body is counted exactly");
        assert!(side.iter().all(|e| e.status == Some(200)), "{side:#?}");
        assert_eq!(side[1].resp_body_bytes, 14);
    }
    let k = summary.kernel.as_ref().unwrap();
    assert!(k.get(Stat::BodyCallsSkipped) > 10, "{k:?}");
    // Both sides moved 16 MiB each; what was copied is a small part of it.
    assert!(
        summary.pipeline.bytes_seen < (BIG as u64) / 2,
        "{} bytes copied",
        summary.pipeline.bytes_seen
    );
    let e = &summary.pipeline.parse_errors;
    assert_eq!(
        e.malformed + e.framing_lost + e.bad_chunk + e.head_too_large,
        0,
        "{summary:?}"
    );
}

/// io_uring sockets: the socket tracepoints fire for them but no user buffer can be read, so
/// they are counted (apiwatch_io_uring_connections_total), not pretended to be captured. The
/// peer that uses plain syscalls is still seen.
#[test]
fn a_client_on_io_uring_is_counted_not_captured() {
    let dir = TempDir::new("iouring");
    let client = dir.path().join("io_uring_client");
    let src = workspace_root().join("tests/fixtures/io_uring_client.c");
    let built = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&client)
        .arg(&src)
        .arg("-luring")
        .status()
        .expect("gcc (cargo xtask setup installs gcc and liburing-dev)");
    assert!(built.success(), "the io_uring client did not build");
    let nginx = Nginx::start(&[]);
    let agent = Agent::start();
    let st = Command::new(&client)
        .args([&nginx.port.to_string(), "5"])
        .status()
        .unwrap();
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(100));
    let (ex, summary) = agent.stop();
    let paths: Vec<&str> = server_side(&ex, nginx.port)
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(paths, ["/u0", "/u1", "/u2", "/u3", "/u4"], "nginx's side is seen");
    // Neither data path reads io_uring's buffers (the syscall tracepoints see io_uring_enter,
    // not the socket calls inside it): the client's side yields no exchange.
    assert!(client_side(&ex, nginx.port).is_empty(), "{ex:#?}");
    let k = summary.kernel.as_ref().unwrap();
    if expected_capture_mode() == "socket" {
        assert!(k.get(Stat::IoUringConnections) >= 1, "counted: {k:?}");
    }
}

/// A head written as several iovecs (status line, headers, blank line, body in one sendmsg) is
/// gathered whole: not only the first iovec.
#[test]
fn a_head_spread_over_several_iovecs_is_read_whole() {
    let port = free_port();
    let src = format!(
        "import socket\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', {port})); s.listen(8)\n\
         while True:\n    c, _ = s.accept()\n    buf = b''\n    while True:\n        d = c.recv(4096)\n        if not d: break\n        buf += d\n        while b'\\r\\n\\r\\n' in buf:\n            _, buf = buf.split(b'\\r\\n\\r\\n', 1)\n            c.sendmsg([b'HTTP/1.1 200 OK\\r\\n', b'Content-Type: text/plain\\r\\n', b'X-Iovec: 3\\r\\n', b'Content-Length: 2\\r\\n\\r\\n', b'ok'])\n    c.close()\n"
    );
    let _server = Proc(Command::new(PYTHON).args(["-c", &src]).spawn().unwrap());
    wait_for_port(port);
    let agent = Agent::start();
    let url = |p: &str| format!("http://127.0.0.1:{port}/{p}");
    // The server was blocked in accept() when the probes attached: in syscall mode that first
    // connection's addresses come from /proc, too late for one this short. Warm it up.
    curl(&[&url("warm")]);
    let body = curl(&[&url("a"), &url("b"), &url("c")]);
    assert_eq!(body, "okokok");
    std::thread::sleep(Duration::from_millis(100));
    let (ex, summary) = agent.stop();
    let srv: Vec<_> = server_side(&ex, port)
        .into_iter()
        .filter(|e| e.path != "/warm")
        .collect();
    let paths: Vec<&str> = srv.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["/a", "/b", "/c"], "{ex:#?}");
    for e in &srv {
        assert_eq!(e.status, Some(200));
        assert!(!e.truncated, "the head was cut at the first iovec: {e:?}");
        assert_eq!(e.resp_body_bytes, 2);
    }
    let e = &summary.pipeline.parse_errors;
    assert_eq!(
        e.malformed + e.framing_lost + e.bad_chunk + e.head_too_large,
        0,
        "{summary:?}"
    );
    assert_eq!(summary.pipeline.heads_truncated, 0, "{summary:?}");
}

/// The capabilities the systemd unit grants (AmbientCapabilities), as setpriv wants them.
fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(workspace_root().join("deploy/systemd/apiwatch.service")).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit grants ambient capabilities");
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

/// `apiwatch run` as the unprivileged user nobody with exactly `caps` (setpriv: ambient and
/// inheritable sets, the way systemd's AmbientCapabilities starts it).
fn run_unprivileged(
    caps: &[String],
    state: &std::path::Path,
    metrics_port: u16,
    exchanges: &std::path::Path,
) -> Command {
    let set = format!(
        "-all{}",
        caps.iter().map(|c| format!(",+{c}")).collect::<String>()
    );
    let config = state.join("apiwatch.yml");
    std::fs::write(&config, format!("state_dir: {}\n", state.join("state").display())).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(apiwatch_bin())
        .args(["run", "--config", config.to_str().unwrap()])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(["--exchanges", exchanges.to_str().unwrap(), "--findings", "off"])
        .args(capture_mode_args());
    cmd
}

/// Least privilege that works: as nobody with only the unit's capabilities, the agent sees real
/// exchanges, plaintext and TLS; without one of them it refuses to start, naming it.
#[test]
fn runs_unprivileged_with_exactly_the_units_capabilities() {
    require_root();
    let caps = unit_capabilities();
    assert_eq!(
        caps,
        ["bpf", "perfmon", "sys_admin", "dac_read_search", "sys_ptrace"]
    );
    let dir = TempDir::new("lowpriv");
    let chown = |p: &std::path::Path| {
        assert!(
            Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(p)
                .status()
                .unwrap()
                .success()
        )
    };
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let exchanges = dir.path().join("exchanges.jsonl");
    std::fs::write(&exchanges, "").unwrap();
    let plain = Nginx::start(&[("low.json", b"{}")]);
    let tls = Nginx::start_tls(&[("low.json", b"{}")]);
    let port = free_port();
    let mut cmd = run_unprivileged(&caps, dir.path(), port, &exchanges);
    chown(dir.path());
    let agent = Proc(cmd.stderr(Stdio::null()).spawn().unwrap());
    wait_until_ready(port);
    for _ in 0..3 {
        curl(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{}/low.json", plain.port),
        ]);
        curl(&[
            "-k",
            "-o",
            "/dev/null",
            &format!("https://127.0.0.1:{}/low.json", tls.port),
        ]);
    }
    std::thread::sleep(Duration::from_millis(300));
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "{status}"
    );
    drop(agent);
    let lines = std::fs::read_to_string(&exchanges).unwrap();
    let ex: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (port, tls_flag) in [(plain.port, false), (tls.port, true)] {
        let seen = ex
            .iter()
            .filter(|e| {
                e["role"] == "server"
                    && e["local"]
                        .as_str()
                        .is_some_and(|a| a.ends_with(&format!(":{port}")))
                    && e["tls"] == tls_flag
            })
            .count();
        assert_eq!(seen, 3, "port {port} (tls {tls_flag}): {lines}");
    }

    // One capability fewer: a clear refusal naming it.
    for missing in ["perfmon", "sys_ptrace"] {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let out = run_unprivileged(&fewer, dir.path(), free_port(), &exchanges)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let name = format!("CAP_{}", missing.to_uppercase());
        assert!(
            err.contains(&format!("apiwatch lacks {name} in its effective capabilities")),
            "{err}"
        );
    }
}

/// An exchange sink that holds the pipeline still on its first exchange until opened: the
/// pipeline stops taking events, the channel from the capture fills, the capture stops
/// draining, and the ring fills, as it would behind a pipeline that cannot keep up.
#[derive(Clone, Default)]
struct Gate(std::sync::Arc<(std::sync::Mutex<GateState>, std::sync::Condvar)>);

#[derive(Default)]
struct GateState {
    holding: bool,
    open: bool,
    exchanges: usize,
}

impl Gate {
    fn wait_until_holding(&self) {
        let (m, cv) = &*self.0;
        let g = cv
            .wait_timeout_while(m.lock().unwrap(), Duration::from_secs(30), |s| !s.holding)
            .unwrap()
            .0;
        assert!(g.holding, "the warm-up exchange never reached the sink");
    }

    fn open(&self) {
        let (m, cv) = &*self.0;
        m.lock().unwrap().open = true;
        cv.notify_all();
    }

    fn exchanges(&self) -> usize {
        self.0.0.lock().unwrap().exchanges
    }
}

impl monitor::output::Sink<monitor::exchange::Exchange> for Gate {
    fn write(&mut self, _: &monitor::exchange::Exchange) {
        let (m, cv) = &*self.0;
        let mut s = m.lock().unwrap();
        s.exchanges += 1;
        s.holding = true;
        cv.notify_all();
        drop(cv.wait_while(s, |s| !s.open).unwrap());
    }
}

/// Exact accounting (issue 17): with the smallest ring and a pipeline held still, a burst of
/// known size overflows the ring; every event the probes tried to write is either read by the
/// capture or counted as dropped with its reason, exactly; the exported counters say the same,
/// and ApiwatchEventsDropped is raised.
#[test]
fn every_event_attempted_is_read_or_counted_as_dropped_exactly() {
    use monitor::alert::{AlertOptions, Route, SinkHealth, SinkQueue, Spool};
    use std::sync::{Arc, Mutex};
    require_root();
    // Lockstep request/response on one connection: exactly 4 data events a request (see the
    // script). The capture can hold at most the ring (64 KiB: about 118 events of 552 bytes),
    // the 64 batches of 1,024 events queued for the resolver and the 64 it queues for the
    // pipeline, and the batch each is passing on: a burst of 4 x 40,000 events overflows
    // whatever the timing.
    const BURST: u64 = 40_000;
    let dir = TempDir::new("accounting");
    // A name of its own (comm comes from the path executed), so that only this workload is
    // traced whatever else runs on the host.
    let exe = dir.path().join("apiw-accounting");
    std::os::unix::fs::symlink(PYTHON, &exe).unwrap();
    let script = workspace_root().join("tests/fixtures/lockstep_burst.py");
    let mut workload = Proc(
        Command::new(&exe)
            .arg(&script)
            .arg(BURST.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 must be installed"),
    );
    let mut said = BufReader::new(workload.0.stdout.take().unwrap()).lines();
    let mut tell = workload.0.stdin.take().unwrap();

    let metrics = Arc::new(monitor::metrics::Metrics::new(&Default::default(), 1 << 16));
    let spool = Arc::new(Mutex::new(
        Spool::open(&dir.path().join("alerts.spool"), 1000).unwrap(),
    ));
    let mut opts = AgentOptions::default();
    if let Some(mode) = capture_mode() {
        opts.kernel.mode = mode;
    }
    opts.kernel.ring_bytes = 1 << 16;
    opts.kernel.processes = vec!["apiw-accounting".into()];
    opts.metrics = Some(metrics.clone());
    opts.alerts = Some((
        AlertOptions::default(),
        vec![SinkQueue {
            name: "file".into(),
            route: Route::default(),
            resend: false,
            spool: spool.clone(),
            health: Arc::new(SinkHealth::default()),
        }],
    ));
    let gate = Gate::default();
    let consumer = monitor::agent::Consumer::Exchanges(Box::new(gate.clone()), None);
    let agent = monitor::agent::LiveAgent::start(opts, consumer).expect("the agent starts");
    // Let a tick pass with nothing lost, so the drop alert has a count to compare with.
    std::thread::sleep(Duration::from_millis(1500));

    // The script listens, connects and sends its warm-up request now: both ends' open events
    // are in the ring before the gate closes.
    writeln!(tell).unwrap();
    assert_eq!(said.next().unwrap().unwrap(), "warm");
    gate.wait_until_holding();
    // Other processes come and go on any host meanwhile: their exits are not the traced
    // workload's events and must not be counted among them (they were, in the syscall mode's
    // exit probe, until it honoured `capture.processes`).
    let churning = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let churn = {
        let churning = churning.clone();
        std::thread::spawn(move || {
            let mut exits = 0;
            while churning.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new("true").status();
                exits += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            exits
        })
    };
    writeln!(tell).unwrap();
    assert_eq!(said.next().unwrap().unwrap(), "done", "the burst failed");
    churning.store(false, std::sync::atomic::Ordering::Relaxed);
    let exits = churn.join().unwrap();
    assert!(exits > 10, "only {exits} other processes exited during the burst");
    gate.open();
    // Ticks resume once the pipeline takes events again: one sees the drops.
    std::thread::sleep(Duration::from_millis(2500));
    let summary = agent.stop().expect("agent stop");
    writeln!(tell).unwrap();

    let k = summary.kernel.as_ref().unwrap();
    let submitted = k.get(Stat::EventsSubmitted);
    let ring_full = k.get(Stat::RingFull);
    let map_full = k.get(Stat::ArgsMapFull) + k.get(Stat::ConnMapInsertFailed);
    eprintln!(
        "submitted {submitted}, ring_full {ring_full}, map_full {map_full}, read {}, decode errors {}, data events {}, exchanges {}",
        summary.ring_records_read,
        summary.ring_decode_errors,
        summary.pipeline.data_events,
        gate.exchanges()
    );
    assert!(ring_full > 0, "the burst did not overflow the ring: {k:?}");
    // Kernel to userspace: every record written was read (none undecodable).
    assert_eq!(summary.ring_decode_errors, 0);
    assert_eq!(summary.ring_records_read, submitted, "{summary:?}");
    // Attempted = received + dropped: the 4 x (1 + BURST) data events were either received or
    // counted as lost; the only other events, the two ends' opens, came before the gate.
    let data_attempted = 4 * (1 + BURST);
    let data_received = summary.pipeline.data_events;
    assert_eq!(summary.pipeline.connections_opened, 2, "{summary:?}");
    assert_eq!(summary.ring_records_read, data_received + 2, "{summary:?}");
    assert_eq!(
        data_received + ring_full + map_full,
        data_attempted,
        "data events received {data_received} + dropped {} != attempted {data_attempted}",
        ring_full + map_full
    );
    // Exchanges are only what whole request/response pairs give: fewer than the requests.
    assert!(gate.exchanges() >= 1 && gate.exchanges() as u64 <= 1 + BURST);

    // Exported: the same figures, per reason.
    let value = |name: &str, reason: Option<&str>| -> u64 {
        let families = metrics.registry.gather();
        let f = families
            .iter()
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("no {name}"));
        f.get_metric()
            .iter()
            .filter(|m| reason.is_none_or(|r| m.get_label().iter().any(|l| l.value() == r)))
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    };
    assert_eq!(value("apiwatch_kernel_events_submitted_total", None), submitted);
    assert_eq!(
        value("apiwatch_events_dropped_total", Some("ring_full")),
        ring_full
    );
    assert_eq!(value("apiwatch_events_dropped_total", Some("decode_error")), 0);
    // A monitor blinded by a flood says so.
    let alerts: Vec<String> = spool
        .lock()
        .unwrap()
        .pending(1000)
        .into_iter()
        .map(|(_, p)| String::from_utf8_lossy(&p).into_owned())
        .collect();
    assert!(
        alerts.iter().any(|a| a.contains("ApiwatchEventsDropped")),
        "no ApiwatchEventsDropped alert in {alerts:?}"
    );
}

/// Kilobytes of a field of /proc/self/status (VmRSS, VmHWM).
fn own_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Hostile traffic (issue 17): slow-loris heads (one byte a write, and heads that never end),
/// 1 MiB headers, 100,000 pipelined requests on one connection, garbage after a valid head,
/// interleaved half-closes and 10,000 idle connections, against a tolerant server. The agent
/// keeps up (nothing lost in the kernel), stays within its memory bound, does not panic, sees
/// the well-formed exchanges among them and counts every oddity.
#[test]
fn hostile_traffic_is_survived_counted_and_bounded() {
    let dir = TempDir::new("hostile");
    // A name of its own (see the accounting test): only this traffic is traced.
    let exe = dir.path().join("apiw-hostile");
    std::os::unix::fs::symlink(PYTHON, &exe).unwrap();
    let script = workspace_root().join("tests/fixtures/hostile_traffic.py");
    let port_file = dir.path().join("port");
    let mut opts = AgentOptions::default();
    opts.kernel.processes = vec!["apiw-hostile".into()];
    let rss_before = own_status_kib("VmRSS");
    let agent = Agent::start_with(opts);
    let _server = Proc(
        Command::new(&exe)
            .arg(&script)
            .arg("server")
            .arg(&port_file)
            .spawn()
            .expect("python3 must be installed"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hostile server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = Command::new(&exe)
        .arg(&script)
        .arg("client")
        .arg(port.trim())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "the hostile client failed");
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The server answered everything the way the attacks expect.
    assert_eq!(
        sent,
        serde_json::json!({"slow_loris_answered": 5, "big_answered": 6,
            "pipelined_answered": 100_000, "half_close_answered": 10})
    );
    std::thread::sleep(Duration::from_millis(500));
    let peak_kib = own_status_kib("VmHWM");
    let (ex, summary) = agent.stop();
    let k = summary.kernel.as_ref().unwrap();
    let p = &summary.pipeline;
    let path_count = |path: &str| {
        ex.iter()
            .filter(|e| e.role == Role::Server && e.path == path && e.status == Some(200))
            .count()
    };
    eprintln!(
        "hostile: peak RSS +{} KiB, exchanges {}, /p {}, /after-big {}, parse errors {:?}, heads truncated {}, bytes not seen {}, opened {}, unanswered {}, kernel {:?}",
        peak_kib.saturating_sub(rss_before),
        ex.len(),
        path_count("/p"),
        path_count("/after-big"),
        p.parse_errors,
        p.heads_truncated,
        p.bytes_not_seen,
        p.connections_opened,
        p.requests_unanswered,
        k
    );
    // Kept up: nothing lost between the probes and the agent.
    assert_eq!(k.lost_events(), 0, "{k:?}");
    assert_eq!(summary.ring_records_read, k.get(Stat::EventsSubmitted));
    // The well-formed exchanges among the attacks, on the server side.
    assert_eq!(
        path_count("/slow"),
        5,
        "slow-loris heads reassembled byte by byte"
    );
    assert_eq!(path_count("/half"), 10, "requests before a half-close");
    assert_eq!(path_count("/before-garbage"), 5);
    let pipelined = path_count("/p");
    assert!(
        (1..=100_000).contains(&pipelined),
        "{pipelined} pipelined exchanges"
    );
    // The oddities, counted: heads over the limit, garbage, bytes moved but not copied, and
    // the 10,000 idle connections' two ends (plus the others) opened and tracked.
    // A 1 MiB head: its first 4 KiB copied, the rest a gap inside the head.
    assert!(
        p.parse_errors.head_too_large + p.heads_truncated >= 3,
        "{:?}, {} heads truncated",
        p.parse_errors,
        p.heads_truncated
    );
    // The slow-loris writes were not declared "not HTTP" one byte at a time.
    assert_eq!(k.get(Stat::ConnNotHttp), 0, "{k:?}");
    assert!(p.parse_errors.malformed >= 5, "{:?}", p.parse_errors);
    assert!(p.bytes_not_seen >= 3 << 20, "1 MiB heads are counted, not copied");
    // The syscall fallback reports every connection at connect/accept; the socket layer only
    // those that move data, so the idle ones cost userspace nothing there.
    if summary.capture_mode == Some("syscall") {
        assert!(p.connections_opened >= 20_000, "{} opened", p.connections_opened);
    }
    // Bounded: every connection buffers at most MAX_HEAD_BYTES of head per direction, and the
    // table at most max_connections; the 10,000 idle ones buffer nothing.
    let grown_mib = peak_kib.saturating_sub(rss_before) / 1024;
    assert!(grown_mib <= 192, "the agent's process grew {grown_mib} MiB");
}
