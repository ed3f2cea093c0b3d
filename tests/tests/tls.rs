//! TLS tier (root): the OpenSSL uprobes against real nginx, python3 and curl over https; node's
//! own OpenSSL (over memory BIOs) on both sides; GnuTLS (wget); Go's crypto/tls (a client and a
//! server built here from the standard library, a stripped client, Debian's caddy); a plaintext
//! server beside them; a client whose TLS library is not probed (rustls).
use std::process::{Command, Stdio};
use std::time::Duration;

use apiwatch_tests::*;
use monitor::capture::Role;
use monitor::exchange::Exchange;

const SECRET: &str = "tls-Bearer-s3cr3t-9f8e7d";

#[test]
fn nginx_over_tls_both_sides_and_plaintext_beside_it() {
    let tls = Nginx::start_tls(&[("s.json", b"{\"secure\":true}")]);
    let plain = Nginx::start(&[("p.json", b"{\"plain\":true}")]);
    let agent = Agent::start();
    let auth = format!("Authorization: Bearer {SECRET}");
    for i in 0..6 {
        curl(&[
            "-k",
            "-o",
            "/dev/null",
            "-H",
            &auth,
            &format!("https://127.0.0.1:{}/s.json?n={i}", tls.port),
        ]);
        curl(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{}/p.json", plain.port),
        ]);
    }
    // Keep-alive over TLS: three requests on one connection.
    let u = format!("https://127.0.0.1:{}/s.json", tls.port);
    curl(&[
        "-k",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        &u,
        &u,
        &u,
    ]);
    let (ex, summary) = agent.stop();

    for side in [server_side(&ex, tls.port), client_side(&ex, tls.port)] {
        assert_eq!(side.len(), 9, "{side:#?}");
        assert!(
            side.iter()
                .all(|e| e.tls && e.status == Some(200) && e.path == "/s.json" && e.complete),
            "{side:#?}"
        );
    }
    assert!(
        server_side(&ex, tls.port)
            .iter()
            .all(|e| &*e.comm == "nginx" && e.role == Role::Server)
    );
    assert_eq!(
        server_side(&ex, tls.port)
            .iter()
            .filter(|e| e.auth_scheme.as_str() == "bearer")
            .count(),
        6
    );
    for side in [server_side(&ex, plain.port), client_side(&ex, plain.port)] {
        assert_eq!(side.len(), 6);
        assert!(
            side.iter().all(|e| !e.tls),
            "a plaintext server must be reported tls: false"
        );
    }
    let all = format!(
        "{}{}",
        ex.iter().map(|e| e.to_json()).collect::<String>(),
        summary.line()
    );
    assert!(
        !all.contains(SECRET),
        "the Authorization value sent over TLS leaked"
    );
    assert!(
        summary.pipeline.tls_blind_spots.is_empty(),
        "{:?}",
        summary.pipeline.tls_blind_spots
    );
}

#[test]
fn python_ssl_server() {
    let dir = TempDir::new("pyssl");
    self_signed_cert(dir.path());
    std::fs::write(dir.path().join("hello.txt"), "hi").unwrap();
    let port = free_port();
    let src = format!(
        "import http.server, ssl, os\n\
         os.chdir({d:?})\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain('cert.pem', 'key.pem')\n\
         srv = http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)\n\
         srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
         srv.serve_forever()\n",
        d = dir.path().display().to_string()
    );
    let server = Proc(
        Command::new(PYTHON)
            .args(["-c", &src])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port);
    let agent = Agent::start();
    for _ in 0..4 {
        assert_eq!(
            curl(&["-k", &format!("https://127.0.0.1:{port}/hello.txt")]),
            "hi"
        );
    }
    curl(&["-k", "-o", "/dev/null", &format!("https://127.0.0.1:{port}/nope")]);
    std::thread::sleep(Duration::from_millis(100));
    let (ex, _) = agent.stop();
    let srv = server_side(&ex, port);
    assert_eq!(srv.len(), 5, "{srv:#?}");
    assert!(
        srv.iter()
            .all(|e| e.tls && e.pid == server.pid() && &*e.comm == "python3")
    );
    assert_eq!(srv.iter().filter(|e| e.status == Some(404)).count(), 1);
    assert_eq!(client_side(&ex, port).len(), 5);
}

