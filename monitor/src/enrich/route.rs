//! Route templating: `/users/42/orders/9f86d081` -> `/users/{id}/orders/{id}`, with a cap on the
//! routes kept per service so metric series stay bounded whatever the traffic.
// foldhash (randomly seeded), not SipHash: lookups are per exchange and the table is bounded.
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

use crate::capture::Role;
use crate::exchange::Exchange;

/// The route every path beyond a service's cap folds into.
pub const OVERFLOW_ROUTE: &str = "__other__";
/// The service every exchange beyond the service cap folds into.
pub const OVERFLOW_SERVICE: &str = "__other__";
const MAX_SEGMENTS: usize = 12;
/// Slots of the memo of recent (service, path) pairs (see `RouteTable::memo`).
const MEMO_SLOTS: usize = 1024;
/// Longer paths are named afresh each time (and the memo stays small: at most MEMO_SLOTS keys
/// of this size).
const MEMO_MAX_KEY: usize = 256;
const MAX_SEGMENT_LEN: usize = 64;

/// The template of a path: identifier-like segments become `{id}`. One pass over the bytes:
/// each segment's byte classes are gathered as it is read, and it is copied once.
pub fn template(path: &str) -> String {
    let mut out = String::with_capacity(path.len().min(128) + 8);
    template_into(&mut out, path);
    out
}

/// `template`, appended to `out` (empty: the route table reuses one buffer).
fn template_into(out: &mut String, path: &str) {
    debug_assert!(out.is_empty());
    let bytes = path.as_bytes();
    let (mut segments, mut start, mut classes) = (0, 0, Classes::NONE);
    for i in 0..=bytes.len() {
        // The end of the path ends the last segment as a slash would.
        let c = bytes.get(i).copied().unwrap_or(b'/');
        if c != b'/' {
            classes.add(c);
            continue;
        }
        if i > start {
            if segments == MAX_SEGMENTS {
                out.push_str("/{...}");
                break;
            }
            // Slashes are ASCII: `start..i` lies on character boundaries.
            let seg = &path[start..i];
            out.push('/');
            if classes.identifier(seg) {
                out.push_str("{id}");
            } else if seg.len() > MAX_SEGMENT_LEN {
                out.push_str("{long}");
            } else {
                out.push_str(seg);
            }
            segments += 1;
        }
        start = i + 1;
        classes = Classes::NONE;
    }
    // "/" itself, and a trailing slash kept ("/dir/").
    if out.is_empty() || (path.ends_with('/') && path.len() > 1) {
        out.push('/');
    }
}

/// Byte classes, so one pass over a segment answers every identifier test.
const DIGIT: u8 = 1;
/// 0-9, a-f, A-F.
const HEX: u8 = 2;
/// Digits and the separators of dates and ranges: `-_.:,`.
const DATE: u8 = 4;
/// Letters, digits and `-_.=~`: what opaque tokens are made of.
const TOKEN: u8 = 8;
const AT: u8 = 16;
const PERCENT: u8 = 32;
const CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let mut k = 0;
        if b.is_ascii_digit() {
            k |= DIGIT | HEX | DATE | TOKEN;
        }
        if b.is_ascii_hexdigit() {
            k |= HEX;
        }
        if b.is_ascii_alphabetic() {
            k |= TOKEN;
        }
        if matches!(b, b'-' | b'_' | b'.' | b':' | b',') {
            k |= DATE;
        }
        if matches!(b, b'-' | b'_' | b'.' | b'=' | b'~') {
            k |= TOKEN;
        }
        if b == b'@' {
            k |= AT;
        }
        if b == b'%' {
            k |= PERCENT;
        }
        t[c] = k;
        c += 1;
    }
    t
};

/// The byte classes of a segment so far: those every byte has, those some byte has, and the
/// number of digits.
#[derive(Clone, Copy)]
struct Classes {
    every: u8,
    some: u8,
    digits: usize,
}

impl Classes {
    const NONE: Self = Self {
        every: u8::MAX,
        some: 0,
        digits: 0,
    };

    fn add(&mut self, c: u8) {
        let k = CLASSES[c as usize];
        self.every &= k;
        self.some |= k;
        self.digits += (k & DIGIT) as usize;
    }

