//! OpenAPI documents as boundary declarations: each path and method becomes an endpoint, with
//! its security requirement as an auth rule and `deprecated` as a deprecated endpoint.
//!
//! Parsing is the crates' (openapiv3 for 3.0, oas3 for 3.1: the two revisions are incompatible
//! and no crate reads both); this module only maps their models onto `SpecOperation`, the little
//! a policy needs. Documents are read with serde_norway (YAML or JSON), so a broken document
//! gives file:line:column. `$ref`s inside the document are resolved for path items and security
//! schemes (the parts that matter here); references to other files are reported, not followed.
use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::yaml::{ConfigError, ConfigErrors};

/// How a security scheme shows on the wire (what apiwatch can check).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemeKind {
    Bearer,
    Basic,
    /// An API key in this header (lowercase).
    ApiKeyHeader(String),
    /// An API key in this query parameter.
    ApiKeyQuery(String),
    /// An API key in this cookie.
    ApiKeyCookie(String),
    /// OAuth 2 or OpenID Connect: a bearer token (a JWT when one is seen) with these scopes.
    OAuth,
    /// Client certificates: apiwatch sees TLS, not the certificate.
    MutualTls,
    /// Another HTTP scheme (digest, ...): some credential.
    OtherHttp(String),
}

/// One way to satisfy a requirement: every scheme named, each with its scopes.
pub type Alternative = Vec<(String, SchemeKind, Vec<String>)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecOperation {
    /// The route as the server sees it (base path of its server included), `{param}` segments.
    pub route: String,
    pub method: String,
    pub deprecated: bool,
    /// None: the document says nothing (the service's defaults apply); Some(empty): no auth;
    /// else any one alternative satisfies it (an empty alternative makes auth optional).
    pub security: Option<Vec<Alternative>>,
    /// Where in the document the operation is (for messages): `paths./pets.get`.
    pub at: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecDoc {
    pub title: String,
    pub version: String,
    pub operations: Vec<SpecOperation>,
}

#[derive(Deserialize, Default)]
struct VersionOnly {
    openapi: Option<String>,
    swagger: Option<String>,
}

/// Reads and maps a document; every problem is reported, located in `file`.
pub fn load(path: &Path) -> Result<SpecDoc, ConfigErrors> {
    let (file, text) = crate::yaml::read_file(path)?;
    parse(&file, &text)
}

pub fn parse(file: &str, text: &str) -> Result<SpecDoc, ConfigErrors> {
    let err = |path: &[&str], message: String| ConfigErrors(vec![ConfigError::at(file, text, path, message)]);
    let v: VersionOnly = crate::yaml::parse_yaml(file, text)?;
    let mut errors = Vec::new();
    let doc = match (v.openapi.as_deref(), v.swagger.as_deref()) {
        (_, Some(s)) => {
            return Err(err(
                &["swagger"],
                format!("Swagger {s} is not supported: convert the document to OpenAPI 3 (3.0 or 3.1)"),
            ));
        }
        (Some(o), None) if o.starts_with("3.0") => {
            let spec: openapiv3::OpenAPI = crate::yaml::parse_yaml_strict(file, text)?;
            v30::map(&spec, &mut |p, m| errors.push(ConfigError::at(file, text, p, m)))
        }
        (Some(o), None) if o.starts_with("3.1") => {
            let spec: oas3::Spec = crate::yaml::parse_yaml_strict(file, text)?;
            let raw: serde_norway::Value = crate::yaml::parse_yaml_strict(file, text)?;
            v31::map(&spec, &raw, &mut |p, m| {
                errors.push(ConfigError::at(file, text, p, m))
            })
        }
        (Some(o), None) => {
            return Err(err(
                &["openapi"],
                format!("OpenAPI {o} is not supported (3.0.x and 3.1.x are)"),
            ));
        }
        (None, None) => {
            return Err(err(&[], "not an OpenAPI document: no `openapi` field".into()));
        }
    };
    if errors.is_empty() {
        Ok(doc)
    } else {
        Err(ConfigErrors(errors))
    }
}

const METHODS: [&str; 8] = [
    "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE",
];

/// The path part of a server URL (`https://api.example.com/v1` -> `/v1`, `/v1` -> `/v1`,
/// `{scheme}://host/{base}` with variables replaced by their defaults), without a trailing /.
pub fn base_path(url: &str, defaults: &BTreeMap<String, String>) -> String {
    let mut u = url.to_string();
    for (k, v) in defaults {
        u = u.replace(&format!("{{{k}}}"), v);
    }
    let path = match u.find("://") {
        Some(i) => u[i + 3..].find('/').map_or("", |j| &u[i + 3 + j..]),
        None => u.as_str(),
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.trim_end_matches('/').to_string()
}

/// `base` + `path`, and any segment holding a template (`{id}`, `{name}.json`) as `{param}`.
pub fn route_of(base: &str, path: &str) -> String {
    let joined = format!("{base}/{}", path.trim_start_matches('/'));
    let mut out = String::new();
    for seg in joined.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if seg.contains('{') {
            let name = seg
                .split_once('{')
                .and_then(|(_, r)| r.split_once('}'))
                .map_or("param", |(n, _)| n);
            out.push_str(&format!("{{{name}}}"));
        } else {
            out.push_str(seg);
        }
    }
    if out.is_empty() { "/".into() } else { out }
}

/// The base paths operations are served under: the most specific `servers` list that is not
/// empty (operation, path item, document); none gives `/`.
fn bases(lists: &[Servers]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(list) = lists.iter().find(|l| !l.is_empty()) {
        for (url, defaults) in list {
            let b = base_path(url, defaults);
            if !out.contains(&b) {
                out.push(b);
            }
        }
    }
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

/// A path item's operations (get, put, post, delete, options, head, patch, trace) with their
/// methods.
fn with_methods<T>(ops: [&Option<T>; 8]) -> impl Iterator<Item = (&'static str, &T)> {
    METHODS
        .into_iter()
        .zip(ops)
        .filter_map(|(m, o)| o.as_ref().map(|o| (m, o)))
}

type Servers = Vec<(String, BTreeMap<String, String>)>;

/// One operation, once under each of its base paths.
fn push_operation(
    out: &mut Vec<SpecOperation>,
    path: &str,
    method: &str,
    deprecated: bool,
    security: Option<Vec<Alternative>>,
    servers: &[Servers],
) {
    for base in bases(servers) {
        out.push(SpecOperation {
            route: route_of(&base, path),
            method: method.into(),
            deprecated,
            security: security.clone(),
            at: format!("paths.{path}.{}", method.to_ascii_lowercase()),
        });
    }
}

type Report<'a> = dyn FnMut(&[&str], String) + 'a;

mod v30 {
    use super::*;
    use openapiv3::{APIKeyLocation, OpenAPI, ReferenceOr, SecurityScheme};

    fn servers(list: &[openapiv3::Server]) -> Servers {
        list.iter()
            .map(|s| {
                let defaults = s
                    .variables
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.default.clone()))
                    .collect();
                (s.url.clone(), defaults)
            })
            .collect()
    }

    fn scheme(spec: &OpenAPI, name: &str, report: &mut Report) -> Option<SchemeKind> {
        let found = spec
            .components
            .as_ref()
            .and_then(|c| c.security_schemes.get(name));
        let scheme = match found {
            Some(ReferenceOr::Item(s)) => s,
            Some(ReferenceOr::Reference { reference }) => {
                let target = reference.strip_prefix("#/components/securitySchemes/");
                match target
                    .and_then(|t| spec.components.as_ref()?.security_schemes.get(t))
                    .and_then(ReferenceOr::as_item)
                {
                    Some(s) => s,
                    None => {
                        report(
                            &["components", "securitySchemes", name],
                            format!(
                                "$ref {reference:?} does not resolve to a security scheme in this document"
                            ),
                        );
                        return None;
                    }
                }
            }
            None => {
                report(
                    &["components", "securitySchemes"],
                    format!("security scheme {name:?} is required by an operation but not defined"),
                );
                return None;
            }
        };
        Some(match scheme {
            SecurityScheme::HTTP { scheme, .. } => match scheme.to_ascii_lowercase().as_str() {
                "bearer" => SchemeKind::Bearer,
                "basic" => SchemeKind::Basic,
                other => SchemeKind::OtherHttp(other.into()),
            },
            SecurityScheme::APIKey { location, name, .. } => match location {
                APIKeyLocation::Header => SchemeKind::ApiKeyHeader(name.to_ascii_lowercase()),
                APIKeyLocation::Query => SchemeKind::ApiKeyQuery(name.clone()),
                APIKeyLocation::Cookie => SchemeKind::ApiKeyCookie(name.clone()),
            },
            SecurityScheme::OAuth2 { .. } | SecurityScheme::OpenIDConnect { .. } => SchemeKind::OAuth,
        })
    }

    fn security(
        spec: &OpenAPI,
        reqs: &Option<Vec<openapiv3::SecurityRequirement>>,
        report: &mut Report,
    ) -> Option<Vec<Alternative>> {
        let reqs = reqs.as_ref()?;
        Some(
            reqs.iter()
                .map(|r| {
                    r.iter()
                        .filter_map(|(name, scopes)| {
                            scheme(spec, name, report).map(|k| (name.clone(), k, scopes.clone()))
                        })
                        .collect()
                })
                .collect(),
        )
    }

    pub(super) fn map(spec: &OpenAPI, report: &mut Report) -> SpecDoc {
        let mut ops = Vec::new();
        let top = servers(&spec.servers);
        let global = security(spec, &spec.security, report);
        for (path, item) in spec.paths.iter() {
            let item = match item {
                ReferenceOr::Item(i) => i,
                ReferenceOr::Reference { reference } => {
                    report(
                        &["paths", path],
                        format!(
                            "path item $ref {reference:?}: references to other documents are not followed"
                        ),
                    );
                    continue;
                }
            };
            let at_path = servers(&item.servers);
            let all = [
                &item.get,
                &item.put,
                &item.post,
                &item.delete,
                &item.options,
                &item.head,
                &item.patch,
                &item.trace,
            ];
            for (method, op) in with_methods(all) {
                let sec = match &op.security {
                    Some(_) => security(spec, &op.security, report),
                    None => global.clone(),
                };
                let lists = [servers(op.servers.as_slice()), at_path.clone(), top.clone()];
                push_operation(&mut ops, path, method, op.deprecated, sec, &lists);
            }
        }
        SpecDoc {
            title: spec.info.title.clone(),
            version: spec.info.version.clone(),
            operations: ops,
        }
    }
}

