//! System tier, monitoring stack (root): the agent binary scraped by a real Prometheus; every
//! dashboard query and every alert rule evaluated through Prometheus's HTTP API; cardinality
//! bounded under 100,000 unique paths; the exposition accepted by promtool.
use std::process::Command;
use std::time::{Duration, Instant};

use apiwatch_tests::*;

const API_LOCATIONS: &str = r#"
    location /api/users/ { default_type application/json; return 200 '{"user":true}'; }
    location /api/fail { return 503; }
    location /api/orders { return 201 '{"created":true}'; }
"#;

/// Grafana variables replaced for a direct Prometheus query: every filter matches all.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "20s")
        .replace("$host", ".*")
        .replace("$service", ".*")
        .replace("$route", ".*")
}

/// Drives a mix of traffic for `secs` seconds: 2xx, 4xx, 5xx, server and client side.
fn traffic(base: &str, secs: u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut i = 0;
    while Instant::now() < end {
        let urls = [
            format!("{base}/api/users/{i}"),
            format!("{base}/api/fail"),
            format!("{base}/index.json"),
            format!("{base}/missing"),
        ];
        let mut args = vec![
            "-s",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
        ];
        args.extend(urls.iter().map(String::as_str));
        Command::new("curl").args(&args).status().unwrap();
        Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-X",
                "POST",
                "-d",
                "{}",
                &format!("{base}/api/orders"),
            ])
            .status()
            .unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_dashboard_query_and_alert_rule_returns_data_from_real_prometheus() {
    require_root();
    let nginx = Nginx::start_with(&[("index.json", b"{\"ok\":true}")], API_LOCATIONS);
    let metrics_port = free_port();
    // A policy that loopback traffic crosses, so the trust-boundaries board has findings to show.
    let dir = TempDir::new("monpolicy");
    let policy = dir.path().join("policy.yml");
    std::fs::write(
        &policy,
        format!(
            "zones:\n  corp: [\"10.0.0.0/8\"]\nservices:\n  - name: shop\n    match:\n      port: {}\n    defaults:\n      allowed_sources: [corp]\n    endpoints:\n      - route: /api/users/{{id}}\n        methods: [GET]\n        auth: bearer\n",
            nginx.port
        ),
    )
    .unwrap();
    // One-second baseline windows and a short warm-up, so the wrk burst below is a real anomaly.
    let config = dir.path().join("apiwatch.yml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nbaselines:\n  window_secs: 1\n  season_buckets: 1\n  warmup: 4\nalerts:\n  sinks:\n    - {{type: file, path: \"{}\"}}\n",
            dir.path().join("state").display(),
            dir.path().join("alerts.jsonl").display()
        ),
    )
    .unwrap();
    let _agent = start_agent_binary(
        metrics_port,
        &[
            "--config",
            config.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--findings",
            "/dev/null",
        ],
    );
    let rules = workspace_root().join("deploy/prometheus/apiwatch-rules.yml");
    let prom = Prometheus::start(&format!("127.0.0.1:{metrics_port}"), std::slice::from_ref(&rules));
    traffic(&format!("http://127.0.0.1:{}", nginx.port), 8);
    // A burst from wrk too: a second caller for the client-side families, and a rate anomaly.
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c2",
            "-d2s",
            &format!("http://127.0.0.1:{}/index.json", nginx.port),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    // Let Prometheus scrape what the last requests produced.
    std::thread::sleep(Duration::from_secs(3));

    assert_eq!(
        prom.query(r#"up{job="apiwatch"} == 1"#).len(),
        1,
        "Prometheus does not scrape the agent"
    );
    let mut checked = 0;
    for entry in std::fs::read_dir(workspace_root().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(
            dash["uid"].is_string() && dash["title"].is_string(),
            "{}",
            path.display()
        );
        let vars = dash["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter()
                .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
            "{}: no datasource variable",
            path.display()
        );
        // Template variables: label_values(SELECTOR, label) must find values.
        for v in vars.iter().filter(|v| v["type"] == "query") {
            let q = v["query"]["query"].as_str().unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _)| sel)
                .unwrap();
            assert!(
                !prom.query(&substitute(inner)).is_empty(),
                "{}: variable {} finds nothing: {q}",
                path.display(),
                v["name"]
            );
            checked += 1;
        }
        for panel in dash["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = substitute(target["expr"].as_str().unwrap());
                let result = prom.query(&expr);
                assert!(
                    !result.is_empty(),
                    "{}: panel {:?} returns no series: {expr}",
                    path.display(),
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 25, "only {checked} queries checked");

    // Every alert rule: its watched series exist, and Prometheus evaluates it without error.
    let text = std::fs::read_to_string(&rules).unwrap();
    let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let mut rule_count = 0;
    for group in doc["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let q = rule["annotations"]["series_query"]
                .as_str()
                .expect("every rule names its series_query");
            assert!(
                !prom.query(q).is_empty(),
                "rule {:?} watches nothing: {q}",
                rule["alert"]
            );
            rule_count += 1;
        }
    }
    let loaded = prom.get("/api/v1/rules");
    let health: Vec<&serde_json::Value> = loaded["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| &r["health"])
        .collect();
    assert_eq!(health.len(), rule_count);
    assert!(
        health.iter().all(|h| *h == "ok"),
        "rules evaluated with errors: {loaded}"
    );

    // The 5xx and the templated route are what a user would look for.
    let fail = prom.query(r#"http_server_request_duration_seconds_count{http_route="/api/fail", http_response_status_code="503"}"#);
    assert_eq!(fail.len(), 1);
    let users = prom.query(r#"http_server_request_duration_seconds_count{http_route="/api/users/{id}"}"#);
    assert_eq!(users.len(), 1, "numeric ids fold into one route: {users:?}");
    let firing = prom.query(r#"apiwatch_anomalies_firing{kind="rate_anomaly", http_route="/index.json"}"#);
    assert_eq!(
        firing.len(),
        1,
        "the wrk burst on /index.json is a rate anomaly: {firing:?}"
    );
    let outside = prom.query(r#"apiwatch_findings_total{kind="source_outside_boundary", rule="shop /api/users/{id}", severity="critical", source_zone="none"}"#);
    assert_eq!(outside.len(), 1, "{outside:?}");
}

#[test]
fn exposition_passes_promtool_and_inventory_has_percentiles() {
    require_root();
    let nginx = Nginx::start_with(&[("index.json", b"{}")], API_LOCATIONS);
    let metrics_port = free_port();
    let _agent = start_agent_binary(metrics_port, &[]);
    traffic(&format!("http://127.0.0.1:{}", nginx.port), 2);
    std::thread::sleep(Duration::from_millis(300));
    let exposition = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()
        .unwrap()
        .stdout;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    promtool.stdin.take().unwrap().write_all(&exposition).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let routes = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{metrics_port}/api/v1/routes")])
        .output()
        .unwrap()
        .stdout;
    let routes: serde_json::Value = serde_json::from_slice(&routes).unwrap();
    let service = format!("nginx:{}", nginx.port);
    let users = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == service.as_str() && r["route"] == "/api/users/{id}")
        .unwrap_or_else(|| panic!("no /api/users/{{id}} in {routes}"));
    assert!(users["count"].as_u64().unwrap() >= 10);
    for p in ["p50", "p90", "p99", "p999"] {
        assert!(
            users["latency_ms"][p].as_f64().unwrap() > 0.0,
            "{p} missing: {users}"
        );
    }
    assert_eq!(users["callers"][0][0], "127.0.0.1");
    assert_eq!(users["auth_schemes"]["none"], users["count"]);
    let fail = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == service.as_str() && r["route"] == "/api/fail")
        .unwrap();
    assert_eq!(fail["errors_5xx"], fail["count"]);
    let health = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{metrics_port}/healthz")])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(health, b"ok\n");
}

#[test]
fn cardinality_stays_bounded_under_100k_unique_paths() {
    require_root();
    let nginx = Nginx::start(&[("index.json", b"{}")]);
    let metrics_port = free_port();
    let _agent = start_agent_binary(metrics_port, &[]);
    // 100,000 requests, each to a path never seen before (letters only: no id to fold).
    let dir = TempDir::new("card");
    let script = dir.path().join("unique.lua");
    std::fs::write(
        &script,
        r#"
local n = 0
local letters = "abcdefghijklmnopqrstuvwxyz"
request = function()
  local p = {}
  for i = 1, 12 do local k = math.random(1, 26); p[i] = letters:sub(k, k) end
  return wrk.format("GET", "/u/" .. table.concat(p) .. "/x")
end
response = function(status, headers, body)
  n = n + 1
  if n >= 100000 then wrk.thread:stop() end
end
"#,
    )
    .unwrap();
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c8",
            "-d12s",
            "-s",
            script.to_str().unwrap(),
            &format!("http://127.0.0.1:{}/", nginx.port),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(1500));
    // wrk stops its thread at the 100,000th response (its main thread still waits out -d); the other connections' last requests may
    // still have been served.
    let served = nginx.access_log_lines();
    assert!((100_000..100_010).contains(&served), "{served}");

    let text = String::from_utf8(
        Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{metrics_port}/metrics")])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    let drops: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("apiwatch_events_dropped_total")
                || l.starts_with("apiwatch_exchanges_total")
                || l.starts_with("apiwatch_events_total")
        })
        .collect();
    assert!(
        value(r#"apiwatch_exchanges_total{role="server"}"#) >= served as f64,
        "{drops:#?}"
    );
    // Documented caps (default configuration): 200 routes per service plus __other__, and at most
    // 2000 + 1 label sets per family.
    for family in [
        "http_server_request_duration_seconds_count",
        "http_client_request_duration_seconds_count",
    ] {
        let series: Vec<&str> = text.lines().filter(|l| l.starts_with(family)).collect();
        assert!(series.len() <= 2001, "{family}: {} series", series.len());
        let nginx_routes = series
            .iter()
            .filter(|l| l.contains(&format!("service=\"nginx:{}\"", nginx.port)))
            .count();
        let wrk_routes = series.iter().filter(|l| l.contains("service=\"wrk\"")).count();
        assert!(
            nginx_routes + wrk_routes <= 201 && nginx_routes + wrk_routes > 100,
            "{family}: {nginx_routes} nginx, {wrk_routes} wrk series"
        );
    }
    let total_series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert!(total_series < 20_000, "{total_series} series in all");
    assert!(value("apiwatch_routes_folded_total") > 99_000.0);
}
