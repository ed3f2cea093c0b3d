//! Who is calling, without keeping the secret: a keyed fingerprint of the credential, the JWT
//! header and claims subset (decoded, never verified), and detectors for secrets and personal
//! data in URLs. Runs at head-parse time, where the raw values are; only the results go on.
use std::sync::OnceLock;

use base64::Engine;
use serde::Serialize;

static INSTALL_KEY: OnceLock<[u8; 16]> = OnceLock::new();

/// Sets the per-install fingerprint key (from the state directory). First call wins; without
/// one, a fixed key is used (replays and tests), which still never reveals the credential.
pub fn set_install_key(key: [u8; 16]) {
    let _ = INSTALL_KEY.set(key);
}

/// Loads the per-install key from `dir/fingerprint.key`, creating it (random, mode 0600) if absent.
pub fn load_or_create_install_key(dir: &std::path::Path) -> std::io::Result<[u8; 16]> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("fingerprint.key");
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(key) = <[u8; 16]>::try_from(bytes.as_slice()) {
            return Ok(key);
        }
    }
    std::fs::create_dir_all(dir)?;
    let key = random_key()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(&key)?;
    Ok(key)
}

/// A fresh random key (for an install whose state directory cannot keep one: it then lives
/// for the process only, never the fixed key anyone could compute fingerprints with).
pub fn random_key() -> std::io::Result<[u8; 16]> {
    let mut key = [0u8; 16];
    // SAFETY: getrandom writes at most key.len() bytes into our buffer.
    let n = unsafe { libc::getrandom(key.as_mut_ptr().cast(), key.len(), 0) };
    if n != key.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(key)
}

/// 12 hex digits of a SipHash keyed with the install key: stable per install, useless elsewhere.
pub fn fingerprint(credential: &[u8]) -> String {
    use std::hash::Hasher;
    let key = INSTALL_KEY.get_or_init(|| *b"apiwatch-default");
    let mut h = siphasher::sip::SipHasher13::new_with_key(key);
    h.write(credential);
    format!("{:012x}", h.finish() >> 16)
}

/// The JWT fields apiwatch keeps (strings capped at 128 bytes, at most 16 audiences/scopes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JwtClaims {
    pub alg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aud: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<String>,
}

const MAX_CLAIM: usize = 128;
const MAX_LIST: usize = 16;

/// Decodes `header.payload.signature` without verifying it.
pub fn decode_jwt(token: &str) -> Option<JwtClaims> {
    let mut parts = token.split('.');
    let (h, p, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: serde_json::Value =
        serde_json::from_slice(&engine.decode(h.trim_end_matches('=')).ok()?).ok()?;
    let claims: serde_json::Value =
        serde_json::from_slice(&engine.decode(p.trim_end_matches('=')).ok()?).ok()?;
    let text = |v: &serde_json::Value| v.as_str().map(|s| cap(s, MAX_CLAIM));
    let list = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::String(s) => s
                .split(' ')
                .filter(|s| !s.is_empty())
                .take(MAX_LIST)
                .map(|s| cap(s, MAX_CLAIM))
                .collect(),
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str())
                .take(MAX_LIST)
                .map(|s| cap(s, MAX_CLAIM))
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut scope = list(&claims["scope"]);
    if scope.is_empty() {
        scope = list(&claims["scp"]);
    }
    Some(JwtClaims {
        alg: text(&header["alg"]).unwrap_or_default(),
        iss: text(&claims["iss"]),
        sub: text(&claims["sub"]),
        aud: list(&claims["aud"]),
        exp: claims["exp"].as_i64(),
        scope,
    })
}

