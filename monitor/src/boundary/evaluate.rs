//! Checking exchanges against the policy: one Finding per boundary crossed, with the evidence to
//! act on it (redacted: names of keys and detectors, fingerprints, never a value).
use std::collections::HashMap;
use std::sync::Arc;

use super::policy::{AuthRequirement, Endpoint, Policy, RateKey, Rules, Service};
use crate::capture::Role;
use crate::exchange::Exchange;
pub use crate::finding::{Finding, FindingKind, Severity};
use crate::http::AuthScheme;
use crate::http::identity::is_secret_detector;

/// Keys tracked at most by the rate limiter and the auth-failure tracker each; beyond, the
/// least recently seen half is dropped (counted).
const MAX_TRACKED_KEYS: usize = 100_000;
/// 401/403 answers to one source or identity within AUTH_FAILURE_WINDOW that make a burst.
pub const AUTH_FAILURE_BURST: u32 = 20;
const AUTH_FAILURE_WINDOW_NS: u64 = 60_000_000_000;

struct Window {
    start_ns: u64,
    count: u32,
    reported: bool,
    last_ns: u64,
}

/// Fixed windows per key, bounded in keys.
#[derive(Default)]
struct Windows {
    map: HashMap<String, Window>,
    evicted: u64,
}

impl Windows {
    /// Counts one hit; true the first time the window's count exceeds `limit`.
    fn hit(&mut self, key: &str, now: u64, window_ns: u64, limit: u32) -> (bool, u32) {
        if !self.map.contains_key(key) && self.map.len() >= MAX_TRACKED_KEYS {
            self.evict_half();
        }
        let w = self.map.entry(key.to_string()).or_insert(Window {
            start_ns: now,
            count: 0,
            reported: false,
            last_ns: now,
        });
        if now.saturating_sub(w.start_ns) >= window_ns {
            *w = Window {
                start_ns: now,
                count: 0,
                reported: false,
                last_ns: now,
            };
        }
        w.count += 1;
        w.last_ns = now;
        if w.count > limit && !w.reported {
            w.reported = true;
            return (true, w.count);
        }
        (false, w.count)
    }

    fn evict_half(&mut self) {
        let mut ages: Vec<u64> = self.map.values().map(|w| w.last_ns).collect();
        ages.sort_unstable();
        let cut = ages[ages.len() / 2];
        let before = self.map.len();
        self.map.retain(|_, w| w.last_ns > cut);
        self.evicted += (before - self.map.len()) as u64;
    }
}

pub struct Evaluator {
    policy: Arc<Policy>,
    rates: Windows,
    auth_failures: Windows,
}

impl Evaluator {
    pub fn new(policy: Arc<Policy>) -> Self {
        Self {
            policy,
            rates: Windows::default(),
            auth_failures: Windows::default(),
        }
    }

    /// Names of the policy's zones containing `ip`.
    pub fn zones_of(&self, ip: std::net::IpAddr) -> Vec<String> {
        self.policy.zones_of(ip).into_iter().map(str::to_string).collect()
    }

