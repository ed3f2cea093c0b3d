//! The exchange contract: one request and its response, metadata only.
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::capture::Role;
use crate::clock::rfc3339_micros;
use crate::http::AuthScheme;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exchange {
    /// When the first byte of the request was seen (Unix ns; RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub ts: u64,
    pub pid: u32,
    /// Shared with the connection it came from (`Arc`: one allocation per process, not one per
    /// exchange).
    pub comm: Arc<str>,
    /// The process's cgroup v2 path, as the capture recorded it (empty when unknown).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub cgroup: Arc<str>,
    pub role: Role,
    #[serde(serialize_with = "addr")]
    pub local: Option<SocketAddr>,
    #[serde(serialize_with = "addr")]
    pub peer: Option<SocketAddr>,
    pub tls: bool,
    pub method: String,
    pub path: String,
    pub query_keys: Vec<String>,
    pub host: Option<String>,
    /// Set by the enrich stage: `comm:port` of the serving process, or the calling process.
    pub service: String,
    /// Set by the enrich stage: the path's route template (`/users/{id}`).
    pub route: String,
    pub status: Option<u16>,
    /// Bytes on the wire, head and body.
    pub req_bytes: u64,
    pub resp_bytes: u64,
    pub req_body_bytes: u64,
    pub resp_body_bytes: u64,
    pub latency_us: Option<u64>,
    pub auth_scheme: AuthScheme,
    /// Keyed fingerprint of the credential (12 hex digits), never the credential.
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<Box<crate::http::identity::JwtClaims>>,
    /// Detectors that fired on the URL (`email`, `card_number`, `jwt`, `aws_access_key`, ...).
    pub url_detectors: Vec<&'static str>,
    /// The API-key header used, if any (name only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_header: Option<String>,
    pub http_version: &'static str,
    pub user_agent: Option<String>,
    /// Media types of the request and response bodies (`application/json`), no parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub req_content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resp_content_type: Option<String>,
    /// A head was cut by the capture prefix: some fields may be missing.
    pub truncated: bool,
    /// False when the connection closed (or framing was lost) before the exchange completed.
    pub complete: bool,
    /// HTTP/2: the stream the exchange was carried on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<u32>,
    /// HTTP/2: the RST_STREAM error code that ended the stream (8: CANCEL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_code: Option<u32>,
    /// A gRPC call (`content-type: application/grpc*`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<Box<GrpcCall>>,
}

/// What a gRPC call adds to its exchange (fields `grpc_*` in JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GrpcCall {
    /// `package.Service` and `Method`, from `:path` (`/package.Service/Method`).
    #[serde(rename = "grpc_service")]
    pub service: String,
    #[serde(rename = "grpc_method")]
    pub method: String,
    /// `grpc-status` from the trailers (or a trailers-only response); None: never seen.
    #[serde(rename = "grpc_status")]
    pub status: Option<u32>,
    /// `grpc-message`, the server's error text (at most 256 characters).
    #[serde(rename = "grpc_message", skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Messages each way, from their length prefixes; None when a capture gap hid a prefix.
    #[serde(rename = "grpc_request_messages")]
    pub request_messages: Option<u32>,
    #[serde(rename = "grpc_response_messages")]
    pub response_messages: Option<u32>,
}

impl GrpcCall {
    /// The status code's name (the OpenTelemetry `rpc.grpc.status_code` is the number; the
    /// name is for people).
    pub fn status_name(&self) -> &'static str {
        const NAMES: [&str; 17] = [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ];
        match self.status {
            Some(c) => NAMES.get(c as usize).copied().unwrap_or("_OTHER"),
            None => "_NONE",
        }
    }
}

impl Exchange {
    /// One JSON object, no newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

pub fn rfc3339<S: Serializer>(ts: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_micros(*ts))
}

fn addr<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match a {
        Some(a) => {
            let mut text = String::with_capacity(24);
            crate::text::push_socket_addr(&mut text, a);
            s.serialize_str(&text)
        }
        None => s.serialize_none(),
    }
}

pub fn version_str(v: u8) -> &'static str {
    match v {
        0 => "1.0",
        2 => "2",
        _ => "1.1",
    }
}

impl Exchange {
    /// A representative server-side exchange, for tests and benchmarks.
    pub fn example() -> Exchange {
        Exchange {
            ts: 1_700_000_000_123_456_789,
            pid: 10,
            comm: "nginx".into(),
            cgroup: "".into(),
            role: Role::Server,
            local: Some("127.0.0.1:8080".parse().unwrap()),
            peer: Some("[::1]:40000".parse().unwrap()),
            tls: false,
            method: "GET".into(),
            path: "/users/42".into(),
            query_keys: vec!["q".into()],
            host: Some("api".into()),
            service: String::new(),
            route: String::new(),
            status: Some(200),
            req_bytes: 100,
            resp_bytes: 300,
            req_body_bytes: 0,
            resp_body_bytes: 200,
            latency_us: Some(1500),
            auth_scheme: AuthScheme::Bearer,
            fingerprint: Some("0123456789ab".into()),
            jwt: None,
            url_detectors: Vec::new(),
            api_key_header: None,
            http_version: "1.1",
            user_agent: None,
            req_content_type: None,
            resp_content_type: None,
            truncated: false,
            complete: true,
            stream_id: None,
            reset_code: None,
            grpc: None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> Exchange {
        Exchange::example()
    }

    #[test]
    fn json_line() {
        let j = sample().to_json();
        assert!(
            j.starts_with(r#"{"ts":"2023-11-14T22:13:20.123456Z","pid":10,"#),
            "{j}"
        );
        assert!(j.contains(r#""peer":"[::1]:40000""#));
        assert!(j.contains(r#""auth_scheme":"bearer""#));
    }
}