fn cap(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Query keys whose values are credentials.
pub const CREDENTIAL_QUERY_KEYS: &[&str] = &[
    "access_token",
    "api_key",
    "apikey",
    "api-key",
    "token",
    "auth",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "key",
    "signature",
    "sig",
    "session",
    "sessionid",
];

/// Detectors that fire on raw path segments and query values. Names only ever leave.
pub fn url_detectors(path: &str, query: Option<&str>, out: &mut Vec<&'static str>) {
    fn add(out: &mut Vec<&'static str>, name: &'static str) {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if path_may_hold_a_detection(path) {
        for seg in super::split_ascii(path, b'/') {
            detect(seg).into_iter().for_each(|d| add(out, d));
        }
    }
    if let Some(q) = query {
        for pair in super::split_ascii(q, b'&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            detect(v).into_iter().for_each(|d| add(out, d));
            if !v.is_empty() && CREDENTIAL_QUERY_KEYS.iter().any(|c| k.eq_ignore_ascii_case(c)) {
                add(out, "credential_query_key");
            }
        }
    }
}

/// False when no segment of `path` passes `detect`'s prefilter, in one pass over the path
/// (most paths: `/users/42`): the same tests, per segment.
fn path_may_hold_a_detection(path: &str) -> bool {
    let b = path.as_bytes();
    let (mut len, mut digits) = (0usize, 0usize);
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'/' => {
                (len, digits) = (0, 0);
                continue;
            }
            b'%' | b'@' => return true,
            b'0'..=b'9' => digits += 1,
            b'e' if len == 0 && b[i..].starts_with(b"eyJ") => return true,
            _ => {}
        }
        len += 1;
        if len >= 15 || digits >= 13 {
            return true;
        }
    }
    false
}

/// Detector names that are secrets (`secret_in_url`); the others are personal data (`pii_in_url`).
pub fn is_secret_detector(name: &str) -> bool {
    !matches!(name, "email" | "card_number")
}

