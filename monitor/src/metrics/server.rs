//! The agent's HTTP endpoint: /metrics, /healthz, /readyz, /api/v1/routes, /api/v1/alerts.
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "cannot listen on {addr} for metrics: {reason} (is another agent or program using it? set metrics.listen or --metrics-addr)"
    )]
    Bind {
        addr: std::net::SocketAddr,
        reason: String,
    },
}

pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub addr: std::net::SocketAddr,
}

/// How long a port in use is retried: an agent restarted right after a crash finds its old
/// port held while the dying process releases its BPF objects (about 1.3 s here).
const BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

fn in_use(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
}

impl MetricsServer {
    pub fn start(addr: std::net::SocketAddr, metrics: Arc<Metrics>) -> Result<Self, ServerError> {
        let deadline = std::time::Instant::now() + BIND_RETRY;
        let mut said = false;
        let server = loop {
            match tiny_http::Server::http(addr) {
                Ok(s) => break s,
                Err(e) if in_use(e.as_ref()) && std::time::Instant::now() < deadline => {
                    if !said {
                        said = true;
                        log::warn!(
                            "metrics address {addr} is in use; retrying for {} s (an agent that just exited may still be releasing it)",
                            BIND_RETRY.as_secs()
                        );
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(ServerError::Bind {
                        addr,
                        reason: e.to_string(),
                    });
                }
            }
        };
        let bound = server.server_addr().to_ip().unwrap_or(addr);
        let server = Arc::new(server);
        let s = server.clone();
        let thread = std::thread::Builder::new()
            .name("apiwatch-metrics".into())
            .spawn(move || {
                for req in s.incoming_requests() {
                    let (status, ctype, body) = respond(req.url(), &metrics);
                    let header = tiny_http::Header::from_bytes("Content-Type", ctype).expect("static header");
                    let resp = tiny_http::Response::from_data(body)
                        .with_status_code(status)
                        .with_header(header);
                    let _ = req.respond(resp);
                }
            })
            .map_err(|e| ServerError::Bind {
                addr,
                reason: e.to_string(),
            })?;
        Ok(Self {
            server,
            thread: Some(thread),
            addr: bound,
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(url: &str, metrics: &Metrics) -> (u16, &'static str, Vec<u8>) {
    let path = url.split('?').next().unwrap_or(url);
    match path {
        "/metrics" => match prometheus::TextEncoder::new().encode_to_string(&metrics.registry.gather()) {
            Ok(text) => (200, "text/plain; version=0.0.4", text.into_bytes()),
            Err(e) => (500, "text/plain", e.to_string().into_bytes()),
        },
        "/healthz" => (200, "text/plain", b"ok\n".to_vec()),
        "/readyz" => {
            if metrics.ready.load(Ordering::Relaxed) {
                (200, "text/plain", b"ready\n".to_vec())
            } else {
                (503, "text/plain", b"probes not attached yet\n".to_vec())
            }
        }
        "/api/v1/routes" => {
            let report = metrics
                .inventory
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .report();
            (
                200,
                "application/json",
                serde_json::to_vec(&serde_json::json!({ "routes": report })).unwrap_or_default(),
            )
        }
        "/api/v1/alerts" => {
            // Firing now, in the webhook's alert shape (docs/schemas/alert-webhook.schema.json).
            let alerts: Vec<serde_json::Value> = metrics
                .alerts
                .firing_now()
                .iter()
                .map(crate::alert::AlertNotice::to_json)
                .collect();
            (
                200,
                "application/json",
                serde_json::to_vec(&serde_json::json!({ "alerts": alerts })).unwrap_or_default(),
            )
        }
        _ => (
            404,
            "text/plain",
            b"not found: try /metrics, /healthz, /readyz, /api/v1/routes, /api/v1/alerts\n".to_vec(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(&crate::metrics::MetricsOptions::default(), 1 << 16))
    }

    /// A restart right after a crash: the old process still holds the port for a moment.
    #[test]
    fn a_port_released_within_the_retry_is_taken() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(600));
            drop(held);
        });
        let start = std::time::Instant::now();
        let server = MetricsServer::start(addr, metrics()).expect("bound once released");
        assert!(start.elapsed() >= std::time::Duration::from_millis(500));
        assert_eq!(server.addr, addr);
        release.join().unwrap();
    }

    #[test]
    fn only_an_address_in_use_is_retried() {
        let e: Box<dyn std::error::Error + Send + Sync> =
            Box::new(std::io::Error::from(std::io::ErrorKind::AddrInUse));
        assert!(in_use(e.as_ref()));
        let e: Box<dyn std::error::Error + Send + Sync> =
            Box::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(!in_use(e.as_ref()));
        // An address this host does not have fails at once, with its reason.
        let start = std::time::Instant::now();
        let err = MetricsServer::start("192.0.2.1:9".parse().unwrap(), metrics())
            .err()
            .expect("not ours");
        assert!(start.elapsed() < BIND_RETRY, "not retried");
        assert!(err.to_string().contains("192.0.2.1:9"), "{err}");
    }
}
