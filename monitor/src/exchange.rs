//! The exchange contract: one request and its response, metadata only.
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::capture::Role;
use crate::clock::{push_rfc3339_micros, rfc3339_micros};
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
    /// Shared with the route table, which interns it (no allocation per exchange).
    pub service: Arc<str>,
    /// Set by the enrich stage: the path's route template (`/users/{id}`), interned as `service`.
    pub route: Arc<str>,
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

    /// The same object as `to_json` (the derived `Serialize`), byte for byte, written by hand:
    /// field names as literals and strings copied whole when they need no escape. Exchange lines
    /// are the agent's main output, one per exchange, and through serde_json they cost more than
    /// the rest of the pipeline (mostly escaping each field name and value byte by byte). The
    /// destructuring names every field, so a new one does not compile until it is written here;
    /// a test compares both writers over exchanges with every field set and unset.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_with(out, None);
    }

    /// `write_json`, taking the connection's part of the line (`"pid"` to `"tls"`) from `texts`
    /// when they hold it for this exchange's connection.
    pub fn write_json_with(&self, out: &mut Vec<u8>, texts: Option<&mut ConnectionTexts>) {
        let Exchange {
            ts,
            pid: _,
            comm: _,
            cgroup: _,
            role: _,
            local: _,
            peer: _,
            tls: _,
            method,
            path,
            query_keys,
            host,
            service,
            route,
            status,
            req_bytes,
            resp_bytes,
            req_body_bytes,
            resp_body_bytes,
            latency_us,
            auth_scheme,
            fingerprint,
            jwt,
            url_detectors,
            api_key_header,
            http_version,
            user_agent,
            req_content_type,
            resp_content_type,
            truncated,
            complete,
            stream_id,
            reset_code,
            grpc,
        } = self;
        out.extend_from_slice(b"{\"ts\":\"");
        push_rfc3339_micros(out, *ts);
        out.push(b'"');
        match texts {
            Some(texts) => texts.write(self, out),
            None => self.write_connection_json(out),
        }
        out.extend_from_slice(b",\"method\":");
        json::string(out, method);
        out.extend_from_slice(b",\"path\":");
        json::string(out, path);
        out.extend_from_slice(b",\"query_keys\":");
        json::strings(out, query_keys.iter().map(String::as_str));
        out.extend_from_slice(b",\"host\":");
        json::optional_string(out, host.as_deref());
        out.extend_from_slice(b",\"service\":");
        json::string(out, service);
        out.extend_from_slice(b",\"route\":");
        json::string(out, route);
        out.extend_from_slice(b",\"status\":");
        json::optional_number(out, status.map(u64::from));
        out.extend_from_slice(b",\"req_bytes\":");
        json::number(out, *req_bytes);
        out.extend_from_slice(b",\"resp_bytes\":");
        json::number(out, *resp_bytes);
        out.extend_from_slice(b",\"req_body_bytes\":");
        json::number(out, *req_body_bytes);
        out.extend_from_slice(b",\"resp_body_bytes\":");
        json::number(out, *resp_body_bytes);
        out.extend_from_slice(b",\"latency_us\":");
        json::optional_number(out, *latency_us);
        out.extend_from_slice(b",\"auth_scheme\":");
        json::string(out, auth_scheme.as_str());
        out.extend_from_slice(b",\"fingerprint\":");
        json::optional_string(out, fingerprint.as_deref());
        if let Some(jwt) = jwt {
            // Rare (bearer JWTs only) and nested: the derived serializer.
            out.extend_from_slice(b",\"jwt\":");
            json::serde(out, jwt);
        }
        out.extend_from_slice(b",\"url_detectors\":");
        json::strings(out, url_detectors.iter().copied());
        if let Some(h) = api_key_header {
            out.extend_from_slice(b",\"api_key_header\":");
            json::string(out, h);
        }
        out.extend_from_slice(b",\"http_version\":");
        json::string(out, http_version);
        out.extend_from_slice(b",\"user_agent\":");
        json::optional_string(out, user_agent.as_deref());
        if let Some(t) = req_content_type {
            out.extend_from_slice(b",\"req_content_type\":");
            json::string(out, t);
        }
        if let Some(t) = resp_content_type {
            out.extend_from_slice(b",\"resp_content_type\":");
            json::string(out, t);
        }
        out.extend_from_slice(b",\"truncated\":");
        json::boolean(out, *truncated);
        out.extend_from_slice(b",\"complete\":");
        json::boolean(out, *complete);
        if let Some(id) = stream_id {
            out.extend_from_slice(b",\"stream_id\":");
            json::number(out, *id as u64);
        }
        if let Some(code) = reset_code {
            out.extend_from_slice(b",\"reset_code\":");
            json::number(out, *code as u64);
        }
        if let Some(g) = grpc {
            let GrpcCall {
                service,
                method,
                status,
                message,
                request_messages,
                response_messages,
            } = &**g;
            out.extend_from_slice(b",\"grpc_service\":");
            json::string(out, service);
            out.extend_from_slice(b",\"grpc_method\":");
            json::string(out, method);
            out.extend_from_slice(b",\"grpc_status\":");
            json::optional_number(out, status.map(u64::from));
            if let Some(m) = message {
                out.extend_from_slice(b",\"grpc_message\":");
                json::string(out, m);
            }
            out.extend_from_slice(b",\"grpc_request_messages\":");
            json::optional_number(out, request_messages.map(u64::from));
            out.extend_from_slice(b",\"grpc_response_messages\":");
            json::optional_number(out, response_messages.map(u64::from));
        }
        out.push(b'}');
    }

    /// The fields every exchange of a connection shares, as `write_json` writes them.
    fn write_connection_json(&self, out: &mut Vec<u8>) {
        let Exchange {
            pid,
            comm,
            cgroup,
            role,
            local,
            peer,
            tls,
            ..
        } = self;
        out.extend_from_slice(b",\"pid\":");
        json::number(out, *pid as u64);
        out.extend_from_slice(b",\"comm\":");
        json::string(out, comm);
        if !cgroup.is_empty() {
            out.extend_from_slice(b",\"cgroup\":");
            json::string(out, cgroup);
        }
        out.extend_from_slice(b",\"role\":");
        json::string(out, role.as_str());
        for (key, a) in [(&b",\"local\":"[..], local), (b",\"peer\":", peer)] {
            out.extend_from_slice(key);
            match a {
                // An address never needs an escape.
                Some(a) => {
                    out.push(b'"');
                    crate::text::push_socket_addr(out, a);
                    out.push(b'"');
                }
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b",\"tls\":");
        json::boolean(out, *tls);
    }
}

