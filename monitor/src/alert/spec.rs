//! How a sink is configured (one entry of `alerts.sinks`), and how its secrets are given.
use std::fmt;

use serde::Deserialize;

/// One alert sink. One flat shape for every type (checked per type by `validate`), so an
/// error in any field is located and reported with the others.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SinkSpec {
    /// alertmanager, pagerduty, slack, webhook or file.
    #[serde(rename = "type")]
    pub kind: String,
    /// Unique; names the sink's spool, metrics and self-alerts. Default: the type.
    pub name: Option<String>,
    /// alertmanager: base URL; pagerduty: the Events API v2 URL (default PagerDuty's);
    /// webhook: where to POST.
    pub url: Option<String>,
    /// pagerduty: the integration's routing key (a secret: never logged).
    pub routing_key: Option<String>,
    /// slack: the incoming-webhook URL (a secret: never logged).
    pub webhook_url: Option<String>,
    /// webhook: HMAC-SHA256 key for the X-Apiwatch-Signature-256 header (a secret).
    pub secret: Option<String>,
    /// file: a path, or "-" for standard output.
    pub path: Option<String>,
    /// Only alerts of at least this severity (info, warning, high, critical).
    pub min_severity: Option<String>,
    /// Only these alert names (finding kinds, or Apiwatch* self-alerts); empty: all.
    pub kinds: Vec<String>,
    pub exclude_kinds: Vec<String>,
    /// Notifications at most, "N/s", "N/min" or "N/hour"; beyond, they wait in the spool.
    pub rate_limit: Option<String>,
    pub timeout_secs: Option<u64>,
    /// Send firing alerts again every resend_secs (default: alertmanager only).
    pub resend: Option<bool>,
}

/// Secrets stay out of any `{:?}`: URLs (they may carry a token or credentials), the routing
/// key and the signing secret print as "<redacted>".
impl fmt::Debug for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("SinkSpec")
            .field("type", &self.kind)
            .field("name", &self.name)
            .field("url", &hidden(&self.url))
            .field("routing_key", &hidden(&self.routing_key))
            .field("webhook_url", &hidden(&self.webhook_url))
            .field("secret", &hidden(&self.secret))
            .field("path", &self.path)
            .field("min_severity", &self.min_severity)
            .field("kinds", &self.kinds)
            .field("exclude_kinds", &self.exclude_kinds)
            .field("rate_limit", &self.rate_limit)
            .field("timeout_secs", &self.timeout_secs)
            .field("resend", &self.resend)
            .finish()
    }
}

impl SinkSpec {
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.kind.clone())
    }

    /// The typed form of a validated spec (None for a type the configuration check refuses).
    pub fn target(&self) -> Option<SinkTarget<'_>> {
        fn given(v: &Option<String>) -> &str {
            v.as_deref().unwrap_or_default()
        }
        Some(match self.kind.as_str() {
            "alertmanager" => SinkTarget::Alertmanager {
                url: given(&self.url),
            },
            "pagerduty" => SinkTarget::PagerDuty {
                url: self.url.as_deref(),
                routing_key: given(&self.routing_key),
            },
            "slack" => SinkTarget::Slack {
                webhook_url: given(&self.webhook_url),
            },
            "webhook" => SinkTarget::Webhook {
                url: given(&self.url),
                secret: self.secret.as_deref(),
            },
            "file" => SinkTarget::File {
                path: self.path.as_deref().unwrap_or("-"),
            },
            _ => return None,
        })
    }
}

/// Where a sink sends, by type: the flat `SinkSpec` (one shape, so every error in it is located)
/// once validated. Secret values are as configured (`env:`/`file:` references are resolved
/// when the sink starts, `resolve_secret`); no `Debug`, so they cannot be printed.
pub enum SinkTarget<'a> {
    Alertmanager {
        url: &'a str,
    },
    /// `url`: PagerDuty's Events API v2 unless given.
    PagerDuty {
        url: Option<&'a str>,
        routing_key: &'a str,
    },
    Slack {
        webhook_url: &'a str,
    },
    /// `secret`: the HMAC-SHA256 signing key, if any.
    Webhook {
        url: &'a str,
        secret: Option<&'a str>,
    },
    /// A path, or "-" for standard output.
    File {
        path: &'a str,
    },
}

/// A secret given in the configuration: `env:NAME` reads the environment variable NAME,
/// `file:/path` the file's content (trimmed), anything else is the value itself. Errors never
/// contain the value.
pub fn resolve_secret(value: &str) -> Result<String, String> {
    if let Some(name) = value.strip_prefix("env:") {
        std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
    } else if let Some(path) = value.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("cannot read {path}: {e}"))
    } else {
        Ok(value.to_string())
    }
}