fn detect(raw: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    if raw.is_empty() {
        return found;
    }
    // One pass first: most segments and values (`users`, `42`, `index.json`) cannot hold
    // anything the detectors look for, and this runs on every one of them. Each test below is
    // implied by its detector: an email needs an `@` (or an escape that decodes to one), a card
    // number 13 digits, a JWT the `eyJ` start, every key format 15 characters.
    let (mut escaped, mut at, mut digits) = (false, false, 0usize);
    for &b in raw.as_bytes() {
        match b {
            b'%' => escaped = true,
            b'@' => at = true,
            b'0'..=b'9' => digits += 1,
            _ => {}
        }
    }
    if !escaped && !at && digits < 13 && raw.len() < 15 && !raw.starts_with("eyJ") {
        return found;
    }
    // Decode the two escapes the detectors care about, only when there is an escape at all
    // (this runs on every path segment and query value).
    let decoded;
    let s: &str = if raw.contains('%') {
        decoded = raw.replace("%40", "@").replace("%2B", "+");
        &decoded
    } else {
        raw
    };
    if is_email(s) {
        found.push("email");
    }
    if has_card_number(s) {
        found.push("card_number");
    }
    if looks_like_jwt(s) {
        found.push("jwt");
    }
    // Every key format below is at least 15 characters long: skip the searches on shorter strings.
    let key_formats: &[(&str, usize, &'static str)] = if s.len() < 15 {
        &[]
    } else {
        &[
            ("AKIA", 16, "aws_access_key"),
            ("ASIA", 16, "aws_access_key"),
            ("ghp_", 30, "github_token"),
            ("github_pat_", 30, "github_token"),
            ("xoxb-", 10, "slack_token"),
            ("xoxp-", 10, "slack_token"),
            ("sk_live_", 16, "stripe_key"),
            ("AIza", 30, "google_api_key"),
        ]
    };
    for &(prefix, min_rest, name) in key_formats {
        if let Some(i) = s.find(prefix) {
            let rest = &s[i + prefix.len()..];
            let n = rest
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
                .count();
            if n >= min_rest && !found.contains(&name) {
                found.push(name);
            }
        }
    }
    found
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+_-".contains(&b))
        && domain.contains('.')
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

/// 13 to 19 consecutive digits (spaces and dashes allowed between) passing the Luhn check.
fn has_card_number(s: &str) -> bool {
    // Runs on every path segment and query value: most have too few digits to hold a card
    // number, and need no copy to say so.
    if s.bytes().filter(u8::is_ascii_digit).count() < 13 {
        return false;
    }
    let digits: Vec<u8> = s.bytes().filter(|b| !b" -".contains(b)).collect();
    digits
        .split(|b| !b.is_ascii_digit())
        .any(|run| (13..=19).contains(&run.len()) && luhn(run))
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = (d - b'0') as u32;
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn looks_like_jwt(s: &str) -> bool {
    // A JWT's header is base64url of `{"...`: it starts with eyJ (checked before any split).
    if !s.starts_with("eyJ") {
        return false;
    }
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts[0].starts_with("eyJ")
        && parts[..2].iter().all(|p| p.len() >= 8)
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(header: &str, claims: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.c2lnbmF0dXJl", e.encode(header), e.encode(claims))
    }

    #[test]
    fn jwt_claims_without_verification() {
        let t = jwt(
            r#"{"alg":"none"}"#,
            r#"{"iss":"https://idp","sub":"u1","aud":["api"],"exp":1700000000,"scope":"orders:read orders:write"}"#,
        );
        let c = decode_jwt(&t).unwrap();
        assert_eq!(c.alg, "none");
        assert_eq!(c.iss.as_deref(), Some("https://idp"));
        assert_eq!(c.aud, vec!["api"]);
        assert_eq!(c.exp, Some(1_700_000_000));
        assert_eq!(c.scope, vec!["orders:read", "orders:write"]);
        assert!(decode_jwt("not.a.jwt").is_none());
        assert!(decode_jwt("opaque-token").is_none());
    }

    #[test]
    fn fingerprints_are_stable_and_keyed() {
        let a = fingerprint(b"Bearer abc");
        assert_eq!(a, fingerprint(b"Bearer abc"));
        assert_ne!(a, fingerprint(b"Bearer abd"));
        assert_eq!(a.len(), 12);
        assert!(!a.contains("abc"));
    }

    #[test]
    fn url_detectors_fire_on_names_only() {
        let mut d = Vec::new();
        let token = jwt(r#"{"alg":"HS256"}"#, r#"{"sub":"x"}"#);
        url_detectors(
            "/users/bob@example.com/cards/4111111111111111",
            Some(&format!(
                "t={token}&k=AKIAABCDEFGHIJKLMNOP&access_token=zzz&page=2"
            )),
            &mut d,
        );
        for want in [
            "email",
            "card_number",
            "jwt",
            "aws_access_key",
            "credential_query_key",
        ] {
            assert!(d.contains(&want), "{want} missing from {d:?}");
        }
        let mut none = Vec::new();
        url_detectors(
            "/orders/12345/items",
            Some("page=2&sort=asc&id=4111111111111112"),
            &mut none,
        );
        assert!(none.is_empty(), "{none:?}");
        assert!(is_secret_detector("jwt") && !is_secret_detector("email"));
    }

    /// The one-pass prefilter in `detect` must pass on everything a detector can find: an
    /// escaped `@`, a card number of exactly 13 digits, a key of exactly 15 characters.
    #[test]
    fn the_prefilter_lets_through_everything_a_detector_finds() {
        for path in ["/", "/users/42", "/a/123456789012/b", "/aaaaaaaaaaaaaa/e/eyI", ""] {
            assert!(!path_may_hold_a_detection(path), "{path}");
        }
        for (value, want) in [
            ("bob%40example.com", "email"),
            ("b@e.io", "email"),
            ("4222222222222", "card_number"),
            ("xoxb-0123456789", "slack_token"),
            ("eyJhbGciOi.eyJzdWIiOi.c2ln", "jwt"),
        ] {
            let mut d = Vec::new();
            url_detectors("/x", Some(&format!("q={value}")), &mut d);
            assert!(d.contains(&want), "{value}: {want} missing from {d:?}");
            let mut d = Vec::new();
            url_detectors(&format!("/x/{value}"), None, &mut d);
            assert!(d.contains(&want), "/x/{value}: {want} missing from {d:?}");
            // The one-pass path check: at the start, after long segments, before a slash.
            for path in [
                value.to_string(),
                format!("/{value}/users"),
                format!("/aaaaaaaaaaaaaa/bbbbbbbbbbbbbb/{value}"),
                format!("/123456789012/{value}/"),
            ] {
                assert!(path_may_hold_a_detection(&path), "{path}");
                let mut d = Vec::new();
                url_detectors(&path, None, &mut d);
                assert!(d.contains(&want), "{path}: {want} missing from {d:?}");
            }
        }
    }
}
