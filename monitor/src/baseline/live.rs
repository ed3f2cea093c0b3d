//! Baselines in the live agent: per (service, route) windows of request count, 5xx ratio,
//! 401/403 ratio and p99 latency, one detector per series, findings when a series starts and
//! stops being anomalous. State persists across restarts (JSON, written atomically).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::detector::{Detector, DetectorConfig, Transition, Verdict};
use crate::capture::Role;
use crate::exchange::Exchange;
use crate::finding::{Finding, FindingKind, Lifecycle, Severity};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Signal {
    Rate,
    ErrorRatio,
    AuthFailureRatio,
    LatencyP99,
    /// Requests of the heaviest client (identity, else source) in the window, on sensitive
    /// endpoints: a scraping or credential-stuffing client stands out against what one client
    /// normally does.
    TopClientRate,
}

impl Signal {
    fn kind(self) -> FindingKind {
        match self {
            Signal::Rate | Signal::TopClientRate => FindingKind::RateAnomaly,
            Signal::ErrorRatio => FindingKind::ErrorRatioAnomaly,
            Signal::AuthFailureRatio => FindingKind::AuthFailureAnomaly,
            Signal::LatencyP99 => FindingKind::LatencyAnomaly,
        }
    }
    fn unit(self) -> &'static str {
        match self {
            Signal::Rate => "requests per window",
            Signal::ErrorRatio => "share of 5xx",
            Signal::AuthFailureRatio => "share of 401/403",
            Signal::LatencyP99 => "ms p99",
            Signal::TopClientRate => "requests per window from one client",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct BaselineOptions {
    pub window_secs: u64,
    pub detector: DetectorConfig,
    /// Series kept at most (4 per route); beyond, new routes are not baselined (counted).
    pub max_series: usize,
    /// Ratios and latency are judged only on windows with at least this many requests.
    pub min_requests: u64,
    pub state_file: Option<PathBuf>,
}

impl Default for BaselineOptions {
    fn default() -> Self {
        Self {
            window_secs: 60,
            detector: DetectorConfig::default(),
            max_series: 20_000,
            min_requests: 10,
            state_file: None,
        }
    }
}

struct Window {
    requests: u64,
    errors: u64,
    auth_failures: u64,
    latency_us: Histogram<u32>,
    /// Heavy hitters among clients, for sensitive endpoints only.
    clients: Option<SpaceSaving>,
}

/// Clients counted per window on a sensitive endpoint (Space-Saving: the heavy hitters are exact
/// enough, memory is fixed whatever the number of distinct clients).
const TOP_CLIENTS: usize = 32;

#[derive(Default)]
struct SpaceSaving {
    counts: HashMap<String, u64>,
}

impl SpaceSaving {
    fn add(&mut self, key: &str) {
        if let Some(c) = self.counts.get_mut(key) {
            *c += 1;
            return;
        }
        if self.counts.len() < TOP_CLIENTS {
            self.counts.insert(key.to_string(), 1);
            return;
        }
        // Replace the smallest counter; the newcomer inherits its count (an upper bound).
        if let Some((min_key, min)) = self
            .counts
            .iter()
            .min_by_key(|(_, c)| **c)
            .map(|(k, c)| (k.clone(), *c))
        {
            self.counts.remove(&min_key);
            self.counts.insert(key.to_string(), min + 1);
        }
    }

    fn top(&self) -> Option<(&str, u64)> {
        self.counts
            .iter()
            .max_by_key(|(k, c)| (**c, std::cmp::Reverse(k.as_str())))
            .map(|(k, c)| (k.as_str(), *c))
    }
}

impl Window {
    fn new() -> Self {
        Self {
            requests: 0,
            errors: 0,
            auth_failures: 0,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 2).expect("static bounds are valid"),
            clients: None,
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    window_secs: u64,
    series: Vec<(String, String, Signal, Detector)>,
}

/// (service, route) borrowed from an exchange; hashes as the owned tuple does.
#[derive(Hash)]
struct RouteRef<'a>(&'a str, &'a str);

impl hashbrown::Equivalent<(String, String)> for RouteRef<'_> {
    fn equivalent(&self, k: &(String, String)) -> bool {
        self.0 == k.0 && self.1 == k.1
    }
}

pub struct Baselines {
    opts: BaselineOptions,
    window_start_ns: u64,
    /// This window's counts per (service, route): looked up per exchange, so foldhash and a
    /// borrowed key (no two String copies and a SipHash per exchange).
    current: hashbrown::HashMap<(String, String), Window>,
    series: HashMap<(String, String, Signal), Detector>,
    pub series_refused: u64,
}

impl Baselines {
    /// Restores the saved state when there is one (a restart does not start the warm-up again).
    pub fn new(opts: BaselineOptions) -> Self {
        let mut b = Self {
            opts,
            window_start_ns: 0,
            current: hashbrown::HashMap::new(),
            series: HashMap::new(),
            series_refused: 0,
        };
        if let Some(path) = b.opts.state_file.clone() {
            match std::fs::read(&path).map(|bytes| serde_json::from_slice::<Saved>(&bytes)) {
                Ok(Ok(saved)) if saved.window_secs == b.opts.window_secs => {
                    for (service, route, signal, d) in saved.series.into_iter().take(b.opts.max_series) {
                        b.series.insert((service, route, signal), d);
                    }
                    log::info!(
                        "restored {} baseline series from {}",
                        b.series.len(),
                        path.display()
                    );
                }
                Ok(Ok(_)) => log::warn!(
                    "baselines in {} were learnt with another window: starting afresh",
                    path.display()
                ),
                Ok(Err(e)) => {
                    let aside = crate::state::set_aside(&path);
                    log::warn!(
                        "baselines in {} are unreadable ({e}; kept as {}): starting afresh",
                        path.display(),
                        aside.map_or("nothing".into(), |p| p.display().to_string())
                    )
                }
                Err(_) => {}
            }
        }
        b
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    fn window_ns(&self) -> u64 {
        self.opts.window_secs.max(1) * 1_000_000_000
    }

    /// Counts one server-side exchange into its window (closing finished windows first);
    /// `sensitive` endpoints also count per client.
    pub fn observe(&mut self, ex: &Exchange, sensitive: bool, out: &mut Vec<Finding>) {
        if ex.role != Role::Server {
            return;
        }
        self.advance(ex.ts, out);
        let key = RouteRef(&ex.service, &ex.route);
        if !self.current.contains_key(&key) {
            self.current
                .insert((ex.service.to_string(), ex.route.to_string()), Window::new());
        }
        let Some(w) = self.current.get_mut(&key) else {
            return;
        };
        w.requests += 1;
        w.errors += ex.status.is_some_and(|s| s >= 500) as u64;
        w.auth_failures += matches!(ex.status, Some(401) | Some(403)) as u64;
        if let Some(us) = ex.latency_us {
            w.latency_us.saturating_record(us.clamp(1, 60_000_000));
        }
        if sensitive {
            let client = ex
                .fingerprint
                .clone()
                .or_else(|| ex.peer.map(|p| p.ip().to_string()));
            if let Some(client) = client {
                w.clients.get_or_insert_with(SpaceSaving::default).add(&client);
            }
        }
    }

    /// Closes the windows that ended before `now_ns` (also when no traffic came: a series that
    /// drops to zero must be seen doing so).
    pub fn advance(&mut self, now_ns: u64, out: &mut Vec<Finding>) {
        let w = self.window_ns();
        if self.window_start_ns == 0 {
            self.window_start_ns = now_ns - now_ns % w;
            return;
        }
        let mut closed = 0;
        while now_ns >= self.window_start_ns + w {
            self.close_window(out);
            self.window_start_ns += w;
            closed += 1;
            if closed > 1000 {
                // A long gap (a replay jump, a suspended host): restart the window clock.
                self.window_start_ns = now_ns - now_ns % w;
                break;
            }
        }
    }

    fn close_window(&mut self, out: &mut Vec<Finding>) {
        let ts_secs = self.window_start_ns / 1_000_000_000;
        let current = std::mem::take(&mut self.current);
        // Every route with a rate series gets a point, zero if it had no traffic.
        let mut routes: Vec<(String, String)> = self
            .series
            .keys()
            .filter(|(_, _, s)| *s == Signal::Rate)
            .map(|(a, b, _)| (a.clone(), b.clone()))
            .collect();
        routes.extend(
            current
                .keys()
                .filter(|k| {
                    !self
                        .series
                        .contains_key(&(k.0.clone(), k.1.clone(), Signal::Rate))
                })
                .cloned(),
        );
        for (service, route) in routes {
            let w = current.get(&(service.clone(), route.clone()));
            let requests = w.map_or(0, |w| w.requests);
            let mut points = vec![(Signal::Rate, requests as f64)];
            let top = w
                .and_then(|w| w.clients.as_ref())
                .and_then(|c| c.top())
                .map(|(k, n)| (k.to_string(), n));
            if let Some((_, n)) = &top {
                points.push((Signal::TopClientRate, *n as f64));
            }
            if let Some(w) = w.filter(|w| w.requests >= self.opts.min_requests) {
                points.push((Signal::ErrorRatio, w.errors as f64 / w.requests as f64));
                points.push((
                    Signal::AuthFailureRatio,
                    w.auth_failures as f64 / w.requests as f64,
                ));
                points.push((
                    Signal::LatencyP99,
                    w.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
                ));
            }
            for (signal, value) in points {
                let key = (service.clone(), route.clone(), signal);
                if !self.series.contains_key(&key) && self.series.len() >= self.opts.max_series {
                    self.series_refused += 1;
                    continue;
                }
                let mut cfg = self.opts.detector.clone();
                cfg.counts = signal == Signal::Rate;
                if signal != Signal::Rate {
                    cfg.min_scale = if signal == Signal::LatencyP99 { 1.0 } else { 0.02 };
                }
                let d = self.series.entry(key).or_insert_with(|| Detector::new(&cfg));
                let v = d.update(&cfg, ts_secs, value);
                if let Some(t) = v.transition {
                    let mut f = finding(&service, &route, signal, value, &v, t, self.window_start_ns);
                    if signal == Signal::TopClientRate {
                        // Name the client: a credential fingerprint or a source address.
                        let who = top.as_ref().map(|(k, _)| k.clone());
                        if who
                            .as_deref()
                            .is_some_and(|k| k.parse::<std::net::IpAddr>().is_ok())
                        {
                            f.source = who;
                        } else {
                            f.identity = who;
                        }
                    }
                    out.push(f);
                }
            }
        }
    }

    /// Writes the state atomically (a temporary file renamed over the old one).
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.opts.state_file else {
            return Ok(());
        };
        let saved = Saved {
            window_secs: self.opts.window_secs,
            series: self
                .series
                .iter()
                .map(|((a, b, s), d)| (a.clone(), b.clone(), *s, d.clone()))
                .collect(),
        };
        crate::state::write_atomic(path, &serde_json::to_vec(&saved).map_err(std::io::Error::other)?)
    }

    pub fn state_file(&self) -> Option<&Path> {
        self.opts.state_file.as_deref()
    }
}

fn finding(
    service: &str,
    route: &str,
    signal: Signal,
    value: f64,
    v: &Verdict,
    t: Transition,
    ts: u64,
) -> Finding {
    let (state, evidence) = match t {
        Transition::Fired => (
            Lifecycle::Firing,
            format!(
                "{} observed {value:.3}, expected {:.3} (normal range {:.3}..{:.3}){}",
                signal.unit(),
                v.expected,
                v.low,
                v.high,
                if v.record {
                    "; outside every value this series took before".to_string()
                } else if v.stuck_run > 0 {
                    format!(
                        "; the same value {} windows in a row, longer than ever before",
                        v.stuck_run
                    )
                } else {
                    String::new()
                }
            ),
        ),
        Transition::Resolved => (
            Lifecycle::Resolved,
            format!(
                "{} back to normal: {value:.3}, expected {:.3}",
                signal.unit(),
                v.expected
            ),
        ),
    };
    let mut f = Finding::about_route(
        ts,
        signal.kind(),
        format!("baseline:{}", signal.kind()),
        Severity::Warning,
        (service, route, ""),
        evidence,
    );
    f.state = Some(state);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ts_s: u64, status: u16) -> Exchange {
        let mut e = crate::exchange::tests::sample();
        e.ts = ts_s * 1_000_000_000;
        e.service = "nginx:8080".into();
        e.route = "/api/items".into();
        e.status = Some(status);
        e
    }

    fn opts(state_file: Option<PathBuf>) -> BaselineOptions {
        BaselineOptions {
            window_secs: 10,
            detector: DetectorConfig {
                season_buckets: 1,
                warmup: 10,
                // These tests raise several episodes a few windows apart on one series: a short
                // cool-down (the detector's own tests cover the default).
                cooldown: 4,
                ..DetectorConfig::default()
            },
            state_file,
            ..BaselineOptions::default()
        }
    }

    /// 20 requests per 10 s window (5% 401s), then `burst` windows of `rate` (with `auth` 401s).
    fn drive(
        b: &mut Baselines,
        from: u64,
        windows: u64,
        rate: u64,
        auth_401: u64,
        out: &mut Vec<Finding>,
    ) -> u64 {
        let mut t = from;
        for _ in 0..windows {
            for i in 0..rate {
                let status = if i < auth_401 { 401 } else { 200 };
                b.observe(&ex(t + i * 10 / rate.max(1), status), false, out);
            }
            t += 10;
        }
        b.advance(t * 1_000_000_000, out);
        t
    }

    #[test]
    fn burst_fires_and_resolves_and_state_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("aw-baseline-{}", std::process::id()));
        let file = dir.join("baselines.json");
        let mut b = Baselines::new(opts(Some(file.clone())));
        let mut out = Vec::new();
        let t = drive(&mut b, 1_000_000, 20, 20, 1, &mut out);
        assert!(out.is_empty(), "steady traffic: {out:?}");
        let t = drive(&mut b, t, 2, 200, 1, &mut out);
        assert!(
            out.iter()
                .any(|f| f.kind == "rate_anomaly" && f.state == Some(Lifecycle::Firing)),
            "{out:?}"
        );
        out.clear();
        let t = drive(&mut b, t, 6, 20, 1, &mut out);
        assert!(
            out.iter()
                .any(|f| f.kind == "rate_anomaly" && f.state == Some(Lifecycle::Resolved)),
            "{out:?}"
        );
        out.clear();
        let t = drive(&mut b, t, 2, 20, 15, &mut out);
        assert!(
            out.iter()
                .any(|f| f.kind == "auth_failure_anomaly" && f.state == Some(Lifecycle::Firing)),
            "{out:?}"
        );
        b.save().unwrap();

