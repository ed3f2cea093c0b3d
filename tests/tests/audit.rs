//! Audit tier (root): the trail written by the real agent from real traffic, verified and
//! queried with the `apiwatch audit` commands, tampering caught, no secret in any segment; and
//! a disk that fills up (a small tmpfs) holds records until space returns, losing none.
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use apiwatch_tests::*;
use monitor::audit::{AuditLog, AuditMetrics, AuditOptions};

const SECRETS: &[&str] = &[
    "Sup3rS3cretBearer",
    "qv4lue",
    "Ck00kie",
    "hunter22",
    "alice@example.com",
];

fn apiwatch(args: &[&str]) -> std::process::Output {
    Command::new(apiwatch_bin()).args(args).output().unwrap()
}

/// Every line of every segment (closed ones are gzip).
fn trail_text(dir: &Path) -> String {
    let mut text = String::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".jsonl.gz") {
            flate2::read::MultiGzDecoder::new(std::fs::File::open(&p).unwrap())
                .read_to_string(&mut text)
                .unwrap();
        } else if name.ends_with(".jsonl") {
            text.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    text
}

#[test]
fn the_agent_keeps_a_trail_that_verifies_answers_queries_and_shows_tampering() {
    require_root();
    let server = PythonServer::start(&[("x.json", b"{}")]);
    let dir = TempDir::new("audit-system");
    let audit = dir.path().join("audit");
    let config = dir.path().join("apiwatch.yml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\naudit:\n  enabled: true\n  dir: {}\n  include_paths: true\n  segment_max_bytes: 4096\n",
            dir.path().display(),
            audit.display()
        ),
    )
    .unwrap();
    let log_path = dir.path().join("agent.log");
    let run = Proc(
        Command::new(apiwatch_bin())
            .args(["run", "--exchanges", "off", "--findings", "off"])
            .args(["--config", config.to_str().unwrap(), "--metrics-addr", "off"])
            .args(capture_mode_args())
            .env("RUST_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("apiwatch is watching HTTP traffic")
    {
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!("http://127.0.0.1:{}", server.port);
    for i in 0..20 {
        curl(&[
            "-o",
            "/dev/null",
            "-H",
            "Authorization: Bearer Sup3rS3cretBearer",
            "-H",
            "Cookie: sid=Ck00kie",
            &format!("{base}/x.json?q=qv4lue&page={i}"),
        ]);
    }
    curl(&["-o", "/dev/null", &format!("{base}/reset/alice@example.com")]);
    curl(&[
        "-o",
        "/dev/null",
        "-d",
        "user=bob&password=hunter22",
        &format!("{base}/login"),
    ]);
    // A stop drains what the kernel wrote and writes what the trail was handed.
    let mut run = run;
    Command::new("kill")
        .args(["-TERM", &run.pid().to_string()])
        .status()
        .unwrap();
    let status = run.0.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{log}");

    let verify = apiwatch(&["audit", "verify", audit.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&verify.stdout).to_string();
    assert!(verify.status.success(), "{report}");
    assert!(report.starts_with("ok: "), "{report}");
    let segments = std::fs::read_dir(&audit).unwrap().count();
    assert!(segments >= 2, "4 KiB segments rotate: {segments} segment(s)");

    // Who accessed /x.json with the bearer token: the 20 requests, server side, one identity.
    let port = server.port.to_string();
    let query = apiwatch(&[
        "audit",
        "query",
        audit.to_str().unwrap(),
        "--since",
        "10m",
        "--route",
        "/x.json",
    ]);
    assert!(query.status.success());
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&query.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["service"].as_str().is_some_and(|s| s.ends_with(&port)))
        .collect();
    assert_eq!(records.len(), 20, "{records:#?}");
    let identity = records[0]["identity"]
        .as_str()
        .expect("a fingerprint")
        .to_string();
    assert!(records.iter().all(|r| r["identity"] == identity.as_str()
        && r["auth"] == "bearer"
        && r["method"] == "GET"
        && r["status"] == 200
        && r["source"] == "127.0.0.1"
        && r["path"] == "/x.json"));
    let by_identity = apiwatch(&["audit", "query", audit.to_str().unwrap(), "--identity", &identity]);
    assert_eq!(String::from_utf8_lossy(&by_identity.stdout).lines().count(), 20);
    let future = apiwatch(&[
        "audit",
        "query",
        audit.to_str().unwrap(),
        "--since",
        "2100-01-01T00:00:00Z",
    ]);
    assert_eq!(future.stdout, b"");

    // Nothing secret in any segment, nor in the trace-level log.
    let text = trail_text(&audit);
    assert!(text.contains("\"route\":\"/login\""), "the POST is in the trail");
    for s in SECRETS {
        assert!(!text.contains(s), "{s} is in the audit trail");
        assert!(!log.contains(s), "{s} is in the log");
    }

    // An edited record in an archived (gzip) segment: verify names the file and line, and fails.
    let first = audit.join("audit-00000000.jsonl.gz");
    let mut original = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(&first).unwrap())
        .read_to_string(&mut original)
        .unwrap();
    let victim = original
        .lines()
        .position(|l| l.contains("\"status\":200"))
        .expect("an exchange in the first segment");
    let edited: Vec<String> = original
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == victim {
                l.replace("\"status\":200", "\"status\":404")
            } else {
                l.to_string()
            }
        })
        .collect();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&first).unwrap(),
        flate2::Compression::default(),
    );
    std::io::Write::write_all(&mut gz, (edited.join("\n") + "\n").as_bytes()).unwrap();
    gz.finish().unwrap();
    let verify = apiwatch(&["audit", "verify", audit.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&verify.stdout).to_string();
    assert_eq!(verify.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!("{}:{}: hash mismatch", first.display(), victim + 1)),
        "{report}"
    );
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_full_disk_holds_audit_records_and_loses_none_when_space_returns() {
    require_root();
    let dir = TempDir::new("audit-full");
    let fs = Tmpfs::mount(&dir.path().join("fs"), "512k");
    let opts = AuditOptions {
        dir: fs.0.join("audit"),
        ..AuditOptions::default()
    };
    let metrics = AuditMetrics::default();
    let mut log = AuditLog::start(opts.clone(), metrics.clone()).unwrap();
    let mut ex = monitor::exchange::Exchange::example();
    ex.service = "nginx:8080".into();
    ex.route = "/users/{id}".into();
    let mut send = |log: &mut AuditLog, n: u64| {
        for _ in 0..n {
            ex.ts += 1_000_000;
            log.record(&ex, vec![], vec![]);
        }
        log.end_batch();
    };
    send(&mut log, 100);
    wait_until("the first records", 10, || metrics.records.get() == 100);
    // Fill the file system.
    let filler = fs.0.join("filler");
    fill(&filler);
    for _ in 0..10 {
        send(&mut log, 50);
    }
    wait_until("the write failure", 10, || metrics.failing.get() == 1);
    assert!(metrics.write_errors.get() >= 1);
    assert!(
        log.health.failing_since().is_some(),
        "what ApiwatchAuditWriteFailing is raised from"
    );
    assert_eq!(metrics.records.get(), 100, "nothing more reached the disk");
    // Space returns: everything held is written, in order, and the chain is whole.
    std::fs::remove_file(&filler).unwrap();
    wait_until("the held records", 10, || metrics.records.get() == 600);
    assert_eq!(metrics.failing.get(), 0);
    assert!(log.health.failing_since().is_none());
    log.finish();
    let r = monitor::audit::verify::verify(&opts.dir).unwrap();
    assert_eq!(r.broken, None, "{r}");
    assert_eq!((r.exchanges, r.reported_lost), (600, 0), "{r}");
    assert_eq!(metrics.dropped.with_label_values(&["disk"]).get(), 0);
}