    /// Whether `s`, whose bytes these are the classes of, is an identifier: a number, UUID, hex
    /// digest, date, e-mail address or long token-like string.
    fn identifier(self, s: &str) -> bool {
        let b = s.as_bytes();
        let Self { every, some, digits } = self;
        if digits == b.len() {
            return true;
        }
        if some & AT != 0 || (some & PERCENT != 0 && s.contains("%40")) {
            return true;
        }
        if let Some(uuid) = uuid_shaped(b) {
            return uuid;
        }
        // Hex digests and object ids: at least 8 hex characters with a digit among them.
        if b.len() >= 8 && digits > 0 && every & HEX != 0 {
            return true;
        }
        // Dates and numeric ranges: digits with separators only.
        if digits * 2 >= b.len() && every & DATE != 0 {
            return true;
        }
        // Long opaque tokens: 16+ characters mixing letters and digits.
        b.len() >= 16 && digits >= 2 && every & TOKEN != 0
    }
}

/// For a segment with a UUID's dashes (8-4-4-4-12), whether the rest is hex; None otherwise
/// (unchanged by the one-pass rewrite, so shared with the test's reference).
fn uuid_shaped(b: &[u8]) -> Option<bool> {
    const DASHES: [usize; 4] = [8, 13, 18, 23];
    (b.len() == 36 && DASHES.iter().all(|&i| b[i] == b'-')).then(|| {
        b.iter()
            .enumerate()
            .all(|(i, c)| DASHES.contains(&i) || c.is_ascii_hexdigit())
    })
}

/// Numbers, UUIDs, hex digests, dates, e-mail addresses and long token-like strings.
#[cfg(test)]
fn is_identifier(s: &str) -> bool {
    let mut classes = Classes::NONE;
    s.bytes().for_each(|c| classes.add(c));
    classes.identifier(s)
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
/// Names are interned: an exchange gets the table's `Arc<str>`, so naming one allocates nothing
/// once its service and route are known (two strings per exchange were a tenth of the stage).
pub struct RouteTable {
    max_services: usize,
    max_routes_per_service: usize,
    routes: HashMap<Arc<str>, HashSet<Arc<str>>>,
    overflow_service: Arc<str>,
    overflow_route: Arc<str>,
    /// Scratch for the name and template of the exchange in hand.
    service_buf: String,
    route_buf: String,
    /// Recent (service, path) pairs and the names they got, direct-mapped by a hash of the
    /// pair: a path seen again (a keep-alive client, a health check, a hot endpoint) is named
    /// without templating it or looking its service and route up (more than half of this stage
    /// on nginx under wrk). It never goes stale: services and routes are only ever added, and
    /// a name folded into the overflow stays folded (the cap it met stays met).
    memo: Vec<Memo>,
    /// Per memo slot, the hash of the last pair that missed it: a pair enters the memo when it
    /// misses twice in a row, so paths that never repeat (an id in each) pay a store, not an
    /// entry's copies.
    missed: Vec<u64>,
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
            overflow_service: OVERFLOW_SERVICE.into(),
            overflow_route: OVERFLOW_ROUTE.into(),
            service_buf: String::new(),
            route_buf: String::new(),
            memo: Vec::new(),
            missed: Vec::new(),
            routes_folded: 0,
            services_folded: 0,
        }
    }

    pub fn route_count(&self) -> usize {
        self.routes.values().map(HashSet::len).sum()
    }

    /// Sets `service` and `route` on an exchange.
    pub fn enrich(&mut self, ex: &mut Exchange) {
        self.service_buf.clear();
        push_service_name(&mut self.service_buf, ex);
        let slot = self.memo_slot(&ex.path);
        if let Some((m, _)) = slot.map(|(i, h)| (&self.memo[i], h)) {
            if m.is(&self.service_buf, &ex.path) {
                ex.service = m.service.clone();
                ex.route = m.route.clone();
                self.services_folded += m.service_folded as u64;
                self.routes_folded += m.route_folded as u64;
                return;
            }
        }
        let folded = (self.services_folded, self.routes_folded);
        self.name(ex);
        if let Some((i, h)) = slot {
            if std::mem::replace(&mut self.missed[i], h) != h {
                return;
            }
            // In place: the slot's key keeps its buffer (no allocation once it is big enough).
            let m = &mut self.memo[i];
            m.key.clear();
            m.key.push_str(&self.service_buf);
            m.key.push('\0');
            m.key.push_str(&ex.path);
            m.service = ex.service.clone();
            m.route = ex.route.clone();
            m.service_folded = self.services_folded > folded.0;
            m.route_folded = self.routes_folded > folded.1;
        }
    }

    /// The memo slot of (the service in `service_buf`, `path`) and the pair's hash; None for a
    /// path too long to keep.
    fn memo_slot(&mut self, path: &str) -> Option<(usize, u64)> {
        if self.service_buf.len() + 1 + path.len() > MEMO_MAX_KEY {
            return None;
        }
        if self.memo.is_empty() {
            let vacant = Memo {
                key: String::new(),
                service: self.overflow_service.clone(),
                route: self.overflow_route.clone(),
                service_folded: false,
                route_folded: false,
            };
            self.memo = vec![vacant; MEMO_SLOTS];
            self.missed = vec![0; MEMO_SLOTS];
        }
        use std::hash::BuildHasher;
        let h = self.routes.hasher().hash_one((self.service_buf.as_str(), path));
        Some((h as usize % MEMO_SLOTS, h))
    }

    /// Names an exchange from the table (the service in `service_buf`).
    fn name(&mut self, ex: &mut Exchange) {
        self.route_buf.clear();
        template_into(&mut self.route_buf, &ex.path);
        // One lookup for a known service (nearly every exchange); a new one beyond the cap folds.
        let (service, routes) = match self.routes.get_key_value_mut(self.service_buf.as_str()) {
            Some((name, routes)) => (name.clone(), routes),
            None => {
                let name: Arc<str> = if self.routes.len() >= self.max_services {
                    self.services_folded += 1;
                    self.overflow_service.clone()
                } else {
                    self.service_buf.as_str().into()
                };
                let routes = self.routes.entry(name.clone()).or_default();
                (name, routes)
            }
        };
        ex.route = match routes.get(self.route_buf.as_str()) {
            Some(route) => route.clone(),
            None if routes.len() < self.max_routes_per_service => {
                let route: Arc<str> = self.route_buf.as_str().into();
                routes.insert(route.clone());
                route
            }
            None => {
                self.routes_folded += 1;
                self.overflow_route.clone()
            }
        };
        ex.service = service;
    }
}

