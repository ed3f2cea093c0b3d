//! The route inventory: every observed (service, route, method) with its callers, auth schemes,
//! TLS share and latency percentiles from an HDR histogram, served as JSON on /api/v1/routes.
use std::collections::HashMap;
use std::net::IpAddr;

use hashbrown::Equivalent;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::exchange::Exchange;
use crate::http::AuthScheme;

/// Distinct callers kept per route; the rest are counted in `other_callers`.
const MAX_CALLERS: usize = 32;
/// Distinct status codes, media types (request; response per status) and API-key header names
/// kept per route: what an OpenAPI description of it needs, bounded.
const MAX_STATUSES: usize = 16;
const MAX_MEDIA_TYPES: usize = 4;
const MAX_KEY_HEADERS: usize = 4;

/// Adds `v` to a small set, unless it is full.
fn add_bounded(set: &mut Vec<String>, v: &str, max: usize) {
    if set.len() < max && !set.iter().any(|x| x == v) {
        set.push(v.to_string());
    }
}

struct Entry {
    role: &'static str,
    count: u64,
    errors_5xx: u64,
    errors_4xx: u64,
    tls: u64,
    auth: hashbrown::HashMap<AuthScheme, u64>,
    callers: hashbrown::HashMap<IpAddr, u64>,
    other_callers: u64,
    /// Latency in microseconds, 1 us .. 60 s, two significant digits (~13 KiB with u32 counts).
    latency_us: Histogram<u32>,
    /// Status code -> (count, response media types).
    statuses: Vec<(u16, u64, Vec<String>)>,
    request_types: Vec<String>,
    api_key_headers: Vec<String>,
    first_seen_ns: u64,
    last_seen_ns: u64,
}

/// (service, route, method) borrowed from an exchange; hashes as the owned tuple does.
#[derive(Hash)]
struct KeyRef<'a>(&'a str, &'a str, &'a str);

impl Equivalent<(String, String, String)> for KeyRef<'_> {
    fn equivalent(&self, k: &(String, String, String)) -> bool {
        self.0 == k.0 && self.1 == k.1 && self.2 == k.2
    }
}

#[derive(Serialize)]
pub struct RouteReport {
    pub service: String,
    pub role: &'static str,
    pub route: String,
    pub method: String,
    pub count: u64,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
    pub tls_share: f64,
    pub auth_schemes: HashMap<&'static str, u64>,
    pub callers: Vec<(String, u64)>,
    pub other_callers: u64,
    pub latency_ms: Percentiles,
    /// Status codes answered (at most 16 distinct), each with its count and response media
    /// types; request media types; API-key header names (never values).
    pub statuses: Vec<StatusReport>,
    pub request_types: Vec<String>,
    pub api_key_headers: Vec<String>,
    #[serde(serialize_with = "crate::exchange::rfc3339")]
    pub first_seen: u64,
    #[serde(serialize_with = "crate::exchange::rfc3339")]
    pub last_seen: u64,
}

#[derive(Serialize)]
pub struct StatusReport {
    pub status: u16,
    pub count: u64,
    pub media_types: Vec<String>,
}

#[derive(Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Bounded: at most `max_entries` (service, route, method) entries; beyond, exchanges are counted
/// in `dropped` only (the route table upstream already folds unbounded paths).
pub struct Inventory {
    max_entries: usize,
    entries: hashbrown::HashMap<(String, String, String), Entry>,
    pub dropped: u64,
}

impl Entry {
    fn new(role: crate::capture::Role) -> Self {
        Self {
            role: role.as_str(),
            count: 0,
            errors_5xx: 0,
            errors_4xx: 0,
            tls: 0,
            auth: hashbrown::HashMap::new(),
            callers: hashbrown::HashMap::new(),
            other_callers: 0,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 2).expect("static bounds are valid"),
            statuses: Vec::new(),
            request_types: Vec::new(),
            api_key_headers: Vec::new(),
            first_seen_ns: u64::MAX,
            last_seen_ns: 0,
        }
    }
}

