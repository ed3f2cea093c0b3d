//! Boundary tier (root): a real policy against real traffic. Clients sit on loopback and in a
//! network namespace the test creates (veth pair, its own address), so a call from outside an
//! allowed zone is really seen as one.
use std::time::Duration;

use apiwatch_tests::*;
use monitor::agent::AgentOptions;
use monitor::boundary::Policy;
use monitor::finding::Finding;

const LOCATIONS: &str = r#"
    location /api/users/ { default_type application/json; return 200 '{"user":true}'; }
    location /api/orders { return 201 '{"created":true}'; }
    location /admin/ { return 200 'admin'; }
"#;
const BEARER: &str = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ.c2lnLXMzY3IzdA";
const PASSWORD: &str = "hunter2-Pa55";
const API_KEY: &str = "ak_live_7f3c9e1d5b";

fn policy_text(port: u16, ns_subnet: &str, allow_ns: bool) -> String {
    let users_sources = if allow_ns { "[local, partners]" } else { "[local]" };
    format!(
        r#"zones:
  local: ["127.0.0.0/8", "::1/128"]
  partners: ["{ns_subnet}"]
services:
  - name: shop
    match:
      port: {port}
    undeclared: alert
    defaults:
      allowed_sources: [local, partners]
    endpoints:
      - route: /api/users/{{id}}
        methods: [GET]
        auth: bearer
        allowed_sources: {users_sources}
      - route: /api/orders
        methods: [POST]
        auth: any
        sensitive: true
        forbidden_query_keys: [password]
      - route: /admin/**
        allowed_sources: [local]
"#
    )
}

fn kinds_for<'a>(findings: &'a [Finding], path_route: &str) -> Vec<&'a str> {
    let mut k: Vec<&str> = findings
        .iter()
        .filter(|f| f.route == path_route)
        .map(|f| f.kind.as_str())
        .collect();
    k.sort();
    k.dedup();
    k
}

#[test]
fn violations_from_a_namespace_and_loopback_with_reload() {
    let ns = NetNs::new("bnd", 77);
    let nginx = Nginx::start_on(&[], LOCATIONS, &ns.host_ip);
    let dir = TempDir::new("policy");
    let policy_file = dir.path().join("policy.yml");
    std::fs::write(&policy_file, policy_text(nginx.port, "10.231.77.0/24", false)).unwrap();
    let policy = Policy::load(&policy_file).unwrap();
    let agent = Agent::start_with(AgentOptions {
        policy: Some(std::sync::Arc::new(policy)),
        policy_path: Some(policy_file.clone()),
        ..AgentOptions::default()
    });
    let remote = format!("http://{}:{}", ns.host_ip, nginx.port);
    let local = format!("http://127.0.0.1:{}", nginx.port);
    let auth = format!("Authorization: Bearer {BEARER}");
    // From the namespace (zone partners): users are local-only; admin too.
    ns.curl(&["-o", "/dev/null", "-H", &auth, &format!("{remote}/api/users/1")]);
    ns.curl(&["-o", "/dev/null", &format!("{remote}/admin/panel")]);
    // From loopback (zone local): no auth, wrong method, a password in the query of a
    // sensitive route over cleartext, an undeclared route.
    curl(&["-o", "/dev/null", &format!("{local}/api/users/2")]);
    curl(&[
        "-o",
        "/dev/null",
        "-X",
        "DELETE",
        "-H",
        &auth,
        &format!("{local}/api/users/3"),
    ]);
    curl(&[
        "-o",
        "/dev/null",
        "-X",
        "POST",
        "-H",
        &format!("X-API-Key: {API_KEY}"),
        &format!("{local}/api/orders?password={PASSWORD}"),
    ]);
    curl(&["-o", "/dev/null", &format!("{local}/index.html")]);
    std::thread::sleep(Duration::from_millis(200));

    // Reload: partners may now call users; a broken file afterwards is ignored (last good kept).
    std::fs::write(&policy_file, policy_text(nginx.port, "10.231.77.0/24", true)).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    ns.curl(&["-o", "/dev/null", "-H", &auth, &format!("{remote}/api/users/4")]);
    std::fs::write(&policy_file, "services: [ this is not a policy").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    ns.curl(&["-o", "/dev/null", "-H", &auth, &format!("{remote}/api/users/5")]);
    ns.curl(&["-o", "/dev/null", &format!("{remote}/admin/x")]);
    std::thread::sleep(Duration::from_millis(200));
    let (ex, findings, summary) = agent.stop_all();

    let users: Vec<&Finding> = findings.iter().filter(|f| f.route == "/api/users/{id}").collect();
    let outside: Vec<&&Finding> = users
        .iter()
        .filter(|f| f.kind == "source_outside_boundary")
        .collect();
    assert_eq!(
        outside.len(),
        1,
        "only the call before the reload is outside: {users:#?}"
    );
    assert_eq!(outside[0].source.as_deref(), Some(ns.ns_ip.as_str()));
    assert_eq!(outside[0].source_zones, vec!["partners"]);
    assert_eq!(outside[0].rule, "shop /api/users/{id}");
    assert!(users.iter().any(|f| f.kind == "missing_auth"));
    assert!(
        users
            .iter()
            .any(|f| f.kind == "method_not_allowed" && f.method == "DELETE")
    );
    assert!(
        users.iter().any(|f| f.kind == "jwt_alg_none"),
        "the unsigned JWT is flagged"
    );
    let admin: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.route == "/admin/panel" || f.route == "/admin/x")
        .collect();
    assert_eq!(
        admin
            .iter()
            .filter(|f| f.kind == "source_outside_boundary")
            .count(),
        2,
        "{admin:#?}"
    );
    assert_eq!(
        kinds_for(&findings, "/api/orders"),
        vec!["cleartext_sensitive", "secret_in_url"]
    );
    assert_eq!(kinds_for(&findings, "/index.html"), vec!["undeclared_endpoint"]);
    assert_eq!(summary.pipeline.findings as usize, findings.len());

    // Evidence names keys and detectors, never values; the credential is a fingerprint.
    let all: String = findings
        .iter()
        .map(|f| f.to_json())
        .chain(ex.iter().map(|e| e.to_json()))
        .collect();
    for secret in [BEARER, "c2lnLXMzY3IzdA", PASSWORD, API_KEY] {
        assert!(!all.contains(secret), "{secret} leaked");
    }
    assert!(
        findings
            .iter()
            .any(|f| f.evidence == "forbidden query key \"password\"")
    );
    let fps: Vec<&str> = users.iter().filter_map(|f| f.identity.as_deref()).collect();
    assert!(!fps.is_empty() && fps.iter().all(|f| f.len() == 12));
}
