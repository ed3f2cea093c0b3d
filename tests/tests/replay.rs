//! Replay tier (no root): a recording made with real nginx, python3 and curl (see
//! tests/fixtures/make-fixture.sh) goes through the pipeline and must give the exact exchanges.
use std::io::BufReader;
use std::path::PathBuf;

use monitor::agent::{AgentOptions, replay};
use monitor::output::SharedVec;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn replay_fixture() -> (Vec<monitor::exchange::Exchange>, monitor::agent::Summary) {
    let sink = SharedVec::default();
    let file = std::fs::File::open(fixture("loopback.rec")).unwrap();
    let summary = replay(
        BufReader::new(file),
        &AgentOptions::default(),
        Box::new(sink.clone()),
        None,
    )
    .unwrap();
    (sink.snapshot(), summary)
}

#[test]
fn replay_gives_the_expected_exchange_lines() {
    let (ex, summary) = replay_fixture();
    let got: Vec<String> = ex.iter().map(|e| e.to_json()).collect();
    let want: Vec<String> = std::fs::read_to_string(fixture("loopback.expected.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(got, want);
    assert_eq!(summary.pipeline.parse_errors.total(), 0);
}

#[test]
fn replay_exchanges_match_what_was_sent() {
    // Independent of the expected file: what make-fixture.sh sent, on both sides.
    let (ex, _) = replay_fixture();
    let mut seen: Vec<(&str, &str, &str, Option<u16>, &str)> = ex
        .iter()
        .map(|e| {
            (
                e.role.as_str(),
                e.method.as_str(),
                e.path.as_str(),
                e.status,
                e.auth_scheme.as_str(),
            )
        })
        .collect();
    seen.sort();
    let mut want = Vec::new();
    for role in ["client", "server"] {
        want.extend([
            (role, "GET", "/items.json", Some(200), "bearer"),
            (role, "GET", "/big.txt", Some(200), "bearer"),
            (role, "GET", "/nope", Some(404), "bearer"),
            (role, "POST", "/api/orders", Some(201), "cookie"),
            (role, "HEAD", "/items.json", Some(200), "apikey"),
            (role, "GET", "/missing", Some(404), "basic"),
        ]);
    }
    want.sort();
    assert_eq!(seen, want);
    // big.txt is 9000 bytes sent by sendfile: counted, never copied.
    let big = ex.iter().find(|e| e.path == "/big.txt").unwrap();
    assert!(big.resp_bytes > 9000);
    let items = ex
        .iter()
        .find(|e| e.path == "/items.json" && e.method == "GET")
        .unwrap();
    assert_eq!(items.query_keys, vec!["user", "api_key"]);
}

#[test]
fn no_secret_in_the_recording_or_the_output() {
    let rec = std::fs::read(fixture("loopback.rec")).unwrap();
    let (ex, _) = replay_fixture();
    let out: String = ex.iter().map(|e| e.to_json()).collect();
    // Everything make-fixture.sh sent as a credential or a query value.
    for secret in [
        "eyJhbGci",
        "SIGNATURE",
        "alice",
        "K3Y-VALUE",
        "C00KIE",
        "hunter2",
        "APIKEY123",
        "Ym9iOkIwQlBBU1M",
    ] {
        assert!(
            !rec.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is in the recording"
        );
        assert!(!out.contains(secret), "{secret} is in the output");
    }
}
