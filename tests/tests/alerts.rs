//! Alerts tier (root): findings from real traffic become alerts in a real Alertmanager (Debian's
//! prometheus-alertmanager on loopback), resolve on their own, and survive Alertmanager being down.
use std::path::{Path, PathBuf};
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
    Policy::parse("test", &policy_only_from(port, "10.0.0.0/8")).unwrap()
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
    // deploy/alertmanager/alertmanager.yml, which this Alertmanager runs, pages for critical.
    assert_eq!(alert["receivers"][0]["name"], "pager", "{alert}");
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
            .filter(|f| f.kind == monitor::finding::FindingKind::SourceOutsideBoundary)
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
    let nginx = Nginx::start(&[("a.json", b"{}"), ("b.json", b"{}")]);
    let am_port = free_port();
    let hook_port = free_port();
    let dir = TempDir::new("alerts-kill");
    let policy_file = dir.path().join("policy.yml");
    std::fs::write(&policy_file, policy_only_from(nginx.port, "10.0.0.0/8")).unwrap();
    let config = dir.path().join("apiwatch.yml");
    std::fs::write(
        &config,
        format!(
            "policy: policy.yml\nstate_dir: {}\nmetrics:\n  listen: \"off\"\nalerts:\n  sinks:\n    - type: alertmanager\n      url: \"http://127.0.0.1:{am_port}\"\n    - type: webhook\n      url: \"http://127.0.0.1:{hook_port}/hook\"\n",
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
            .args(capture_mode_args())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // Alertmanager is down: the alert can only be queued.
    let mut first = start();
    std::thread::sleep(Duration::from_secs(3));
    for f in ["a", "b"] {
        curl(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{}/{f}.json", nginx.port),
        ]);
    }
    let spool = dir.path().join("state/alerts/alertmanager.spool");
    let hook_spool = dir.path().join("state/alerts/webhook.spool");
    wait_until(10, "the alerts on disk", || {
        [&spool, &hook_spool]
            .iter()
            .all(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
    });
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGKILL) };
    let _ = first.wait();

    let am = Alertmanager::start_on(am_port);
    let hook = Receiver::start_on(hook_port, vec![Reply::status(200)]);
    let second = Proc(start());
    wait_until(30, "the queued alerts in Alertmanager", || ours(&am).len() == 2);
    let firing = || -> Vec<String> {
        hook.received()
            .iter()
            .filter(|q| q.accepted())
            .flat_map(|q| q.json()["alerts"].as_array().unwrap().clone())
            .map(|a| {
                format!(
                    "{} {}",
                    a["labels"]["route"].as_str().unwrap(),
                    a["status"].as_str().unwrap()
                )
            })
            .collect()
    };
    wait_until(30, "the queued alerts at the webhook", || firing().len() >= 2);
    std::thread::sleep(Duration::from_secs(2));
    drop(second); // SIGTERM: a clean stop
    // The webhook counts what arrived: each alert exactly once, across the kill and the restart.
    let mut got = firing();
    got.sort();
    assert_eq!(got, ["/a.json firing", "/b.json firing"]);
    // Alertmanager merges duplicates itself, so there "once" is checked where it is decided:
    // delivered alerts are acknowledged in the spool, and no restart sends them again.
    for p in [&spool, &hook_spool] {
        assert!(
            Spool::open(p, 1000).unwrap().is_empty(),
            "delivered and acknowledged: {}",
            p.display()
        );
    }
}

const BEARER: &str = "alert-s3cret-T0KEN";
const PASSWORD: &str = "alert-pa55";
const ROUTING_KEY: &str = "R0UTINGKEYSECRET0123456789abcdef";
const SLACK_TOKEN: &str = "SLACKSECRETTOKEN42";
const WEBHOOK_SECRET: &str = "whsec-TEST-SECRET-77";

/// A policy file for `port` that loopback callers violate, and a config with `alerts`.
fn write_config(dir: &Path, port: u16, alerts: &str) -> PathBuf {
    std::fs::write(dir.join("policy.yml"), policy_only_from(port, "10.0.0.0/8")).unwrap();
    let config = dir.join("apiwatch.yml");
    std::fs::write(
        &config,
        format!(
            "policy: policy.yml\nstate_dir: {}\nbaselines:\n  enabled: false\nalerts:\n{alerts}",
            dir.join("state").display()
        ),
    )
    .unwrap();
    config
}