#[test]
fn a_disk_full_for_longer_than_the_memory_bound_records_the_gap() {
    require_root();
    let dir = TempDir::new("audit-gap");
    let fs = Tmpfs::mount(&dir.path().join("fs"), "512k");
    let opts = AuditOptions {
        dir: fs.0.join("audit"),
        max_pending: 200,
        ..AuditOptions::default()
    };
    let metrics = AuditMetrics::default();
    let mut log = AuditLog::start(opts.clone(), metrics.clone()).unwrap();
    let mut ex = monitor::exchange::Exchange::example();
    let filler = fs.0.join("filler");
    fill(&filler);
    for _ in 0..10 {
        for _ in 0..100 {
            ex.ts += 1_000_000;
            log.record(&ex, vec![], vec![]);
        }
        log.end_batch();
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until("the drops", 10, || {
        metrics.dropped.with_label_values(&["disk"]).get() == 800
    });
    std::fs::remove_file(&filler).unwrap();
    wait_until("the held records", 10, || metrics.records.get() == 200);
    log.finish();
    let r = monitor::audit::verify::verify(&opts.dir).unwrap();
    assert_eq!(r.broken, None, "{r}");
    assert_eq!(
        (r.exchanges, r.reported_lost),
        (200, 800),
        "the trail says what it lost: {r}"
    );
}
