//! Route templating: `/users/42/orders/9f86d081` -> `/users/{id}/orders/{id}`, with a cap on the
//! routes kept per service so metric series stay bounded whatever the traffic.
// foldhash (randomly seeded), not SipHash: lookups are per exchange and the table is bounded.
use hashbrown::{HashMap, HashSet};

use crate::capture::Role;
use crate::exchange::Exchange;

/// The route every path beyond a service's cap folds into.
pub const OVERFLOW_ROUTE: &str = "__other__";
/// The service every exchange beyond the service cap folds into.
pub const OVERFLOW_SERVICE: &str = "__other__";
const MAX_SEGMENTS: usize = 12;
const MAX_SEGMENT_LEN: usize = 64;

/// The template of a path: identifier-like segments become `{id}`.
pub fn template(path: &str) -> String {
    let mut out = String::with_capacity(path.len().min(128));
    for (i, seg) in crate::http::split_ascii(path, b'/')
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        if i == MAX_SEGMENTS {
            out.push_str("/{...}");
            break;
        }
        out.push('/');
        if is_identifier(seg) {
            out.push_str("{id}");
        } else if seg.len() > MAX_SEGMENT_LEN {
            out.push_str("{long}");
        } else {
            out.push_str(seg);
        }
    }
    // "/" itself, and a trailing slash kept ("/dir/").
    if out.is_empty() || (path.ends_with('/') && path.len() > 1) {
        out.push('/');
    }
    out
}

/// Numbers, UUIDs, hex digests, dates, e-mail addresses and long token-like strings.
fn is_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if digits == b.len() {
        return true;
    }
    if b.contains(&b'@') || (b.contains(&b'%') && s.contains("%40")) {
        return true;
    }
    // UUID 8-4-4-4-12
    if b.len() == 36 && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-') {
        return b
            .iter()
            .enumerate()
            .all(|(i, c)| [8, 13, 18, 23].contains(&i) || c.is_ascii_hexdigit());
    }
    // Hex digests and object ids: at least 8 hex characters with a digit among them.
    if b.len() >= 8 && digits > 0 && b.iter().all(|c| c.is_ascii_hexdigit()) {
        return true;
    }
    // Dates and numeric ranges: digits with separators only.
    if digits * 2 >= b.len() && b.iter().all(|c| c.is_ascii_digit() || b"-_.:,".contains(c)) {
        return true;
    }
    // Long opaque tokens: 16+ characters mixing letters and digits.
    b.len() >= 16
        && digits >= 2
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.=~".contains(c))
}

/// Bounds of the enrich stage's route table.
#[derive(Clone, Copy, Debug)]
pub struct RouteLimits {
    pub max_services: usize,
    pub max_routes_per_service: usize,
}

impl Default for RouteLimits {
    fn default() -> Self {
        Self {
            max_services: 256,
            max_routes_per_service: 200,
        }
    }
}

/// Bounded set of services and of routes per service: at most `max_services` services plus the
/// overflow service, each with at most `max_routes_per_service` routes plus the overflow route.
pub struct RouteTable {
    max_services: usize,
    max_routes_per_service: usize,
    routes: HashMap<String, HashSet<String>>,
    /// Exchanges whose route was folded into OVERFLOW_ROUTE / OVERFLOW_SERVICE.
    pub routes_folded: u64,
    pub services_folded: u64,
}

impl RouteTable {
    pub fn new(max_services: usize, max_routes_per_service: usize) -> Self {
        Self {
            max_services,
            max_routes_per_service,
            routes: HashMap::new(),
            routes_folded: 0,
            services_folded: 0,
        }
    }

    pub fn route_count(&self) -> usize {
        self.routes.values().map(HashSet::len).sum()
    }

    /// Sets `service` and `route` on an exchange.
    pub fn enrich(&mut self, ex: &mut Exchange) {
        let mut service = service_name(ex);
        if !self.routes.contains_key(&service) && self.routes.len() >= self.max_services {
            self.services_folded += 1;
            service = OVERFLOW_SERVICE.to_string();
        }
        let route = template(&ex.path);
        let routes = match self.routes.get_mut(&service) {
            Some(r) => r,
            None => self.routes.entry(service.clone()).or_default(),
        };
        ex.route = if routes.contains(&route) {
            route
        } else if routes.len() < self.max_routes_per_service {
            routes.insert(route.clone());
            route
        } else {
            self.routes_folded += 1;
            OVERFLOW_ROUTE.to_string()
        };
        ex.service = service;
    }
}

/// A server-side exchange belongs to the process serving it and its port (`nginx:8080`); a
/// client-side one to the calling process (`curl`).
pub fn service_name(ex: &Exchange) -> String {
    match ex.role {
        Role::Server => match ex.local {
            // By hand: `format!` here was a few percent of the pipeline (once per exchange).
            Some(a) => {
                let mut name = String::with_capacity(ex.comm.len() + 6);
                name.push_str(&ex.comm);
                name.push(':');
                crate::text::push_decimal(&mut name, a.port() as u64, 1);
                name
            }
            None => ex.comm.to_string(),
        },
        Role::Client => ex.comm.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_carry_the_port_in_decimal() {
        let mut ex = crate::exchange::tests::sample();
        ex.role = Role::Server;
        for port in [0u16, 7, 80, 8080, 65535] {
            ex.local = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            assert_eq!(service_name(&ex), format!("{}:{port}", ex.comm));
        }
    }

    #[test]
    fn templates() {
        for (path, want) in [
            ("/", "/"),
            ("", "/"),
            ("/users/42/orders/9f86d081", "/users/{id}/orders/{id}"),
            ("/v1/items/550e8400-e29b-41d4-a716-446655440000", "/v1/items/{id}"),
            ("/reports/2024-01-31", "/reports/{id}"),
            ("/u/bob@example.com/profile", "/u/{id}/profile"),
            ("/t/eyJhbGciOiJIUzI1NiJ9x1", "/t/{id}"),
            ("/api/v2/index.json", "/api/v2/index.json"),
            ("/static/app.css", "/static/app.css"),
            ("/deadbeef", "/deadbeef"),
            ("/dir/", "/dir/"),
            ("/a/b/c/d/e/f/g/h/i/j/k/l/m/n", "/a/b/c/d/e/f/g/h/i/j/k/l/{...}"),
        ] {
            assert_eq!(template(path), want, "{path}");
        }
    }

    #[test]
    fn routes_per_service_are_capped() {
        let mut t = RouteTable::new(4, 10);
        let mut ex = crate::exchange::tests::sample();
        for i in 0..1000 {
            ex.path = format!(
                "/random/{}",
                "abcdefghij"
                    .chars()
                    .cycle()
                    .skip(i % 7)
                    .take(5 + i % 13)
                    .collect::<String>()
                    + &"x".repeat(i / 100)
            );
            t.enrich(&mut ex);
        }
        assert!(t.route_count() <= 10);
        assert!(t.routes_folded > 0);
        assert_eq!(ex.route, OVERFLOW_ROUTE);
        for i in 0..10 {
            ex.comm = format!("proc{i}").into();
            t.enrich(&mut ex);
        }
        assert!(t.routes.len() <= 4 + 1, "the cap plus the one overflow bucket");
        assert_eq!(ex.service, OVERFLOW_SERVICE);
    }
}
