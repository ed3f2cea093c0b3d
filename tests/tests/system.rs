//! System tier: the `apiwatch` binary end to end (root): run, record, replay, check, errors.
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use apiwatch_tests::*;

fn apiwatch() -> PathBuf {
    apiwatch_bin()
}

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn summary_of(stderr: &str) -> serde_json::Value {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("apiwatch summary "))
        .expect("no summary line");
    serde_json::from_str(line).unwrap()
}

/// A child whose stderr is read while it runs: a trace-level log fills a pipe's 64 KiB long
/// before the child exits, and a child blocked writing its log captures nothing.
struct Drained(
    std::process::Child,
    std::thread::JoinHandle<()>,
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
);

impl Drained {
    fn new(mut child: std::process::Child) -> Self {
        let mut err = child.stderr.take().expect("stderr piped");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = seen.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = std::io::Read::read(&mut err, &mut buf) {
                if n == 0 {
                    break;
                }
                into.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self(child, reader, seen)
    }

    /// Waits until the log shows `marker` (the agent says it is attached), at most 30 s.
    fn wait_for(&self, marker: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !String::from_utf8_lossy(&self.2.lock().unwrap()).contains(marker) {
            assert!(std::time::Instant::now() < deadline, "no {marker:?} in the log");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait(mut self) -> Output {
        let status = self.0.wait().unwrap();
        self.1.join().unwrap();
        let stderr = std::mem::take(&mut *self.2.lock().unwrap());
        Output {
            status,
            stdout: Vec::new(),
            stderr,
        }
    }
}

const SECRETS: &[&str] = &["Sup3rS3cretBearer", "qv4lue", "Ck00kie", "hunter22"];

#[test]
fn run_record_and_replay_agree_and_leak_nothing() {
    require_root();
    let server = PythonServer::start(&[("x.json", b"{}")]);
    let dir = TempDir::new("system");
    let live_out = dir.path().join("live.jsonl");
    let rec = dir.path().join("capture.rec");
    // Every log level on: not even trace logging may show a secret.
    let run = Command::new(apiwatch())
        .args([
            "run",
            "--duration",
            "4",
            "--exchanges",
            live_out.to_str().unwrap(),
        ])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let record = Command::new(apiwatch())
        .args(["record", "--duration", "4", "--out", rec.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (run, record) = (Drained::new(run), Drained::new(record));
    // Both attached (probes loaded, first TLS scan done) before any request is made.
    run.wait_for("apiwatch is watching HTTP traffic");
    record.wait_for("recording to");
    let url = format!("http://127.0.0.1:{}/x.json?q=qv4lue&page=2", server.port);
    for _ in 0..5 {
        curl(&[
            "-o",
            "/dev/null",
            "-H",
            "Authorization: Bearer Sup3rS3cretBearer",
            "-H",
            "Cookie: sid=Ck00kie",
            &url,
        ]);
    }
    curl(&[
        "-o",
        "/dev/null",
        "-d",
        "user=bob&password=hunter22",
        &format!("http://127.0.0.1:{}/login", server.port),
    ]);
    let run: Output = run.wait();
    let record: Output = record.wait();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        record.status.success(),
        "{}",
        String::from_utf8_lossy(&record.stderr)
    );

    let port_suffix = format!(":{}", server.port);
    let ours = |e: &serde_json::Value| {
        ["local", "peer"]
            .iter()
            .any(|f| e[*f].as_str().is_some_and(|a| a.ends_with(&port_suffix)))
    };
    // Each agent sets its clock against the wall clock on its own, so two processes'
    // exchanges closer in time than the difference can swap: order by process and side
    // first, then by time (within one side the order is its events' own).
    let by_ts = |mut v: Vec<serde_json::Value>| {
        v.sort_by_key(|e| {
            (
                e["pid"].as_u64().unwrap_or_default(),
                e["role"].as_str().unwrap_or_default().to_string(),
                e["ts"].as_str().unwrap_or_default().to_string(),
            )
        });
        v
    };
    let live = by_ts(lines(&live_out).into_iter().filter(ours).collect());
    assert_eq!(
        live.len(),
        12,
        "6 requests, seen by the server and by curl: {live:#?}"
    );
    for e in &live {
        for field in [
            "ts",
            "pid",
            "comm",
            "role",
            "local",
            "peer",
            "tls",
            "method",
            "path",
            "query_keys",
            "host",
            "status",
            "req_bytes",
            "resp_bytes",
            "latency_us",
            "auth_scheme",
        ] {
            assert!(e.get(field).is_some(), "field {field} missing in {e}");
        }
    }
    let gets: Vec<_> = live.iter().filter(|e| e["method"] == "GET").collect();
    assert_eq!(gets.len(), 10);
    assert!(
        gets.iter()
            .all(|e| e["auth_scheme"] == "bearer" && e["status"] == 200 && e["path"] == "/x.json")
    );
    assert!(
        gets.iter()
            .all(|e| e["query_keys"] == serde_json::json!(["q", "page"]))
    );
    let post: Vec<_> = live.iter().filter(|e| e["method"] == "POST").collect();
    assert_eq!(post.len(), 2);
    assert!(
        post.iter().all(|e| e["status"] == 501),
        "python's http.server answers POST with 501"
    );

    // The recording replays, without root, to the same exchanges the live run printed.
    let replayed_out = dir.path().join("replayed.jsonl");
    let replay = Command::new(apiwatch())
        .args([
            "replay",
            rec.to_str().unwrap(),
            "--exchanges",
            replayed_out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    // Each agent measures its own clock offset: compare in time order, not by timestamp.
    let replayed = by_ts(lines(&replayed_out).into_iter().filter(ours).collect());
    assert_eq!(replayed.len(), live.len());
    for (l, r) in live.iter().zip(replayed.iter()) {
        for field in [
            "pid",
            "method",
            "path",
            "status",
            "role",
            "local",
            "peer",
            "req_bytes",
            "resp_bytes",
            "auth_scheme",
        ] {
            assert_eq!(l[field], r[field], "{field} differs between live and replay");
        }
    }

    let run_err = String::from_utf8_lossy(&run.stderr);
    let summary = summary_of(&run_err);
    assert!(summary["pipeline"]["exchanges"].as_u64().unwrap() >= 12);
    assert_eq!(
        summary["kernel"]["counters"][1],
        serde_json::json!(["ring_full", 0])
    );
    let recording = std::fs::read(&rec).unwrap();
    let everything = [
        std::fs::read_to_string(&live_out).unwrap(),
        std::fs::read_to_string(&replayed_out).unwrap(),
        run_err.to_string(),
        String::from_utf8_lossy(&record.stderr).to_string(),
        String::from_utf8_lossy(&replay.stderr).to_string(),
    ];
    for s in SECRETS {
        assert!(
            !recording.windows(s.len()).any(|w| w == s.as_bytes()),
            "{s} is in the recording"
        );
        for (i, text) in everything.iter().enumerate() {
            assert!(!text.contains(s), "{s} leaked into output #{i}");
        }
    }
}

#[test]
fn check_reports_every_error_with_its_location() {
    let dir = TempDir::new("check");
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "capture:\n  bytes: 1\n  ring_bytes: 3\nstream:\n  max_connections: 2\n",
    )
    .unwrap();
    let out = Command::new(apiwatch())
        .args(["check", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let b = bad.display();
    for want in [
        format!("{b}:2:3: capture.bytes:"),
        format!("{b}:3:3: capture.ring_bytes:"),
        format!("{b}:5:3: stream.max_connections:"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    let good = dir.path().join("good.yml");
    std::fs::write(&good, "capture:\n  bytes: 1024\n").unwrap();
    let out = Command::new(apiwatch())
        .args(["check", "--config", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A broken file given to `run` stops it before it loads anything, with the same report.
    let out = Command::new(apiwatch())
        .args(["run", "--config", bad.to_str().unwrap(), "--duration", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{b}:2:3: capture.bytes:")));
}

#[test]
fn without_privileges_the_error_says_what_is_needed() {
    require_root();
    // Drop to nobody with no capabilities; the agent must say why it cannot start.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(apiwatch())
        .args(["run", "--duration", "1"])
        .output()
        .expect("setpriv (util-linux)");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "apiwatch lacks CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE in its effective capabilities (effective uid 65534)"
        ),
        "{err}"
    );
}

#[test]
fn check_reports_every_policy_error_and_accepts_the_documented_example() {
    let example = workspace_root().join("deploy/policy/example.yml");
    let out = Command::new(apiwatch())
        .args(["check", "--policy", example.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The deployment example (sinks of every kind, its policy beside it) is accepted too, once
    // the PagerDuty key it reads from the environment is there.
    let config = workspace_root().join("deploy/apiwatch.yml");
    let check = |key: Option<&str>| {
        let mut cmd = Command::new(apiwatch());
        cmd.args(["check", "--config", config.to_str().unwrap()])
            .env_remove("APIWATCH_PAGERDUTY_KEY");
        if let Some(k) = key {
            cmd.env("APIWATCH_PAGERDUTY_KEY", k);
        }
        cmd.output().unwrap()
    };
    let out = check(None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("apiwatch.yml:18:7: alerts.sinks.1.routing_key: environment variable APIWATCH_PAGERDUTY_KEY is not set"),
        "{err}"
    );
    let out = check(Some("0123456789abcdef0123456789abcdef"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let dir = TempDir::new("policy-check");
    let bad = dir.path().join("bad-policy.yml");
    std::fs::write(
        &bad,
        "zones:\n  lan: [10.0.0.0/40]\nservices:\n  - name: a\n    match:\n      port: 80\n    endpoints:\n      - route: /x\n        methods: [GRAB]\n        allowed_sources: [wan]\n",
    )
    .unwrap();
    let out = Command::new(apiwatch())
        .args(["check", "--policy", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let b = bad.display();
    for want in [
        format!("{b}:2:3: zones.lan:"),
        format!("{b}:9:9: services.0.endpoints.0.methods:"),
        format!("{b}:10:9: services.0.endpoints.0.allowed_sources: unknown zone \"wan\""),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn learn_writes_a_policy_draft_that_check_accepts() {
    require_root();
    let nginx = Nginx::start(&[("a.json", b"{}")]);
    let dir = TempDir::new("learn");
    let draft = dir.path().join("draft.yml");
    let learn = Command::new(apiwatch())
        .args(["learn", "--duration", "3", "--out", draft.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..3 {
        curl(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{}/orders/{i}", nginx.port),
        ]);
        curl(&[
            "-o",
            "/dev/null",
            "-H",
            "Authorization: Bearer t",
            &format!("http://127.0.0.1:{}/a.json", nginx.port),
        ]);
    }
    assert!(learn.wait_with_output().unwrap().status.success());
    let text = std::fs::read_to_string(&draft).unwrap();
    assert!(text.contains(&format!("port: {}", nginx.port)), "{text}");
    assert!(text.contains("route: \"/orders/{id}\""), "{text}");
    assert!(text.contains("127.0.0.0/8"), "{text}");
    let out = Command::new(apiwatch())
        .args(["check", "--policy", draft.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_broken_policy_at_start_does_not_stop_the_agent() {
    require_root();
    let dir = TempDir::new("fallback");
    let state = dir.path().join("state");
    let config = dir.path().join("apiwatch.yml");
    std::fs::write(
        &config,
        format!(
            "policy: policy.yml\nstate_dir: {}\nmetrics:\n  listen: \"off\"\n",
            state.display()
        ),
    )
    .unwrap();
    let policy = dir.path().join("policy.yml");
    let run = || {
        Command::new(apiwatch())
            .args([
                "run",
                "--duration",
                "1",
                "--exchanges",
                "/dev/null",
                "--config",
                config.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    // Broken, and no good one seen before: it runs with the built-in detectors and says so.
    std::fs::write(&policy, "services: [ broken").unwrap();
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("only the built-in detectors run"), "{err}");
    assert!(
        err.contains("policy.yml:"),
        "the error is reported with its place: {err}"
    );
    // A good one is kept as the last good policy...
    std::fs::write(&policy, "zones:\n  lan: [\"10.0.0.0/8\"]\n").unwrap();
    assert!(run().status.success());
    assert!(state.join("last-good-policy.yml").exists());
    // ...and used when the file breaks before the next start.
    std::fs::write(&policy, "zones: {lan: [not-an-address]}\n").unwrap();
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("running with the last good one"), "{err}");
}

#[test]
fn backtest_scores_every_row_of_a_csv_history() {
    let dir = TempDir::new("backtest");
    let csv = dir.path().join("history.csv");
    let mut text = String::from("timestamp,value\n");
    // Three weeks of hourly values with a daily cycle, then a spike.
    for h in 0..(21 * 24) {
        let v = if h == 20 * 24 + 10 {
            900.0
        } else {
            100.0 + 50.0 * ((h % 24) as f64 / 24.0 * std::f64::consts::TAU).sin()
        };
        text.push_str(&format!("{},{v:.1}\n", 1_700_000_000 + h * 3600));
    }
    std::fs::write(&csv, text).unwrap();
    let out = Command::new(apiwatch())
        .args(["backtest", "--csv", csv.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(rows[0], "timestamp,value,score,anomaly");
    assert_eq!(rows.len(), 21 * 24 + 1);
    let flagged: Vec<&String> = rows.iter().filter(|r| r.ends_with(",true")).collect();
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert!(flagged[0].starts_with(&format!("{},900.0,", 1_700_000_000 + (20 * 24 + 10) * 3600)));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 anomalous (1 episodes)"));
}

#[test]
fn exchanges_off_writes_none_and_a_restart_appends_to_the_findings() {
    require_root();
    let server = PythonServer::start(&[("x.json", b"{}")]);
    let dir = TempDir::new("append");
    let findings = dir.path().join("findings.jsonl");
    let policy = dir.path().join("policy.yml");
    std::fs::write(&policy, policy_only_from(server.port, "10.0.0.0/8")).unwrap();
    for run in 1..=2 {
        let agent = Command::new(apiwatch())
            .args([
                "run",
                "--duration",
                "3",
                "--metrics-addr",
                "off",
                "--exchanges",
                "off",
            ])
            .args(["--policy", policy.to_str().unwrap()])
            .args(["--findings", findings.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        curl(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{}/x.json", server.port),
        ]);
        let out = agent.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "no exchange lines with --exchanges off");
        let summary = summary_of(&String::from_utf8_lossy(&out.stderr));
        assert!(
            summary["pipeline"]["exchanges"].as_u64().unwrap() >= 1,
            "still reconstructed"
        );
        let seen = lines(&findings)
            .iter()
            .filter(|f| f["kind"] == "source_outside_boundary")
            .count();
        assert_eq!(seen, run, "run {run} appends to what run {} wrote", run - 1);
    }
}

#[test]
fn sighup_reloads_the_policy_even_when_its_mtime_did_not_change() {
    require_root();
    let server = PythonServer::start(&[("x.json", b"{}")]);
    let dir = TempDir::new("sighup");
    let findings = dir.path().join("findings.jsonl");
    let policy = dir.path().join("policy.yml");
    let zone = |cidr: &str| policy_only_from(server.port, cidr);
    std::fs::write(&policy, zone("127.0.0.0/8")).unwrap(); // loopback allowed
    let agent = start_agent_binary(
        free_port(),
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--findings",
            findings.to_str().unwrap(),
        ],
    );
    let outside = || {
        curl(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{}/x.json", server.port),
        ]);
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::read_to_string(&findings)
            .unwrap_or_default()
            .matches("source_outside_boundary")
            .count()
    };
    assert_eq!(outside(), 0, "loopback is allowed");
    // Loopback leaves the zone, but the file keeps its old mtime (written aside, given the old
    // mtime, renamed over): the watcher sees no change.
    let next = dir.path().join("next.yml");
    std::fs::write(&next, zone("10.0.0.0/8")).unwrap();
    let status = Command::new("touch")
        .args(["-r", policy.to_str().unwrap(), next.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::rename(&next, &policy).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(outside(), 0, "not reloaded without a signal");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(outside(), 1, "SIGHUP reloaded the policy");
}

#[test]
fn test_alerts_reaches_every_sink_and_says_which_did_not_take_it() {
    let good = Receiver::start(vec![Reply::status(202)]);
    let wrong = Receiver::start(vec![Reply::status(404)]);
    let dir = TempDir::new("test-alerts");
    let lines = dir.path().join("alerts.jsonl");
    let config = dir.path().join("apiwatch.yml");
    std::fs::write(
        &config,
        format!(
            "alerts:\n  sinks:\n    - {{type: pagerduty, url: \"{}\", routing_key: k, min_severity: critical}}\n    - {{type: webhook, name: typo, url: \"{}\"}}\n    - {{type: file, path: \"{}\"}}\n",
            good.url("/v2/enqueue"),
            wrong.url("/wrong-path"),
            lines.display()
        ),
    )
    .unwrap();
    let out = Command::new(apiwatch())
        .args(["test-alerts", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "one sink refused: exit 1");
    assert!(
        text.contains("pagerduty (pagerduty): firing delivered, resolved delivered"),
        "{text}"
    );
    assert!(
        text.contains("typo (webhook): firing rejected (HTTP 404"),
        "{text}"
    );
    assert!(
        text.contains("file (file): firing delivered, resolved delivered"),
        "{text}"
    );
    // Routes are bypassed (min_severity: critical, the test alert is info): it still arrives.
    let actions: Vec<String> = good
        .received()
        .iter()
        .map(|q| q.json()["event_action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["trigger", "resolve"]);
    let file = std::fs::read_to_string(&lines).unwrap();
    assert_eq!(file.matches("ApiwatchTestAlert").count(), 2);
}

/// A full disk on --exchanges is not silent: the first error is logged with its cause, every
/// lost line counted in the summary (and in apiwatch_output_write_errors_total live).
#[test]
fn exchange_lines_that_cannot_be_written_are_counted_and_logged() {
    let rec = workspace_root().join("tests/fixtures/loopback.rec");
    let out = Command::new(apiwatch_bin())
        .args(["replay", rec.to_str().unwrap()])
        .args(["--exchanges", "/dev/full", "--findings", "off"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot write JSON lines (No space left on device"),
        "{err}"
    );
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("apiwatch summary "))
        .expect("a summary line");
    let summary: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(
        summary["pipeline"]["output_write_errors"].as_u64().unwrap() > 0,
        "{summary}"
    );
}

/// The shipped unit is hardened: systemd's own exposure score, offline, at most 3.5 (it was 7.7).
#[test]
fn the_systemd_unit_scores_at_most_3_5_exposed() {
    let unit = workspace_root().join("deploy/systemd/apiwatch.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian's systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for apiwatch.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(score <= 3.5, "exposure {score}:\n{text}");
}