/// The connection's part of recent exchange lines (`"pid"`, `"comm"`, `"cgroup"`, `"role"`, the
/// addresses, `"tls"`), for the last connections seen (a slot per hash of the connection, the
/// last one in each): copied into the next line of the same connection instead of written
/// again, field by field (names and addresses were a third of a line's cost). A slot is used only
/// when every one of those fields is equal, so a line is the same with or without it.
pub struct ConnectionTexts {
    slots: Vec<Option<ConnectionText>>,
    /// Per set of two slots, the way (0 or 1) that was hit or filled last.
    last_hit: Vec<u8>,
}

struct ConnectionText {
    pid: u32,
    comm: Arc<str>,
    cgroup: Arc<str>,
    role: Role,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    tls: bool,
    json: Vec<u8>,
}

/// Slots kept (a power of two): at most this many connections' texts, about 150 bytes each.
const CONNECTION_TEXTS: usize = 256;
/// Bits that pick a set of two slots.
const SET_BITS: u32 = (CONNECTION_TEXTS / 2).trailing_zeros();

impl Default for ConnectionTexts {
    fn default() -> Self {
        Self {
            slots: (0..CONNECTION_TEXTS).map(|_| None).collect(),
            last_hit: vec![0; CONNECTION_TEXTS / 2],
        }
    }
}

