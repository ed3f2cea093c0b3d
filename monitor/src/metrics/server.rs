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

impl MetricsServer {
    pub fn start(addr: std::net::SocketAddr, metrics: Arc<Metrics>) -> Result<Self, ServerError> {
        let server = tiny_http::Server::http(addr).map_err(|e| ServerError::Bind {
            addr,
            reason: e.to_string(),
        })?;
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