mod v31 {
    use super::*;
    use oas3::spec::{ObjectOrReference, SecurityScheme, Spec};

    fn servers(list: &[oas3::spec::Server]) -> Servers {
        list.iter()
            .map(|s| {
                let defaults = s
                    .variables
                    .iter()
                    .map(|(k, v)| (k.clone(), v.default.clone()))
                    .collect();
                (s.url.clone(), defaults)
            })
            .collect()
    }

    fn scheme(spec: &Spec, name: &str, report: &mut Report) -> Option<SchemeKind> {
        let found = spec
            .components
            .as_ref()
            .and_then(|c| c.security_schemes.get(name));
        let Some(found) = found else {
            report(
                &["components", "securitySchemes"],
                format!("security scheme {name:?} is required by an operation but not defined"),
            );
            return None;
        };
        let scheme = match found {
            ObjectOrReference::Object(s) => s.clone(),
            ObjectOrReference::Ref { ref_path, .. } => match found.resolve(spec) {
                Ok(s) => s,
                Err(e) => {
                    report(
                        &["components", "securitySchemes", name],
                        format!("$ref {ref_path:?} does not resolve ({e})"),
                    );
                    return None;
                }
            },
        };
        Some(match scheme {
            SecurityScheme::Http { scheme, .. } => match scheme.to_ascii_lowercase().as_str() {
                "bearer" => SchemeKind::Bearer,
                "basic" => SchemeKind::Basic,
                other => SchemeKind::OtherHttp(other.into()),
            },
            SecurityScheme::ApiKey { location, name, .. } => match location.as_str() {
                "header" => SchemeKind::ApiKeyHeader(name.to_ascii_lowercase()),
                "query" => SchemeKind::ApiKeyQuery(name),
                "cookie" => SchemeKind::ApiKeyCookie(name),
                other => {
                    report(
                        &["components", "securitySchemes", name.as_str()],
                        format!("apiKey in {other:?}: must be header, query or cookie"),
                    );
                    return None;
                }
            },
            SecurityScheme::OAuth2 { .. } | SecurityScheme::OpenIdConnect { .. } => SchemeKind::OAuth,
            SecurityScheme::MutualTls { .. } => SchemeKind::MutualTls,
        })
    }