/// rustls (pure Rust, no OpenSSL symbols) and the JDK's TLS (Java code) are not probed: their
/// sides are blind spots, counted by process and by the TLS library found loaded; nginx's side
/// of the same connections is seen.
#[test]
fn tls_we_cannot_see_is_a_counted_blind_spot_by_library() {
    let tls = Nginx::start_tls(&[("s.json", b"{}")]);
    let agent = Agent::start();
    let url = format!("https://127.0.0.1:{}/s.json", tls.port);
    // Each holds its connection 300 ms before exiting: its libraries are read from /proc at
    // its first TLS connection, while it runs (a process already gone is `unknown`).
    for _ in 0..3 {
        let st = Command::new(env!("CARGO_BIN_EXE_rustls-get"))
            .args([&url, "1", "300"])
            .status()
            .expect("rustls-get");
        assert!(st.success());
    }
    let java = Command::new("java")
        .arg(workspace_root().join("tests/fixtures/TlsGet.java"))
        .args([&url, "4"])
        .status()
        .expect("java (Debian's default-jdk-headless: cargo xtask setup)");
    assert!(java.success());
    std::thread::sleep(Duration::from_millis(100));
    let (ex, summary) = agent.stop();
    let spots = &summary.pipeline.tls_blind_spots;
    let of = |process: &str| -> Vec<(String, u64)> {
        spots
            .get(process)
            .into_iter()
            .flatten()
            .map(|(l, n)| (l.clone(), *n))
            .collect()
    };
    assert_eq!(of("rustls-get"), [("rustls".to_string(), 3)], "{spots:?}");
    let java_spots = of("java");
    assert!(
        java_spots.len() == 1 && java_spots[0].0 == "java" && java_spots[0].1 >= 1,
        "{spots:?}"
    );
    assert!(!spots.contains_key("nginx"), "{spots:?}");
    let srv = server_side(&ex, tls.port);
    assert_eq!(srv.len(), 3 + 4);
    assert!(srv.iter().all(|e| e.tls && e.status == Some(200)));
    assert!(client_side(&ex, tls.port).is_empty());
}

/// wget links GnuTLS: gnutls_record_recv / gnutls_record_send2 are probed, so its side is seen.
#[test]
fn wget_over_gnutls_is_seen() {
    let tls = Nginx::start_tls(&[("g.json", b"{\"gnutls\":1}")]);
    let agent = Agent::start();
    let url = format!("https://127.0.0.1:{}/g.json", tls.port);
    // Three runs, the last with two URLs on one keep-alive connection.
    for urls in [vec![&url], vec![&url], vec![&url, &url]] {
        let st = Command::new("wget")
            .args(["-q", "--no-check-certificate", "-O", "/dev/null"])
            .args(["--header", &format!("Authorization: Bearer {SECRET}")])
            .args(urls)
            .status()
            .expect("wget");
        assert!(st.success());
    }
    std::thread::sleep(Duration::from_millis(100));
    let (ex, summary) = agent.stop();
    let cli = client_side(&ex, tls.port);
    assert_eq!(cli.len(), 4, "{cli:#?}");
    assert!(
        cli.iter().all(|e| e.tls
            && &*e.comm == "wget"
            && e.status == Some(200)
            && e.path == "/g.json"
            && e.auth_scheme.as_str() == "bearer"
            && e.complete),
        "{cli:#?}"
    );
    assert_eq!(server_side(&ex, tls.port).len(), 4);
    assert_seen_without_leaks(&ex, &summary, &[SECRET]);
}

