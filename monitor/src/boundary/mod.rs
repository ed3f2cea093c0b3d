//! Boundary: every server-side exchange checked against the declared policy.
pub mod evaluate;
pub mod learn;
pub mod openapi;
pub mod policy;

pub use evaluate::Evaluator;
pub use policy::Policy;

#[cfg(test)]
mod tests;

/// Policy evaluations per second on one core, against a policy of `routes` endpoints, for
/// `cargo xtask bench`. Returns (evaluations, seconds, findings).
pub fn bench(routes: usize, evaluations: usize) -> (usize, f64, usize) {
    use std::fmt::Write;
    let mut text = String::from(
        "zones:\n  corp: [\"10.0.0.0/8\"]\n  lo: [\"127.0.0.0/8\"]\nservices:\n  - name: api\n    match:\n      port: 8080\n    defaults:\n      allowed_sources: [corp]\n      auth: bearer\n    endpoints:\n",
    );
    for i in 0..routes {
        let _ = write!(
            text,
            "      - route: /api/r{i}/items/{{id}}\n        methods: [GET, POST]\n        rate_limit:\n          limit: 1000/min\n"
        );
    }
    let policy = std::sync::Arc::new(Policy::parse("bench", &text).expect("bench policy is valid"));
    let mut eval = Evaluator::new(policy);
    let mut ex = crate::exchange::Exchange {
        ts: 1_800_000_000_000_000_000,
        comm: "api".into(),
        peer: Some("10.1.2.3:4000".parse().expect("static")),
        tls: true,
        query_keys: Vec::new(),
        service: "api:8080".into(),
        ..crate::exchange::Exchange::example()
    };
    let paths: Vec<String> = (0..256)
        .map(|i| format!("/api/r{}/items/{i}", (i * 7919) % routes.max(1)))
        .collect();
    let mut out = Vec::new();
    let mut findings = 0;
    let start = std::time::Instant::now();
    for i in 0..evaluations {
        ex.path.clone_from(&paths[i % paths.len()]);
        ex.peer = Some(
            if i % 10 == 0 {
                "192.0.2.1:1"
            } else {
                "10.1.2.3:4000"
            }
            .parse()
            .expect("static"),
        );
        ex.ts += 1_000;
        eval.evaluate(&ex, &mut out);
        findings += out.len();
        out.clear();
    }
    (evaluations, start.elapsed().as_secs_f64(), findings)
}
