//! OpenAPI tier (root): a Petstore described by an OpenAPI 3.0 document (with $refs, parameters,
//! global and per-operation security, a deprecated operation), served by nginx on loopback and
//! called by curl. The policy declares the service by that document: the agent's findings follow
//! it; `apiwatch openapi export` (live, and from a recording) drafts a document that a real
//! validator (openapi-spec-validator, from PyPI) accepts; `apiwatch openapi diff` names the
//! shadow endpoint, the zombies and the unauthenticated calls; `apiwatch check` locates errors in
//! a broken document.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use apiwatch_tests::*;

/// The Petstore's answers (nginx answers every method of a location the same way).
const LOCATIONS: &str = r#"
    location = /api/v1/pets { default_type application/json; return 200 '[]'; }
    location ~ ^/api/v1/pets/[0-9]+$ { default_type application/json; return 200 '{"id":7,"name":"rex"}'; }
    location ~ ^/api/v1/pets/[0-9]+/photo$ { default_type image/png; return 200 'png'; }
    location /api/v1/owners { default_type application/json; return 200 '[]'; }
"#;

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/openapi").join(name)
}

fn validate(doc: &Path) {
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator", doc.to_str().unwrap()])
        .output()
        .expect("python3 -m openapi_spec_validator (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "{} does not validate: {}{}\n{}",
        doc.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(doc).unwrap_or_default()
    );
}

fn apiwatch(args: &[&str]) -> std::process::Output {
    Command::new(apiwatch_bin()).args(args).output().unwrap()
}