/// node's https module: OpenSSL inside node's own binary (or Debian's libssl), over memory BIOs
/// (node does the socket I/O itself, outside SSL_read/SSL_write). Client and server, keep-alive,
/// 20 requests, then 10 on fresh connections (SSL objects freed and their addresses reused, fds
/// reused): every exchange on both sides, each on its own connection.
#[test]
fn node_https_client_and_server() {
    let dir = TempDir::new("nodetls");
    self_signed_cert(dir.path());
    let port = free_port();
    let server = start_node_https(
        dir.path(),
        port,
        "(req, res) => { req.resume(); req.on('end', () => {\n\
           res.writeHead(req.url.startsWith('/missing') ? 404 : 200, {'content-type': 'application/json'});\n\
           res.end(JSON.stringify({path: req.url})); }); }",
    );
    wait_for_port(port);
    let agent = Agent::start();
    let client_src = format!(
        "const https = require('https');\n\
         const agent = new https.Agent({{keepAlive: true, maxSockets: 1, rejectUnauthorized: false}});\n\
         let done = 0;\n\
         function one(i) {{\n\
           const path = (i % 5 == 4 ? '/missing/' : '/orders/') + (1000 + i) + '?api_key=s3cr3t-' + i;\n\
           https.request({{host: '127.0.0.1', port: {port}, path, agent,\n\
             headers: {{authorization: 'Bearer {SECRET}'}}}}, res => {{\n\
             res.resume(); res.on('end', () => {{ if (++done < 20) one(done); else {{ agent.destroy(); fresh(0); }} }});\n\
           }}).end();\n\
         }}\n\
         function fresh(i) {{\n\
           if (i == 10) return;\n\
           https.request({{host: '127.0.0.1', port: {port}, path: '/fresh/' + i, agent: false, rejectUnauthorized: false}},\n\
             res => {{ res.resume(); res.on('end', () => fresh(i + 1)); }}).end();\n\
         }}\n\
         one(0);\n"
    );
    let st = Command::new("node")
        .args(["-e", &client_src])
        .status()
        .expect("node");
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(200));
    let (ex, summary) = agent.stop();
    // The server's side by its pid: in the syscall fallback, node's accept4(fd, NULL, NULL)
    // leaves the addresses of a short connection unknown (see docs/architecture.md, procfs.rs).
    let ours = |e: &&Exchange| {
        (e.role == Role::Server && e.pid == server.pid())
            || (e.role == Role::Client && e.peer.map(|a| a.port()) == Some(port))
    };
    let (fresh, keep): (Vec<&Exchange>, Vec<&Exchange>) = ex
        .iter()
        .filter(ours)
        .partition(|e| e.path.starts_with("/fresh/"));
    for role in [Role::Server, Role::Client] {
        let mut paths: Vec<&str> = fresh
            .iter()
            .filter(|e| e.role == role && e.tls && e.status == Some(200))
            .map(|e| e.path.as_str())
            .collect();
        paths.sort();
        let want: Vec<String> = (0..10).map(|i| format!("/fresh/{i}")).collect();
        assert_eq!(paths, want, "{role:?}: {}", summary.line());
    }
    // Each fresh request on its own connection (the client's local port names it).
    let client_ports: std::collections::HashSet<u16> = fresh
        .iter()
        .filter(|e| e.role == Role::Client)
        .filter_map(|e| e.local.map(|a| a.port()))
        .collect();
    assert_eq!(client_ports.len(), 10, "{fresh:#?}");
    if expected_capture_mode() == "socket" {
        // The socket layer knows every connection's addresses: the server saw the same ten.
        let server_peers: std::collections::HashSet<u16> = fresh
            .iter()
            .filter(|e| e.role == Role::Server)
            .filter_map(|e| e.peer.map(|a| a.port()))
            .collect();
        assert_eq!(server_peers, client_ports, "{fresh:#?}");
    }
    let srv: Vec<&Exchange> = keep.iter().copied().filter(|e| e.role == Role::Server).collect();
    let cli: Vec<&Exchange> = keep.iter().copied().filter(|e| e.role == Role::Client).collect();
    for side in [&srv, &cli] {
        assert_eq!(side.len(), 20, "{side:#?}");
        assert!(
            side.iter()
                .all(|e| e.tls && &*e.comm == "node" && e.complete && e.auth_scheme.as_str() == "bearer"),
            "{side:#?}"
        );
        assert_eq!(side.iter().filter(|e| e.status == Some(404)).count(), 4);
        assert_eq!(side.iter().filter(|e| &*e.route == "/orders/{id}").count(), 16);
    }
    assert_seen_without_leaks(&ex, &summary, &[SECRET, "s3cr3t-"]);
}

