//! Alerts tier (root): findings from real traffic become alerts in a real Alertmanager (Debian's
//! prometheus-alertmanager on loopback), resolve on their own, and survive Alertmanager being down.
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiwatch_tests::*;
use monitor::agent::AgentOptions;
use monitor::alert::{AlertMetrics, AlertOptions, Sinks, Spool};
use monitor::boundary::Policy;
use monitor::config::SinkSpec;

/// One Alertmanager sink, its spool in `state_dir/alerts/am.spool`, delivering now.
fn alertmanager_sink(port: u16, state_dir: &Path) -> Sinks {
    let spec = SinkSpec {
        kind: "alertmanager".into(),
        name: Some("am".into()),
        url: Some(format!("http://127.0.0.1:{port}")),
        ..SinkSpec::default()
    };
    Sinks::start(&[spec], 1000, state_dir, &AlertMetrics::default()).unwrap()
}

fn pending(sinks: &Sinks) -> usize {
    sinks.queues[0].spool.lock().unwrap().len()
}

fn policy(port: u16) -> Policy {
    // Loopback is outside the only zone: every request crosses the boundary.
    Policy::parse(
        "test",
        &format!("zones:\n  corp: [\"10.0.0.0/8\"]\nservices:\n  - name: shop\n    match:\n      port: {port}\n    undeclared: allow\n    defaults:\n      allowed_sources: [corp]\n"),
    )
    .unwrap()
}

fn wait_until(secs: u64, what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn ours(am: &Alertmanager) -> Vec<serde_json::Value> {
    am.alerts()
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == "source_outside_boundary" && a["labels"]["rule"] == "shop")
        .collect()
}

#[test]
fn a_real_violation_alerts_alertmanager_and_resolves() {
    let nginx = Nginx::start(&[("a.json", b"{}")]);
    let am = Alertmanager::start_on(free_port());
    let dir = TempDir::new("alerts");
    let sinks = alertmanager_sink(am.port, dir.path());
    let agent = Agent::start_with(AgentOptions {
        policy: Some(Arc::new(policy(nginx.port))),
        alerts: Some((
            AlertOptions {
                resolve_after_ns: 3_000_000_000,
                ..AlertOptions::default()
            },
            sinks.queues.clone(),
        )),
        ..AgentOptions::default()
    });
    for _ in 0..20 {
        curl(&[
            "-o",
            "/dev/null",
            "-H",
            "Authorization: Bearer alert-s3cret-T0KEN",
            &format!("http://127.0.0.1:{}/a.json?password=alert-pa55", nginx.port),
        ]);
    }
    wait_until(15, "the alert in Alertmanager", || ours(&am).len() == 1);
    let alert = &ours(&am)[0];
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["service"], format!("nginx:{}", nginx.port));
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1")
    );
    let raw = serde_json::to_string(&am.alerts()).unwrap();
    assert!(
        !raw.contains("alert-s3cret-T0KEN") && !raw.contains("alert-pa55"),
        "a secret reached Alertmanager: {raw}"
    );
    // 20 violations, one alert: deduplicated.
    assert_eq!(ours(&am).len(), 1);
    // No recurrence for resolve_after: resolved, and Alertmanager no longer holds it active.
    wait_until(20, "the alert to resolve", || ours(&am).is_empty());
    let (_, findings, _) = agent.stop_all();
    assert_eq!(
        findings
            .iter()
            .filter(|f| f.kind == "source_outside_boundary")
            .count(),
        20
    );
    wait_until(5, "the spool to empty", || pending(&sinks) == 0);
}

#[test]
fn an_alert_raised_while_alertmanager_is_down_arrives_when_it_starts() {
    let nginx = Nginx::start(&[("a.json", b"{}")]);
    let am_port = free_port();
    let dir = TempDir::new("alerts-down");
    let spool_path = dir.path().join("alerts/am.spool");
    let sinks = alertmanager_sink(am_port, dir.path());
    let agent = Agent::start_with(AgentOptions {
        policy: Some(Arc::new(policy(nginx.port))),
        alerts: Some((AlertOptions::default(), sinks.queues.clone())),
        ..AgentOptions::default()
    });
    curl(&[
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{}/a.json", nginx.port),
    ]);
    let _ = agent.stop_all();
    wait_until(5, "the alert in the spool", || pending(&sinks) == 1);
    // The agent stops with the alert undelivered; the spool on disk keeps it.
    drop(sinks);
    std::thread::sleep(Duration::from_secs(1));
    // A new agent process reopens the spool; Alertmanager starts later; it arrives, once.
    let sinks = alertmanager_sink(am_port, dir.path());
    assert_eq!(pending(&sinks), 1, "the undelivered alert is still on disk");
    std::thread::sleep(Duration::from_secs(2));
    let am = Alertmanager::start_on(am_port);
    wait_until(40, "the alert in Alertmanager", || ours(&am).len() == 1);
    wait_until(5, "the spool to empty", || pending(&sinks) == 0);
    drop(sinks);
    assert!(
        Spool::open(&spool_path, 1000).unwrap().is_empty(),
        "acknowledged: never sent again"
    );
}

#[test]
fn queued_alerts_survive_sigkill_of_the_agent_and_arrive_once() {
    let nginx = Nginx::start(&[("a.json", b"{}")]);
    let am_port = free_port();
    let dir = TempDir::new("alerts-kill");
    let policy_file = dir.path().join("policy.yml");
    std::fs::write(
        &policy_file,
        format!("zones:\n  corp: [\"10.0.0.0/8\"]\nservices:\n  - name: shop\n    match:\n      port: {}\n    undeclared: allow\n    defaults:\n      allowed_sources: [corp]\n", nginx.port),
    )
    .unwrap();
    let config = dir.path().join("apiwatch.yml");
    std::fs::write(
        &config,
        format!(
            "policy: policy.yml\nstate_dir: {}\nmetrics:\n  listen: \"off\"\nalerts:\n  sinks:\n    - type: alertmanager\n      url: \"http://127.0.0.1:{am_port}\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let start = || {
        std::process::Command::new(apiwatch_bin())
            .args([
                "run",
                "--exchanges",
                "/dev/null",
                "--findings",
                "/dev/null",
                "--config",
                config.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // Alertmanager is down: the alert can only be queued.
    let mut first = start();
    std::thread::sleep(Duration::from_secs(3));
    curl(&[
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{}/a.json", nginx.port),
    ]);
    let spool = dir.path().join("state/alerts/alertmanager.spool");
    wait_until(10, "the alert on disk", || {
        std::fs::metadata(&spool).map(|m| m.len() > 0).unwrap_or(false)
    });
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGKILL) };
    let _ = first.wait();

    let am = Alertmanager::start_on(am_port);
    let second = Proc(start());
    wait_until(30, "the queued alert in Alertmanager", || ours(&am).len() == 1);
    std::thread::sleep(Duration::from_secs(1));
    drop(second); // SIGTERM: a clean stop
    // Alertmanager itself merges duplicates, so "once" is checked where it is decided: the
    // delivered alert was acknowledged in the spool, and no restart will send it again.
    assert!(
        Spool::open(&spool, 1000).unwrap().is_empty(),
        "delivered and acknowledged"
    );
}
