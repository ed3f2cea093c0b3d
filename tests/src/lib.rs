//! Helpers for apiwatch's end-to-end tests: real servers and clients started on loopback, the
//! agent started in-process with its real kernel programs.
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use monitor::agent::{AgentOptions, Consumer, LiveAgent, Summary};
use monitor::exchange::Exchange;
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

/// The agent, started in this process, collecting exchanges in memory.
pub struct Agent {
    live: Option<LiveAgent>,
    pub exchanges: SharedVec,
}

impl Agent {
    pub fn start() -> Self {
        Self::start_with(AgentOptions::default())
    }

    pub fn start_with(opts: AgentOptions) -> Self {
        require_root();
        let exchanges = SharedVec::default();
        let live = LiveAgent::start(opts, Consumer::Exchanges(Box::new(exchanges.clone())))
            .unwrap_or_else(|e| panic!("the agent did not start: {e}"));
        Self {
            live: Some(live),
            exchanges,
        }
    }

    /// Stops the agent (draining what the kernel wrote) and returns exchanges and summary.
    pub fn stop(mut self) -> (Vec<Exchange>, Summary) {
        let summary = self.live.take().unwrap().stop().expect("agent stop");
        (self.exchanges.snapshot(), summary)
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
        let dir = TempDir::new("nginx");
        let port = free_port();
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        for (name, body) in files {
            std::fs::write(www.join(name), body).unwrap();
        }
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nuser root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log {d}/access.log;\n  sendfile on;\n  keepalive_timeout 65;\n  keepalive_requests 1000000;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{\n    listen 127.0.0.1:{port};\n    root {d}/www;\n    location / {{ }}\n  }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("nginx")
            .args([
                "-c",
                conf_path.to_str().unwrap(),
                "-p",
                dir.path().to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx must be installed (cargo xtask setup installs it)");
        wait_for_port(port);
        Self {
            port,
            dir,
            _proc: Proc(child),
        }
    }

    /// Requests nginx logged (its own count, the ground truth for "N requests").
    pub fn access_log_lines(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
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
        let child = Command::new(PYTHON)
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 must be installed");
        let proc = Proc(child);
        wait_for_port(port);
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
