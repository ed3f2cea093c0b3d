//! Baseline tier (root): real traffic through real probes; the live detector learns it, reports a
//! burst and a wave of 401s, resolves them, and keeps what it learnt across a restart.
use std::process::Command;
use std::time::{Duration, Instant};

use apiwatch_tests::*;
use monitor::agent::AgentOptions;
use monitor::baseline::DetectorConfig;
use monitor::baseline::live::BaselineOptions;
use monitor::finding::{Finding, Lifecycle};

const LOCATIONS: &str = r#"
    location /api/items { if ($http_authorization = "") { return 401; } return 200 '{"items":[]}'; }
"#;

fn options(state: &std::path::Path) -> AgentOptions {
    AgentOptions {
        baselines: Some(BaselineOptions {
            window_secs: 1,
            detector: DetectorConfig {
                season_buckets: 1,
                warmup: 8,
                // Episodes here are seconds apart on 1-second windows: a cool-down of 5 windows
                // (the default, 120 windows, is for the 60-second windows of a real deployment).
                cooldown: 5,
                ..DetectorConfig::default()
            },
            min_requests: 5,
            state_file: Some(state.join("baselines.json")),
            ..BaselineOptions::default()
        }),
        ..AgentOptions::default()
    }
}

/// About 20 authorised requests a second for `secs`, plus `unauthorised` per batch without a
/// credential.
fn steady(url: &str, secs: u64, unauthorised: usize) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let mut args = vec!["-s".to_string()];
        for _ in 0..5 {
            args.extend([
                "-o".into(),
                "/dev/null".into(),
                "-H".into(),
                "Authorization: Bearer t".into(),
                url.into(),
            ]);
        }
        Command::new("curl").args(&args).status().unwrap();
        for _ in 0..unauthorised {
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", url])
                .status()
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Steady traffic until the route is quiet: every alarm on it resolved and no transition for
/// longer than the cool-down (5 windows), so the state saved at shutdown is not mid-episode.
/// A burst pulls a young series' mean up and the steady rate after it can look low for a while:
/// how long that lasts depends on the burst's size, so the wait is bounded, not fixed. A series
/// saved while firing (or cooling down) rightly raises nothing new on the next burst.
fn steady_until_quiet(agent: &Agent, url: &str) {
    let (mut seen, mut still) = (usize::MAX, 0);
    for _ in 0..40 {
        steady(url, 1, 0);
        let findings = agent.findings.snapshot();
        let on_route: Vec<&Finding> = findings.iter().filter(|f| f.route == "/api/items").collect();
        let firing = ["rate_anomaly", "auth_failure_anomaly"].iter().any(|k| {
            on_route
                .iter()
                .rev()
                .find(|f| f.kind == *k)
                .is_some_and(|f| f.state == Some(Lifecycle::Firing))
        });
        still = if on_route.len() == seen { still + 1 } else { 0 };
        seen = on_route.len();
        if !firing && still >= 6 {
            return;
        }
    }
    panic!("the route never went quiet: {:#?}", agent.findings.snapshot());
}

fn kinds(f: &[Finding], state: Lifecycle) -> Vec<&'static str> {
    f.iter()
        .filter(|x| x.state == Some(state) && x.route == "/api/items")
        .map(|x| x.kind.as_str())
        .collect()
}

#[test]
fn burst_and_auth_failures_fire_and_resolve_and_a_restart_keeps_the_baseline() {
    let nginx = Nginx::start_with(&[], LOCATIONS);
    let url = format!("http://127.0.0.1:{}/api/items", nginx.port);
    let state = TempDir::new("baselines");

    let agent = Agent::start_with(options(state.path()));
    steady(&url, 12, 0);
    // A client bursts: wrk for two seconds.
    let out = Command::new("wrk")
        .args(["-t1", "-c4", "-d2s", "-H", "Authorization: Bearer t", &url])
        .output()
        .unwrap();
    assert!(out.status.success());
    steady(&url, 6, 0);
    // A credential-stuffing-like wave: most requests now fail with 401.
    steady(&url, 3, 8);
    steady_until_quiet(&agent, &url);
    let (_, findings, summary) = agent.stop_all();
    let fired = kinds(&findings, Lifecycle::Firing);
    let resolved = kinds(&findings, Lifecycle::Resolved);
    assert!(fired.contains(&"rate_anomaly"), "{findings:#?}");
    assert!(resolved.contains(&"rate_anomaly"), "{findings:#?}");
    assert!(fired.contains(&"auth_failure_anomaly"), "{findings:#?}");
    assert!(resolved.contains(&"auth_failure_anomaly"), "{findings:#?}");
    let burst = findings
        .iter()
        .find(|f| f.kind == "rate_anomaly" && f.state == Some(Lifecycle::Firing))
        .unwrap();
    assert!(
        burst.evidence.contains("expected"),
        "the finding explains itself: {}",
        burst.evidence
    );
    assert!(summary.pipeline.findings >= 4);
    assert!(
        state.path().join("baselines.json").exists(),
        "state is saved at shutdown"
    );

    // Restarted, the agent is not back in warm-up: a burst right away is reported.
    let agent = Agent::start_with(options(state.path()));
    steady(&url, 2, 0);
    let out = Command::new("wrk")
        .args(["-t1", "-c4", "-d2s", "-H", "Authorization: Bearer t", &url])
        .output()
        .unwrap();
    assert!(out.status.success());
    steady(&url, 1, 0);
    let (_, findings, _) = agent.stop_all();
    assert!(
        kinds(&findings, Lifecycle::Firing).contains(&"rate_anomaly"),
        "no warm-up after a restart: {findings:#?}"
    );
}