/// One memo slot: the key (the service name, a NUL, the path; empty in a vacant slot, which
/// no key matches) and the names it was given.
#[derive(Clone)]
struct Memo {
    key: String,
    service: Arc<str>,
    route: Arc<str>,
    /// Whether naming it folded the service or the route (counted again on each hit).
    service_folded: bool,
    route_folded: bool,
}

impl Memo {
    fn is(&self, service: &str, path: &str) -> bool {
        let k = self.key.as_bytes();
        k.len() == service.len() + 1 + path.len()
            && &k[..service.len()] == service.as_bytes()
            && k[service.len()] == 0
            && &k[service.len() + 1..] == path.as_bytes()
    }
}

/// A server-side exchange belongs to the process serving it and its port (`nginx:8080`); a
/// client-side one to the calling process (`curl`).
pub fn service_name(ex: &Exchange) -> String {
    let mut name = String::with_capacity(ex.comm.len() + 6);
    push_service_name(&mut name, ex);
    name
}

fn push_service_name(name: &mut String, ex: &Exchange) {
    name.push_str(&ex.comm);
    if let (Role::Server, Some(a)) = (ex.role, ex.local) {
        // By hand: `format!` here was a few percent of the pipeline (once per exchange).
        name.push(':');
        crate::text::push_decimal(name, a.port() as u64, 1);
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

    /// Deterministic pseudo-random numbers for generated cases (xorshift64).
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// The tests one pass each, as they were written before `CLASSES`.
    fn is_identifier_by_passes(s: &str) -> bool {
        let b = s.as_bytes();
        let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
        if digits == b.len() {
            return true;
        }
        if b.contains(&b'@') || (b.contains(&b'%') && s.contains("%40")) {
            return true;
        }
        if let Some(uuid) = uuid_shaped(b) {
            return uuid;
        }
        if b.len() >= 8 && digits > 0 && b.iter().all(|c| c.is_ascii_hexdigit()) {
            return true;
        }
        if digits * 2 >= b.len() && b.iter().all(|c| c.is_ascii_digit() || b"-_.:,".contains(c)) {
            return true;
        }
        b.len() >= 16
            && digits >= 2
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.=~".contains(c))
    }

    #[test]
    fn the_one_pass_identifier_test_is_the_one_of_many_passes() {
        // Segments drawn from an alphabet with a member of every class (and of none).
        let alphabet = [
            "0", "7", "a", "F", "g", "Z", "-", "_", ".", ":", ",", "=", "~", "@", "%40", "%", "é", "+",
        ];
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        let mut cases = vec![
            "550e8400-e29b-41d4-a716-446655440000".to_string(),
            "550e8400-e29b-41d4-a716-44665544000g".to_string(),
            String::new(),
        ];
        for _ in 0..200_000 {
            let len = (next() % 40) as usize;
            // Mostly from a few classes at a time, as real segments are.
            let pick = 1 + next() % alphabet.len() as u64;
            let base = next() % alphabet.len() as u64;
            let seg: String = (0..len)
                .map(|_| alphabet[((base + next() % pick) % alphabet.len() as u64) as usize])
                .collect();
            cases.push(seg);
        }
        let mut identifiers = 0;
        for seg in &cases {
            assert_eq!(is_identifier(seg), is_identifier_by_passes(seg), "{seg:?}");
            identifiers += is_identifier(seg) as usize;
        }
        // Both answers are common among the cases, so the comparison means something.
        assert!(
            identifiers > cases.len() / 10 && identifiers < cases.len() * 9 / 10,
            "{identifiers}"
        );
    }

    /// Templating as it was written before the one-pass loop.
    fn template_by_split(path: &str) -> String {
        let mut out = String::new();
        for (i, seg) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
            if i == MAX_SEGMENTS {
                out.push_str("/{...}");
                break;
            }
            out.push('/');
            if is_identifier_by_passes(seg) {
                out.push_str("{id}");
            } else if seg.len() > MAX_SEGMENT_LEN {
                out.push_str("{long}");
            } else {
                out.push_str(seg);
            }
        }
        if out.is_empty() || (path.ends_with('/') && path.len() > 1) {
            out.push('/');
        }
        out
    }

    #[test]
    fn the_one_pass_template_is_the_one_of_split_segments() {
        let pieces = [
            "/",
            "/",
            "api",
            "v1",
            "42",
            "9f86d081",
            "2024-01-31",
            "a@b",
            "é",
            "x".repeat(70).leak(),
            "550e8400-e29b-41d4-a716-446655440000",
            "%40",
            "abc123def456ghi789",
        ];
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        for _ in 0..50_000 {
            let n = (next() % 30) as usize;
            let path: String = (0..n)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            assert_eq!(template(&path), template_by_split(&path), "{path:?}");
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

    /// Names come from the table: every exchange of a service and route shares one string.
    #[test]
    fn service_and_route_names_are_interned() {
        let mut t = RouteTable::new(4, 10);
        let mut a = crate::exchange::tests::sample();
        let mut b = crate::exchange::tests::sample();
        a.path = "/users/42".into();
        b.path = "/users/7".into();
        t.enrich(&mut a);
        t.enrich(&mut b);
        assert_eq!((&*a.route, &*b.service), ("/users/{id}", &*service_name(&a)));
        assert!(Arc::ptr_eq(&a.route, &b.route) && Arc::ptr_eq(&a.service, &b.service));
    }

    /// The memo is invisible: the same names and fold counts as naming every exchange afresh,
    /// over repeated and one-off paths of several services under caps small enough to fold.
    #[test]
    fn the_memo_names_as_the_table_does() {
        let (mut memo, mut fresh) = (RouteTable::new(3, 5), RouteTable::new(3, 5));
        let mut next = xorshift(0x5eed);
        let mut ex = crate::exchange::tests::sample();
        for i in 0..20_000 {
            let r = next();
            ex.comm = format!("p{}", r % 5).into();
            ex.path = match (r >> 8) % 4 {
                0 => format!("/hot/{}", (r >> 16) % 3),
                1 => format!("/users/{}", r >> 16),
                2 => format!("/static/{}/x", (r >> 16) % 11),
                _ => format!("/long/{}", "y".repeat(((r >> 16) % 300) as usize)),
            };
            let mut a = ex.clone();
            memo.enrich(&mut a);
            fresh.service_buf.clear();
            push_service_name(&mut fresh.service_buf, &ex);
            fresh.name(&mut ex);
            assert_eq!(
                (&*a.service, &*a.route),
                (&*ex.service, &*ex.route),
                "exchange {i}"
            );
            assert_eq!(
                (memo.services_folded, memo.routes_folded),
                (fresh.services_folded, fresh.routes_folded),
                "exchange {i}"
            );
        }
        assert!(memo.routes_folded > 0 && memo.services_folded > 0);
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
        assert_eq!(&*ex.route, OVERFLOW_ROUTE);
        for i in 0..10 {
            ex.comm = format!("proc{i}").into();
            t.enrich(&mut ex);
        }
        assert!(t.routes.len() <= 4 + 1, "the cap plus the one overflow bucket");
        assert_eq!(&*ex.service, OVERFLOW_SERVICE);
    }
}