/// Go's crypto/tls, on both sides, built here from a few lines of the standard library
/// (tests/fixtures/go): a server started before the agent, a client started after it (probed
/// at its exec), and the same client stripped of its symbol tables (found from Go's own
/// function table). Keep-alive: 20 requests on one connection, 5 on the stripped client's.
#[test]
fn go_crypto_tls_client_server_and_a_stripped_client() {
    let dir = TempDir::new("gotls");
    self_signed_cert(dir.path());
    let server_bin = dir.path().join("goserver");
    let client_bin = dir.path().join("goclient");
    let stripped_bin = dir.path().join("goclient-strip");
    go_build("server", &server_bin, false);
    go_build("client", &client_bin, false);
    go_build("client", &stripped_bin, true);
    let has_symtab = |p: &std::path::Path| {
        let data = std::fs::read(p).unwrap();
        data.windows(8).any(|w| w == b".symtab\0")
    };
    assert!(has_symtab(&client_bin) && !has_symtab(&stripped_bin));
    let port = free_port();
    let server = start_go_server(&server_bin, dir.path(), port, &[]);
    let agent = Agent::start();
    let base = format!("https://127.0.0.1:{port}");
    for (bin, n) in [(&client_bin, "20"), (&stripped_bin, "5")] {
        let st = Command::new(bin)
            .args([&base, n, SECRET])
            .status()
            .expect("the Go client");
        assert!(st.success());
    }
    std::thread::sleep(Duration::from_millis(200));
    let (ex, summary) = agent.stop();
    let srv = server_side(&ex, port);
    assert_eq!(srv.len(), 25, "{}", summary.line());
    let cli = client_side(&ex, port);
    for (side, comm, n) in [
        (&srv, "goserver", 25),
        (&cli, "goclient", 20),
        (&cli, "goclient-strip", 5),
    ] {
        let side: Vec<&&Exchange> = side.iter().filter(|e| &*e.comm == comm).collect();
        assert_eq!(side.len(), n, "{comm}: {}", summary.line());
        assert!(
            side.iter()
                .all(|e| e.tls && e.complete && e.auth_scheme.as_str() == "bearer"),
            "{side:#?}"
        );
        assert_eq!(side.iter().filter(|e| e.status == Some(404)).count(), n / 5);
        assert_eq!(
            side.iter()
                .filter(|e| e.status == Some(200) && &*e.route == "/orders/{id}")
                .count(),
            n - n / 5
        );
    }
    assert_seen_without_leaks(&ex, &summary, &[SECRET, "s3cr3t-"]);
    drop(server);
}

/// Go's crypto/tls over connections wrapped in a type embedding net.Conn (a counting listener
/// on the server, a counting dialer on the client, as netutil.LimitListener and most metrics
/// wrappers do): the socket is found through the wrapper, every exchange seen on both sides,
/// no blind spot.
#[test]
fn go_crypto_tls_over_wrapped_connections_is_seen() {
    let dir = TempDir::new("gotlswrap");
    self_signed_cert(dir.path());
    let server_bin = dir.path().join("goserver");
    let client_bin = dir.path().join("goclient");
    go_build("server", &server_bin, false);
    go_build("client", &client_bin, false);
    let port = free_port();
    let server = start_go_server(&server_bin, dir.path(), port, &["wrapped"]);
    let agent = Agent::start();
    let st = Command::new(&client_bin)
        .args([&format!("https://127.0.0.1:{port}"), "10", SECRET, "wrapped"])
        .status()
        .expect("the Go client");
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(200));
    let (ex, summary) = agent.stop();
    for (side, comm) in [
        (server_side(&ex, port), "goserver"),
        (client_side(&ex, port), "goclient"),
    ] {
        assert_eq!(side.len(), 10, "{comm}: {}", summary.line());
        assert!(
            side.iter()
                .all(|e| e.tls && e.complete && &*e.comm == comm && e.auth_scheme.as_str() == "bearer"),
            "{side:#?}"
        );
        assert_eq!(side.iter().filter(|e| e.status == Some(404)).count(), 2);
    }
    assert_seen_without_leaks(&ex, &summary, &[SECRET, "s3cr3t-"]);
    drop(server);
}

