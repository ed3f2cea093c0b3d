//! Helpers for apiwatch's end-to-end tests: real servers and clients started on loopback, the
//! agent started in-process with its real kernel programs.
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use monitor::agent::{AgentOptions, Consumer, LiveAgent, Summary};
use monitor::capture::kernel::CaptureMode;
use monitor::exchange::Exchange;
use monitor::finding::Finding;
use monitor::output::SharedVec;

/// Debian's python3 (not a version manager's shim, which may fork).
pub const PYTHON: &str = "/usr/bin/python3";

/// Fails (not skips) when the tests cannot run as they must.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "kernel tests load eBPF programs and need root; run `cargo xtask test` as root"
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port} after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a server from Debian's packages with its output silenced, and waits for its port.
pub fn spawn_server(cmd: &mut Command, port: u16, missing: &str) -> Proc {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(missing);
    let proc = Proc(child);
    wait_for_port(port);
    proc
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("apiwatch-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    /// SIGTERM first: an nginx master killed with SIGKILL leaves its workers running.
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The capture mode the kernel tiers run in: $APIWATCH_TEST_CAPTURE_MODE (`cargo xtask test`
/// runs those tiers once per mode), or None for the agent's default (auto).
pub fn capture_mode() -> Option<CaptureMode> {
    let m = std::env::var("APIWATCH_TEST_CAPTURE_MODE").ok()?;
    Some(
        CaptureMode::parse(&m)
            .unwrap_or_else(|| panic!("APIWATCH_TEST_CAPTURE_MODE={m:?}: not auto, socket or syscall")),
    )
}

/// `--capture-mode M` for an agent binary started by a test, when a mode is asked for.
pub fn capture_mode_args() -> Vec<String> {
    match capture_mode() {
        Some(m) => vec!["--capture-mode".into(), m.as_str().into()],
        None => Vec::new(),
    }
}

/// The mode the agent must end up in here: the one asked for, and for auto the socket layer,
/// which this kernel (6.18) has.
pub fn expected_capture_mode() -> &'static str {
    match capture_mode() {
        Some(CaptureMode::Syscall) => "syscall",
        _ => "socket",
    }
}

/// The agent, started in this process, collecting exchanges and findings in memory.
pub struct Agent {
    live: Option<LiveAgent>,
    pub exchanges: SharedVec,
    pub findings: SharedVec<Finding>,
}

impl Agent {
    pub fn start() -> Self {
        Self::start_with(AgentOptions::default())
    }

    pub fn start_with(mut opts: AgentOptions) -> Self {
        require_root();
        if let Some(mode) = capture_mode() {
            opts.kernel.mode = mode;
        }
        let exchanges = SharedVec::default();
        let findings = SharedVec::default();
        let consumer = Consumer::Exchanges(Box::new(exchanges.clone()), Some(Box::new(findings.clone())));
        let live =
            LiveAgent::start(opts, consumer).unwrap_or_else(|e| panic!("the agent did not start: {e}"));
        Self {
            live: Some(live),
            exchanges,
            findings,
        }
    }

    /// Stops the agent (draining what the kernel wrote) and returns exchanges and summary.
    pub fn stop(self) -> (Vec<Exchange>, Summary) {
        let (ex, _, summary) = self.stop_all();
        (ex, summary)
    }

    /// Exchanges, findings and summary.
    pub fn stop_all(mut self) -> (Vec<Exchange>, Vec<Finding>, Summary) {
        let summary = self.live.take().unwrap().stop().expect("agent stop");
        (self.exchanges.snapshot(), self.findings.snapshot(), summary)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(live) = self.live.take() {
            let _ = live.stop();
        }
    }
}

/// nginx from Debian, on 127.0.0.1:port, serving `files` from its root, access log in the dir.
pub struct Nginx {
    pub port: u16,
    pub dir: TempDir,
    _proc: Proc,
}

impl Nginx {
    pub fn start(files: &[(&str, &[u8])]) -> Self {
        Self::start_with(files, "")
    }

    /// `locations`: extra nginx `location` blocks (e.g. fixed-status API endpoints).
    pub fn start_with(files: &[(&str, &[u8])], locations: &str) -> Self {
        Self::start_full(files, locations, false)
    }

    /// nginx speaking TLS with a self-signed certificate made for the test.
    pub fn start_tls(files: &[(&str, &[u8])]) -> Self {
        Self::start_full(files, "", true)
    }

    /// Also listening on `extra_listen` (an address of a test network namespace's veth peer).
    pub fn start_on(files: &[(&str, &[u8])], locations: &str, extra_listen: &str) -> Self {
        Self::start_full_on(files, locations, false, extra_listen)
    }

    /// nginx speaking HTTP/2: over TLS (ALPN h2, and HTTP/1.1 beside it), or cleartext h2c
    /// with prior knowledge (`listen ... http2` without ssl).
    pub fn start_h2(files: &[(&str, &[u8])], tls: bool) -> Self {
        Self::start_full_with(files, "", tls, "", true)
    }

    fn start_full(files: &[(&str, &[u8])], locations: &str, tls: bool) -> Self {
        Self::start_full_on(files, locations, tls, "")
    }

    fn start_full_on(files: &[(&str, &[u8])], locations: &str, tls: bool, extra_listen: &str) -> Self {
        Self::start_full_with(files, locations, tls, extra_listen, false)
    }

    fn start_full_with(
        files: &[(&str, &[u8])],
        locations: &str,
        tls: bool,
        extra_listen: &str,
        h2: bool,
    ) -> Self {
        let dir = TempDir::new("nginx");
        let port = free_port();
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        for (name, body) in files {
            std::fs::write(www.join(name), body).unwrap();
        }
        let d = dir.path().display();
        let http2 = if h2 { " http2" } else { "" };
        let ssl = if tls {
            self_signed_cert(dir.path());
            format!(" ssl{http2};\n    ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem")
        } else {
            http2.to_string()
        };
        let extra = if extra_listen.is_empty() {
            String::new()
        } else {
            format!("\n    listen {extra_listen}:{port};")
        };
        let conf = format!(
            "daemon off;\nuser root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log {d}/access.log;\n  sendfile on;\n  keepalive_timeout 65;\n  keepalive_requests 1000000;\n  log_not_found off;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{\n    listen 127.0.0.1:{port}{ssl};{extra}\n    root {d}/www;\n    location / {{ }}\n    {locations}\n  }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = Command::new("nginx");
        cmd.args([
            "-c",
            conf_path.to_str().unwrap(),
            "-p",
            dir.path().to_str().unwrap(),
        ]);
        let proc = spawn_server(
            &mut cmd,
            port,
            "nginx must be installed (cargo xtask setup installs it)",
        );
        Self {
            port,
            dir,
            _proc: proc,
        }
    }

    /// Requests nginx logged (its own count, the ground truth for "N requests").
    pub fn access_log_lines(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

/// A self-signed certificate and key (cert.pem, key.pem) in `dir`, made with the openssl CLI.
pub fn self_signed_cert(dir: &Path) {
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success());
}

/// `python3 -m http.server` on 127.0.0.1:port serving a temp dir with `files`.
pub struct PythonServer {
    pub port: u16,
    pub proc: Proc,
    _dir: TempDir,
}

impl PythonServer {
    pub fn start(files: &[(&str, &[u8])]) -> Self {
        let dir = TempDir::new("py");
        for (name, body) in files {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        let port = free_port();
        let mut cmd = Command::new(PYTHON);
        cmd.args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir.path());
        let proc = spawn_server(&mut cmd, port, "python3 must be installed");
        Self {
            port,
            proc,
            _dir: dir,
        }
    }
}

/// Runs curl with `args`; asserts it succeeded.
pub fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exchanges seen on the server side of `port`.
pub fn server_side(ex: &[Exchange], port: u16) -> Vec<&Exchange> {
    ex.iter()
        .filter(|e| e.role == monitor::capture::Role::Server && e.local.map(|a| a.port()) == Some(port))
        .collect()
}

/// Exchanges seen on the client side towards `port`.
pub fn client_side(ex: &[Exchange], port: u16) -> Vec<&Exchange> {
    ex.iter()
        .filter(|e| e.role == monitor::capture::Role::Client && e.peer.map(|a| a.port()) == Some(port))
        .collect()
}

/// The `apiwatch` binary under test: $APIWATCH_BIN, which `cargo xtask test` sets to the release
/// build it has just made. No fallback: a stale binary from an earlier build would test old code.
pub fn apiwatch_bin() -> PathBuf {
    let bin = std::env::var_os("APIWATCH_BIN").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "APIWATCH_BIN is not set: run `cargo xtask test`, or `cargo build --release -p monitor` and set \
             APIWATCH_BIN=target/release/apiwatch"
        )
    });
    assert!(bin.exists(), "{} does not exist", bin.display());
    bin
}

/// Waits until the agent whose metrics endpoint is on `metrics_port` says it is ready (/readyz:
/// probes loaded and attached; the endpoint itself answers before that).
pub fn wait_until_ready(metrics_port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{metrics_port}/readyz"))
            .output()
            .unwrap();
        if out.stdout == b"200" {
            return;
        }
        assert!(Instant::now() < deadline, "the agent did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `apiwatch run` with its metrics endpoint on `metrics_port`, waited on until /readyz answers.
pub fn start_agent_binary(metrics_port: u16, extra: &[&str]) -> Proc {
    start_agent_binary_logged(metrics_port, extra, None)
}

/// The same, its log at every level (RUST_LOG=trace) written to `log` when given.
pub fn start_agent_binary_logged(metrics_port: u16, extra: &[&str], log: Option<&Path>) -> Proc {
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
        None => Stdio::null(),
    };
    let child = Command::new(apiwatch_bin())
        .args([
            "run",
            "--exchanges",
            "/dev/null",
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .args(extra)
        .args(capture_mode_args())
        .env("RUST_LOG", if log.is_some() { "trace" } else { "info" })
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://127.0.0.1:{metrics_port}/readyz"),
            ])
            .output()
            .unwrap();
        if out.stdout == b"200" {
            return proc;
        }
        assert!(Instant::now() < deadline, "the agent did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prometheus from Debian on loopback, scraping `target` every second as job "apiwatch".
pub struct Prometheus {
    pub port: u16,
    _dir: TempDir,
    _proc: Proc,
}

impl Prometheus {
    pub fn start(target: &str, rule_files: &[PathBuf]) -> Self {
        let dir = TempDir::new("prom");
        let port = free_port();
        let rules: String = rule_files
            .iter()
            .map(|r| format!("  - {}\n", r.display()))
            .collect();
        let conf = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{rules}\
             scrape_configs:\n  - job_name: apiwatch\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        let conf_path = dir.path().join("prometheus.yml");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", conf_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let proc = spawn_server(
            &mut cmd,
            port,
            "prometheus must be installed (cargo xtask setup installs it)",
        );
        Self {
            port,
            _dir: dir,
            _proc: proc,
        }
    }

    /// Instant query through Prometheus's HTTP API; the `result` array.
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "--data-urlencode"])
            .arg(format!("query={expr}"))
            .arg(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "bad answer to {expr}: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert_eq!(v["status"], "success", "query failed: {expr}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A network namespace with a veth pair: the host end has `host_ip`/24, the namespace end
/// `ns_ip`/24. Removed on drop. Traffic stays between this host and its own namespace.
pub struct NetNs {
    pub name: String,
    pub host_ip: String,
    pub ns_ip: String,
    host_if: String,
}

impl NetNs {
    pub fn new(tag: &str, subnet: u8) -> Self {
        let id = std::process::id() % 10000;
        let name = format!("aw-{tag}-{id}");
        let host_if = format!("awh{subnet}-{id}");
        let ns_if = format!("awn{subnet}-{id}");
        let host_ip = format!("10.231.{subnet}.1");
        let ns_ip = format!("10.231.{subnet}.2");
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("ip (iproute2)");
            assert!(st.success(), "ip {args:?} failed");
        };
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("{ns_ip}/24"),
            "dev",
            &ns_if,
        ]);
        ip(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"]);
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        Self {
            name,
            host_ip,
            ns_ip,
            host_if,
        }
    }

    /// curl run inside the namespace.
    pub fn curl(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "curl",
                "-s",
                "-S",
                "--max-time",
                "10",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Alertmanager from Debian (`prometheus-alertmanager`) on 127.0.0.1:port, clustering off.
pub struct Alertmanager {
    pub port: u16,
    _dir: TempDir,
    _proc: Proc,
}

impl Alertmanager {
    /// With the deployment example's configuration (deploy/alertmanager/alertmanager.yml).
    pub fn start_on(port: u16) -> Self {
        let dir = TempDir::new("am");
        let conf = workspace_root().join("deploy/alertmanager/alertmanager.yml");
        let mut cmd = Command::new("prometheus-alertmanager");
        cmd.arg(format!("--config.file={}", conf.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=");
        let proc = spawn_server(
            &mut cmd,
            port,
            "prometheus-alertmanager must be installed (cargo xtask setup installs it)",
        );
        Self {
            port,
            _dir: dir,
            _proc: proc,
        }
    }

    /// Alerts Alertmanager holds as active (GET /api/v2/alerts).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{}/api/v2/alerts", self.port),
            ])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

/// How a `Receiver` answers one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// Wait this long before answering (longer than the sink's timeout: a timeout).
    pub delay: Duration,
    pub retry_after: Option<u64>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            delay: Duration::ZERO,
            retry_after: None,
        }
    }
}

/// One request a `Receiver` got, and what it answered.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub answered: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Answered 2xx: the sender may count it delivered.
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

/// A local HTTP endpoint standing in for an on-call service (PagerDuty, Slack, a webhook) on
/// loopback: it records every request and answers the n-th with `script[n]` (the last entry
/// repeats), so tests inject 429s, 500s and timeouts. Each request is answered on its own
/// thread, so a slow answer does not hold the next request back.
pub struct Receiver {
    pub port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    server: std::sync::Arc<tiny_http::Server>,
}

impl Receiver {
    pub fn start(script: Vec<Reply>) -> Self {
        Self::start_on(0, script)
    }

    /// On a given port (0: any), e.g. one a sink was already told about while nothing listened.
    pub fn start_on(port: u16, script: Vec<Reply>) -> Self {
        assert!(!script.is_empty());
        let server = std::sync::Arc::new(tiny_http::Server::http(("127.0.0.1", port)).unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (srv, log) = (server.clone(), got.clone());
        std::thread::spawn(move || {
            for (n, mut req) in srv.incoming_requests().enumerate() {
                let reply = script[n.min(script.len() - 1)].clone();
                let mut body = String::new();
                let _ = std::io::Read::read_to_string(req.as_reader(), &mut body);
                {
                    let mut log = log.lock().unwrap();
                    log.push(Received {
                        at: Instant::now(),
                        path: req.url().to_string(),
                        headers: req
                            .headers()
                            .iter()
                            .map(|h| (h.field.to_string(), h.value.to_string()))
                            .collect(),
                        body,
                        answered: reply.status,
                    });
                }
                std::thread::spawn(move || {
                    std::thread::sleep(reply.delay);
                    let mut resp = tiny_http::Response::from_string("{\"status\":\"ok\"}")
                        .with_status_code(reply.status);
                    if let Some(secs) = reply.retry_after {
                        resp.add_header(
                            tiny_http::Header::from_bytes("Retry-After", secs.to_string()).unwrap(),
                        );
                    }
                    let _ = req.respond(resp);
                });
            }
        });
        Self { port, got, server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// A JSON Schema from the repository (`path` relative to the workspace root).
pub fn schema(path: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(workspace_root().join(path)).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{path} is not a valid schema: {e}"))
}

/// Panics with every violation when `doc` does not follow `schema`.
pub fn assert_valid(schema: &jsonschema::Validator, doc: &serde_json::Value, what: &str) {
    let errors: Vec<String> = schema
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{what} breaks its schema: {errors:?}\n{doc}");
}

/// A policy in which the service "shop" on `port` may be called from `cidr` only (zone "corp",
/// undeclared endpoints allowed): with 10.0.0.0/8, every loopback request crosses the boundary.
pub fn policy_only_from(port: u16, cidr: &str) -> String {
    format!(
        "zones:\n  corp: [\"{cidr}\"]\nservices:\n  - name: shop\n    match:\n      port: {port}\n    undeclared: allow\n    defaults:\n      allowed_sources: [corp]\n"
    )
}

/// A small tmpfs mounted for a test (a disk that fills up), unmounted on drop.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                path.to_str().unwrap(),
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs on {}", path.display());
        Self(path.to_path_buf())
    }

    /// Remounts it read-only or read-write, keeping its files. A read-only remount is refused
    /// while a file on it is open for writing.
    pub fn set_read_only(&self, read_only: bool) {
        let opts = if read_only { "remount,ro" } else { "remount,rw" };
        let ok = Command::new("mount")
            .args(["-o", opts, self.0.to_str().unwrap()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -o {opts} {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system holding `filler` (dd stops at ENOSPC).
pub fn fill(filler: &Path) {
    let _ = Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=4k"])
        .stderr(Stdio::null())
        .status();
}