fn metric(metrics_port: u16, series: &str) -> f64 {
    let text = curl(&["-s", &format!("http://127.0.0.1:{metrics_port}/metrics")]);
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in /metrics"))
}

/// PagerDuty requests for the boundary alert, with their event_action.
fn pd_events(r: &Receiver) -> Vec<(String, Received)> {
    r.received()
        .into_iter()
        .map(|q| (q.json()["event_action"].as_str().unwrap_or("").to_string(), q))
        .collect()
}

#[test]
fn pagerduty_slack_webhook_and_file_sinks_get_their_alerts_through_failures() {
    let nginx = Nginx::start(&[("a.json", b"{}")]);
    let dir = TempDir::new("alerts-sinks");
    let timeout = Reply {
        status: 504,
        delay: Duration::from_secs(3),
        retry_after: None,
    };
    let throttled = Reply {
        status: 429,
        delay: Duration::ZERO,
        retry_after: Some(1),
    };
    let pd = Receiver::start(vec![
        throttled,
        Reply::status(500),
        timeout.clone(),
        Reply::status(202),
    ]);
    let pd_bad = Receiver::start(vec![Reply::status(400)]);
    let slack = Receiver::start(vec![timeout, Reply::status(200)]);
    let hook = Receiver::start(vec![Reply::status(500), Reply::status(200)]);
    let lines = dir.path().join("alerts.jsonl");
    // pd-bad reads its routing key from a file (the config holds "file:PATH").
    let key_file = dir.path().join("pd.key");
    std::fs::write(&key_file, format!("{ROUTING_KEY}\n")).unwrap();
    let alerts = format!(
        "  resolve_after_secs: 3\n  sink_failing_after_secs: 1\n  sinks:\n\
         \x20   - {{type: pagerduty, name: pd, url: \"{}\", routing_key: \"{ROUTING_KEY}\", min_severity: critical, timeout_secs: 1}}\n\
         \x20   - {{type: pagerduty, name: pd-bad, url: \"{}\", routing_key: \"file:{}\", min_severity: critical}}\n\
         \x20   - {{type: slack, webhook_url: \"{}\", kinds: [source_outside_boundary, secret_in_url], timeout_secs: 1}}\n\
         \x20   - {{type: webhook, name: hook, url: \"{}\", secret: \"{WEBHOOK_SECRET}\"}}\n\
         \x20   - {{type: file, path: \"{}\"}}\n",
        pd.url("/v2/enqueue"),
        pd_bad.url("/v2/enqueue"),
        key_file.display(),
        slack.url(&format!("/services/T000/B000/{SLACK_TOKEN}")),
        hook.url("/apiwatch"),
        lines.display()
    );
    let config = write_config(dir.path(), nginx.port, &alerts);
    let metrics_port = free_port();
    let log = dir.path().join("agent.log");
    let agent = start_agent_binary_logged(
        metrics_port,
        &["--config", config.to_str().unwrap(), "--findings", "/dev/null"],
        Some(&log),
    );
    for _ in 0..10 {
        curl(&[
            "-o",
            "/dev/null",
            "-H",
            &format!("Authorization: Bearer {BEARER}"),
            &format!("http://127.0.0.1:{}/a.json?password={PASSWORD}", nginx.port),
        ]);
    }
    // PagerDuty: throttled, failing, timing out, then taking it; then the resolve.
    wait_until(40, "PagerDuty to take the trigger and the resolve", || {
        let ev = pd_events(&pd);
        ev.iter().any(|(a, q)| a == "resolve" && q.accepted())
    });
    // Everyone else has had time to resolve too (and pd-bad to show it retries nothing).
    wait_until(20, "the file sink to see both resolutions", || {
        let text = std::fs::read_to_string(&lines).unwrap_or_default();
        text.matches("\"status\":\"resolved\"").count() >= 2
    });
    std::thread::sleep(Duration::from_secs(2));

    // --- PagerDuty ---
    let pd_schema = schema("tests/fixtures/schemas/pagerduty-events-v2.schema.json");
    let ev = pd_events(&pd);
    for (_, q) in &ev {
        assert_valid(&pd_schema, &q.json(), "a PagerDuty event");
        assert_eq!(q.json()["routing_key"], ROUTING_KEY);
        assert_eq!(q.path, "/v2/enqueue");
    }
    let triggers: Vec<&Received> = ev
        .iter()
        .filter(|(a, _)| a == "trigger")
        .map(|(_, q)| q)
        .collect();
    let answers: Vec<u16> = triggers.iter().map(|q| q.answered).collect();
    assert_eq!(
        answers,
        [429, 500, 504, 202],
        "retried through 429, 500 and a timeout, then taken once"
    );
    assert!(
        triggers[1].at.duration_since(triggers[0].at) >= Duration::from_millis(950),
        "Retry-After: 1 was honoured"
    );
    let resolves: Vec<&Received> = ev
        .iter()
        .filter(|(a, _)| a == "resolve")
        .map(|(_, q)| q)
        .collect();
    assert_eq!(resolves.len(), 1, "resolved once");
    assert_eq!(triggers[3].json()["dedup_key"], resolves[0].json()["dedup_key"]);
    let trigger = triggers[3].json();
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["class"], "source_outside_boundary");
    assert_eq!(trigger["payload"]["component"], format!("nginx:{}", nginx.port));
    // min_severity: critical kept the (high) secret_in_url alert away.
    assert!(ev.iter().all(|(_, q)| !q.body.contains("secret_in_url")));

    // --- PagerDuty answering 400: each event tried once, never again ---
    let bad = pd_bad.received();
    let actions: Vec<String> = bad
        .iter()
        .map(|q| q.json()["event_action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["trigger", "resolve"], "400 is not retried");
    assert!(
        bad.iter().all(|q| q.json()["routing_key"] == ROUTING_KEY),
        "key read from its file"
    );
    assert_eq!(
        metric(
            metrics_port,
            "apiwatch_alert_notifications_total{outcome=\"rejected\",sink=\"pd-bad\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            metrics_port,
            "apiwatch_alert_notifications_total{outcome=\"failed\",sink=\"pd\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            metrics_port,
            "apiwatch_alert_notifications_total{outcome=\"delivered\",sink=\"pd\"}"
        ),
        2.0
    );

    // --- Slack ---
    let slack_schema = schema("tests/fixtures/schemas/slack-incoming-webhook.schema.json");
    let msgs = slack.received();
    for q in &msgs {
        assert_valid(&slack_schema, &q.json(), "a Slack message");
        assert_eq!(q.path, format!("/services/T000/B000/{SLACK_TOKEN}"));
    }
    assert_eq!(msgs[0].answered, 504, "the first message timed out");
    let taken: String = msgs
        .iter()
        .filter(|q| q.accepted())
        .map(|q| q.body.clone())
        .collect();
    for (what, n) in [
        ("[FIRING] source_outside_boundary", 1),
        ("[RESOLVED] source_outside_boundary", 1),
        ("[FIRING] secret_in_url", 1),
        ("[RESOLVED] secret_in_url", 1),
    ] {
        // Each appears in the fallback text and in its section: twice per message.
        assert_eq!(taken.matches(what).count(), 2 * n, "{what} in {taken}");
    }
    assert!(
        !taken.contains("Apiwatch"),
        "kinds: self-alerts are not routed to Slack"
    );

    // --- Webhook: signed, schema-valid, retried after a 500 ---
    let hook_schema = schema("docs/schemas/alert-webhook.schema.json");
    let posts = hook.received();
    assert_eq!(posts[0].answered, 500);
    let mut hook_alerts = Vec::new();
    for q in &posts {
        let doc = q.json();
        assert_valid(&hook_schema, &doc, "a webhook body");
        let ts: u64 = q.header("X-Apiwatch-Timestamp").unwrap().parse().unwrap();
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
        hmac::Mac::update(&mut mac, format!("{ts}.{}", q.body).as_bytes());
        let hex: String = hmac::Mac::finalize(mac)
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            q.header("X-Apiwatch-Signature-256"),
            Some(format!("sha256={hex}").as_str())
        );
        if q.accepted() {
            for a in doc["alerts"].as_array().unwrap() {
                hook_alerts.push(format!(
                    "{} {}",
                    a["labels"]["alertname"].as_str().unwrap(),
                    a["status"].as_str().unwrap()
                ));
            }
        }
    }
    for want in [
        "source_outside_boundary firing",
        "source_outside_boundary resolved",
        "secret_in_url firing",
        "secret_in_url resolved",
    ] {
        assert_eq!(
            hook_alerts.iter().filter(|a| *a == want).count(),
            1,
            "{want} once in {hook_alerts:?}"
        );
    }
    // The resolution says how often it happened: the 10 requests, one alert.
    let resolution = posts
        .iter()
        .filter(|q| q.accepted())
        .flat_map(|q| q.json()["alerts"].as_array().unwrap().clone())
        .find(|a| a["labels"]["alertname"] == "source_outside_boundary" && a["status"] == "resolved")
        .unwrap();
    assert_eq!(resolution["annotations"]["occurrences"], "10", "{resolution}");
    // pd-bad keeps refusing: the other sinks are told it is failing.
    assert!(
        hook_alerts.contains(&"ApiwatchAlertSinkFailing firing".to_string()),
        "{hook_alerts:?}"
    );

    // --- File: one schema-valid line per notice ---
    let line_schema = {
        let text =
            std::fs::read_to_string(workspace_root().join("docs/schemas/alert-webhook.schema.json")).unwrap();
        let mut s: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut alert = s["$defs"]["alert"].take();
        alert["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
        jsonschema::options()
            .should_validate_formats(true)
            .build(&alert)
            .unwrap()
    };
    let text = std::fs::read_to_string(&lines).unwrap();
    let mut file_alerts = Vec::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_valid(&line_schema, &v, "an alert line");
        assert_eq!(v["type"], "alert");
        file_alerts.push(format!(
            "{} {}",
            v["labels"]["alertname"].as_str().unwrap(),
            v["status"].as_str().unwrap()
        ));
    }
    assert!(file_alerts.contains(&"source_outside_boundary resolved".to_string()));
    let failing: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["labels"]["alertname"] == "ApiwatchAlertSinkFailing" && v["labels"]["sink"] == "pd-bad")
        .collect();
    assert_eq!(failing.len(), 1, "firing, and never resolved: {file_alerts:?}");
    assert_eq!(failing[0]["status"], "firing");

    // --- No secret anywhere: payloads (but PagerDuty's own key), metrics, the trace-level log ---
    let metrics_text = curl(&["-s", &format!("http://127.0.0.1:{metrics_port}/metrics")]);
    drop(agent);
    let log_text = std::fs::read_to_string(&log).unwrap();
    let mut everything = vec![text, metrics_text, log_text.clone()];
    for r in [&slack, &hook] {
        everything.extend(r.received().iter().map(|q| format!("{}{:?}", q.body, q.headers)));
    }
    for r in [&pd, &pd_bad] {
        everything.extend(r.received().iter().map(|q| q.body.replace(ROUTING_KEY, "")));
    }
    for secret in [BEARER, PASSWORD, ROUTING_KEY, SLACK_TOKEN, WEBHOOK_SECRET] {
        for (i, e) in everything.iter().enumerate() {
            assert!(!e.contains(secret), "{secret} leaked into output {i}");
        }
    }
    assert!(log_text.contains("sink pd-bad refused"), "the refusal is logged");
}

