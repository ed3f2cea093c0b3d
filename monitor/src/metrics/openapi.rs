//! The route inventory as OpenAPI: `apiwatch openapi export` drafts a document from what was
//! observed (paths with templated parameters, methods, status codes, media types, the auth
//! schemes seen as security schemes, `x-apiwatch` counts, first/last seen and callers), and
//! `apiwatch openapi diff` compares a document with it (shadow endpoints, zombie endpoints,
//! operations whose required auth traffic went without).
//!
//! Both work on `ObservedRoute`, the JSON form of `/api/v1/routes`: from a running agent, or from
//! a recording replayed through the same inventory.
use std::collections::BTreeMap;

use indexmap::IndexMap;
use openapiv3 as oa;
use serde::Deserialize;

use crate::boundary::openapi::{SchemeKind, SpecDoc, SpecOperation};
use crate::boundary::policy::{Segment, parse_route, route_matches};
use crate::finding::{Finding, FindingKind, Severity};

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ObservedStatus {
    pub status: u16,
    pub count: u64,
    #[serde(default)]
    pub media_types: Vec<String>,
}

/// One entry of `/api/v1/routes` (what `inventory::RouteReport` serializes).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ObservedRoute {
    pub service: String,
    pub role: String,
    pub route: String,
    pub method: String,
    pub count: u64,
    #[serde(default)]
    pub errors_4xx: u64,
    #[serde(default)]
    pub errors_5xx: u64,
    #[serde(default)]
    pub tls_share: f64,
    #[serde(default)]
    pub auth_schemes: BTreeMap<String, u64>,
    #[serde(default)]
    pub callers: Vec<(String, u64)>,
    #[serde(default)]
    pub other_callers: u64,
    #[serde(default)]
    pub latency_ms: serde_json::Value,
    #[serde(default)]
    pub statuses: Vec<ObservedStatus>,
    #[serde(default)]
    pub request_types: Vec<String>,
    #[serde(default)]
    pub api_key_headers: Vec<String>,
    #[serde(default)]
    pub first_seen: String,
    #[serde(default)]
    pub last_seen: String,
}

/// The inventory's server-side routes of `service` (all when None), in a stable order.
pub fn server_routes<'a>(routes: &'a [ObservedRoute], service: Option<&str>) -> Vec<&'a ObservedRoute> {
    let mut out: Vec<&ObservedRoute> = routes
        .iter()
        .filter(|r| r.role == "server" && service.is_none_or(|s| r.service == s))
        .collect();
    out.sort_by(|a, b| (&a.route, &a.method, &a.service).cmp(&(&b.route, &b.method, &b.service)));
    out
}

/// A route template as an OpenAPI path: `/users/{id}/orders/{id}` -> `/users/{id}/orders/{id2}`
/// (parameter names must be unique) and its parameter names; None for what no path can be (the
/// folded `__other__` bucket, `**`).
pub fn openapi_path(route: &str) -> Option<(String, Vec<String>)> {
    if !route.starts_with('/') || route.contains("__other__") || route.contains("**") {
        return None;
    }
    let mut names: Vec<String> = Vec::new();
    let mut path = String::new();
    for seg in route.split('/').filter(|s| !s.is_empty()) {
        path.push('/');
        match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                let base = if name.is_empty() { "param" } else { name };
                let mut n = base.to_string();
                let mut k = 2;
                while names.contains(&n) {
                    n = format!("{base}{k}");
                    k += 1;
                }
                path.push_str(&format!("{{{n}}}"));
                names.push(n);
            }
            None if seg.contains(['{', '}']) => return None,
            None => path.push_str(seg),
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    Some((path, names))
}

/// The security scheme (name, definition) for an auth scheme as apiwatch reports it.
fn security_scheme(scheme: &str, r: &ObservedRoute) -> Vec<(String, oa::SecurityScheme)> {
    let http = |s: &str, format: Option<&str>| oa::SecurityScheme::HTTP {
        scheme: s.into(),
        bearer_format: format.map(str::to_string),
        description: None,
        extensions: IndexMap::new(),
    };
    let key = |location, name: &str, description: Option<&str>| oa::SecurityScheme::APIKey {
        location,
        name: name.into(),
        description: description.map(str::to_string),
        extensions: IndexMap::new(),
    };
    match scheme {
        "bearer" => vec![("bearerAuth".into(), http("bearer", None))],
        "basic" => vec![("basicAuth".into(), http("basic", None))],
        "apikey" => r
            .api_key_headers
            .iter()
            .map(|h| (format!("apiKey_{h}"), key(oa::APIKeyLocation::Header, h, None)))
            .collect(),
        "cookie" => vec![(
            "cookieAuth".into(),
            key(
                oa::APIKeyLocation::Cookie,
                "session",
                Some(
                    "a session cookie (apiwatch fingerprints cookies and never reads their names' values; the name is a placeholder)",
                ),
            ),
        )],
        _ => Vec::new(),
    }
}

