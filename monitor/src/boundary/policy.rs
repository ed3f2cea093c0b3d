//! The policy file: zones, services, endpoints and their rules. Parsed with serde (unknown
//! fields rejected), then compiled; every problem is reported at once with file, line, column and
//! field.
use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::yaml::{ConfigError, ConfigErrors};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    zones: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    services: Vec<ServiceSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSpec {
    name: String,
    #[serde(rename = "match")]
    matcher: MatchSpec,
    /// What an endpoint not declared below is: `allow` or `alert` (a shadow API).
    #[serde(default)]
    undeclared: Option<String>,
    #[serde(default)]
    defaults: RuleSpec,
    #[serde(default)]
    endpoints: Vec<EndpointSpec>,
    /// An OpenAPI document (3.0 or 3.1, YAML or JSON; relative to the policy file): each of its
    /// operations is an endpoint, after those written here (which win for what they match).
    #[serde(default)]
    openapi: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchSpec {
    port: Option<u16>,
    process: Option<String>,
    cgroup: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    allowed_sources: Option<Vec<String>>,
    auth: Option<AuthSpec>,
    tls_required: Option<bool>,
    sensitive: Option<bool>,
    deprecated: Option<bool>,
    rate_limit: Option<RateSpec>,
    forbidden_query_keys: Option<Vec<String>>,
}

// The rule fields repeat RuleSpec's: serde's `flatten` cannot be combined with
// `deny_unknown_fields`, and rejecting misspelt keys matters more here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointSpec {
    route: String,
    #[serde(default)]
    methods: Vec<String>,
    allowed_sources: Option<Vec<String>>,
    auth: Option<AuthSpec>,
    tls_required: Option<bool>,
    sensitive: Option<bool>,
    deprecated: Option<bool>,
    rate_limit: Option<RateSpec>,
    forbidden_query_keys: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum AuthSpec {
    Scheme(String),
    Detailed(AuthDetail),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthDetail {
    scheme: String,
    /// For `apikey`: the header names that may carry the key.
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    jwt: Option<JwtSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtSpec {
    issuer: Option<String>,
    audience: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateSpec {
    /// "100/min", "10/s", "5000/hour".
    limit: String,
    /// `source` (peer address) or `identity` (credential fingerprint).
    #[serde(default = "default_per")]
    per: String,
}

fn default_per() -> String {
    "source".into()
}

/// What authentication an endpoint requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthRequirement {
    None,
    Any,
    Scheme(crate::http::AuthScheme),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JwtRequirement {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub scopes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateKey {
    Source,
    Identity,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub window_secs: u64,
    pub per: RateKey,
    /// As written, for evidence ("100/min").
    pub text: String,
}

/// The effective rules of an endpoint (endpoint fields over service defaults over built-ins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Indexes into Policy::zones; None = any source.
    pub allowed_zones: Option<Vec<usize>>,
    pub auth: AuthRequirement,
    /// For an API-key requirement: the accepted header names (lowercase); empty = any.
    pub api_key_headers: Vec<String>,
    pub jwt: Option<JwtRequirement>,
    pub tls_required: bool,
    pub sensitive: bool,
    pub deprecated: bool,
    pub rate_limit: Option<RateLimit>,
    pub forbidden_query_keys: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param,
    /// `**`: zero or more segments.
    Rest,
}

#[derive(Clone, Debug)]
pub struct Endpoint {
    pub route: String,
    pub pattern: Vec<Segment>,
    pub methods: Vec<String>,
    pub rules: Rules,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    pub port: Option<u16>,
    pub process: Option<String>,
    pub cgroup: Option<String>,
    pub alert_undeclared: bool,
    pub defaults: Rules,
    pub endpoints: Vec<Endpoint>,
    /// The endpoints' route patterns as a segment trie: a lookup walks the path once.
    trie: RouteTrie,
}

impl Service {
    /// The endpoint an exchange falls under: the first declared one matching the path whose
    /// methods include `method` (or that lists none), else the first matching the path (its
    /// method list then makes the exchange `method_not_allowed`). Several endpoints may share a
    /// route with different methods: an OpenAPI document's operations do.
    pub fn endpoint_for(&self, path: &str, method: &str) -> Option<&Endpoint> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let takes = |i: usize| {
            let m = &self.endpoints[i].methods;
            m.is_empty() || m.iter().any(|x| x == method)
        };
        self.trie
            .first_match(&segs, &self.endpoints, &takes)
            .or_else(|| self.trie.first_match(&segs, &self.endpoints, &|_| true))
            .map(|i| &self.endpoints[i])
    }
}

/// Literal segments branch by name, `{param}` by a single child; a pattern with `**` stops at
/// that depth and its tail is matched in place (few patterns have one). Among all matches the
/// lowest index wins: the first declared endpoint.
#[derive(Clone, Debug, Default)]
struct RouteTrie {
    here: Vec<usize>,
    literal: std::collections::HashMap<String, RouteTrie>,
    param: Option<Box<RouteTrie>>,
    /// (endpoint, depth of its `**`)
    rest: Vec<(usize, usize)>,
}

impl RouteTrie {
    fn insert(&mut self, idx: usize, pattern: &[Segment], depth: usize) {
        match pattern.get(depth) {
            None => self.here.push(idx),
            Some(Segment::Literal(l)) => {
                self.literal
                    .entry(l.clone())
                    .or_default()
                    .insert(idx, pattern, depth + 1)
            }
            Some(Segment::Param) => {
                self.param
                    .get_or_insert_with(Default::default)
                    .insert(idx, pattern, depth + 1)
            }
            Some(Segment::Rest) => self.rest.push((idx, depth)),
        }
    }

    /// The lowest endpoint index matching `segs` among those `take` accepts.
    fn first_match(
        &self,
        segs: &[&str],
        endpoints: &[Endpoint],
        take: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        fn min(a: Option<usize>, b: Option<usize>) -> Option<usize> {
            match (a, b) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            }
        }
        let mut best = match segs.first() {
            None => self.here.iter().copied().filter(|&i| take(i)).min(),
            Some(first) => min(
                self.literal
                    .get(*first)
                    .and_then(|c| c.first_match(&segs[1..], endpoints, take)),
                self.param
                    .as_ref()
                    .and_then(|c| c.first_match(&segs[1..], endpoints, take)),
            ),
        };
        for &(i, depth) in &self.rest {
            if best.is_none_or(|b| i < b) && take(i) && segments_match(&endpoints[i].pattern[depth..], segs) {
                best = Some(i);
            }
        }
        best
    }
}

#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub zones: Vec<(String, Vec<IpNet>)>,
    pub services: Vec<Service>,
}

/// The copy of the last policy that loaded, in state_dir.
const LAST_GOOD: &str = "last-good-policy.yml";

impl Policy {
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigErrors> {
        let (file, text) = crate::yaml::read_file(path)?;
        Self::parse(&file, &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigErrors> {
        let spec: PolicyFile = crate::yaml::parse_yaml(file, text)?;
        let mut errors = Vec::new();
        let mut in_specs = Vec::new();
        let dir = std::path::Path::new(file)
            .parent()
            .map(std::path::Path::to_path_buf);
        let policy = compile(
            spec,
            dir.as_deref(),
            &mut |path: &[String], message: String| {
                let refs: Vec<&str> = path.iter().map(String::as_str).collect();
                errors.push(ConfigError::at(file, text, &refs, message));
            },
            &mut in_specs,
        );
        errors.extend(in_specs);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(policy)
    }

    /// Keeps the policy file that just loaded as the last good one in `state_dir` (for a later
    /// start whose policy is broken); a failure is logged, never fatal.
    pub fn keep_as_last_good(path: &std::path::Path, state_dir: &std::path::Path) {
        let lg = state_dir.join(LAST_GOOD);
        let kept = std::fs::read(path).and_then(|text| crate::state::write_atomic(&lg, &text));
        if let Err(e) = kept {
            log::warn!("cannot keep a copy of the policy in {}: {e}", lg.display());
        }
    }

    /// Loads a policy for a running agent: on success the text is also kept as the last good
    /// policy in `state_dir`; on failure every error is logged and the last good policy kept there
    /// (from an earlier run) is used, so a broken file never leaves the host unwatched.
    pub fn load_or_last_good(path: &std::path::Path, state_dir: Option<&std::path::Path>) -> Option<Self> {
        let last_good = state_dir.map(|d| d.join(LAST_GOOD));
        match Self::load(path) {
            Ok(p) => {
                if let Some(dir) = state_dir {
                    Self::keep_as_last_good(path, dir);
                }
                Some(p)
            }
            Err(errors) => {
                for e in &errors.0 {
                    log::error!("{e}");
                }
                // The copy is read as if it were still beside the policy: an `openapi:` path
                // relative to the policy's directory still resolves.
                let from_copy = |copy: &std::path::Path| {
                    let (_, text) = crate::yaml::read_file(copy)?;
                    Self::parse(&path.display().to_string(), &text)
                };
                match last_good.as_deref().map(from_copy) {
                    Some(Ok(p)) => {
                        log::error!(
                            "the policy {} is broken: running with the last good one ({})",
                            path.display(),
                            last_good
                                .as_deref()
                                .map(|p| p.display().to_string())
                                .unwrap_or_default()
                        );
                        Some(p)
                    }
                    _ => {
                        log::error!(
                            "the policy {} is broken and no earlier good one is kept: only the built-in detectors run",
                            path.display()
                        );
                        None
                    }
                }
            }
        }
    }

    /// Every API-key header name the policy declares (so their values are treated as secrets).
    pub fn api_key_headers(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.services {
            for r in std::iter::once(&s.defaults).chain(s.endpoints.iter().map(|e| &e.rules)) {
                for h in &r.api_key_headers {
                    if !out.contains(h) {
                        out.push(h.clone());
                    }
                }
            }
        }
        out
    }

    /// What the HTTP parsers and the recording's redaction take from the policy: the header
    /// names it declares for API keys carry secrets, wherever the options are in use (the
    /// pipeline and the recorder replace theirs on a reload).
    pub fn http_options(&self) -> crate::http::HttpOptions {
        crate::http::HttpOptions::with_api_key_headers(self.api_key_headers())
    }

    /// Zones containing an address (names).
    pub fn zones_of(&self, ip: IpAddr) -> Vec<&str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.zones
            .iter()
            .filter(|(_, nets)| nets.iter().any(|n| n.contains(&ip)))
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

type Report<'a> = dyn FnMut(&[String], String) + 'a;

/// `dir`: where relative `openapi` paths are; `in_specs`: errors located in those documents.
fn compile(
    spec: PolicyFile,
    dir: Option<&std::path::Path>,
    report: &mut Report,
    in_specs: &mut Vec<ConfigError>,
) -> Policy {
    let mut zones = Vec::new();
    for (name, cidrs) in spec.zones {
        let mut nets = Vec::new();
        for (i, c) in cidrs.iter().enumerate() {
            match parse_net(c) {
                Some(n) => nets.push(n),
                None => report(
                    &["zones".into(), name.clone()],
                    format!(
                        "entry {} ({c:?}) is not an address or CIDR (10.0.0.0/8, fd00::/8, 127.0.0.1)",
                        i + 1
                    ),
                ),
            }
        }
        zones.push((name, nets));
    }
    let zone_names: Vec<String> = zones.iter().map(|(n, _)| n.clone()).collect();
    let builtin = Rules {
        allowed_zones: None,
        auth: AuthRequirement::None,
        api_key_headers: Vec::new(),
        jwt: None,
        tls_required: false,
        sensitive: false,
        deprecated: false,
        rate_limit: None,
        forbidden_query_keys: Vec::new(),
    };
    let mut services = Vec::new();
    for (si, s) in spec.services.into_iter().enumerate() {
        let at = |rest: &[&str]| -> Vec<String> {
            let mut p = vec!["services".to_string(), si.to_string()];
            p.extend(rest.iter().map(|s| s.to_string()));
            p
        };
        if s.matcher.port.is_none() && s.matcher.process.is_none() && s.matcher.cgroup.is_none() {
            report(
                &at(&["match"]),
                "give at least one of port, process, cgroup".into(),
            );
        }
        let alert_undeclared = match s.undeclared.as_deref() {
            None | Some("alert") => true,
            Some("allow") => false,
            Some(other) => {
                report(
                    &at(&["undeclared"]),
                    format!("must be allow or alert, is {other:?}"),
                );
                true
            }
        };
        let defaults = rules(
            &builtin,
            RuleFields::from_defaults(&s.defaults),
            &zone_names,
            &mut |field, msg| report(&at(&["defaults", field]), msg),
        );
        let mut endpoints = Vec::new();
        for (ei, e) in s.endpoints.iter().enumerate() {
            let at_e = |field: &str| at(&["endpoints", &ei.to_string(), field]);
            let pattern = match parse_route(&e.route) {
                Ok(p) => p,
                Err(msg) => {
                    report(&at_e("route"), msg);
                    Vec::new()
                }
            };
            let mut methods = Vec::new();
            for m in &e.methods {
                let up = m.to_ascii_uppercase();
                if !crate::http::KNOWN_METHODS.contains(&up.as_str()) {
                    report(&at_e("methods"), format!("{m:?} is not an HTTP method"));
                }
                methods.push(up);
            }
            let r = rules(
                &defaults,
                RuleFields::from_endpoint(e),
                &zone_names,
                &mut |field, msg| report(&at_e(field), msg),
            );
            endpoints.push(Endpoint {
                route: e.route.clone(),
                pattern,
                methods,
                rules: r,
            });
        }
        if let Some(doc) = &s.openapi {
            let path = match dir {
                Some(d) if std::path::Path::new(doc).is_relative() => d.join(doc),
                _ => std::path::PathBuf::from(doc),
            };
            match super::openapi::load(&path) {
                Ok(spec) => {
                    for op in &spec.operations {
                        if endpoints
                            .iter()
                            .any(|e| e.route == op.route && e.methods.contains(&op.method))
                        {
                            continue; // several servers with one base path, or written above
                        }
                        match parse_route(&op.route) {
                            Ok(pattern) => endpoints.push(Endpoint {
                                route: op.route.clone(),
                                pattern,
                                methods: vec![op.method.clone()],
                                rules: spec_rules(&defaults, op),
                            }),
                            Err(msg) => report(
                                &at(&["openapi"]),
                                format!("{} ({}): {msg}", path.display(), op.at),
                            ),
                        }
                    }
                }
                Err(e) => in_specs.extend(e.0),
            }
        }
        let mut trie = RouteTrie::default();
        for (i, e) in endpoints.iter().enumerate() {
            trie.insert(i, &e.pattern, 0);
        }
        services.push(Service {
            trie,
            name: s.name,
            port: s.matcher.port,
            process: s.matcher.process,
            cgroup: s.matcher.cgroup,
            alert_undeclared,
            defaults,
            endpoints,
        });
    }
    Policy { zones, services }
}

struct RuleFields<'a> {
    allowed_sources: Option<&'a Vec<String>>,
    auth: Option<&'a AuthSpec>,
    tls_required: Option<bool>,
    sensitive: Option<bool>,
    deprecated: Option<bool>,
    rate_limit: Option<&'a RateSpec>,
    forbidden_query_keys: Option<&'a Vec<String>>,
}

impl<'a> RuleFields<'a> {
    fn from_defaults(r: &'a RuleSpec) -> Self {
        Self {
            allowed_sources: r.allowed_sources.as_ref(),
            auth: r.auth.as_ref(),
            tls_required: r.tls_required,
            sensitive: r.sensitive,
            deprecated: r.deprecated,
            rate_limit: r.rate_limit.as_ref(),
            forbidden_query_keys: r.forbidden_query_keys.as_ref(),
        }
    }
    fn from_endpoint(e: &'a EndpointSpec) -> Self {
        Self {
            allowed_sources: e.allowed_sources.as_ref(),
            auth: e.auth.as_ref(),
            tls_required: e.tls_required,
            sensitive: e.sensitive,
            deprecated: e.deprecated,
            rate_limit: e.rate_limit.as_ref(),
            forbidden_query_keys: e.forbidden_query_keys.as_ref(),
        }
    }
}

fn rules(base: &Rules, f: RuleFields, zones: &[String], report: &mut dyn FnMut(&str, String)) -> Rules {
    let mut r = base.clone();
    if let Some(sources) = f.allowed_sources {
        if sources.iter().any(|s| s == "any") {
            r.allowed_zones = None;
        } else {
            let mut idx = Vec::new();
            for s in sources {
                match zones.iter().position(|z| z == s) {
                    Some(i) => idx.push(i),
                    None => report(
                        "allowed_sources",
                        format!("unknown zone {s:?} (declared: {})", zones.join(", ")),
                    ),
                }
            }
            r.allowed_zones = Some(idx);
        }
    }
    if let Some(a) = f.auth {
        let (scheme, jwt, headers) = match a {
            AuthSpec::Scheme(s) => (s.as_str(), None, Vec::new()),
            AuthSpec::Detailed(d) => (d.scheme.as_str(), d.jwt.clone(), d.headers.clone()),
        };
        if !headers.is_empty() && scheme != "apikey" {
            report("auth", format!("headers are for scheme apikey, not {scheme}"));
        }
        r.api_key_headers = headers.iter().map(|h| h.to_ascii_lowercase()).collect();
        use crate::http::AuthScheme as S;
        r.auth = match scheme {
            "none" => AuthRequirement::None,
            "any" => AuthRequirement::Any,
            "bearer" => AuthRequirement::Scheme(S::Bearer),
            "basic" => AuthRequirement::Scheme(S::Basic),
            "apikey" => AuthRequirement::Scheme(S::Apikey),
            "cookie" => AuthRequirement::Scheme(S::Cookie),
            other => {
                report(
                    "auth",
                    format!("unknown scheme {other:?} (none, any, bearer, basic, apikey, cookie)"),
                );
                AuthRequirement::Any
            }
        };
        r.jwt = jwt.map(|j| JwtRequirement {
            issuer: j.issuer,
            audience: j.audience,
            scopes: j.scopes,
        });
    }
    if let Some(v) = f.tls_required {
        r.tls_required = v;
    }
    if let Some(v) = f.sensitive {
        r.sensitive = v;
    }
    if let Some(v) = f.deprecated {
        r.deprecated = v;
    }
    if let Some(rate) = f.rate_limit {
        match crate::clock::parse_rate(&rate.limit) {
            Some((limit, window_secs)) => {
                let per = match rate.per.as_str() {
                    "source" => RateKey::Source,
                    "identity" => RateKey::Identity,
                    other => {
                        report(
                            "rate_limit",
                            format!("per must be source or identity, is {other:?}"),
                        );
                        RateKey::Source
                    }
                };
                r.rate_limit = Some(RateLimit {
                    limit,
                    window_secs,
                    per,
                    text: rate.limit.clone(),
                });
            }
            None => report(
                "rate_limit",
                format!("limit {:?} is not N/s, N/min or N/hour", rate.limit),
            ),
        }
    }
    if let Some(keys) = f.forbidden_query_keys {
        r.forbidden_query_keys = keys.clone();
    }
    r
}

/// An OpenAPI operation's rules: the service's defaults, with the operation's security as the
/// auth requirement and its `deprecated` flag. Alternatives (any one suffices) that all use one
/// scheme require that scheme, different ones any credential; an empty alternative makes auth
/// optional, as does one apiwatch cannot check (an API key in the query: its value is never read).
fn spec_rules(defaults: &Rules, op: &super::openapi::SpecOperation) -> Rules {
    use super::openapi::SchemeKind as K;
    use crate::http::AuthScheme as S;
    let mut r = defaults.clone();
    r.deprecated = r.deprecated || op.deprecated;
    let Some(alternatives) = &op.security else {
        return r;
    };
    r.auth = AuthRequirement::None;
    r.api_key_headers.clear();
    r.jwt = None;
    let mut wanted: Vec<(S, Option<String>, Vec<String>)> = Vec::new();
    for alt in alternatives {
        // What the exchange will show: an Authorization header wins over an API key, which
        // wins over a cookie (the head parser's precedence).
        let pick = alt
            .iter()
            .filter_map(|(_, kind, scopes)| match kind {
                K::Bearer => Some((0, S::Bearer, None, Vec::new())),
                K::OAuth => Some((0, S::Bearer, None, scopes.clone())),
                K::Basic => Some((0, S::Basic, None, Vec::new())),
                K::OtherHttp(_) => Some((0, S::Other, None, Vec::new())),
                K::ApiKeyHeader(h) => Some((1, S::Apikey, Some(h.clone()), Vec::new())),
                K::ApiKeyCookie(_) => Some((2, S::Cookie, None, Vec::new())),
                K::ApiKeyQuery(_) | K::MutualTls => None,
            })
            .min_by_key(|p| p.0);
        if alt.iter().any(|(_, k, _)| *k == K::MutualTls) {
            r.tls_required = true;
        }
        match pick {
            Some((_, scheme, header, scopes)) => wanted.push((scheme, header, scopes)),
            // Nothing to check in this alternative: a request may satisfy it unseen.
            None => return r,
        }
    }
    let Some(first) = wanted.first() else {
        return r;
    };
    if wanted.iter().all(|w| w.0 == first.0) {
        r.auth = if first.0 == S::Other {
            AuthRequirement::Any
        } else {
            AuthRequirement::Scheme(first.0)
        };
        for (_, h, _) in &wanted {
            if let Some(h) = h {
                if !r.api_key_headers.contains(h) {
                    r.api_key_headers.push(h.clone());
                }
            }
        }
        // Scopes are checked where one alternative names them (with several, any would do).
        if wanted.len() == 1 && !first.2.is_empty() {
            r.jwt = Some(JwtRequirement {
                scopes: first.2.clone(),
                ..JwtRequirement::default()
            });
        }
    } else {
        r.auth = AuthRequirement::Any;
    }
    r
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// `/users/{id}/orders/**` -> segments.
pub fn parse_route(route: &str) -> Result<Vec<Segment>, String> {
    if !route.starts_with('/') {
        return Err(format!("route {route:?} must start with /"));
    }
    let mut out = Vec::new();
    for seg in route.split('/').filter(|s| !s.is_empty()) {
        out.push(if seg == "**" {
            Segment::Rest
        } else if seg.starts_with('{') && seg.ends_with('}') && seg.len() > 2 {
            Segment::Param
        } else if seg.contains(['{', '}', '*']) {
            return Err(format!(
                "segment {seg:?} of {route:?}: use {{name}} for one segment or ** for any number"
            ));
        } else {
            Segment::Literal(seg.to_string())
        });
    }
    Ok(out)
}

/// Whether a request path matches a route pattern.
pub fn route_matches(pattern: &[Segment], path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    segments_match(pattern, &segs)
}

fn segments_match(p: &[Segment], s: &[&str]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(Segment::Rest) => (0..=s.len()).any(|k| segments_match(&p[1..], &s[k..])),
        Some(Segment::Param) => !s.is_empty() && segments_match(&p[1..], &s[1..]),
        Some(Segment::Literal(l)) => s.first() == Some(&l.as_str()) && segments_match(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"zones:
  internal: [10.0.0.0/8, 127.0.0.0/8, "::1/128"]
  partners: [203.0.113.0/24]
services:
  - name: orders
    match:
      port: 8080
    undeclared: alert
    defaults:
      allowed_sources: [internal]
      auth: any
    endpoints:
      - route: /api/orders/{id}
        methods: [GET, PUT]
        auth:
          scheme: bearer
          jwt:
            issuer: https://idp.example
            scopes: [orders:read]
        sensitive: true
        rate_limit:
          limit: 100/min
          per: identity
      - route: /api/health
        methods: [GET]
        auth: none
        allowed_sources: [any]
      - route: /api/v1/**
        deprecated: true
        forbidden_query_keys: [password]
"#;

    #[test]
    fn compiles_the_example() {
        let p = Policy::parse("p.yml", EXAMPLE).unwrap();
        assert_eq!(p.zones.len(), 2);
        let s = &p.services[0];
        assert_eq!(s.port, Some(8080));
        assert!(s.alert_undeclared);
        assert_eq!(s.endpoints.len(), 3);
        let e = &s.endpoints[0];
        assert_eq!(e.methods, vec!["GET", "PUT"]);
        assert_eq!(
            e.rules.auth,
            AuthRequirement::Scheme(crate::http::AuthScheme::Bearer)
        );
        assert_eq!(
            e.rules.allowed_zones,
            Some(vec![0]),
            "inherits the service default"
        );
        assert_eq!(e.rules.rate_limit.as_ref().unwrap().limit, 100);
        assert_eq!(s.endpoints[1].rules.allowed_zones, None);
        assert_eq!(p.zones_of("127.0.0.1".parse().unwrap()), vec!["internal"]);
        assert_eq!(
            p.zones_of("::ffff:203.0.113.9".parse().unwrap()),
            vec!["partners"]
        );
        assert!(p.zones_of("192.0.2.1".parse().unwrap()).is_empty());
    }

    #[test]
    fn first_declared_endpoint_wins_through_the_index() {
        let text = "services:\n  - name: s\n    match: {port: 1}\n    endpoints:\n      - route: /**\n        deprecated: true\n      - route: /a/{x}\n      - route: /b\n";
        let p = Policy::parse("p", text).unwrap();
        let s = &p.services[0];
        assert_eq!(s.endpoint_for("/a/1", "GET").unwrap().route, "/**");
        let text = "services:\n  - name: s\n    match: {port: 1}\n    endpoints:\n      - route: /a/{x}\n      - route: /**\n      - route: /b\n";
        let p = Policy::parse("p", text).unwrap();
        let s = &p.services[0];
        assert_eq!(s.endpoint_for("/a/1", "GET").unwrap().route, "/a/{x}");
        assert_eq!(s.endpoint_for("/b", "GET").unwrap().route, "/**");
        assert_eq!(s.endpoint_for("/c/d", "GET").unwrap().route, "/**");
    }

    #[test]
    fn routes_match() {
        let r = |s: &str| parse_route(s).unwrap();
        assert!(route_matches(&r("/api/orders/{id}"), "/api/orders/42"));
        assert!(!route_matches(&r("/api/orders/{id}"), "/api/orders/42/items"));
        assert!(route_matches(&r("/api/v1/**"), "/api/v1"));
        assert!(route_matches(&r("/api/v1/**"), "/api/v1/a/b/c"));
        assert!(route_matches(&r("/**/health"), "/x/y/health"));
        assert!(!route_matches(&r("/a"), "/b"));
        assert!(parse_route("/a/{x").is_err());
        assert!(parse_route("no-slash").is_err());
    }

    #[test]
    fn every_error_with_its_position() {
        let bad = "zones:\n  internal: [10.0.0.0/33]\nservices:\n  - name: a\n    match: {}\n    undeclared: maybe\n    endpoints:\n      - route: /x/{id\n        methods: [GET, FETCH]\n        allowed_sources: [nowhere]\n        rate_limit:\n          limit: 5/fortnight\n";
        let errs = Policy::parse("p.yml", bad).unwrap_err().0;
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        for want in [
            "p.yml:2:3: zones.internal:",
            "p.yml:5:5: services.0.match: give at least one",
            "p.yml:6:5: services.0.undeclared:",
            "p.yml:8:9: services.0.endpoints.0.route:",
            "p.yml:9:9: services.0.endpoints.0.methods: \"FETCH\"",
            "p.yml:10:9: services.0.endpoints.0.allowed_sources: unknown zone \"nowhere\"",
            "p.yml:11:9: services.0.endpoints.0.rate_limit:",
        ] {
            assert!(
                shown.iter().any(|s| s.starts_with(want)),
                "missing {want:?} in {shown:#?}"
            );
        }
        assert_eq!(shown.len(), 7, "{shown:#?}");
        let syntax = Policy::parse("p.yml", "services:\n  - name: a\n    colour: red\n")
            .unwrap_err()
            .0;
        assert_eq!(syntax.len(), 1);
        assert_eq!(syntax[0].file, "p.yml");
        assert!(syntax[0].line.is_some());
    }
}
