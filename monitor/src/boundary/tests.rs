//! Every finding kind, from crafted exchanges against the example policy.
use std::sync::Arc;

use super::policy::tests::EXAMPLE;
use super::*;
use crate::exchange::Exchange;
use crate::http::AuthScheme;
use crate::http::identity::JwtClaims;

const NOW: u64 = 1_800_000_000_000_000_000;

fn evaluator() -> Evaluator {
    Evaluator::new(Arc::new(Policy::parse("p.yml", EXAMPLE).unwrap()))
}

/// A compliant request to /api/orders/7 from inside, with a good bearer JWT over TLS.
fn good() -> Exchange {
    let mut ex = crate::exchange::tests::sample();
    ex.ts = NOW;
    ex.local = Some("127.0.0.1:8080".parse().unwrap());
    ex.peer = Some("10.1.2.3:5555".parse().unwrap());
    ex.path = "/api/orders/7".into();
    ex.route = "/api/orders/{id}".into();
    ex.service = "nginx:8080".into();
    ex.method = "GET".into();
    ex.tls = true;
    ex.query_keys = vec![];
    ex.auth_scheme = AuthScheme::Bearer;
    ex.jwt = Some(Box::new(JwtClaims {
        alg: "RS256".into(),
        iss: Some("https://idp.example".into()),
        sub: Some("u1".into()),
        aud: vec![],
        exp: Some((NOW / 1_000_000_000) as i64 + 600),
        scope: vec!["orders:read".into()],
    }));
    ex
}

fn kinds(e: &mut Evaluator, ex: &Exchange) -> Vec<&'static str> {
    let mut out = Vec::new();
    e.evaluate(ex, &mut out);
    out.iter().map(|f| f.kind.as_str()).collect()
}

#[test]
fn a_compliant_exchange_has_no_finding() {
    assert!(kinds(&mut evaluator(), &good()).is_empty());
}

#[test]
fn each_kind() {
    let mut e = evaluator();
    type Mutation = Box<dyn Fn(&mut Exchange)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "source_outside_boundary",
            Box::new(|x| x.peer = Some("192.0.2.7:1000".parse().unwrap())),
        ),
        (
            "missing_auth",
            Box::new(|x| {
                x.auth_scheme = AuthScheme::None;
                x.jwt = None;
            }),
        ),
        (
            "wrong_auth_scheme",
            Box::new(|x| {
                x.auth_scheme = AuthScheme::Basic;
                x.jwt = None;
            }),
        ),
        ("method_not_allowed", Box::new(|x| x.method = "DELETE".into())),
        (
            "undeclared_endpoint",
            Box::new(|x| x.path = "/internal/debug".into()),
        ),
        (
            "deprecated_endpoint",
            Box::new(|x| x.path = "/api/v1/things".into()),
        ),
        ("cleartext_sensitive", Box::new(|x| x.tls = false)),
        (
            "secret_in_url",
            Box::new(|x| x.url_detectors = vec!["aws_access_key"]),
        ),
        ("pii_in_url", Box::new(|x| x.url_detectors = vec!["email"])),
        (
            "jwt_alg_none",
            Box::new(|x| x.jwt.as_mut().unwrap().alg = "none".into()),
        ),
        (
            "jwt_expired",
            Box::new(|x| x.jwt.as_mut().unwrap().exp = Some(1000)),
        ),
        (
            "jwt_scope_missing",
            Box::new(|x| x.jwt.as_mut().unwrap().scope = vec!["orders:write".into()]),
        ),
    ];
    for (want, mutate) in cases {
        let mut ex = good();
        mutate(&mut ex);
        let got = kinds(&mut e, &ex);
        assert!(got.contains(&want), "{want}: got {got:?}");
    }
    // A forbidden query key on the deprecated tree: its name is evidence, never a value.
    let mut ex = good();
    ex.path = "/api/v1/login".into();
    ex.query_keys = vec!["password".into()];
    let mut out = Vec::new();
    e.evaluate(&ex, &mut out);
    let f = out.iter().find(|f| f.kind == "secret_in_url").unwrap();
    assert_eq!(f.evidence, "forbidden query key \"password\"");
    assert_eq!(f.rule, "orders /api/v1/**");
}

#[test]
fn rate_limit_fires_once_per_window_per_identity() {
    let mut e = evaluator();
    let mut fired = 0;
    for i in 0..250u64 {
        let mut ex = good();
        ex.ts = NOW + i * 1_000_000; // 250 requests in 0.25 s
        fired += kinds(&mut e, &ex)
            .iter()
            .filter(|k| **k == "rate_limit_exceeded")
            .count();
    }
    assert_eq!(fired, 1);
    // Another identity has its own budget.
    let mut other = good();
    other.fingerprint = Some("ffffffffffff".into());
    assert!(!kinds(&mut e, &other).contains(&"rate_limit_exceeded"));
    // The next window starts clean.
    let mut later = good();
    later.ts = NOW + 61_000_000_000;
    assert!(!kinds(&mut e, &later).contains(&"rate_limit_exceeded"));
}