    /// A new policy (reload): rate and burst state carry over.
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.policy = policy;
    }

    /// Appends the findings of one exchange; returns whether its endpoint is marked sensitive
    /// (the baselines then also count it per client).
    pub fn evaluate(&mut self, ex: &Exchange, out: &mut Vec<Finding>) -> bool {
        // The serving side is where a boundary is crossed; a client-side exchange to a local
        // server is seen again from the server's side.
        if ex.role != Role::Server {
            return false;
        }
        let policy = self.policy.clone();
        let source_ip = ex.peer.map(|p| p.ip());
        let zones: Vec<String> = source_ip
            .map(|ip| policy.zones_of(ip).into_iter().map(String::from).collect())
            .unwrap_or_default();
        let mut emit = |kind: FindingKind, rule: String, severity: Severity, evidence: String| {
            out.push(Finding {
                record: "finding",
                ts: ex.ts,
                kind,
                rule,
                severity,
                service: ex.service.to_string(),
                route: ex.route.to_string(),
                method: ex.method.clone(),
                source: source_ip.map(|ip| ip.to_string()),
                source_zones: zones.clone(),
                identity: ex.fingerprint.clone(),
                pid: ex.pid,
                comm: ex.comm.to_string(),
                evidence,
                state: None,
            })
        };

        // Built-in detectors run with or without a policy.
        for d in &ex.url_detectors {
            if is_secret_detector(d) {
                emit(
                    FindingKind::SecretInUrl,
                    format!("detector:{d}"),
                    Severity::High,
                    format!("detector {d} fired on the URL"),
                );
            } else {
                emit(
                    FindingKind::PiiInUrl,
                    format!("detector:{d}"),
                    Severity::Warning,
                    format!("detector {d} fired on the URL"),
                );
            }
        }
        if let Some(jwt) = &ex.jwt {
            if jwt.alg.eq_ignore_ascii_case("none") {
                emit(
                    FindingKind::JwtAlgNone,
                    "builtin:jwt".into(),
                    Severity::Critical,
                    "JWT with alg none (unsigned) accepted by the client".into(),
                );
            }
            if let Some(exp) = jwt.exp {
                let now_s = (ex.ts / 1_000_000_000) as i64;
                if exp < now_s {
                    emit(
                        FindingKind::JwtExpired,
                        "builtin:jwt".into(),
                        Severity::Warning,
                        format!("JWT expired {}s before the request", now_s - exp),
                    );
                }
            }
        }

        let Some(service) = self.service_for(&policy, ex) else {
            return false;
        };
        let endpoint = service.endpoint_for(&ex.path, &ex.method);
        let (rule_name, rules) = match endpoint {
            Some(e) => (format!("{} {}", service.name, e.route), &e.rules),
            None => (service.name.clone(), &service.defaults),
        };
        if endpoint.is_none() && service.alert_undeclared {
            emit(
                FindingKind::UndeclaredEndpoint,
                service.name.clone(),
                Severity::Warning,
                format!(
                    "{} {} is not declared in service {}",
                    ex.method, ex.route, service.name
                ),
            );
        }
        if let Some(e) = endpoint {
            check_endpoint(e, ex, &rule_name, &mut emit);
        }
        check_rules(rules, &policy, ex, &zones, &rule_name, &mut emit);

        let key_of = |per: RateKey| match per {
            RateKey::Identity => ex.fingerprint.clone().or(source_ip.map(|i| i.to_string())),
            RateKey::Source => source_ip.map(|i| i.to_string()),
        };
        if let Some(rate) = &rules.rate_limit {
            if let Some(who) = key_of(rate.per) {
                let key = format!("{rule_name}\u{0}{who}");
                let (fired, n) = self
                    .rates
                    .hit(&key, ex.ts, rate.window_secs * 1_000_000_000, rate.limit);
                if fired {
                    let by = if rate.per == RateKey::Identity {
                        "identity"
                    } else {
                        "source"
                    };
                    emit(
                        FindingKind::RateLimitExceeded,
                        rule_name.clone(),
                        Severity::Warning,
                        format!("{n} requests in the window from one {by}, limit {}", rate.text),
                    );
                }
            }
        }
        if matches!(ex.status, Some(401) | Some(403)) {
            if let Some(who) = ex.fingerprint.clone().or(source_ip.map(|i| i.to_string())) {
                let key = format!("{}\u{0}{who}", service.name);
                let (fired, n) =
                    self.auth_failures
                        .hit(&key, ex.ts, AUTH_FAILURE_WINDOW_NS, AUTH_FAILURE_BURST - 1);
                if fired {
                    emit(
                        FindingKind::AuthFailureBurst,
                        service.name.clone(),
                        Severity::High,
                        format!("{n} answers 401/403 within 60s to one source or identity"),
                    );
                }
            }
        }
        rules.sensitive
    }

    fn service_for<'p>(&self, policy: &'p Policy, ex: &Exchange) -> Option<&'p Service> {
        let port = ex.local.map(|a| a.port());
        policy.services.iter().find(|s| {
            s.port.is_none_or(|p| Some(p) == port)
                && s.process.as_ref().is_none_or(|p| **p == *ex.comm)
                // The cgroup the capture recorded for the process (no /proc read here: a
                // recording evaluates the same anywhere).
                && s.cgroup.as_ref().is_none_or(|c| ex.cgroup.starts_with(c.as_str()))
        })
    }
}