fn wait_for_log(path: &Path, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(path).unwrap_or_default().contains(marker) {
        assert!(Instant::now() < deadline, "no {marker:?} in {}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, then the exit status (a stop drains what the kernel wrote).
fn stop(mut p: Proc) {
    Command::new("kill")
        .args(["-TERM", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(p.0.wait().unwrap().success());
}

#[test]
fn a_service_declared_by_openapi_is_checked_exported_and_diffed() {
    require_root();
    // The fixtures are valid documents to begin with (so a failure below is apiwatch's).
    validate(&fixture("petstore-3.0.yaml"));
    validate(&fixture("petstore-3.1.json"));
    let nginx = Nginx::start_with(&[], LOCATIONS);
    let dir = TempDir::new("openapi");
    let policy = dir.path().join("policy.yml");
    std::fs::write(
        &policy,
        format!(
            "zones:\n  local: [127.0.0.0/8]\nservices:\n  - name: petstore\n    match: {{port: {}}}\n    openapi: {}\n",
            nginx.port,
            fixture("petstore-3.0.yaml").display()
        ),
    )
    .unwrap();
    let check = apiwatch(&["check", "--policy", policy.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let metrics_port = free_port();
    let findings = dir.path().join("findings.jsonl");
    let agent_log = dir.path().join("agent.log");
    let agent = Proc(
        Command::new(apiwatch_bin())
            .args(["run", "--exchanges", "off", "--policy", policy.to_str().unwrap()])
            .args(["--findings", findings.to_str().unwrap()])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(capture_mode_args())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&agent_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let rec = dir.path().join("petstore.rec");
    let record_log = dir.path().join("record.log");
    let recorder = Proc(
        Command::new(apiwatch_bin())
            // With the policy: the API-key header its document names is blanked in the recording.
            .args([
                "record",
                "--out",
                rec.to_str().unwrap(),
                "--policy",
                policy.to_str().unwrap(),
            ])
            .args(capture_mode_args())
            .stderr(std::fs::File::create(&record_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for_log(&agent_log, "apiwatch is watching HTTP traffic");
    wait_for_log(&record_log, "recording to");

    let base = format!("http://127.0.0.1:{}/api/v1", nginx.port);
    let call = |args: &[&str]| {
        let mut a = vec!["-o", "/dev/null"];
        a.extend_from_slice(args);
        curl(&a);
    };
    call(&[&format!("{base}/pets")]); // public
    call(&[&format!("{base}/pets/7")]); // the global bearer requirement, unmet
    call(&["-H", "Authorization: Bearer t0ken", &format!("{base}/pets/7")]);
    call(&["-X", "DELETE", "-H", "X-Pet-Key: k3y", &format!("{base}/pets/8")]);
    call(&["-u", "bob:pw", &format!("{base}/pets/7/photo")]); // deprecated
    call(&[&format!("{base}/owners")]); // not in the document
    call(&["-X", "PATCH", &format!("{base}/pets")]); // a method the document does not have

    // Export, live: the running agent's inventory of this service.
    let service = format!("nginx:{}", nginx.port);
    let agent_addr = format!("127.0.0.1:{metrics_port}");
    let exported = dir.path().join("exported.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    let doc: serde_json::Value = loop {
        let out = apiwatch(&[
            "openapi",
            "export",
            "--agent",
            &agent_addr,
            "--service",
            &service,
            "--out",
            exported.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&exported).unwrap()).unwrap();
        if doc["paths"].as_object().is_some_and(|p| p.len() >= 4) || Instant::now() > deadline {
            break doc;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    validate(&exported);
    let paths = doc["paths"].as_object().unwrap();
    let keys: Vec<&String> = paths.keys().collect();
    assert!(paths.contains_key("/api/v1/owners"), "{keys:?}");
    let pet = paths
        .iter()
        .find(|(k, _)| k.starts_with("/api/v1/pets/{") && !k.ends_with("photo"))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no templated pet path in {keys:?}"));
    assert_eq!(pet["get"]["x-apiwatch"]["count"], 2);
    assert!(pet["get"]["responses"]["200"]["content"]["application/json"].is_object());
    assert_eq!(
        pet["get"]["security"],
        serde_json::json!([{"bearerAuth": []}, {}])
    );
    assert_eq!(
        pet["delete"]["security"],
        serde_json::json!([{"apiKey_x-pet-key": []}])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["basicAuth"]["scheme"],
        "basic"
    );
    let exported_text = std::fs::read_to_string(&exported).unwrap();
    for secret in ["t0ken", "k3y", "cHc=", "bob:pw"] {
        assert!(!exported_text.contains(secret), "{secret} in the export");
    }

    // Drift, live.
    let diff = apiwatch(&[
        "openapi",
        "diff",
        "--spec",
        fixture("petstore-3.0.yaml").to_str().unwrap(),
        "--agent",
        &agent_addr,
        "--service",
        &service,
    ]);
    assert!(diff.status.success(), "{}", String::from_utf8_lossy(&diff.stderr));
    let drift: Vec<serde_json::Value> = String::from_utf8_lossy(&diff.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |kind: &str, method: &str, route: &str| {
        drift.iter().any(|f| {
            f["kind"] == kind
                && f["method"] == method
                && f["route"].as_str().is_some_and(|r| r.starts_with(route))
        })
    };
    assert!(has("undeclared_endpoint", "GET", "/api/v1/owners"), "{drift:#?}");
    assert!(has("undeclared_endpoint", "PATCH", "/api/v1/pets"), "{drift:#?}");
    assert!(has("missing_auth", "GET", "/api/v1/pets/{"), "{drift:#?}");
    assert!(
        has("zombie_endpoint", "POST", "/api/v1/pets"),
        "never called: {drift:#?}"
    );
    assert!(
        !has("zombie_endpoint", "DELETE", "/api/v1/pets/{"),
        "called: {drift:#?}"
    );

    stop(recorder);
    stop(agent);

    // The agent judged the traffic by the document.
    let lines = std::fs::read_to_string(&findings).unwrap();
    let kinds_for = |path_part: &str, method: &str| -> Vec<String> {
        lines
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|f| f["method"] == method && f["route"].as_str().is_some_and(|r| r.contains(path_part)))
            .map(|f| f["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kinds_for("/owners", "GET"), ["undeclared_endpoint"], "{lines}");
    assert_eq!(kinds_for("/pets", "PATCH"), ["method_not_allowed"], "{lines}");
    assert!(
        kinds_for("/photo", "GET").contains(&"deprecated_endpoint".to_string()),
        "{lines}"
    );
    let pet_get = kinds_for("/api/v1/pets/", "GET");
    assert_eq!(
        pet_get.iter().filter(|k| *k == "missing_auth").count(),
        1,
        "one of the two GETs had no token: {lines}"
    );
    assert!(
        kinds_for("/api/v1/pets/", "DELETE").is_empty(),
        "the API key is what the document asks: {lines}"
    );

    // Export from the recording, without root: the same paths, valid too.
    let from_rec = dir.path().join("from-recording.yaml");
    let out = apiwatch(&[
        "openapi",
        "export",
        "--from-recording",
        rec.to_str().unwrap(),
        "--service",
        &service,
        "--out",
        from_rec.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    validate(&from_rec);
    let recording = std::fs::read(&rec).unwrap();
    for secret in ["t0ken", "k3y"] {
        assert!(
            !recording.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} in the recording"
        );
    }
    let text = std::fs::read_to_string(&from_rec).unwrap();
    assert!(text.contains("/api/v1/owners:"), "{text}");
    for secret in ["t0ken", "k3y", "cHc="] {
        assert!(!text.contains(secret), "{secret} in the export");
    }

    // A broken document: located errors from check, the agent never crashes on it.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n      security: [{nope: []}]\n      responses: {'200': {description: ok}}\n  /b: 12\n",
    )
    .unwrap();
    std::fs::write(
        &policy,
        format!(
            "services:\n  - name: petstore\n    match: {{port: {}}}\n    openapi: broken.yaml\n",
            nginx.port
        ),
    )
    .unwrap();
    let check = apiwatch(&["check", "--policy", policy.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{err}");
    // Located in the document: serde reports a bad path item at the start of `paths` (line 4),
    // where openapiv3's flattened map begins.
    let at = format!("{}:", broken.display());
    let located = err
        .split(&at)
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|line| line.parse::<usize>().ok());
    assert!(matches!(located, Some(4..=8)), "located in the document: {err}");
    assert!(err.contains("PathItem"), "{err}");
}
