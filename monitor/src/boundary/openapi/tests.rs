//! OpenAPI 3.0 and 3.1 documents mapped to operations; broken ones located.
use super::*;

const PETSTORE_30: &str = include_str!("../../../../tests/fixtures/openapi/petstore-3.0.yaml");
const PETSTORE_31: &str = include_str!("../../../../tests/fixtures/openapi/petstore-3.1.json");

fn ops(doc: &SpecDoc) -> Vec<(String, String)> {
    doc.operations
        .iter()
        .map(|o| (o.method.clone(), o.route.clone()))
        .collect()
}

fn op<'a>(doc: &'a SpecDoc, method: &str, route: &str) -> &'a SpecOperation {
    doc.operations
        .iter()
        .find(|o| o.method == method && o.route == route)
        .unwrap_or_else(|| panic!("no {method} {route} in {:?}", ops(doc)))
}

fn kinds(o: &SpecOperation) -> Vec<Vec<SchemeKind>> {
    o.security
        .as_ref()
        .map(|alts| {
            alts.iter()
                .map(|a| a.iter().map(|(_, k, _)| k.clone()).collect())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_30_document_gives_every_operation_under_its_base_path() {
    let doc = parse("petstore-3.0.yaml", PETSTORE_30).unwrap();
    assert_eq!((doc.title.as_str(), doc.version.as_str()), ("Petstore", "1.0.0"));
    assert_eq!(
        ops(&doc),
        [
            ("GET", "/api/v1/pets"),
            ("POST", "/api/v1/pets"),
            ("GET", "/api/v1/pets/{petId}"),
            ("DELETE", "/api/v1/pets/{petId}"),
            ("GET", "/api/v1/pets/{petId}/photo"),
        ]
        .map(|(m, r)| (m.to_string(), r.to_string()))
    );
    assert_eq!(
        op(&doc, "GET", "/api/v1/pets").security,
        Some(vec![]),
        "security: [] is public"
    );
    assert_eq!(
        kinds(op(&doc, "GET", "/api/v1/pets/{petId}")),
        [[SchemeKind::Bearer]],
        "the global requirement"
    );
    let post = op(&doc, "POST", "/api/v1/pets");
    assert_eq!(post.security.as_ref().unwrap()[0][0].2, ["pets:write"]);
    assert_eq!(kinds(post), [[SchemeKind::OAuth]]);
    assert_eq!(
        kinds(op(&doc, "DELETE", "/api/v1/pets/{petId}")),
        [[SchemeKind::ApiKeyHeader("x-pet-key".into())]]
    );
    let photo = op(&doc, "GET", "/api/v1/pets/{petId}/photo");
    assert!(photo.deprecated);
    assert_eq!(kinds(photo), [[SchemeKind::Basic]]);
}

#[test]
fn a_31_document_in_json_with_a_path_item_ref() {
    let doc = parse("petstore-3.1.json", PETSTORE_31).unwrap();
    assert_eq!(doc.title, "Petstore (3.1)");
    assert_eq!(op(&doc, "GET", "/api/v2/pets").security, Some(vec![]));
    assert_eq!(
        kinds(op(&doc, "GET", "/api/v2/pets/{petId}")),
        [[SchemeKind::Bearer]]
    );
    assert!(op(&doc, "GET", "/api/v2/pets/{petId}/photo").deprecated);
    assert_eq!(
        op(&doc, "GET", "/api/v2/health").security,
        Some(vec![]),
        "resolved from components"
    );
    assert_eq!(doc.operations.len(), 6);
}

#[test]
fn base_paths_and_templates() {
    let none = BTreeMap::new();
    assert_eq!(base_path("https://api.example.com/v1/", &none), "/v1");
    assert_eq!(base_path("https://api.example.com", &none), "");
    assert_eq!(base_path("/v2", &none), "/v2");
    let vars = BTreeMap::from([("env".to_string(), "prod".to_string())]);
    assert_eq!(
        base_path("https://{env}.example.com/{env}/api", &vars),
        "/prod/api"
    );
    assert_eq!(route_of("/v1", "/files/{name}.json"), "/v1/files/{name}");
    assert_eq!(route_of("", "/"), "/");
}

#[test]
fn broken_and_unsupported_documents_give_located_errors() {
    let cases: &[(&str, &str, usize)] = &[
        // A type error deep in the document (paths must be a map): its line.
        (
            "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /a: 12\n",
            "",
            4,
        ),
        (
            "swagger: '2.0'\ninfo: {title: t, version: '1'}\n",
            "Swagger 2.0 is not supported",
            1,
        ),
        ("openapi: 4.0.0\n", "OpenAPI 4.0.0 is not supported", 1),
        ("info: {title: t}\n", "not an OpenAPI document", 0),
        // YAML that does not parse.
        ("openapi: 3.0.3\ninfo: [\n", "", 3),
        (
            "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n      security: [{nope: []}]\n      responses: {'200': {description: ok}}\n",
            "security scheme \"nope\" is required",
            0,
        ),
    ];
    for (text, want, line) in cases {
        let e = parse("spec.yaml", text).expect_err(text);
        let msg = e.to_string();
        assert!(msg.starts_with("spec.yaml"), "{msg}");
        assert!(msg.contains(want), "{text}: {msg}");
        if *line > 0 {
            assert_eq!(e.0[0].line, Some(*line), "{text}: {msg}");
            assert!(e.0[0].column.is_some(), "{msg}");
        }
    }
}