/// Debian's caddy (Go 1.19, stripped, built with cgo) as a TLS file server, curl on the other
/// side (HTTP/2 or HTTP/1.1, as they agree): every request seen on both sides.
#[test]
fn caddy_serving_files_over_tls_is_seen() {
    let dir = TempDir::new("caddy");
    self_signed_cert(dir.path());
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("c.json"), b"{\"caddy\":1}").unwrap();
    let port = free_port();
    let d = dir.path().display();
    let caddyfile = dir.path().join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n\tadmin off\n\tauto_https disable_redirects\n\tstorage file_system {d}/data\n}}\n\
             https://127.0.0.1:{port} {{\n\tbind 127.0.0.1\n\ttls {d}/cert.pem {d}/key.pem\n\
             \troot * {d}/www\n\tfile_server\n}}\n"
        ),
    )
    .unwrap();
    let caddy = Proc(
        Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&caddyfile)
            .envs([
                ("HOME", dir.path()),
                ("XDG_DATA_HOME", dir.path()),
                ("XDG_CONFIG_HOME", dir.path()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("caddy (cargo xtask setup installs it)"),
    );
    wait_for_port(port);
    let agent = Agent::start();
    let url = format!("https://127.0.0.1:{port}/c.json");
    let auth = format!("Authorization: Bearer {SECRET}");
    for _ in 0..3 {
        curl(&[
            "-k",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-H",
            &auth,
            &url,
            &url,
        ]);
    }
    std::thread::sleep(Duration::from_millis(200));
    let (ex, summary) = agent.stop();
    for side in [server_side(&ex, port), client_side(&ex, port)] {
        assert_eq!(side.len(), 6, "{side:#?} {}", summary.line());
        assert!(
            side.iter().all(|e| e.tls
                && e.status == Some(200)
                && e.path == "/c.json"
                && e.auth_scheme.as_str() == "bearer"
                && e.complete),
            "{side:#?}"
        );
    }
    assert!(server_side(&ex, port).iter().all(|e| &*e.comm == "caddy"));
    assert_seen_without_leaks(&ex, &summary, &[SECRET]);
    drop(caddy);
}

/// The Go https server built by go_build, on 127.0.0.1:`port` with the certificate in `dir`.
fn start_go_server(bin: &std::path::Path, dir: &std::path::Path, port: u16, extra: &[&str]) -> Proc {
    let server = Proc(
        Command::new(bin)
            .arg(format!("127.0.0.1:{port}"))
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .args(extra)
            // Its log would name wait_for_port's probe connection a failed handshake.
            .stderr(Stdio::null())
            .spawn()
            .expect("the Go server"),
    );
    wait_for_port(port);
    server
}

/// Builds the Go program in tests/fixtures/go/NAME into `out`, with no symbol tables if
/// `stripped` (tests/fixtures/go/build.sh: standard library only, nothing is downloaded).
fn go_build(name: &str, out: &std::path::Path, stripped: bool) {
    let st = Command::new("sh")
        .arg(workspace_root().join("tests/fixtures/go/build.sh"))
        .arg(name)
        .arg(out)
        .args(stripped.then_some("stripped"))
        .status()
        .expect("sh");
    assert!(
        st.success(),
        "go build {name} (cargo xtask setup installs golang-go)"
    );
}

#[test]
fn with_a_process_filter_the_probes_attach_to_those_processes_and_still_see_plaintext() {
    let tls = Nginx::start_tls(&[("s.json", b"{\"secure\":true}")]);
    let mut opts = monitor::agent::AgentOptions::default();
    opts.kernel.processes = vec!["nginx".into()];
    let agent = Agent::start_with(opts);
    for i in 0..4 {
        curl(&[
            "-k",
            "-o",
            "/dev/null",
            &format!("https://127.0.0.1:{}/s.json?n={i}", tls.port),
        ]);
    }
    let (ex, _) = agent.stop();
    // nginx's workers were probed one by one (per process, not host-wide): their plaintext
    // is seen; curl is not traced at all.
    let srv = server_side(&ex, tls.port);
    assert_eq!(srv.len(), 4, "{ex:#?}");
    assert!(
        srv.iter()
            .all(|e| e.tls && e.path == "/s.json" && e.status == Some(200))
    );
    assert!(ex.iter().all(|e| &*e.comm == "nginx"), "{ex:#?}");
}

/// A TLS server started after the agent is found by a rescan, which runs on its own thread
/// (walking /proc and reading ELF files must not hold up the thread draining the ring).
#[test]
fn a_tls_server_started_later_is_probed_by_a_rescan_off_the_capture_thread() {
    let mut opts = monitor::agent::AgentOptions::default();
    // Filtered by name, rescans come every 5 s.
    opts.kernel.processes = vec!["node".into(), "curl".into()];
    let agent = Agent::start_with(opts);
    let threads: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim_end().to_string())
        .collect();
    assert!(
        threads.iter().any(|t| t == "apiwatch-tls-sc"),
        "no TLS scan thread: {threads:?}"
    );
    let dir = TempDir::new("nodelate");
    self_signed_cert(dir.path());
    let port = free_port();
    let server = start_node_https(dir.path(), port, "(req, res) => res.end('late')");
    wait_for_port(port);
    // By pid: in the syscall fallback a node server's short connections may have no addresses
    // (accept4 without an address buffer; see node_https_client_and_server).
    let served = |ex: &[Exchange]| -> Vec<Exchange> {
        ex.iter()
            .filter(|e| e.role == Role::Server && e.pid == server.pid())
            .cloned()
            .collect()
    };
    // The next rescan (every 5 s; reading node's own OpenSSL symbols takes a while on a slow
    // machine), then the tick that attaches what it found: ask until the server is seen.
    let late = || assert_eq!(curl(&["-k", &format!("https://127.0.0.1:{port}/late")]), "late");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while served(&agent.exchanges.snapshot()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "node was never probed");
        late();
        std::thread::sleep(Duration::from_millis(500));
    }
    let before = served(&agent.exchanges.snapshot()).len();
    // Probed now: every request from here on is seen.
    for _ in 0..3 {
        late();
    }
    std::thread::sleep(Duration::from_millis(100));
    let (ex, _) = agent.stop();
    let srv = served(&ex);
    assert_eq!(srv.len(), before + 3, "{ex:#?}");
    assert!(
        srv.iter()
            .all(|e| e.tls && &*e.comm == "node" && e.path == "/late")
    );
}

