//! Export and drift from an inventory fed real-looking exchanges.
use super::*;
use crate::http::AuthScheme;
use crate::metrics::Inventory;

const S: u64 = 1_000_000_000;
const NOW: u64 = 1_800_000_000 * S;

fn observe(inv: &mut Inventory, method: &str, route: &str, status: u16, auth: AuthScheme, ts: u64) {
    let mut ex = crate::exchange::Exchange::example();
    ex.service = "python3:8080".into();
    ex.method = method.into();
    ex.route = route.into();
    ex.path = route.replace("{id}", "7");
    ex.status = Some(status);
    ex.auth_scheme = auth;
    ex.ts = ts;
    ex.resp_content_type = Some("application/json".into());
    ex.req_content_type = (method == "POST").then(|| "application/json".to_string());
    if auth == AuthScheme::Apikey {
        ex.api_key_header = Some("x-api-key".into());
    }
    inv.observe(&ex);
}

fn observed(inv: &Inventory) -> Vec<ObservedRoute> {
    serde_json::from_value(serde_json::to_value(inv.report()).unwrap()).unwrap()
}

fn sample() -> Vec<ObservedRoute> {
    let mut inv = Inventory::new(100);
    observe(
        &mut inv,
        "GET",
        "/api/v1/pets",
        200,
        AuthScheme::None,
        NOW - 10 * S,
    );
    observe(
        &mut inv,
        "POST",
        "/api/v1/pets",
        201,
        AuthScheme::Bearer,
        NOW - 9 * S,
    );
    observe(
        &mut inv,
        "GET",
        "/api/v1/pets/{id}",
        200,
        AuthScheme::Bearer,
        NOW - 8 * S,
    );
    observe(
        &mut inv,
        "GET",
        "/api/v1/pets/{id}",
        404,
        AuthScheme::None,
        NOW - 7 * S,
    );
    observe(
        &mut inv,
        "DELETE",
        "/api/v1/pets/{id}",
        204,
        AuthScheme::Apikey,
        NOW - 6 * S,
    );
    observe(
        &mut inv,
        "GET",
        "/api/v1/admin/{id}/{id}",
        200,
        AuthScheme::Basic,
        NOW - 5 * S,
    );
    observed(&inv)
}

#[test]
fn the_export_describes_what_was_seen() {
    let doc = export(&sample(), None, "observed");
    let v = serde_json::to_value(&doc).unwrap();
    let pets = &v["paths"]["/api/v1/pets/{id}"];
    assert_eq!(pets["get"]["responses"]["404"]["description"], "observed 1 times");
    assert!(pets["get"]["responses"]["200"]["content"]["application/json"].is_object());
    assert_eq!(pets["get"]["parameters"][0]["name"], "id");
    assert_eq!(pets["get"]["parameters"][0]["in"], "path");
    // Bearer and no credential were both seen: bearer, or nothing.
    assert_eq!(
        pets["get"]["security"],
        serde_json::json!([{"bearerAuth": []}, {}])
    );
    assert_eq!(
        pets["delete"]["security"],
        serde_json::json!([{"apiKey_x-api-key": []}])
    );
    assert_eq!(
        v["components"]["securitySchemes"]["apiKey_x-api-key"]["name"],
        "x-api-key"
    );
    assert_eq!(
        v["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    assert!(v["paths"]["/api/v1/pets"]["post"]["requestBody"]["content"]["application/json"].is_object());
    let x = &pets["get"]["x-apiwatch"];
    assert_eq!(x["count"], 2);
    assert_eq!(x["callers"][0]["address"], "::1");
    assert!(x["first_seen"].as_str().unwrap() < x["last_seen"].as_str().unwrap());
    // Parameter names are unique within a path.
    assert!(
        v["paths"]["/api/v1/admin/{id}/{id2}"]["get"].is_object(),
        "{:#}",
        v["paths"]
    );
    assert!(
        v["paths"].get("/api/v1/pets").unwrap()["get"]
            .get("security")
            .is_none(),
        "never authenticated"
    );
    assert_eq!(export(&sample(), Some("nope"), "x").paths.paths.len(), 0);
}

#[test]
fn drift_names_shadow_zombie_and_unauthenticated_endpoints() {
    let text = include_str!("../../../../tests/fixtures/openapi/petstore-3.0.yaml");
    let spec = crate::boundary::openapi::parse("petstore-3.0.yaml", text).unwrap();
    let found = diff(&spec, "petstore-3.0.yaml", &sample(), None, NOW, 0);
    let got: Vec<(&str, String)> = found
        .iter()
        .map(|f| (f.kind.as_str(), format!("{} {}", f.method, f.route)))
        .collect();
    assert_eq!(
        got,
        [
            ("undeclared_endpoint", "GET /api/v1/admin/{id}/{id}".to_string()),
            ("missing_auth", "GET /api/v1/pets/{id}".to_string()),
            ("zombie_endpoint", "GET /api/v1/pets/{petId}/photo".to_string()),
        ],
        "{found:#?}"
    );
    assert!(
        found[1].evidence.contains("1 of 2 requests had no credential"),
        "{}",
        found[1].evidence
    );
    // Not seen for a day: with --zombie-days 1 a week later everything is a zombie.
    let later = diff(&spec, "p", &sample(), None, NOW + 7 * 86_400 * S, 86_400 * S);
    assert_eq!(later.iter().filter(|f| f.kind == "zombie_endpoint").count(), 5);
}

#[test]
fn paths_that_cannot_be_openapi_are_left_out() {
    assert_eq!(openapi_path("/a/__other__"), None);
    assert_eq!(openapi_path("/a/**"), None);
    assert_eq!(openapi_path("/a/x{y}"), None);
    assert_eq!(openapi_path("/").unwrap().0, "/");
}