impl ConnectionTexts {
    fn write(&mut self, ex: &Exchange, out: &mut Vec<u8>) {
        let port = |a: Option<SocketAddr>| a.map_or(0, |a| a.port() as u64);
        // Two ways per set, the set from a multiplicative hash of (pid, ports): the ports of a
        // host's connections are near one another (ephemeral ports in sequence, one server
        // port), and a plain xor of them put pairs of busy connections in one slot, each
        // evicting the other on every exchange (a sixth of all lines missed on a wrk run).
        let key = (u64::from(ex.pid) << 32) ^ (port(ex.local) << 16) ^ port(ex.peer);
        let set = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SET_BITS)) as usize * 2;
        let same = |t: &ConnectionText| {
            t.pid == ex.pid
                && t.role == ex.role
                && t.tls == ex.tls
                && t.local == ex.local
                && t.peer == ex.peer
                && (Arc::ptr_eq(&t.comm, &ex.comm) || t.comm == ex.comm)
                && (Arc::ptr_eq(&t.cgroup, &ex.cgroup) || t.cgroup == ex.cgroup)
        };
        for way in [set, set + 1] {
            if let Some(t) = self.slots[way].as_ref().filter(|t| same(t)) {
                out.extend_from_slice(&t.json);
                self.last_hit[set / 2] = (way - set) as u8;
                return;
            }
        }
        // A miss takes the way not hit last.
        let way = set + 1 - self.last_hit[set / 2] as usize;
        self.last_hit[set / 2] = (way - set) as u8;
        let slot = &mut self.slots[way];
        let start = out.len();
        ex.write_connection_json(out);
        // The slot's buffer is reused for its next connection.
        let mut json = slot.take().map(|t| t.json).unwrap_or_default();
        json.clear();
        json.extend_from_slice(&out[start..]);
        *slot = Some(ConnectionText {
            pid: ex.pid,
            comm: ex.comm.clone(),
            cgroup: ex.cgroup.clone(),
            role: ex.role,
            local: ex.local,
            peer: ex.peer,
            tls: ex.tls,
            json,
        });
    }
}

/// The service and route of an exchange not enriched yet: one shared empty name, as an
/// `Arc::from("")` would allocate per exchange.
pub fn unnamed() -> Arc<str> {
    static EMPTY: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    EMPTY.clone()
}

/// JSON values as serde_json writes them.
mod json {
    pub(super) fn string(out: &mut Vec<u8>, s: &str) {
        if needs_escape(s.as_bytes()) {
            serde(out, s);
        } else {
            out.reserve(s.len() + 2);
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
    }

    /// Whether serde_json would escape any byte: `"`, `\\` and the control characters, nothing
    /// else. Eight bytes at a time (a byte-at-a-time test was half of an exchange line's cost):
    /// with every byte of `v - 0x01..01 * n` borrowing below zero exactly where a byte is < n,
    /// `(v - n) & !v & 0x80..80` is non-zero iff some byte of `v` is below n (n <= 0x80;
    /// "hasless", Bit Twiddling Hacks), and a byte equal to c is one where `v ^ c` is below 1.
    pub(super) fn needs_escape(b: &[u8]) -> bool {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH;
        let word = |w: &[u8]| {
            let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            below(v, 0x20) | below(v ^ (ONES * b'"' as u64), 1) | below(v ^ (ONES * b'\\' as u64), 1) != 0
        };
        if b.len() < 8 {
            return b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        }
        let mut words = b.chunks_exact(8);
        if words.any(word) {
            return true;
        }
        // The last bytes as one word that overlaps the one before.
        !words.remainder().is_empty() && word(&b[b.len() - 8..])
    }

    pub(super) fn optional_string(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => string(out, s),
            None => out.extend_from_slice(b"null"),
        }
    }

