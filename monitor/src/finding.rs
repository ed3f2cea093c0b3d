//! The finding contract: a boundary violation or a baseline anomaly, as the boundary and baseline
//! stages raise it and the metrics, alert and output stages take it.
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Severity::Info,
            Severity::Warning,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// What a finding says was crossed or is unusual: boundary rules, built-in detectors, baseline
/// anomalies, and the OpenAPI drift report's zombie endpoints. Written as `as_str` gives it
/// (the `kind` field, metric labels, the `alertname` of alerts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FindingKind {
    AuthFailureBurst,
    CleartextSensitive,
    DeprecatedEndpoint,
    JwtAlgNone,
    JwtExpired,
    JwtScopeMissing,
    MethodNotAllowed,
    MissingAuth,
    PiiInUrl,
    RateLimitExceeded,
    SecretInUrl,
    SourceOutsideBoundary,
    UndeclaredEndpoint,
    WrongAuthScheme,
    RateAnomaly,
    ErrorRatioAnomaly,
    AuthFailureAnomaly,
    LatencyAnomaly,
    /// A documented operation not seen for a long time (`apiwatch openapi drift`, never live).
    ZombieEndpoint,
}

impl FindingKind {
    /// Every kind the running agent raises: what alert routes may name.
    pub const LIVE: [FindingKind; 18] = [
        FindingKind::AuthFailureBurst,
        FindingKind::CleartextSensitive,
        FindingKind::DeprecatedEndpoint,
        FindingKind::JwtAlgNone,
        FindingKind::JwtExpired,
        FindingKind::JwtScopeMissing,
        FindingKind::MethodNotAllowed,
        FindingKind::MissingAuth,
        FindingKind::PiiInUrl,
        FindingKind::RateLimitExceeded,
        FindingKind::SecretInUrl,
        FindingKind::SourceOutsideBoundary,
        FindingKind::UndeclaredEndpoint,
        FindingKind::WrongAuthScheme,
        FindingKind::RateAnomaly,
        FindingKind::ErrorRatioAnomaly,
        FindingKind::AuthFailureAnomaly,
        FindingKind::LatencyAnomaly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::AuthFailureBurst => "auth_failure_burst",
            FindingKind::CleartextSensitive => "cleartext_sensitive",
            FindingKind::DeprecatedEndpoint => "deprecated_endpoint",
            FindingKind::JwtAlgNone => "jwt_alg_none",
            FindingKind::JwtExpired => "jwt_expired",
            FindingKind::JwtScopeMissing => "jwt_scope_missing",
            FindingKind::MethodNotAllowed => "method_not_allowed",
            FindingKind::MissingAuth => "missing_auth",
            FindingKind::PiiInUrl => "pii_in_url",
            FindingKind::RateLimitExceeded => "rate_limit_exceeded",
            FindingKind::SecretInUrl => "secret_in_url",
            FindingKind::SourceOutsideBoundary => "source_outside_boundary",
            FindingKind::UndeclaredEndpoint => "undeclared_endpoint",
            FindingKind::WrongAuthScheme => "wrong_auth_scheme",
            FindingKind::RateAnomaly => "rate_anomaly",
            FindingKind::ErrorRatioAnomaly => "error_ratio_anomaly",
            FindingKind::AuthFailureAnomaly => "auth_failure_anomaly",
            FindingKind::LatencyAnomaly => "latency_anomaly",
            FindingKind::ZombieEndpoint => "zombie_endpoint",
        }
    }
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FindingKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A kind equals its name (tests, and readers of a finding's JSON, compare with the text).
impl PartialEq<&str> for FindingKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Where a finding with a lifecycle (an anomaly) or an alert stands: written "firing" and
/// "resolved" (Alertmanager's and the webhook schema's words, and what spools and firing.json
/// hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    Firing,
    Resolved,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Firing => "firing",
            Lifecycle::Resolved => "resolved",
        }
    }
}

/// A state equals its name, as for `FindingKind`.
impl PartialEq<&str> for Lifecycle {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The finding contract: a boundary violation or anomaly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    #[serde(rename = "type")]
    pub record: &'static str,
    #[serde(serialize_with = "crate::exchange::rfc3339")]
    pub ts: u64,
    pub kind: FindingKind,
    /// Which declaration was crossed: `service` or `service route`, or a built-in detector.
    pub rule: String,
    pub severity: Severity,
    pub service: String,
    pub route: String,
    pub method: String,
    pub source: Option<String>,
    pub source_zones: Vec<String>,
    pub identity: Option<String>,
    pub pid: u32,
    pub comm: String,
    pub evidence: String,
    /// For findings with a lifecycle (anomalies): firing, then resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Lifecycle>,
}

impl Finding {
    /// A finding about a service's route, with no source, identity or process (a baseline's,
    /// a drift report's); the fields about who go in afterwards where they are known.
    pub fn about_route(
        ts: u64,
        kind: FindingKind,
        rule: String,
        severity: Severity,
        (service, route, method): (&str, &str, &str),
        evidence: String,
    ) -> Self {
        Self {
            record: "finding",
            ts,
            kind,
            rule,
            severity,
            service: service.to_string(),
            route: route.to_string(),
            method: method.to_string(),
            source: None,
            source_zones: Vec::new(),
            identity: None,
            pid: 0,
            comm: String::new(),
            evidence,
            state: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
