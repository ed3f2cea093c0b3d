//! `rustls-get URL [N [HOLD_MS]]`: N GETs over one keep-alive connection with rustls, a TLS
//! library no probe sees (pure Rust, linked into the binary without OpenSSL symbols), then
//! HOLD_MS with the connection open before exiting. The TLS tier uses it as a client whose
//! plaintext stays a counted blind spot. Certificates are not verified: the server is the
//! test's own, on loopback.
use std::io::Read;

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("usage: rustls-get URL [N]");
    let n: usize = args.next().map(|s| s.parse().expect("N is a count")).unwrap_or(1);
    let hold: u64 = args
        .next()
        .map(|s| s.parse().expect("HOLD_MS is a count"))
        .unwrap_or(0);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(ureq::tls::TlsConfig::builder().disable_verification(true).build())
        .build()
        .into();
    for _ in 0..n {
        let mut resp = agent.get(&url).call().expect("GET");
        let mut body = Vec::new();
        resp.body_mut().as_reader().read_to_end(&mut body).expect("body");
    }
    std::thread::sleep(std::time::Duration::from_millis(hold));
}