    pub(super) fn strings<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a str>) {
        out.push(b'[');
        for (i, s) in items.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, s);
        }
        out.push(b']');
    }

    pub(super) fn number(out: &mut Vec<u8>, n: u64) {
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    pub(super) fn optional_number(out: &mut Vec<u8>, n: Option<u64>) {
        match n {
            Some(n) => number(out, n),
            None => out.extend_from_slice(b"null"),
        }
    }

    pub(super) fn boolean(out: &mut Vec<u8>, b: bool) {
        out.extend_from_slice(if b { b"true" } else { b"false" });
    }

    /// Through serde_json (escapes, nested values); these values always serialize.
    pub(super) fn serde<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
        let _ = serde_json::to_writer(out, v);
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
            service: unnamed(),
            route: unnamed(),
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

    pub(crate) fn sample() -> Exchange {
        Exchange::example()
    }

    #[test]
    fn lines_with_connection_texts_are_the_lines_without() {
        let mut texts = ConnectionTexts::default();
        let mut exchanges = varied();
        // Connections that share a slot (same ports and pid) but differ in one field each.
        let base = sample();
        let mut other = Vec::new();
        for change in 0..7 {
            let mut ex = base.clone();
            match change {
                0 => ex.comm = "other".into(),
                1 => ex.cgroup = "/system.slice/x".into(),
                2 => ex.role = Role::Client,
                3 => ex.tls = !ex.tls,
                4 => ex.local = Some("10.0.0.1:80".parse().unwrap()),
                5 => ex.peer = None,
                _ => ex.pid += CONNECTION_TEXTS as u32,
            }
            other.push(ex);
        }
        exchanges.extend(other);
        // Each in turn, twice round, so each is written both from a slot and into one.
        for ex in exchanges
            .iter()
            .chain(exchanges.iter())
            .chain(exchanges.iter().rev())
        {
            let (mut with, mut without) = (Vec::new(), Vec::new());
            ex.write_json_with(&mut with, Some(&mut texts));
            ex.write_json(&mut without);
            assert_eq!(
                String::from_utf8(with).unwrap(),
                String::from_utf8(without).unwrap()
            );
        }
    }

    #[test]
    fn the_word_at_a_time_escape_test_is_the_byte_at_a_time_one() {
        let naive = |b: &[u8]| b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        // Every byte value at every position of every length up to three words, among bytes
        // that need no escape (ASCII and not: the high bit must not hide or fake a match).
        for len in 0..=24 {
            for fill in [b'a', b'~', 0x21, 0x5b, 0x5d, 0x80, 0xff] {
                for pos in 0..len {
                    for c in 0..=255u8 {
                        let mut b = vec![fill; len];
                        b[pos] = c;
                        assert_eq!(json::needs_escape(&b), naive(&b), "{b:?}");
                    }
                }
                assert!(!json::needs_escape(&vec![fill; len]));
            }
        }
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        // Every ASCII character, and a two-byte one, at every position of every length up to
        // three words (the word loop, the overlapping last word, and serde_json's rewrite).
        for len in 1..=24 {
            for pos in 0..len {
                for c in (0..0x80u8).map(char::from).chain(['é']) {
                    let mut s: String = "a".repeat(len);
                    s.replace_range(pos..pos + 1, c.encode_utf8(&mut [0; 4]));
                    let mut out = b"prefix".to_vec();
                    json::string(&mut out, &s);
                    assert_eq!(
                        String::from_utf8(out).unwrap(),
                        format!("prefix{}", serde_json::to_string(&s).unwrap())
                    );
                }
            }
        }
    }

    /// Exchanges with every field set, unset and awkward (escapes, IPv6, HTTP/2, gRPC, JWT).
    fn varied() -> Vec<Exchange> {
        let plain = sample();
        let mut full = sample();
        full.cgroup = "/system.slice/shop.service".into();
        full.local = Some("[2001:db8::1]:443".parse().unwrap());
        full.peer = None;
        full.tls = true;
        full.path = "/a\"quoted\"\\path/\u{1}ctl/é/\u{7f}".into();
        full.query_keys = vec!["q".into(), "with space".into(), "tab\tkey".into()];
        full.host = None;
        full.service = "nginx:443".into();
        full.route = "/a/{id}".into();
        full.status = None;
        full.latency_us = None;
        full.fingerprint = None;
        full.jwt = Some(Box::new(crate::http::identity::JwtClaims {
            alg: "RS256".into(),
            iss: Some("https://idp".into()),
            sub: None,
            aud: vec!["api".into()],
            exp: Some(1_700_000_000),
            scope: vec![],
        }));
        full.url_detectors = vec!["email", "jwt"];
        full.api_key_header = Some("x-api-key".into());
        full.http_version = "2";
        full.user_agent = Some("curl/8 \"x\"".into());
        full.req_content_type = Some("application/json".into());
        full.resp_content_type = Some("text/plain".into());
        full.truncated = true;
        full.complete = false;
        full.stream_id = Some(7);
        full.reset_code = Some(8);
        full.grpc = Some(Box::new(GrpcCall {
            service: "demo.v1.Greeter".into(),
            method: "SayHello".into(),
            status: Some(5),
            message: Some("not \"found\"\n".into()),
            request_messages: Some(1),
            response_messages: None,
        }));
        let mut grpc_bare = full.clone();
        grpc_bare.grpc = Some(Box::new(GrpcCall {
            service: String::new(),
            method: String::new(),
            status: None,
            message: None,
            request_messages: None,
            response_messages: Some(0),
        }));
        let mut client = plain.clone();
        client.role = Role::Client;
        client.auth_scheme = AuthScheme::None;
        client.ts = 0;
        vec![plain, full, grpc_bare, client]
    }

    #[test]
    fn the_hand_written_line_is_the_derived_one_byte_for_byte() {
        for ex in varied() {
            let mut ours = Vec::new();
            ex.write_json(&mut ours);
            assert_eq!(String::from_utf8(ours).unwrap(), ex.to_json(), "for {ex:?}");
        }
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