/// An OpenAPI 3.0.3 document describing the observed routes.
pub fn export(routes: &[ObservedRoute], service: Option<&str>, title: &str) -> oa::OpenAPI {
    let mut doc = oa::OpenAPI {
        openapi: "3.0.3".into(),
        info: oa::Info {
            title: title.into(),
            version: "observed".into(),
            description: Some(
                "Drafted by apiwatch from observed traffic: every path, method, status code and media type below was seen; review it before publishing. x-apiwatch holds the observations.".into(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut schemes: IndexMap<String, oa::ReferenceOr<oa::SecurityScheme>> = IndexMap::new();
    let mut used_ids: Vec<String> = Vec::new();
    for r in server_routes(routes, service) {
        let Some((path, params)) = openapi_path(&r.route) else {
            continue;
        };
        let item = doc
            .paths
            .paths
            .entry(path.clone())
            .or_insert_with(|| oa::ReferenceOr::Item(oa::PathItem::default()));
        let oa::ReferenceOr::Item(item) = item else {
            continue;
        };
        let slot = match r.method.as_str() {
            "GET" => &mut item.get,
            "PUT" => &mut item.put,
            "POST" => &mut item.post,
            "DELETE" => &mut item.delete,
            "OPTIONS" => &mut item.options,
            "HEAD" => &mut item.head,
            "PATCH" => &mut item.patch,
            "TRACE" => &mut item.trace,
            _ => continue,
        };
        if slot.is_some() {
            continue; // the same route and method on another service: --service tells them apart
        }
        let parameters = params
            .iter()
            .map(|name| {
                oa::ReferenceOr::Item(oa::Parameter::Path {
                    parameter_data: oa::ParameterData {
                        name: name.clone(),
                        description: None,
                        required: true,
                        deprecated: None,
                        format: oa::ParameterSchemaOrContent::Schema(oa::ReferenceOr::Item(oa::Schema {
                            schema_data: Default::default(),
                            schema_kind: oa::SchemaKind::Type(oa::Type::String(Default::default())),
                        })),
                        example: None,
                        examples: IndexMap::new(),
                        explode: None,
                        extensions: IndexMap::new(),
                    },
                    style: oa::PathStyle::Simple,
                })
            })
            .collect();
        let content = |types: &[String]| -> IndexMap<String, oa::MediaType> {
            types
                .iter()
                .map(|t| (t.clone(), oa::MediaType::default()))
                .collect()
        };
        let mut responses = oa::Responses::default();
        for s in &r.statuses {
            responses.responses.insert(
                oa::StatusCode::Code(s.status),
                oa::ReferenceOr::Item(oa::Response {
                    description: format!("observed {} times", s.count),
                    content: content(&s.media_types),
                    ..Default::default()
                }),
            );
        }
        if responses.responses.is_empty() {
            responses.default = Some(oa::ReferenceOr::Item(oa::Response {
                description: "no response observed".into(),
                ..Default::default()
            }));
        }
        // Each scheme seen is one alternative; requests without any make auth optional.
        let mut security: Vec<oa::SecurityRequirement> = Vec::new();
        let mut optional = false;
        for (scheme, n) in &r.auth_schemes {
            if *n == 0 {
                continue;
            }
            if scheme == "none" {
                optional = true;
                continue;
            }
            for (name, def) in security_scheme(scheme, r) {
                schemes.entry(name.clone()).or_insert(oa::ReferenceOr::Item(def));
                security.push(IndexMap::from([(name, Vec::new())]));
            }
        }
        if optional && !security.is_empty() {
            security.push(IndexMap::new());
        }
        let mut id: String = format!("{}{}", r.method.to_ascii_lowercase(), path)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        while used_ids.contains(&id) {
            id.push('_');
        }
        used_ids.push(id.clone());
        let callers: Vec<serde_json::Value> = r
            .callers
            .iter()
            .map(|(addr, n)| serde_json::json!({"address": addr, "count": n}))
            .collect();
        let mut extensions = IndexMap::new();
        extensions.insert(
            "x-apiwatch".to_string(),
            serde_json::json!({
                "service": r.service,
                "route": r.route,
                "count": r.count,
                "errors_4xx": r.errors_4xx,
                "errors_5xx": r.errors_5xx,
                "tls_share": r.tls_share,
                "auth_schemes": r.auth_schemes,
                "first_seen": r.first_seen,
                "last_seen": r.last_seen,
                "callers": callers,
                "other_callers": r.other_callers,
                "latency_ms": r.latency_ms,
            }),
        );
        *slot = Some(oa::Operation {
            tags: vec![r.service.clone()],
            summary: Some(format!("{} {} (observed {} times)", r.method, r.route, r.count)),
            operation_id: Some(id),
            parameters,
            request_body: (!r.request_types.is_empty()).then(|| {
                oa::ReferenceOr::Item(oa::RequestBody {
                    content: content(&r.request_types),
                    ..Default::default()
                })
            }),
            responses,
            security: (!security.is_empty()).then_some(security),
            extensions,
            ..Default::default()
        });
    }
    if !schemes.is_empty() {
        doc.components = Some(oa::Components {
            security_schemes: schemes,
            ..Default::default()
        });
    }
    doc
}

/// Whether an operation's security requires a credential apiwatch can see.
fn requires_auth(op: &SpecOperation) -> bool {
    match &op.security {
        None => false,
        Some(alts) => {
            !alts.is_empty()
                && alts.iter().all(|alt| {
                    !alt.is_empty()
                        && alt
                            .iter()
                            .any(|(_, k, _)| !matches!(k, SchemeKind::ApiKeyQuery(_) | SchemeKind::MutualTls))
                })
        }
    }
}

/// Drift between a document and the observations, as findings (`undeclared_endpoint` for a
/// shadow endpoint, `missing_auth` for traffic without the credential the document requires,
/// `zombie_endpoint` for a documented operation not seen since `zombie_after_ns` before `now_ns`).
pub fn diff(
    spec: &SpecDoc,
    spec_name: &str,
    routes: &[ObservedRoute],
    service: Option<&str>,
    now_ns: u64,
    zombie_after_ns: u64,
) -> Vec<Finding> {
    let observed = server_routes(routes, service);
    // An observed route template against a document's route, with the policy's matcher: a
    // document parameter takes any one segment, an observed `{id}` only a parameter.
    let patterns: Vec<Option<Vec<Segment>>> = spec
        .operations
        .iter()
        .map(|o| parse_route(&o.route).ok())
        .collect();
    let matches = |i: usize, route: &str| patterns[i].as_ref().is_some_and(|p| route_matches(p, route));
    let stale_before = crate::clock::rfc3339_micros(now_ns.saturating_sub(zombie_after_ns));
    let finding =
        |kind: FindingKind, severity, service: &str, route: &str, method: &str, evidence: String| {
            Finding::about_route(
                now_ns,
                kind,
                format!("openapi:{spec_name}"),
                severity,
                (service, route, method),
                evidence,
            )
        };
    let mut out = Vec::new();
    for r in &observed {
        let ops: Vec<&SpecOperation> = spec
            .operations
            .iter()
            .enumerate()
            .filter(|(i, op)| op.method == r.method && matches(*i, &r.route))
            .map(|(_, op)| op)
            .collect();
        if ops.is_empty() {
            out.push(finding(
                FindingKind::UndeclaredEndpoint,
                Severity::Warning,
                &r.service,
                &r.route,
                &r.method,
                format!(
                    "{} {} seen {} times (last {}) is not in {spec_name}: a shadow endpoint",
                    r.method, r.route, r.count, r.last_seen
                ),
            ));
            continue;
        }
        let without = r.auth_schemes.get("none").copied().unwrap_or(0);
        if without > 0 && ops.iter().any(|op| requires_auth(op)) {
            out.push(finding(
                FindingKind::MissingAuth,
                Severity::High,
                &r.service,
                &r.route,
                &r.method,
                format!(
                    "{without} of {} requests had no credential; {spec_name} requires one ({})",
                    r.count, ops[0].at
                ),
            ));
        }
    }
    for (i, op) in spec.operations.iter().enumerate() {
        let seen: Vec<&&ObservedRoute> = observed
            .iter()
            .filter(|r| r.method == op.method && matches(i, &r.route))
            .collect();
        let last = seen.iter().map(|r| r.last_seen.as_str()).max();
        let zombie = match last {
            None => Some(format!("{} {} ({}) was never seen", op.method, op.route, op.at)),
            Some(l) if zombie_after_ns > 0 && l < stale_before.as_str() => {
                Some(format!("{} {} ({}) last seen {l}", op.method, op.route, op.at))
            }
            _ => None,
        };
        if let Some(evidence) = zombie {
            out.push(finding(
                FindingKind::ZombieEndpoint,
                Severity::Info,
                service.unwrap_or(""),
                &op.route,
                &op.method,
                evidence,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