#[test]
fn a_sink_that_is_down_fills_its_spool_and_the_others_hear_of_it() {
    let nginx = Nginx::start(&[
        ("a.json", b"{}"),
        ("b.json", b"{}"),
        ("c.json", b"{}"),
        ("d.json", b"{}"),
    ]);
    let dir = TempDir::new("alerts-overflow");
    let closed = free_port(); // nothing listens there
    let lines = dir.path().join("alerts.jsonl");
    let alerts = format!(
        "  spool_max: 2\n  sink_failing_after_secs: 1\n  sinks:\n\
         \x20   - {{type: webhook, name: down, url: \"http://127.0.0.1:{closed}/x\", exclude_kinds: [secret_in_url]}}\n\
         \x20   - {{type: file, path: \"{}\"}}\n",
        lines.display()
    );
    let config = write_config(dir.path(), nginx.port, &alerts);
    let metrics_port = free_port();
    let _agent = start_agent_binary(
        metrics_port,
        &["--config", config.to_str().unwrap(), "--findings", "/dev/null"],
    );
    for f in ["a", "b", "c", "d"] {
        curl(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{}/{f}.json", nginx.port),
        ]);
        // The bound is on what waits for delivery: give the file sink time to take each one.
        std::thread::sleep(Duration::from_millis(500));
    }
    let names = || -> Vec<String> {
        std::fs::read_to_string(&lines)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{} {}",
                    v["labels"]["alertname"].as_str().unwrap(),
                    v["labels"]["sink"].as_str().unwrap_or("-")
                )
            })
            .collect()
    };
    wait_until(20, "both self-alerts in the file", || {
        let n = names();
        n.contains(&"ApiwatchAlertSpoolOverflow down".to_string())
            && n.contains(&"ApiwatchAlertSinkFailing down".to_string())
    });
    let n = names();
    assert_eq!(
        n.iter()
            .filter(|a| a.starts_with("source_outside_boundary"))
            .count(),
        4,
        "the file sink has every violation: {n:?}"
    );
    assert_eq!(
        metric(metrics_port, "apiwatch_alert_spool_overflow_total{sink=\"down\"}"),
        2.0,
        "4 alerts, room for 2"
    );
    // The spool holds the two it took and, in its reserve, the overflow alert (ApiwatchAlertSinkFailing
    // is about this sink and is not queued for it).
    assert_eq!(
        metric(metrics_port, "apiwatch_alert_spool_pending{sink=\"down\"}"),
        3.0
    );
    assert_eq!(metric(metrics_port, "apiwatch_alert_sink_up{sink=\"down\"}"), 0.0);
    // The agent's own view of what fires: GET /api/v1/alerts.
    let text = curl(&["-s", &format!("http://127.0.0.1:{metrics_port}/api/v1/alerts")]);
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let firing: Vec<String> = doc["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["status"], "firing");
            format!(
                "{} {}",
                a["labels"]["alertname"].as_str().unwrap(),
                a["labels"]["sink"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        firing
            .iter()
            .filter(|a| a.starts_with("source_outside_boundary"))
            .count(),
        4,
        "{firing:?}"
    );
    assert!(
        firing.contains(&"ApiwatchAlertSpoolOverflow down".to_string()),
        "{firing:?}"
    );
    assert!(
        firing.contains(&"ApiwatchAlertSinkFailing down".to_string()),
        "{firing:?}"
    );
}

#[test]
fn a_rate_limit_holds_notifications_back_and_loses_none() {
    let pd = Receiver::start(vec![Reply::status(202)]);
    let dir = TempDir::new("alerts-rate");
    let spec = SinkSpec {
        kind: "pagerduty".into(),
        url: Some(pd.url("/v2/enqueue")),
        routing_key: Some("k".into()),
        rate_limit: Some("2/s".into()),
        ..SinkSpec::default()
    };
    let metrics = AlertMetrics::default();
    let sinks = Sinks::start(&[spec], 100, dir.path(), &metrics).unwrap();
    for i in 0..6 {
        let notice = monitor::alert::AlertNotice {
            fingerprint: format!("{i:016x}"),
            status: monitor::finding::Lifecycle::Firing,
            labels: [("alertname".to_string(), "test".to_string())].into(),
            annotations: [("summary".to_string(), format!("alert {i}"))].into(),
            starts_at: 1,
            ends_at: None,
        };
        let bytes = serde_json::to_vec(&notice).unwrap();
        sinks.queues[0].spool.lock().unwrap().push(&bytes, false).unwrap();
    }
    sinks.queues[0].spool.lock().unwrap().sync().unwrap();
    wait_until(10, "six events", || pd.received().len() >= 6);
    std::thread::sleep(Duration::from_millis(500));
    let got = pd.received();
    assert_eq!(got.len(), 6, "each once");
    let keys: std::collections::BTreeSet<String> = got
        .iter()
        .map(|q| q.json()["dedup_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 6);
    // 2/s with a burst of 2: two at once, then one every half second.
    let span = got[5].at.duration_since(got[0].at);
    assert!(
        span >= Duration::from_millis(1900) && span < Duration::from_secs(4),
        "{span:?}"
    );
    // Held back: 4 when sends are instant; fewer when a send itself takes as long as a token
    // takes to come back (a loaded CI machine), which the span above still shows.
    let held = metrics.rate_limited("pagerduty").get();
    assert!((1..=4).contains(&held), "{held} held back");
    assert_eq!(pending(&sinks), 0);
}

#[test]
fn events_dropped_by_a_small_ring_raise_an_alert_that_resolves() {
    let nginx = Nginx::start(&[("a.json", b"{}")]);
    let dir = TempDir::new("alerts-drops");
    let lines = dir.path().join("alerts.jsonl");
    // The smallest ring (64 KiB) drained once a second (or when a quarter full) cannot hold
    // what wrk at full speed makes: the kernel counts ring_full.
    let config = dir.path().join("apiwatch.yml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\ncapture:\n  ring_bytes: 65536\n  drain_interval_ms: 1000\nalerts:\n  resolve_after_secs: 2\n  sinks:\n    - {{type: file, path: \"{}\"}}\n",
            dir.path().join("state").display(),
            lines.display()
        ),
    )
    .unwrap();
    let metrics_port = free_port();
    let _agent = start_agent_binary(
        metrics_port,
        &["--config", config.to_str().unwrap(), "--findings", "/dev/null"],
    );
    let out = std::process::Command::new("wrk")
        .args([
            "-t2",
            "-c32",
            "-d2s",
            &format!("http://127.0.0.1:{}/a.json", nginx.port),
        ])
        .output()
        .expect("wrk (Debian package wrk)");
    assert!(out.status.success());
    let dropped = metric(
        metrics_port,
        "apiwatch_events_dropped_total{reason=\"ring_full\"}",
    );
    assert!(dropped > 0.0, "the small ring overflowed");
    let statuses = || -> Vec<String> {
        std::fs::read_to_string(&lines)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["labels"]["alertname"] == "ApiwatchEventsDropped")
            .map(|v| v["status"].as_str().unwrap().to_string())
            .collect()
    };
    // Fires while events are lost, resolves once none are for resolve_after_secs.
    wait_until(20, "ApiwatchEventsDropped to fire and resolve", || {
        statuses() == ["firing", "resolved"]
    });
}

#[test]
fn the_alertmanager_example_passes_amtool() {
    let out = std::process::Command::new("amtool")
        .args(["check-config"])
        .arg(workspace_root().join("deploy/alertmanager/alertmanager.yml"))
        .output()
        .expect("amtool (Debian package prometheus-alertmanager)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// The agent for the state_dir fault tests: its policy makes every request to `nginx_port` a
/// boundary violation; its alerts go to a webhook that is down (they wait in its spool under
/// `dir/state`) and to a file sink off that state_dir. Returns the agent, its metrics port and
/// the file sink's path.
fn agent_with_a_down_webhook(dir: &Path, nginx_port: u16) -> (Proc, u16, PathBuf) {
    let closed = free_port();
    let lines = dir.join("alerts.jsonl");
    let alerts = format!(
        "  sinks:\n\
         \x20   - {{type: webhook, name: down, url: \"http://127.0.0.1:{closed}/x\"}}\n\
         \x20   - {{type: file, name: lines, path: \"{}\"}}\n",
        lines.display()
    );
    let config = write_config(dir, nginx_port, &alerts);
    let metrics_port = free_port();
    let agent = start_agent_binary(
        metrics_port,
        &["--config", config.to_str().unwrap(), "--findings", "/dev/null"],
    );
    (agent, metrics_port, lines)
}

/// Boundary alerts the file sink has written.
fn boundary_alerts_in(lines: &Path) -> usize {
    std::fs::read_to_string(lines)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("source_outside_boundary"))
        .count()
}

/// The routes of the alerts a spool file holds, after checking it has no torn record (a
/// refused or interrupted write must leave none).
fn spooled_routes(spool_file: &Path) -> Vec<String> {
    let spool = Spool::open(spool_file, 1000).unwrap();
    assert_eq!(spool.torn_records, 0, "a torn record in {}", spool_file.display());
    spool
        .pending(100)
        .into_iter()
        .map(|(_, p)| {
            let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
            v["labels"]["route"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

#[test]
fn a_full_state_dir_holds_alerts_delivers_them_and_writes_them_when_space_returns() {
    // One alert per route; while the disk is full, more of them than the spool file's last
    // page has room for (tmpfs allocates whole pages).
    let routes: Vec<String> = (0..12).map(|i| format!("r{i}.json")).collect();
    let files: Vec<(&str, &[u8])> = routes.iter().map(|r| (r.as_str(), &b"{}"[..])).collect();
    let nginx = Nginx::start(&files);
    let dir = TempDir::new("alerts-full");
    let state = dir.path().join("state");
    let _tmpfs = Tmpfs::mount(&state, "256k");
    let (mut agent, metrics_port, lines) = agent_with_a_down_webhook(dir.path(), nginx.port);
    let violation = |f: &str| curl(&["-o", "/dev/null", &format!("http://127.0.0.1:{}/{f}", nginx.port)]);
    let in_file = || boundary_alerts_in(&lines);
    violation(&routes[0]);
    wait_until(15, "the first alert in the file sink", || in_file() == 1);
    fill(&state.join("filler"));
    for r in &routes[1..11] {
        violation(r);
    }
    // The disk refuses the spool's writes: counted, and the alerts still go out.
    wait_until(15, "the alerts in the file sink", || in_file() == 11);
    wait_until(10, "the refused writes counted", || {
        metric(
            metrics_port,
            "apiwatch_alert_spool_write_errors_total{sink=\"down\"}",
        ) >= 1.0
    });
    assert_eq!(
        metric(metrics_port, "apiwatch_alert_spool_pending{sink=\"down\"}"),
        11.0
    );
    // The firing set (saved every 5 s) cannot be saved either: counted.
    wait_until(15, "the failed save of firing.json counted", || {
        metric(
            metrics_port,
            "apiwatch_state_write_errors_total{file=\"firing_alerts\"}",
        ) >= 1.0
    });
    // Space returns; the next flush writes what memory held.
    std::fs::remove_file(state.join("filler")).unwrap();
    violation(&routes[11]);
    wait_until(15, "the last alert in the file sink", || in_file() == 12);
    let firing = state.join("alerts/firing.json");
    wait_until(15, "firing.json saved with all twelve", || {
        std::fs::read(&firing)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.as_array().map(|a| a.len()))
            == Some(12)
    });
    assert!(
        !state.join("alerts/firing.json.tmp").exists(),
        "a failed save left its temporary"
    );
    // A crash now loses nothing: every alert the webhook is owed is on disk, whole.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGKILL) };
    let _ = agent.0.wait();
    let spooled = spooled_routes(&state.join("alerts/down.spool"));
    assert_eq!(spooled.len(), 12, "{spooled:?}");
    for r in &routes {
        assert!(spooled.contains(&format!("/{r}")), "{spooled:?}");
    }
}

#[test]
fn a_read_only_state_dir_keeps_alerts_in_memory_until_it_is_writable() {
    let routes: Vec<String> = (0..4).map(|i| format!("r{i}.json")).collect();
    let files: Vec<(&str, &[u8])> = routes.iter().map(|r| (r.as_str(), &b"{}"[..])).collect();
    let nginx = Nginx::start(&files);
    let dir = TempDir::new("alerts-ro");
    let state = dir.path().join("state");
    let tmpfs = Tmpfs::mount(&state, "1m");
    // Read-only before the agent starts (a remount is refused once the spool file is open).
    tmpfs.set_read_only(true);
    let (mut agent, metrics_port, lines) = agent_with_a_down_webhook(dir.path(), nginx.port);
    let violation = |f: &str| curl(&["-o", "/dev/null", &format!("http://127.0.0.1:{}/{f}", nginx.port)]);
    let in_file = || boundary_alerts_in(&lines);
    for r in &routes[..3] {
        violation(r);
    }
    // The agent runs on a state_dir it cannot write: alerts still go out, the webhook's
    // backlog is held in memory, and the saves that fail are counted.
    wait_until(15, "the alerts in the file sink", || in_file() == 3);
    wait_until(10, "the backlog held for the webhook", || {
        metric(metrics_port, "apiwatch_alert_spool_pending{sink=\"down\"}") == 3.0
    });
    wait_until(15, "the failed save of firing.json counted", || {
        metric(
            metrics_port,
            "apiwatch_state_write_errors_total{file=\"firing_alerts\"}",
        ) >= 1.0
    });
    assert!(!state.join("alerts/firing.json").exists());
    // Writable again: the spool file opens with the backlog, the firing set is saved.
    tmpfs.set_read_only(false);
    violation(&routes[3]);
    wait_until(15, "the last alert in the file sink", || in_file() == 4);
    let firing = state.join("alerts/firing.json");
    wait_until(20, "firing.json saved with all four", || {
        std::fs::read(&firing)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.as_array().map(|a| a.len()))
            == Some(4)
    });
    let spool_file = state.join("alerts/down.spool");
    wait_until(20, "the spool file written with the backlog", || {
        Spool::open(&spool_file, 1000).is_ok_and(|s| s.pending(100).len() == 4)
    });
    // A crash now loses nothing the webhook is owed.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGKILL) };
    let _ = agent.0.wait();
    let spooled = spooled_routes(&spool_file);
    for r in &routes {
        assert!(spooled.contains(&format!("/{r}")), "{spooled:?}");
    }
}
