//! HTTP for the sinks: POST a JSON body, classify the answer. Nothing here ever puts a URL, a
//! header value or a response body into an error message: sink URLs and headers can carry
//! secrets (Slack's URL is one, a routing key travels in the body).
use std::time::Duration;

use super::delivery::Outcome;

pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(concat!("apiwatch/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// POSTs `body` as JSON and classifies the answer: 2xx delivered; 408, 429 and 5xx retried
/// (with Retry-After when the sink gave one); other statuses rejected, not retried; transport
/// errors and timeouts retried.
pub fn post_json(agent: &ureq::Agent, url: &str, body: &str, headers: &[(&str, String)]) -> Outcome {
    let mut req = agent.post(url).header("Content-Type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    match req.send(body) {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.min(300)));
            classify(status, retry_after)
        }
        Err(e) => Outcome::Retry {
            why: transport_error(&e),
            after: None,
        },
    }
}

pub fn classify(status: u16, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retry {
            why: format!("HTTP {status}"),
            after: retry_after,
        },
        _ => Outcome::Rejected(format!("HTTP {status}")),
    }
}

/// What went wrong, in words that hold no URL.
fn transport_error(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::Io(io) => format!("I/O error: {}", io.kind()),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => "TLS error".into(),
        ureq::Error::BadUri(_) => "bad URL".into(),
        _ => "request failed".into(),
    }
}