#[test]
fn auth_failure_burst() {
    let mut e = evaluator();
    let mut fired = 0;
    for i in 0..50u64 {
        let mut ex = good();
        ex.path = "/api/health".into();
        ex.status = Some(401);
        ex.fingerprint = None;
        ex.ts = NOW + i * 10_000_000;
        fired += kinds(&mut e, &ex)
            .iter()
            .filter(|k| **k == "auth_failure_burst")
            .count();
    }
    assert_eq!(fired, 1, "20 failures make a burst, reported once per window");
}

#[test]
fn client_side_exchanges_are_not_judged() {
    let mut ex = good();
    ex.role = crate::capture::Role::Client;
    ex.peer = Some("192.0.2.7:8080".parse().unwrap());
    assert!(kinds(&mut evaluator(), &ex).is_empty());
}

#[test]
fn findings_carry_no_secret() {
    let mut e = evaluator();
    let mut ex = good();
    ex.url_detectors = vec!["jwt", "card_number"];
    ex.auth_scheme = AuthScheme::None;
    let mut out = Vec::new();
    e.evaluate(&ex, &mut out);
    let json: String = out.iter().map(|f| f.to_json()).collect();
    assert!(json.contains(r#""type":"finding""#));
    assert!(json.contains(r#""identity":"0123456789ab""#));
    assert!(!json.contains("eyJ"));
}

#[test]
fn api_key_in_a_declared_custom_header() {
    let text = "services:\n  - name: shop\n    match:\n      port: 8080\n    undeclared: allow\n    defaults:\n      auth:\n        scheme: apikey\n        headers: [X-Shop-Key]\n";
    let policy = Policy::parse("p.yml", text).unwrap();
    // The custom header is a secret header where the policy's options are in use: fingerprinted,
    // reported by name only, redacted.
    let http = policy.http_options();
    let head = b"GET /cart HTTP/1.1\r\nX-Shop-Key: shopkey-VALUE-123\r\n\r\n";
    let req = match crate::http::head::parse_head(head, &http).unwrap() {
        crate::http::head::HeadParse::Complete {
            head: crate::http::Head::Request(r),
            ..
        } => r,
        _ => panic!(),
    };
    assert_eq!(req.auth_scheme, AuthScheme::Apikey);
    assert_eq!(req.api_key_header.as_deref(), Some("x-shop-key"));
    assert!(req.fingerprint.is_some());
    let mut raw = head.to_vec();
    crate::redact::redact_bytes(&mut raw, &http);
    assert!(!String::from_utf8_lossy(&raw).contains("shopkey-VALUE"));
    // Only there: parsing the policy changed nothing process-wide (it once added to a static
    // list, so even `apiwatch check` did, and a reload could never take a name back).
    let plain = crate::http::HttpOptions::default();
    assert!(!plain.is_api_key_header("X-Shop-Key"));
    match crate::http::head::parse_head(head, &plain).unwrap() {
        crate::http::head::HeadParse::Complete {
            head: crate::http::Head::Request(r),
            ..
        } => assert_eq!(r.auth_scheme, AuthScheme::None),
        _ => panic!(),
    }

    let mut e = Evaluator::new(Arc::new(policy));
    let mut ex = good();
    ex.jwt = None;
    ex.auth_scheme = AuthScheme::Apikey;
    ex.api_key_header = Some("x-shop-key".into());
    assert!(kinds(&mut e, &ex).is_empty());
    ex.api_key_header = Some("x-api-key".into());
    assert_eq!(kinds(&mut e, &ex), vec!["wrong_auth_scheme"]);
}

/// A service declared by an OpenAPI document beside the policy, one endpoint written over it.
#[test]
fn an_openapi_document_declares_endpoints_and_the_policy_overrides_it() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/openapi");
    let policy = |extra: &str| {
        format!(
            "zones:\n  lo: [127.0.0.0/8]\nservices:\n  - name: pets\n    match: {{port: 8080}}\n    openapi: petstore-3.0.yaml\n{extra}"
        )
    };
    let p = Policy::parse(&format!("{dir}/policy.yml"), &policy("")).unwrap();
    let http = p.http_options();
    let mut e = Evaluator::new(Arc::new(p));
    let ex = |method: &str, path: &str, auth: AuthScheme| {
        let mut x = good();
        x.jwt = None;
        x.method = method.into();
        x.path = path.into();
        x.auth_scheme = auth;
        x
    };
    let none = AuthScheme::None;
    assert!(
        kinds(&mut e, &ex("GET", "/api/v1/pets", none)).is_empty(),
        "public"
    );
    assert_eq!(
        kinds(&mut e, &ex("GET", "/api/v1/pets/7", none)),
        ["missing_auth"]
    );
    assert!(kinds(&mut e, &ex("GET", "/api/v1/pets/7", AuthScheme::Bearer)).is_empty());
    assert_eq!(
        kinds(&mut e, &ex("DELETE", "/api/v1/pets/7", AuthScheme::Bearer)),
        ["wrong_auth_scheme"],
        "an API key is required"
    );
    let mut key = ex("DELETE", "/api/v1/pets/7", AuthScheme::Apikey);
    key.api_key_header = Some("x-pet-key".into());
    assert!(kinds(&mut e, &key).is_empty());
    assert_eq!(
        kinds(&mut e, &ex("GET", "/api/v1/pets/7/photo", AuthScheme::Basic)),
        ["deprecated_endpoint"]
    );
    assert_eq!(
        kinds(&mut e, &ex("PATCH", "/api/v1/pets", none)),
        ["method_not_allowed"]
    );
    assert_eq!(
        kinds(&mut e, &ex("GET", "/api/v1/owners", none)),
        ["undeclared_endpoint"]
    );
    assert_eq!(
        kinds(&mut e, &ex("GET", "/pets", none)),
        ["undeclared_endpoint"],
        "the base path counts"
    );
    // OAuth 2 scopes become a JWT scope check where a JWT is seen.
    let mut post = ex("POST", "/api/v1/pets", AuthScheme::Bearer);
    post.jwt = good().jwt;
    assert_eq!(kinds(&mut e, &post), ["jwt_scope_missing"]);
    // The API-key header the document names (not a built-in one) is a secret header from now on.
    assert!(http.is_api_key_header("X-Pet-Key"));

    // Written beside the spec: the policy's endpoint wins for what it matches.
    let over = "    endpoints:\n      - {route: /api/v1/pets, methods: [GET], auth: bearer}\n";
    let p = Policy::parse(&format!("{dir}/policy.yml"), &policy(over)).unwrap();
    let mut e = Evaluator::new(Arc::new(p));
    assert_eq!(kinds(&mut e, &ex("GET", "/api/v1/pets", none)), ["missing_auth"]);
    assert!(
        kinds(&mut e, &ex("POST", "/api/v1/pets", AuthScheme::Bearer)).is_empty(),
        "the spec's POST stays"
    );

    // A document that is missing or broken: errors located in it, never a panic.
    let missing = Policy::parse(
        &format!("{dir}/policy.yml"),
        &policy("").replace("petstore-3.0.yaml", "nope.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        missing.contains("nope.yaml") && missing.contains("cannot read"),
        "{missing}"
    );
}

/// A broken policy at start runs with the last good one, and that copy (kept in state_dir) still
/// finds an OpenAPI document named relative to the policy's own directory.
#[test]
fn the_last_good_policy_still_finds_its_openapi_document() {
    let dir = std::env::temp_dir().join(format!("apiwatch-lastgood-{}", std::process::id()));
    let (conf, state) = (dir.join("conf"), dir.join("state"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/openapi/petstore-3.0.yaml"
    );
    std::fs::copy(spec, conf.join("petstore.yaml")).unwrap();
    let policy = conf.join("policy.yml");
    std::fs::write(
        &policy,
        "services:\n  - name: pets\n    match: {port: 8080}\n    openapi: petstore.yaml\n",
    )
    .unwrap();
    let good = Policy::load_or_last_good(&policy, Some(&state)).expect("loads");
    assert_eq!(good.services[0].endpoints.len(), 5);
    std::fs::write(&policy, "services: [broken").unwrap();
    let kept = Policy::load_or_last_good(&policy, Some(&state)).expect("the last good one");
    assert_eq!(
        kept.services[0].endpoints.len(),
        5,
        "the document beside the policy was found"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_service_matched_by_cgroup_uses_the_cgroup_the_capture_recorded() {
    let text = "services:\n  - name: shop\n    match: {cgroup: /system.slice/shop.service}\n    endpoints:\n      - route: /api/**\n        methods: [GET]\n";
    let mut e = Evaluator::new(Arc::new(Policy::parse("p.yml", text).unwrap()));
    let mut ex = good();
    ex.method = "POST".into();
    // Not in the cgroup (the test process's own /proc entry is not read): no service, no finding.
    assert!(kinds(&mut e, &ex).is_empty());
    ex.cgroup = "/system.slice/shop.service".into();
    assert_eq!(kinds(&mut e, &ex), vec!["method_not_allowed"]);
}
