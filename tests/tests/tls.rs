//! TLS tier (root): the OpenSSL uprobes against real nginx, python3 and curl over https; a
//! plaintext server beside them; a client whose TLS library is not probed (wget, GnuTLS).
use std::process::{Command, Stdio};
use std::time::Duration;

use apiwatch_tests::*;
use monitor::capture::Role;

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
            .all(|e| e.comm == "nginx" && e.role == Role::Server)
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
            .all(|e| e.tls && e.pid == server.pid() && e.comm == "python3")
    );
    assert_eq!(srv.iter().filter(|e| e.status == Some(404)).count(), 1);
    assert_eq!(client_side(&ex, port).len(), 5);
}

#[test]
fn tls_we_cannot_see_is_a_counted_blind_spot() {
    let tls = Nginx::start_tls(&[("s.json", b"{}")]);
    let agent = Agent::start();
    // wget uses GnuTLS, which apiwatch does not probe: its side is a blind spot; nginx's is not.
    for _ in 0..3 {
        let st = Command::new("wget")
            .args([
                "-q",
                "--no-check-certificate",
                "-O",
                "/dev/null",
                &format!("https://127.0.0.1:{}/s.json", tls.port),
            ])
            .status()
            .expect("wget");
        assert!(st.success());
    }
    std::thread::sleep(Duration::from_millis(100));
    let (ex, summary) = agent.stop();
    assert_eq!(
        summary.pipeline.tls_blind_spots.get("wget"),
        Some(&3),
        "{:?}",
        summary.pipeline.tls_blind_spots
    );
    assert!(!summary.pipeline.tls_blind_spots.contains_key("nginx"));
    let srv = server_side(&ex, tls.port);
    assert_eq!(srv.len(), 3);
    assert!(
        srv.iter()
            .all(|e| e.tls && e.user_agent.as_deref().is_some_and(|u| u.starts_with("Wget")))
    );
    assert!(client_side(&ex, tls.port).is_empty());
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
    assert!(ex.iter().all(|e| e.comm == "nginx"), "{ex:#?}");
}