fn check_endpoint(
    e: &Endpoint,
    ex: &Exchange,
    rule: &str,
    emit: &mut dyn FnMut(FindingKind, String, Severity, String),
) {
    if !e.methods.is_empty() && !e.methods.contains(&ex.method) {
        emit(
            FindingKind::MethodNotAllowed,
            rule.to_string(),
            Severity::Warning,
            format!("{} not in {}", ex.method, e.methods.join(",")),
        );
    }
}

fn check_rules(
    r: &Rules,
    policy: &Policy,
    ex: &Exchange,
    zones: &[String],
    rule: &str,
    emit: &mut dyn FnMut(FindingKind, String, Severity, String),
) {
    if let Some(allowed) = &r.allowed_zones {
        let names: Vec<&str> = allowed.iter().map(|i| policy.zones[*i].0.as_str()).collect();
        if !zones.iter().any(|z| names.contains(&z.as_str())) {
            let src = ex
                .peer
                .map(|p| p.ip().to_string())
                .unwrap_or_else(|| "unknown".into());
            emit(
                FindingKind::SourceOutsideBoundary,
                rule.to_string(),
                Severity::Critical,
                format!("source {src} is not in {}", names.join(", ")),
            );
        }
    }
    match &r.auth {
        AuthRequirement::None => {}
        AuthRequirement::Any if ex.auth_scheme == AuthScheme::None => emit(
            FindingKind::MissingAuth,
            rule.to_string(),
            Severity::High,
            "no credential on a route that requires one".into(),
        ),
        AuthRequirement::Any => {}
        AuthRequirement::Scheme(want) if ex.auth_scheme == AuthScheme::None => emit(
            FindingKind::MissingAuth,
            rule.to_string(),
            Severity::High,
            format!("no credential; {} required", want.as_str()),
        ),
        AuthRequirement::Scheme(want) if ex.auth_scheme != *want => emit(
            FindingKind::WrongAuthScheme,
            rule.to_string(),
            Severity::Warning,
            format!("{} used; {} required", ex.auth_scheme.as_str(), want.as_str()),
        ),
        AuthRequirement::Scheme(_) => {
            if !r.api_key_headers.is_empty() {
                let used = ex.api_key_header.as_deref().unwrap_or("");
                if !r.api_key_headers.iter().any(|h| h == used) {
                    emit(
                        FindingKind::WrongAuthScheme,
                        rule.to_string(),
                        Severity::Warning,
                        format!(
                            "API key in header {used:?}; accepted: {}",
                            r.api_key_headers.join(", ")
                        ),
                    );
                }
            }
        }
    }
    if let (Some(req), Some(jwt)) = (&r.jwt, &ex.jwt) {
        if let Some(iss) = &req.issuer {
            if jwt.iss.as_ref() != Some(iss) {
                emit(
                    FindingKind::WrongAuthScheme,
                    rule.to_string(),
                    Severity::High,
                    format!("JWT issuer {:?} is not {iss:?}", jwt.iss),
                );
            }
        }
        if let Some(aud) = &req.audience {
            if !jwt.aud.contains(aud) {
                emit(
                    FindingKind::WrongAuthScheme,
                    rule.to_string(),
                    Severity::High,
                    format!("JWT audience {:?} lacks {aud:?}", jwt.aud),
                );
            }
        }
        let missing: Vec<&str> = req
            .scopes
            .iter()
            .filter(|s| !jwt.scope.contains(s))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            emit(
                FindingKind::JwtScopeMissing,
                rule.to_string(),
                Severity::High,
                format!("JWT lacks scope {}", missing.join(", ")),
            );
        }
    }
    if (r.sensitive || r.tls_required) && !ex.tls {
        emit(
            FindingKind::CleartextSensitive,
            rule.to_string(),
            Severity::High,
            "sensitive route served without TLS".into(),
        );
    }
    if r.deprecated {
        emit(
            FindingKind::DeprecatedEndpoint,
            rule.to_string(),
            Severity::Info,
            format!("{} {} is deprecated", ex.method, ex.route),
        );
    }
    for k in &ex.query_keys {
        if r.forbidden_query_keys.iter().any(|f| f.eq_ignore_ascii_case(k)) {
            emit(
                FindingKind::SecretInUrl,
                rule.to_string(),
                Severity::High,
                format!("forbidden query key {k:?}"),
            );
        }
    }
}
