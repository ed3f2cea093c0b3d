//! The finding contract: a boundary violation or a baseline anomaly, as the boundary and baseline
//! stages raise it and the metrics, alert and output stages take it.
use serde::Serialize;

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

/// The finding contract: a boundary violation or anomaly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    #[serde(rename = "type")]
    pub record: &'static str,
    #[serde(serialize_with = "crate::exchange::rfc3339")]
    pub ts: u64,
    pub kind: &'static str,
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
    /// For findings with a lifecycle (anomalies): "firing", then "resolved".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
}

impl Finding {
    /// A finding about a service's route, with no source, identity or process (a baseline's,
    /// a drift report's); the fields about who go in afterwards where they are known.
    pub fn about_route(
        ts: u64,
        kind: &'static str,
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
