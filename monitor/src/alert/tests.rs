use std::sync::atomic::Ordering;

use super::*;
use crate::finding::{Lifecycle, Severity};

fn finding(ts: u64, state: Option<Lifecycle>) -> Finding {
    Finding {
        record: "finding",
        ts,
        kind: crate::finding::FindingKind::SourceOutsideBoundary,
        rule: "shop /api".into(),
        severity: Severity::Critical,
        service: "nginx:80".into(),
        route: "/api".into(),
        method: "GET".into(),
        source: Some("10.0.0.9".into()),
        source_zones: vec![],
        identity: Some("abc".into()),
        pid: 1,
        comm: "nginx".into(),
        evidence: "source 10.0.0.9 is not in local".into(),
        state,
    }
}

struct TestDir(std::path::PathBuf);

impl TestDir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("aw-alerts-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Self(d)
    }

    fn sink(&self, name: &str, route: Route, max: usize) -> SinkQueue {
        SinkQueue {
            name: name.into(),
            route,
            resend: false,
            spool: Arc::new(Mutex::new(Spool::open(&self.0.join(name), max).unwrap())),
            health: Arc::new(SinkHealth::default()),
        }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the engine handed to a sink's delivery (after its flush: durable).
fn notices(e: &mut AlertEngine, q: &SinkQueue) -> Vec<AlertNotice> {
    e.flush();
    q.spool
        .lock()
        .unwrap()
        .pending(1000)
        .iter()
        .map(|(_, p)| serde_json::from_slice(p).unwrap())
        .collect()
}

fn opts(resolve_after_ns: u64, resend_ns: u64) -> AlertOptions {
    AlertOptions {
        resolve_after_ns,
        resend_ns,
        sink_failing_after_ns: 5,
        dashboard_url: Some("http://grafana/d/{dashboard}?var-service={service}&var-route={route}".into()),
        state_file: None,
    }
}

#[test]
fn burst_is_one_alert_that_resolves_and_everything_is_spooled_first() {
    let dir = TestDir::new("burst");
    let sink = dir.sink("all", Route::default(), 100);
    let mut e = AlertEngine::new(opts(10, 1_000), vec![sink.clone()], AlertMetrics::default());
    for i in 0..50 {
        let mut f = finding(100 + i, None);
        f.source = Some(format!("10.0.0.{i}")); // the source is evidence, not identity
        e.on_finding(&f);
    }
    assert_eq!(e.active(), 1);
    assert_eq!(e.deduplicated, 49);
    e.tick(200, 0);
    let n = notices(&mut e, &sink);
    assert_eq!(n.len(), 2);
    assert_eq!(n[0].status, "firing");
    assert_eq!(n[1].status, "resolved");
    assert_eq!(n[0].fingerprint, n[1].fingerprint);
    assert_eq!(n[0].labels["alertname"], "source_outside_boundary");
    assert_eq!(
        n[0].annotations["dashboard"],
        "http://grafana/d/apiwatch-trust-boundaries?var-service=nginx%3A80&var-route=%2Fapi"
    );
    assert_eq!(n[0].annotations["source"], "10.0.0.0");
    // The resolution says how bad it was: 50 findings, the last at 149 ns.
    assert_eq!(n[1].annotations["occurrences"], "50");
    assert_eq!(n[1].annotations["last_seen"], "1970-01-01T00:00:00.000000Z");
}

#[test]
fn anomalies_resolve_with_their_finding() {
    let dir = TestDir::new("anomaly");
    let sink = dir.sink("all", Route::default(), 100);
    let mut e = AlertEngine::new(opts(10, 1_000_000), vec![sink.clone()], AlertMetrics::default());
    e.on_finding(&finding(100, Some(Lifecycle::Firing)));
    e.tick(10_000, 0);
    assert_eq!(e.active(), 1, "silence does not resolve an anomaly");
    e.on_finding(&finding(20_000, Some(Lifecycle::Resolved)));
    assert_eq!(e.active(), 0);
    assert_eq!(notices(&mut e, &sink).len(), 2);
}

#[test]
fn routes_pick_by_severity_and_kind_and_resends_go_only_where_wanted() {
    let dir = TestDir::new("routes");
    let critical = dir.sink(
        "pager",
        Route {
            min_severity: Some(Severity::Critical),
            ..Route::default()
        },
        100,
    );
    let only_pii = dir.sink(
        "privacy",
        Route {
            kinds: vec!["pii_in_url".into()],
            ..Route::default()
        },
        100,
    );
    let mut all_but_pii = dir.sink(
        "am",
        Route {
            exclude_kinds: vec!["pii_in_url".into()],
            ..Route::default()
        },
        100,
    );
    all_but_pii.resend = true;
    let mut e = AlertEngine::new(
        opts(1_000_000, 100),
        vec![critical.clone(), only_pii.clone(), all_but_pii.clone()],
        AlertMetrics::default(),
    );
    e.on_finding(&finding(10, None));
    let mut pii = finding(10, None);
    pii.kind = crate::finding::FindingKind::PiiInUrl;
    pii.severity = Severity::Warning;
    e.on_finding(&pii);
    e.tick(150, 0); // one resend
    let mut names = |q: &SinkQueue| -> Vec<String> {
        notices(&mut e, q)
            .iter()
            .map(|n| n.labels["alertname"].clone())
            .collect()
    };
    assert_eq!(names(&critical), ["source_outside_boundary"]);
    assert_eq!(names(&only_pii), ["pii_in_url"]);
    assert_eq!(
        names(&all_but_pii),
        ["source_outside_boundary", "source_outside_boundary"]
    );
}

#[test]
fn a_full_spool_is_counted_and_raised_as_its_own_alert() {
    let dir = TestDir::new("overflow");
    let small = dir.sink("small", Route::default(), 2);
    let other = dir.sink("other", Route::default(), 100);
    let metrics = AlertMetrics::default();
    let mut e = AlertEngine::new(
        opts(1_000_000, 1_000_000),
        vec![small.clone(), other.clone()],
        metrics.clone(),
    );
    for i in 0..5 {
        let mut f = finding(10 + i, None);
        f.route = format!("/r{i}");
        e.on_finding(&f);
    }
    assert_eq!(metrics.spool_overflow("small").get(), 3);
    let n = notices(&mut e, &small);
    assert_eq!(n.len(), 3, "two findings and, in the reserve, the overflow alert");
    let overflow: Vec<&AlertNotice> = n
        .iter()
        .filter(|n| n.labels["alertname"] == self_alert::SPOOL_OVERFLOW)
        .collect();
    assert_eq!(overflow.len(), 1, "raised once while firing");
    assert_eq!(overflow[0].labels["sink"], "small");
    // The other sink has all five and the overflow alert.
    assert_eq!(notices(&mut e, &other).len(), 6);
}

#[test]
fn dropped_events_and_a_failing_sink_raise_self_alerts_that_resolve() {
    let dir = TestDir::new("self");
    let failing = dir.sink("down", Route::default(), 100);
    let healthy = dir.sink("up", Route::default(), 100);
    let mut e = AlertEngine::new(
        opts(100, 1_000_000),
        vec![failing.clone(), healthy.clone()],
        AlertMetrics::default(),
    );
    e.tick(1_000, 0);
    e.tick(1_010, 0);
    assert_eq!(e.active(), 0, "no drops, no failures: no alert");
    e.tick(1_020, 7);
    failing.health.failed(1_020);
    e.tick(1_030, 7);
    let names: Vec<String> = notices(&mut e, &healthy)
        .iter()
        .map(|n| format!("{} {}", n.labels["alertname"], n.status))
        .collect();
    assert_eq!(
        names,
        [
            "ApiwatchEventsDropped firing".to_string(),
            "ApiwatchAlertSinkFailing firing".to_string()
        ]
    );
    assert!(
        notices(&mut e, &failing)
            .iter()
            .all(|n| n.labels["alertname"] != self_alert::SINK_FAILING),
        "a failing sink is not told it fails"
    );
    // The sink recovers; no more drops: both resolve.
    failing.health.succeeded();
    e.tick(1_040, 7);
    e.tick(1_200, 7);
    let statuses: Vec<String> = notices(&mut e, &healthy)
        .iter()
        .map(|n| format!("{} {}", n.labels["alertname"], n.status))
        .collect();
    assert_eq!(statuses.len(), 4, "{statuses:?}");
    assert!(statuses.contains(&"ApiwatchAlertSinkFailing resolved".to_string()));
    assert!(statuses.contains(&"ApiwatchEventsDropped resolved".to_string()));
    assert_eq!(failing.health.consecutive_failures.load(Ordering::Relaxed), 0);
}

#[test]
fn an_audit_trail_that_cannot_be_written_raises_a_critical_self_alert_until_it_can() {
    let dir = TestDir::new("audit-self");
    let sink = dir.sink("up", Route::default(), 100);
    let mut e = AlertEngine::new(opts(100, 1_000_000), vec![sink.clone()], AlertMetrics::default());
    e.check_audit(1_000, None);
    assert_eq!(e.active(), 0);
    e.check_audit(5_000_000_000, Some(1_000));
    e.check_audit(6_000_000_000, Some(1_000));
    e.flush();
    let fired = notices(&mut e, &sink);
    assert_eq!(fired.len(), 1, "one alert however long it lasts: {fired:?}");
    assert_eq!(fired[0].labels["alertname"], self_alert::AUDIT_WRITE_FAILING);
    assert_eq!(fired[0].labels["severity"], "critical");
    assert_eq!(fired[0].status, "firing");
    e.check_audit(7_000_000_000, None);
    e.flush();
    let all = notices(&mut e, &sink);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1].status, "resolved");
    assert_eq!(e.active(), 0);
}