impl Inventory {
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries,
            entries: hashbrown::HashMap::new(),
            dropped: 0,
        }
    }

    pub fn observe(&mut self, ex: &Exchange) {
        // Looked up by reference: the key's strings are copied only for a new entry.
        let key = KeyRef(&ex.service, &ex.route, &ex.method);
        let full = self.entries.len() >= self.max_entries;
        let e = match self.entries.get_mut(&key) {
            Some(e) => e,
            None if full => {
                self.dropped += 1;
                return;
            }
            None => self
                .entries
                .entry((ex.service.to_string(), ex.route.to_string(), ex.method.clone()))
                .or_insert_with(|| Entry::new(ex.role)),
        };
        e.count += 1;
        match ex.status {
            Some(s) if s >= 500 => e.errors_5xx += 1,
            Some(s) if s >= 400 => e.errors_4xx += 1,
            _ => {}
        }
        e.tls += ex.tls as u64;
        *e.auth.entry(ex.auth_scheme).or_default() += 1;
        // The caller is the peer for a server, the process itself for a client.
        if let (crate::capture::Role::Server, Some(peer)) = (ex.role, ex.peer) {
            let n = e.callers.len();
            match e.callers.get_mut(&peer.ip()) {
                Some(c) => *c += 1,
                None if n < MAX_CALLERS => {
                    e.callers.insert(peer.ip(), 1);
                }
                None => e.other_callers += 1,
            }
        }
        if let Some(us) = ex.latency_us {
            e.latency_us.saturating_record(us.clamp(1, 60_000_000));
        }
        e.first_seen_ns = e.first_seen_ns.min(ex.ts);
        e.last_seen_ns = e.last_seen_ns.max(ex.ts);
        if let Some(status) = ex.status {
            let at = match e.statuses.iter().position(|s| s.0 == status) {
                Some(i) => Some(i),
                None if e.statuses.len() < MAX_STATUSES => {
                    e.statuses.push((status, 0, Vec::new()));
                    Some(e.statuses.len() - 1)
                }
                None => None,
            };
            if let Some(i) = at {
                let s = &mut e.statuses[i];
                s.1 += 1;
                if let Some(t) = &ex.resp_content_type {
                    add_bounded(&mut s.2, t, MAX_MEDIA_TYPES);
                }
            }
        }
        if let Some(t) = &ex.req_content_type {
            add_bounded(&mut e.request_types, t, MAX_MEDIA_TYPES);
        }
        if let Some(h) = &ex.api_key_header {
            add_bounded(&mut e.api_key_headers, h, MAX_KEY_HEADERS);
        }
    }

    pub fn report(&self) -> Vec<RouteReport> {
        let mut out: Vec<RouteReport> = self
            .entries
            .iter()
            .map(|((service, route, method), e)| {
                let h = &e.latency_us;
                let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
                let mut callers: Vec<(String, u64)> =
                    e.callers.iter().map(|(ip, n)| (ip.to_string(), *n)).collect();
                callers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                RouteReport {
                    service: service.clone(),
                    role: e.role,
                    route: route.clone(),
                    method: method.clone(),
                    count: e.count,
                    errors_4xx: e.errors_4xx,
                    errors_5xx: e.errors_5xx,
                    tls_share: e.tls as f64 / e.count.max(1) as f64,
                    auth_schemes: e.auth.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
                    callers,
                    other_callers: e.other_callers,
                    latency_ms: Percentiles {
                        p50: ms(0.5),
                        p90: ms(0.9),
                        p99: ms(0.99),
                        p999: ms(0.999),
                        max: h.max() as f64 / 1000.0,
                    },
                    statuses: {
                        let mut v: Vec<StatusReport> = e
                            .statuses
                            .iter()
                            .map(|(status, count, types)| StatusReport {
                                status: *status,
                                count: *count,
                                media_types: types.clone(),
                            })
                            .collect();
                        v.sort_by_key(|s| s.status);
                        v
                    },
                    request_types: e.request_types.clone(),
                    api_key_headers: e.api_key_headers.clone(),
                    first_seen: e.first_seen_ns.min(e.last_seen_ns),
                    last_seen: e.last_seen_ns,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.service, &a.route, &a.method).cmp(&(&b.service, &b.route, &b.method)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_callers_and_bounds() {
        let mut inv = Inventory::new(2);
        let mut ex = crate::exchange::tests::sample();
        ex.service = "nginx:8080".into();
        ex.route = "/users/{id}".into();
        for i in 1..=1000u64 {
            ex.latency_us = Some(i * 1000);
            ex.status = Some(if i % 10 == 0 { 503 } else { 200 });
            inv.observe(&ex);
        }
        let r = &inv.report()[0];
        assert_eq!(r.count, 1000);
        assert_eq!(r.errors_5xx, 100);
        assert!((r.latency_ms.p50 - 500.0).abs() < 5.0, "{}", r.latency_ms.p50);
        assert!((r.latency_ms.p99 - 990.0).abs() < 10.0, "{}", r.latency_ms.p99);
        assert_eq!(r.callers, vec![("::1".to_string(), 1000)]);
        assert_eq!(r.auth_schemes.get("bearer"), Some(&1000));
        for m in ["POST", "PUT", "DELETE"] {
            ex.method = m.into();
            inv.observe(&ex);
        }
        assert_eq!(inv.report().len(), 2);
        assert_eq!(inv.dropped, 2);
    }
}