/// Every TLS connection yielded plaintext, and no secret sent over TLS is in an exchange or the
/// summary.
fn assert_seen_without_leaks(ex: &[Exchange], summary: &monitor::agent::Summary, secrets: &[&str]) {
    assert!(
        summary.pipeline.tls_blind_spots.is_empty(),
        "{:?}",
        summary.pipeline.tls_blind_spots
    );
    let all = format!(
        "{}{}",
        ex.iter().map(|e| e.to_json()).collect::<String>(),
        summary.line()
    );
    for s in secrets {
        assert!(!all.contains(s), "{s:?} sent over TLS leaked");
    }
}

/// A node https server on 127.0.0.1:`port` (the self-signed certificate in `dir`), `handler` its
/// request listener in JavaScript.
fn start_node_https(dir: &std::path::Path, port: u16, handler: &str) -> Proc {
    let src = format!(
        "const https = require('https'), fs = require('fs');\n\
         https.createServer({{key: fs.readFileSync({d:?} + '/key.pem'), cert: fs.readFileSync({d:?} + '/cert.pem')}},\n\
           {handler}).listen({port}, '127.0.0.1');\n",
        d = dir.display().to_string()
    );
    Proc(
        Command::new("node")
            .args(["-e", &src])
            .stderr(Stdio::null())
            .spawn()
            .expect("node (cargo xtask setup installs nodejs)"),
    )
}