/// Every violation of the JSON Schema at `path` (relative to the workspace root).
fn schema_errors(path: &str, doc: &serde_json::Value) -> Vec<String> {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let v = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    v.iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect()
}

fn notice(status: Lifecycle, summary: &str, description: &str) -> AlertNotice {
    let mut labels = BTreeMap::new();
    labels.insert("alertname".into(), "source_outside_boundary".into());
    labels.insert("severity".into(), "high".into());
    labels.insert("service".into(), "nginx:80".into());
    labels.insert("route".into(), "/<!channel>".into());
    labels.insert("host".into(), "h1".into());
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".into(), summary.into());
    annotations.insert("description".into(), description.into());
    AlertNotice {
        fingerprint: "0123456789abcdef".into(),
        status,
        labels,
        annotations,
        starts_at: 1_700_000_000_000_000_000,
        ends_at: (status == "resolved").then_some(1_700_000_060_000_000_000),
    }
}

#[test]
fn pagerduty_events_follow_the_events_api_v2() {
    let firing = pagerduty::event("R0UTINGKEY", &notice(Lifecycle::Firing, "s", "d"));
    assert_eq!(firing["event_action"], "trigger");
    assert_eq!(firing["dedup_key"], "apiwatch-0123456789abcdef");
    assert_eq!(
        firing["payload"]["severity"], "error",
        "high maps to PagerDuty's error"
    );
    assert_eq!(firing["payload"]["source"], "h1");
    assert_eq!(firing["payload"]["timestamp"], "2023-11-14T22:13:20Z");
    let long = pagerduty::event("k", &notice(Lifecycle::Firing, &"é".repeat(2000), "d"));
    assert!(long["payload"]["summary"].as_str().unwrap().len() <= 1024);
    let resolved = pagerduty::event("R0UTINGKEY", &notice(Lifecycle::Resolved, "s", "d"));
    assert_eq!(resolved["event_action"], "resolve");
    assert_eq!(resolved["dedup_key"], firing["dedup_key"]);
    assert!(resolved.get("payload").is_none());
    const PD: &str = "tests/fixtures/schemas/pagerduty-events-v2.schema.json";
    for e in [&firing, &long, &resolved] {
        assert_eq!(schema_errors(PD, e), Vec::<String>::new(), "{e}");
    }
    // The schema is not a rubber stamp: a trigger without a payload breaks it.
    assert!(
        !schema_errors(
            PD,
            &serde_json::json!({"routing_key": "k", "event_action": "trigger"})
        )
        .is_empty()
    );
}