        // A restart restores the learnt series: a burst fires at once, no warm-up again.
        let mut again = Baselines::new(opts(Some(file.clone())));
        assert_eq!(again.series_count(), b.series_count());
        let mut out = Vec::new();
        let t = drive(&mut again, t + 10, 1, 20, 0, &mut out);
        drive(&mut again, t, 1, 300, 0, &mut out);
        assert!(
            out.iter()
                .any(|f| f.kind == "rate_anomaly" && f.state == Some(Lifecycle::Firing)),
            "{out:?}"
        );
        let fresh_ok = {
            let mut fresh = Baselines::new(opts(None));
            let mut o = Vec::new();
            let t = drive(&mut fresh, 5_000_000, 1, 20, 0, &mut o);
            drive(&mut fresh, t, 1, 300, 0, &mut o);
            o.is_empty()
        };
        assert!(
            fresh_ok,
            "without the saved state the same burst is still warm-up"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_truncated_or_garbage_state_starts_afresh_and_is_kept_aside() {
        let dir = std::env::temp_dir().join(format!("aw-baseline-bad-{}", std::process::id()));
        let file = dir.join("baselines.json");
        let mut b = Baselines::new(opts(Some(file.clone())));
        let mut out = Vec::new();
        drive(&mut b, 1_000_000, 20, 20, 1, &mut out);
        b.save().unwrap();
        let whole = std::fs::read(&file).unwrap();
        for bad in [&whole[..whole.len() / 2], b"\x00\xffgarbage".as_slice(), b""] {
            std::fs::write(&file, bad).unwrap();
            let mut b = Baselines::new(opts(Some(file.clone())));
            assert_eq!(b.series_count(), 0, "starts afresh");
            let aside = dir.join("baselines.json.corrupt");
            assert_eq!(std::fs::read(&aside).unwrap(), bad, "the unreadable file is kept");
            // It learns and saves again, over nothing it should have kept.
            drive(&mut b, 1_000_000, 2, 20, 1, &mut out);
            b.save().unwrap();
            assert!(Baselines::new(opts(Some(file.clone()))).series_count() > 0);
        }
        // A save killed half way (SIGKILL) leaves its temporary: the next start reads the
        // whole file beside it, and the next save replaces the temporary.
        std::fs::write(dir.join("baselines.json.tmp"), &whole[..10]).unwrap();
        let b = Baselines::new(opts(Some(file.clone())));
        assert!(b.series_count() > 0);
        b.save().unwrap();
        assert!(!dir.join("baselines.json.tmp").exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn one_heavy_client_on_a_sensitive_endpoint_is_named() {
        let mut b = Baselines::new(opts(None));
        let mut out = Vec::new();
        let mut t = 3_000_000u64;
        // 20 clients making 2 requests each per window, then one of them makes 60.
        for window in 0..25u64 {
            let heavy = window == 24;
            for c in 0..20u64 {
                let n = if heavy && c == 7 { 60 } else { 2 };
                for k in 0..n {
                    let mut e = ex(t + (c * n + k) % 10, 200);
                    e.fingerprint = Some(format!("client{c:07}"));
                    b.observe(&e, true, &mut out);
                }
            }
            t += 10;
        }
        b.advance(t * 1_000_000_000, &mut out);
        let f = out
            .iter()
            .find(|f| f.kind == "rate_anomaly" && f.identity.is_some())
            .unwrap_or_else(|| panic!("{out:#?}"));
        assert_eq!(f.identity.as_deref(), Some("client0000007"));
        assert!(f.evidence.contains("from one client"), "{}", f.evidence);
    }

    #[test]
    fn space_saving_keeps_the_heavy_hitter_with_bounded_memory() {
        let mut s = SpaceSaving::default();
        for i in 0..100_000u64 {
            s.add(&format!("noise{i}"));
            if i % 10 == 0 {
                s.add("heavy");
            }
        }
        assert!(s.counts.len() <= TOP_CLIENTS);
        assert_eq!(s.top().map(|(k, _)| k), Some("heavy"));
    }

    /// A route whose traffic varied and then repeats one rate exactly (its real clients gone, a
    /// fixed-rate prober left): found, and the finding says why.
    #[test]
    fn a_rate_stuck_on_one_value_is_found_and_says_so() {
        let mut b = Baselines::new(opts(None));
        let mut out = Vec::new();
        let mut t = 3_000_000;
        // A fixed sequence of rates around 20, no two neighbours equal; long enough for the
        // detector to know the series' runs (RECORD_WARMUP windows).
        for w in 0..320u64 {
            t = drive(&mut b, t, 1, 14 + (w * 7) % 13, 0, &mut out);
        }
        assert!(out.is_empty(), "varied traffic: {out:?}");
        // The same count 15 windows in a row (the detector's surprise for repeats that were
        // rare reaches its threshold after about a dozen).
        for _ in 0..15 {
            t = drive(&mut b, t, 1, 20, 0, &mut out);
        }
        let stuck: Vec<_> = out
            .iter()
            .filter(|f| f.kind == "rate_anomaly" && f.state == Some(Lifecycle::Firing))
            .collect();
        assert_eq!(stuck.len(), 1, "{out:?}");
        assert!(
            stuck[0].evidence.contains("observed 20.000")
                && stuck[0]
                    .evidence
                    .contains("windows in a row, longer than ever before"),
            "{}",
            stuck[0].evidence
        );
    }

    #[test]
    fn a_series_that_drops_to_zero_is_seen() {
        let mut b = Baselines::new(opts(None));
        let mut out = Vec::new();
        let t = drive(&mut b, 2_000_000, 20, 30, 0, &mut out);
        // No traffic at all for three windows: only the clock moves.
        b.advance((t + 30) * 1_000_000_000, &mut out);
        assert!(
            out.iter()
                .any(|f| f.kind == "rate_anomaly" && f.evidence.contains("observed 0.000")),
            "{out:?}"
        );
    }
}
