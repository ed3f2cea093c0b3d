//! What the bench and the soak share: the agent binary started and stopped as a child process,
//! a process's CPU time, and waiting for a server's port.
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Lines of the agent's standard error kept for an error message (a soak runs for hours: not
/// all of them).
const KEPT_LINES: usize = 50;

/// `apiwatch ARGS` as a child process, its standard error read on a thread of its own (a full
/// pipe would block the agent).
pub(crate) struct Agent {
    child: Child,
    /// Taken by `stop`.
    stderr: Option<std::thread::JoinHandle<Stderr>>,
}

/// What the reader thread keeps of the agent's standard error.
#[derive(Default)]
struct Stderr {
    summary: Option<String>,
    last: VecDeque<String>,
}

impl Agent {
    /// Starts `apiwatch ARGS` and waits until its probes are attached (or its recording has
    /// begun). With `echo_problems`, its warnings and errors are printed as they come.
    pub(crate) fn start(bin: &Path, args: &[&str], echo_problems: bool) -> Result<Self> {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut kept = Stderr::default();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("is watching") || line.contains("recording to") {
                    let _ = tx.send(());
                }
                if echo_problems && (line.contains("WARN") || line.contains("ERROR")) {
                    eprintln!("agent: {line}");
                }
                if let Some(summary) = line.strip_prefix("apiwatch summary ") {
                    kept.summary = Some(summary.to_string());
                }
                if kept.last.len() == KEPT_LINES {
                    kept.last.pop_front();
                }
                kept.last.push_back(line);
            }
            kept
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            let kept = reader.join().unwrap_or_default();
            bail!(
                "the agent did not start:\n{}",
                kept.last.into_iter().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(Self {
            child,
            stderr: Some(reader),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU time so far.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// Stops it as an operator does (SIGINT) and returns the summary it printed.
    pub(crate) fn stop(mut self) -> Result<serde_json::Value> {
        self.interrupt();
        let kept = self.stderr.take().and_then(|r| r.join().ok()).unwrap_or_default();
        let summary = kept.summary.with_context(|| {
            format!(
                "no summary in the agent's last lines:\n{}",
                kept.last.into_iter().collect::<Vec<_>>().join("\n")
            )
        })?;
        Ok(serde_json::from_str(&summary)?)
    }

    fn interrupt(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
        }
        let _ = self.child.wait();
    }
}

/// An agent dropped without `stop` (an error on the way) is stopped all the same: it holds
/// probes on every socket of the host.
impl Drop for Agent {
    fn drop(&mut self) {
        self.interrupt();
    }
}

/// The summary (JSON) an apiwatch command printed on its standard error.
pub(crate) fn summary_of(stderr: &str) -> Result<serde_json::Value> {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("apiwatch summary "))
        .with_context(|| format!("no summary in:\n{stderr}"))?;
    Ok(serde_json::from_str(line)?)
}

/// User + system CPU seconds of a process, from /proc/PID/stat (fields 14 and 15, clock ticks).
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

/// Waits up to 10 s for `what` to accept connections on a loopback port.
pub(crate) fn wait_for_port(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