#[test]
fn slack_messages_stay_within_slack_limits_and_escape_traffic_text() {
    let hostile = "<!everyone> & ".repeat(2000);
    let batch: Vec<AlertNotice> = (0..slack::MAX_ALERTS_PER_MESSAGE)
        .map(|_| notice(Lifecycle::Firing, &hostile, &hostile))
        .collect();
    let m = slack::message(&batch);
    let blocks = m["blocks"].as_array().unwrap();
    assert!(blocks.len() <= 50);
    assert!(m["text"].as_str().unwrap().chars().count() <= 3000);
    assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= 150);
    let raw = m.to_string();
    assert!(
        !raw.contains("<!everyone>") && !raw.contains("<!channel>"),
        "mentions escaped"
    );
    let mut total = 0;
    for b in blocks {
        if b["type"] == "section" {
            let t = b["text"]["text"].as_str().unwrap();
            assert!(t.chars().count() <= 3000);
            total += t.chars().count();
            let fields = b["fields"].as_array().unwrap();
            assert!(fields.len() <= 10);
            for f in fields {
                let t = f["text"].as_str().unwrap();
                assert!(t.chars().count() <= 2000);
                total += t.chars().count();
            }
        }
    }
    assert!(total <= 12_000, "{total} characters");
    const SLACK: &str = "tests/fixtures/schemas/slack-incoming-webhook.schema.json";
    assert_eq!(schema_errors(SLACK, &m), Vec::<String>::new());
    let resolved = slack::message(&[notice(Lifecycle::Resolved, "s", "d")]);
    assert_eq!(schema_errors(SLACK, &resolved), Vec::<String>::new());
    assert!(!schema_errors(SLACK, &serde_json::json!({"text": "x", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h".repeat(151)}}]})).is_empty());
}

#[test]
fn webhook_signature_is_hmac_sha256_of_timestamp_and_body() {
    // Computed independently: python3 -c 'import hmac,hashlib; print(hmac.new(b"Jefe",
    // b"1700000000.what do ya want for nothing?", hashlib.sha256).hexdigest())'
    assert_eq!(
        webhook::signature(b"Jefe", 1_700_000_000, b"what do ya want for nothing?"),
        "sha256=1cdd0650c8be1cb0974b1788d458b1e781206cfef59b85faafc582d2e182c57e"
    );
    assert_ne!(
        webhook::signature(b"Jefe", 1, b"x"),
        webhook::signature(b"Jefe", 2, b"x")
    );
    let doc = webhook::document(&[notice(Lifecycle::Resolved, "s", "d")]);
    assert_eq!(doc["alerts"][0]["status"], "resolved");
    assert_eq!(doc["alerts"][0]["endsAt"], "2023-11-14T22:14:20Z");
    assert_eq!(
        schema_errors("docs/schemas/alert-webhook.schema.json", &doc),
        Vec::<String>::new()
    );
}

#[test]
fn http_answers_are_classified_for_retry() {
    use delivery::Outcome;
    assert_eq!(http::classify(202, None), Outcome::Delivered);
    assert!(matches!(http::classify(429, None), Outcome::Retry { .. }));
    assert!(matches!(http::classify(503, None), Outcome::Retry { .. }));
    assert!(matches!(http::classify(400, None), Outcome::Rejected(_)));
    assert!(matches!(http::classify(404, None), Outcome::Rejected(_)));
}

#[test]
fn firing_alerts_survive_a_restart_and_still_resolve() {
    let dir = TestDir::new("restart");
    let sink = dir.sink("all", Route::default(), 100);
    let mut o = opts(100, 1_000_000);
    o.state_file = Some(dir.0.join("firing.json"));
    let mut e = AlertEngine::new(o.clone(), vec![sink.clone()], AlertMetrics::default());
    e.on_finding(&finding(10, None));
    e.save().unwrap();
    drop(e);
    // The next run knows it is firing: a repeat is deduplicated, silence resolves it.
    let mut e = AlertEngine::new(o, vec![sink.clone()], AlertMetrics::default());
    assert_eq!(e.active(), 1);
    e.on_finding(&finding(20, None));
    assert_eq!(e.deduplicated, 1);
    e.tick(500, 0);
    let n = notices(&mut e, &sink);
    assert_eq!(n.len(), 2, "firing once, resolved once, across the restart");
    assert_eq!(n[1].status, "resolved");
    assert_eq!(n[0].fingerprint, n[1].fingerprint);
}

#[test]
fn an_unreadable_firing_set_is_kept_aside_and_the_engine_goes_on() {
    let dir = TestDir::new("bad-firing");
    let sink = dir.sink("all", Route::default(), 100);
    let mut o = opts(100, 1_000_000);
    let file = dir.0.join("firing.json");
    o.state_file = Some(file.clone());
    let mut e = AlertEngine::new(o.clone(), vec![sink.clone()], AlertMetrics::default());
    e.on_finding(&finding(10, None));
    e.save().unwrap();
    let whole = std::fs::read(&file).unwrap();
    for bad in [&whole[..whole.len() - 3], b"{not json".as_slice()] {
        std::fs::write(&file, bad).unwrap();
        let mut e = AlertEngine::new(o.clone(), vec![sink.clone()], AlertMetrics::default());
        assert_eq!(e.active(), 0, "forgotten, not fatal");
        assert_eq!(std::fs::read(dir.0.join("firing.json.corrupt")).unwrap(), bad);
        // New findings alert as usual, and the set saves again.
        e.on_finding(&finding(20, None));
        assert_eq!(e.active(), 1);
        e.save().unwrap();
        assert_eq!(
            AlertEngine::new(o.clone(), vec![sink.clone()], AlertMetrics::default()).active(),
            1
        );
    }
}

#[test]
fn a_spool_left_by_a_renamed_sink_is_reported() {
    let dir = TestDir::new("orphans");
    let alerts = dir.0.join("alerts");
    let mut old = Spool::open(&alerts.join("old-name.spool"), 10).unwrap();
    old.push(b"{}", false).unwrap();
    old.sync().unwrap();
    drop(old);
    let spec = SinkSpec {
        kind: "file".into(),
        name: Some("new-name".into()),
        path: Some(dir.0.join("alerts.jsonl").display().to_string()),
        ..Default::default()
    };
    let sinks = Sinks::start(&[spec], 10, &dir.0, &AlertMetrics::default()).unwrap();
    assert_eq!(sinks.orphaned, [("old-name".to_string(), 1)]);
}

/// Alert names are the live finding kinds and the self-alerts, each once; a kind is written as
/// its name wherever it goes (the finding's JSON, labels, alertname).
#[test]
fn alert_names_are_the_live_kinds_and_the_self_alerts() {
    use crate::finding::FindingKind;
    let names: Vec<&str> = alert_names().collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    assert_eq!(names.len(), FindingKind::LIVE.len() + 4);
    assert!(
        !names.contains(&FindingKind::ZombieEndpoint.as_str()),
        "a drift report's, never live"
    );
    for k in FindingKind::LIVE.into_iter().chain([FindingKind::ZombieEndpoint]) {
        assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.as_str()));
        assert_eq!(k.to_string(), k.as_str());
    }
}
