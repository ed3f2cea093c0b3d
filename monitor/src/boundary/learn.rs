//! `apiwatch learn`: observe server-side traffic and write a policy draft (services, routes,
//! methods, auth schemes, source zones) for users to review and tighten.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::capture::Role;
use crate::exchange::Exchange;
use crate::http::AuthScheme;
use crate::output::Sink;

/// Bounds: services, routes per service, source networks.
const MAX_SERVICES: usize = 64;
const MAX_ROUTES: usize = 200;
const MAX_NETWORKS: usize = 64;

#[derive(Default)]
struct RouteSeen {
    methods: BTreeSet<String>,
    schemes: BTreeSet<&'static str>,
    tls: bool,
    cleartext: bool,
}

#[derive(Default)]
struct ServiceSeen {
    process: String,
    port: Option<u16>,
    routes: BTreeMap<String, RouteSeen>,
    networks: BTreeSet<String>,
}

/// Collects what the draft needs from each server-side exchange; bounded.
#[derive(Default)]
pub struct Learner {
    services: BTreeMap<String, ServiceSeen>,
    networks: BTreeSet<String>,
    pub exchanges: u64,
}

impl Sink<Exchange> for Learner {
    fn write(&mut self, ex: &Exchange) {
        if ex.role != Role::Server {
            return;
        }
        self.exchanges += 1;
        if !self.services.contains_key(&*ex.service) && self.services.len() >= MAX_SERVICES {
            return;
        }
        let s = self
            .services
            .entry(ex.service.to_string())
            .or_insert_with(|| ServiceSeen {
                process: ex.comm.to_string(),
                port: ex.local.map(|a| a.port()),
                ..ServiceSeen::default()
            });
        if let Some(net) = ex.peer.map(|p| network_of(p.ip())) {
            if self.networks.len() < MAX_NETWORKS || self.networks.contains(&net) {
                self.networks.insert(net.clone());
                s.networks.insert(net);
            }
        }
        if !s.routes.contains_key(&*ex.route) && s.routes.len() >= MAX_ROUTES {
            return;
        }
        let r = s.routes.entry(ex.route.to_string()).or_default();
        r.methods.insert(ex.method.clone());
        r.schemes.insert(ex.auth_scheme.as_str());
        if ex.tls {
            r.tls = true;
        } else {
            r.cleartext = true;
        }
    }
}

/// The /24 (IPv4) or /64 (IPv6) a source belongs to; loopback as one zone.
fn network_of(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => "127.0.0.0/8".into(),
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) if v6.is_loopback() => "::1/128".into(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

fn zone_name(net: &str) -> String {
    let cleaned: String = net
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("net_{}", cleaned.trim_end_matches('_'))
}

impl Learner {
    /// A policy draft as YAML text (with comments: review before use).
    pub fn draft(&self) -> String {
        let mut y = String::from(
            "# apiwatch policy draft, learnt from observed traffic. Review and tighten before use:\n\
             # narrow allowed_sources, raise auth requirements, mark sensitive routes.\nzones:\n",
        );
        for net in &self.networks {
            y.push_str(&format!("  {}: [\"{net}\"]\n", zone_name(net)));
        }
        y.push_str("services:\n");
        for (name, s) in &self.services {
            y.push_str(&format!("  - name: {}\n    match:\n", quote(name)));
            match s.port {
                Some(p) => y.push_str(&format!("      port: {p}\n")),
                None => y.push_str(&format!("      process: {}\n", quote(&s.process))),
            }
            y.push_str("    undeclared: alert\n");
            let zones: Vec<String> = s.networks.iter().map(|n| zone_name(n)).collect();
            if !zones.is_empty() {
                y.push_str(&format!(
                    "    defaults:\n      allowed_sources: [{}]\n",
                    zones.join(", ")
                ));
            }
            y.push_str("    endpoints:\n");
            for (route, r) in &s.routes {
                let route = if route.starts_with('/') && !route.contains("__other__") {
                    route.clone()
                } else {
                    "/**".into()
                };
                y.push_str(&format!("      - route: {}\n", quote(&route)));
                let methods: Vec<&str> = r
                    .methods
                    .iter()
                    .map(String::as_str)
                    .filter(|m| crate::http::KNOWN_METHODS.contains(m))
                    .collect();
                if !methods.is_empty() {
                    y.push_str(&format!("        methods: [{}]\n", methods.join(", ")));
                }
                // The weakest scheme seen is what the endpoint accepts today.
                let auth = if r.schemes.contains(AuthScheme::None.as_str()) {
                    "none"
                } else if r.schemes.len() == 1 {
                    r.schemes.iter().next().copied().unwrap_or("any")
                } else {
                    "any"
                };
                let auth = if auth == "other" { "any" } else { auth };
                y.push_str(&format!("        auth: {auth}\n"));
                if r.tls && !r.cleartext {
                    y.push_str("        tls_required: true\n");
                }
            }
        }
        y
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_is_a_valid_policy_that_fits_what_was_seen() {
        let mut l = Learner::default();
        let mut ex = crate::exchange::tests::sample();
        ex.service = "nginx:8080".into();
        for (route, method, scheme, peer, tls) in [
            ("/users/{id}", "GET", AuthScheme::Bearer, "10.1.2.3:1", false),
            ("/users/{id}", "PUT", AuthScheme::Bearer, "10.1.2.4:1", false),
            ("/health", "GET", AuthScheme::None, "127.0.0.1:5", false),
            ("/pay", "POST", AuthScheme::Apikey, "[2001:db8::7]:9", true),
        ] {
            ex.route = route.into();
            ex.method = method.into();
            ex.auth_scheme = scheme;
            ex.peer = Some(peer.parse().unwrap());
            ex.tls = tls;
            l.write(&ex);
        }
        let text = l.draft();
        let p = crate::boundary::Policy::parse("draft.yml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(p.zones.len(), 3, "{text}");
        let s = &p.services[0];
        assert_eq!(s.port, Some(8080));
        let users = s.endpoints.iter().find(|e| e.route == "/users/{id}").unwrap();
        assert_eq!(users.methods, vec!["GET", "PUT"]);
        let pay = s.endpoints.iter().find(|e| e.route == "/pay").unwrap();
        assert!(pay.rules.tls_required);
        // Replaying the same traffic against the draft gives no finding.
        let mut eval = crate::boundary::Evaluator::new(std::sync::Arc::new(p));
        let mut out = Vec::new();
        ex.route = "/users/{id}".into();
        ex.path = "/users/9".into();
        ex.method = "GET".into();
        ex.auth_scheme = AuthScheme::Bearer;
        ex.peer = Some("10.1.2.3:1".parse().unwrap());
        ex.tls = false;
        ex.url_detectors.clear();
        eval.evaluate(&ex, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
}