    fn security(
        spec: &Spec,
        reqs: &[oas3::spec::SecurityRequirement],
        report: &mut Report,
    ) -> Vec<Alternative> {
        reqs.iter()
            .map(|r| {
                r.0.iter()
                    .filter_map(|(name, scopes)| {
                        scheme(spec, name, report).map(|k| (name.clone(), k, scopes.clone()))
                    })
                    .collect()
            })
            .collect()
    }

    /// Whether `key` is present in the raw document at `path` (oas3 reads an absent `security`
    /// and `security: []` alike, and the difference matters: `[]` removes the global one).
    fn present(raw: &serde_norway::Value, path: &[&str], key: &str) -> bool {
        let mut v = raw;
        for p in path {
            match v.get(*p) {
                Some(next) => v = next,
                None => return false,
            }
        }
        v.get(key).is_some()
    }

    pub(super) fn map(spec: &Spec, raw: &serde_norway::Value, report: &mut Report) -> SpecDoc {
        let mut ops = Vec::new();
        let top = servers(&spec.servers);
        let global = present(raw, &[], "security").then(|| security(spec, &spec.security, report));
        for (path, item) in spec.paths.iter().flatten() {
            let resolved;
            // Where the operations are in the raw document (for `present`).
            let mut raw_at = vec!["paths", path.as_str()];
            let item = match &item.reference {
                Some(r) => {
                    let target = r.strip_prefix("#/components/pathItems/");
                    match target.and_then(|t| Some((t, spec.components.as_ref()?.path_items.get(t)?))) {
                        Some((t, ObjectOrReference::Object(i))) => {
                            resolved = i.clone();
                            raw_at = vec!["components", "pathItems", t];
                            &resolved
                        }
                        _ => {
                            report(
                                &["paths", path],
                                format!(
                                    "path item $ref {r:?} does not resolve to a path item in this document"
                                ),
                            );
                            continue;
                        }
                    }
                }
                None => item,
            };
            let at_path = servers(&item.servers);
            let all = [
                &item.get,
                &item.put,
                &item.post,
                &item.delete,
                &item.options,
                &item.head,
                &item.patch,
                &item.trace,
            ];
            for (method, op) in with_methods(all) {
                let lower = method.to_ascii_lowercase();
                let mut at = raw_at.clone();
                at.push(&lower);
                let sec = if present(raw, &at, "security") {
                    Some(security(spec, &op.security, report))
                } else {
                    global.clone()
                };
                let lists = [servers(&op.servers), at_path.clone(), top.clone()];
                push_operation(
                    &mut ops,
                    path,
                    method,
                    op.deprecated.unwrap_or(false),
                    sec,
                    &lists,
                );
            }
        }
        SpecDoc {
            title: spec.info.title.clone(),
            version: spec.info.version.clone(),
            operations: ops,
        }
    }
}

#[cfg(test)]
mod tests;
