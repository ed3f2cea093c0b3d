//! One streaming anomaly detector for every series (request rate, error ratio, auth-failure
//! ratio, latency). See docs/anomaly-detection.md for the algorithm and its parameters.
//!
//! In short: a robust level (EWMA) plus a seasonal offset per hour of the week, a scale from the
//! exponentially weighted absolute deviation, a z-score against it, a score in [0, 1], updates
//! clipped while a point is anomalous (so anomalies do not teach the baseline), and a level shift
//! accepted after it has lasted long enough.
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorConfig {
    /// Seasonal buckets and their width: 168 buckets of one hour = one week, which also covers
    /// the daily cycle (each hour of each weekday has its own offset).
    pub season_buckets: usize,
    pub bucket_secs: u64,
    /// Points before any verdict (learning only).
    pub warmup: u32,
    /// z-score beyond which a point is anomalous (its score is then above 0.5).
    pub threshold: f64,
    /// Weight of a new point in the level and in a seasonal offset.
    pub level_alpha: f64,
    pub season_alpha: f64,
    /// Consecutive anomalous points after which a new level is accepted as normal.
    pub shift_patience: u32,
    /// Consecutive normal points before a firing series resolves.
    pub resolve_after: u32,
    /// Smallest scale, absolute, so a perfectly flat series does not fire on noise of one.
    pub min_scale: f64,
    /// Counts (rates) also get a Poisson floor of sqrt(expected) on their scale.
    pub counts: bool,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            season_buckets: 168,
            bucket_secs: 3600,
            warmup: 30,
            threshold: 4.0,
            level_alpha: 0.05,
            season_alpha: 0.1,
            shift_patience: 12,
            resolve_after: 3,
            min_scale: 0.5,
            counts: true,
        }
    }
}

/// Consecutive same-side points beyond half the threshold that make an anomaly.
const DRIFT_POINTS: u32 = 3;

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Bucket {
    /// Typical value of this hour of the week (before the ratio).
    mean: f64,
    /// Typical absolute deviation from the expected value in this hour.
    dev: f64,
    n: u32,
}

/// State of one series. About 4 KiB with the default 168 buckets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    /// Plain EWMA of the series: the expectation before a bucket is known.
    level: f64,
    dev: f64,
    /// Slow multiplicative correction of the seasonal profile: trend and accepted level shifts.
    ratio: f64,
    n: u64,
    season: Vec<Bucket>,
    anomalous_run: u32,
    normal_run: u32,
    /// Consecutive points beyond half the threshold on one side (+ above, - below).
    drift_run: i32,
    firing: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Fired,
    Resolved,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// 0 = exactly as expected, 0.5 at the threshold, towards 1 the further beyond.
    pub score: f64,
    pub anomaly: bool,
    pub expected: f64,
    pub low: f64,
    pub high: f64,
    /// Set on the point where the series starts or stops firing.
    pub transition: Option<Transition>,
    pub warming_up: bool,
}

impl Detector {
    pub fn new(cfg: &DetectorConfig) -> Self {
        Self {
            level: 0.0,
            dev: 0.0,
            ratio: 1.0,
            n: 0,
            season: vec![Bucket::default(); cfg.season_buckets.max(1)],
            anomalous_run: 0,
            normal_run: 0,
            drift_run: 0,
            firing: false,
        }
    }

    pub fn is_firing(&self) -> bool {
        self.firing
    }

    /// Feeds one point (its window's start, Unix seconds) and returns the verdict on it.
    pub fn update(&mut self, cfg: &DetectorConfig, ts_secs: u64, x: f64) -> Verdict {
        let b = ((ts_secs / cfg.bucket_secs.max(1)) % self.season.len() as u64) as usize;
        if self.n == 0 {
            self.level = x;
        }
        let bucket = self.season[b];
        let expected = if bucket.n > 0 {
            bucket.mean * self.ratio
        } else {
            self.level
        };
        let spread = if bucket.n >= 2 { bucket.dev } else { self.dev };
        let mut scale = spread.max(cfg.min_scale);
        if cfg.counts {
            scale = scale.max(expected.max(0.0).sqrt());
        }
        let z = (x - expected).abs() / scale;
        // Learning only until warm and until this hour of the week has been seen once: without
        // its profile a normal daily or weekly swing would look anomalous.
        let warming_up = self.n < cfg.warmup as u64 || bucket.n == 0;
        // A sustained move to one side is evidence too (a quiet series dropping to zero, a shift
        // that is large for the series but small for one point).
        self.drift_run = match (z > cfg.threshold / 2.0, x > expected) {
            (true, true) => self.drift_run.max(0) + 1,
            (true, false) => self.drift_run.min(0) - 1,
            (false, _) => 0,
        };
        let drifting = self.drift_run.unsigned_abs() >= DRIFT_POINTS;
        let anomaly = !warming_up && (z > cfg.threshold || drifting);
        let mut score = z * z / (z * z + cfg.threshold * cfg.threshold);
        if anomaly {
            score = score.max(0.6);
        }

        // Learn: a normal point fully; an anomalous one clipped to the edge of the band, unless
        // the anomaly has lasted long enough to be the new normal (a level shift).
        let shifted = anomaly && self.anomalous_run + 1 >= cfg.shift_patience;
        let band = cfg.threshold * scale;
        let learn = if anomaly && !shifted {
            x.clamp(expected - band, expected + band)
        } else {
            x
        };
        let a = if self.n < cfg.warmup as u64 {
            (1.0 / (self.n + 1) as f64).max(cfg.level_alpha)
        } else {
            cfg.level_alpha
        };
        self.level += a * (learn - self.level);
        self.dev += a * ((learn - expected).abs() - self.dev);
        let sb = &mut self.season[b];
        if sb.n == 0 {
            sb.mean = learn / self.ratio;
            sb.dev = self.dev;
        } else {
            if shifted {
                // Re-anchor the profile to the new level at once.
                self.ratio = (learn / sb.mean.max(1e-9)).clamp(0.01, 100.0);
            } else if sb.mean.abs() > 1e-9 {
                let r = (learn / sb.mean).clamp(0.1, 10.0);
                self.ratio += cfg.level_alpha * 0.5 * (r - self.ratio);
            }
            let sa = if sb.n < 3 { 0.5 } else { cfg.season_alpha };
            sb.mean += sa * (learn / self.ratio - sb.mean);
            sb.dev += sa * ((learn - expected).abs() - sb.dev);
        }
        sb.n = sb.n.saturating_add(1);
        self.n += 1;

        if anomaly && !shifted {
            self.anomalous_run += 1;
            self.normal_run = 0;
        } else {
            self.anomalous_run = 0;
            self.normal_run += 1;
        }
        let transition = if anomaly && !self.firing {
            self.firing = true;
            Some(Transition::Fired)
        } else if self.firing && self.normal_run >= cfg.resolve_after {
            self.firing = false;
            Some(Transition::Resolved)
        } else {
            None
        };
        Verdict {
            score,
            anomaly,
            expected,
            low: (expected - band).max(if cfg.counts { 0.0 } else { f64::MIN }),
            high: expected + band,
            transition,
            warming_up,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic noise in [-1, 1].
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % 20_001) as f64 / 10_000.0 - 1.0
        }
    }

    /// 14 days at 5-minute points of a daily-and-weekly seasonal request rate with noise, and the
    /// injected anomalies: spikes, drops to zero, a level shift. Returns (ts, value, injected event id).
    fn series() -> Vec<(u64, f64, Option<usize>)> {
        let mut rng = Rng(0x2545F4914F6CDD1D);
        let start = 1_700_000_000u64 - 1_700_000_000 % 604_800; // a week boundary
        let mut out = Vec::new();
        for i in 0..(14 * 288) {
            let ts = start + i as u64 * 300;
            let hour = (ts / 3600 % 24) as f64;
            let weekday = ts / 86_400 % 7;
            let daily = 200.0 + 150.0 * ((hour - 14.0) / 24.0 * std::f64::consts::TAU).cos();
            let weekly = if weekday >= 5 { 0.5 } else { 1.0 };
            let mut v = daily * weekly + 12.0 * rng.next();
            let mut event = None;
            // Spikes (x4) at five places, one point each, after the first week.
            for (k, at) in [2100, 2500, 2900, 3300, 3700].iter().enumerate() {
                if i == *at {
                    v *= 4.0;
                    event = Some(k);
                }
            }
            // Drops to zero for 30 minutes at three places.
            for (k, at) in [2300, 3100, 3500].iter().enumerate() {
                if (*at..at + 6).contains(&i) {
                    v = 0.0;
                    event = Some(10 + k);
                }
            }
            // A level shift: +80% from point 3900 on (the first 6 points count as the event).
            if i >= 3900 {
                v *= 1.8;
                if i < 3906 {
                    event = Some(20);
                }
            }
            out.push((ts, v, event));
        }
        out
    }

    #[test]
    fn precision_and_recall_on_spikes_drops_and_a_level_shift() {
        let cfg = DetectorConfig::default();
        let mut d = Detector::new(&cfg);
        let data = series();
        let mut detected_events = std::collections::BTreeSet::new();
        let mut events = std::collections::BTreeSet::new();
        let (mut true_pos, mut false_pos) = (0, 0);
        for (i, (ts, v, event)) in data.iter().enumerate() {
            let verdict = d.update(&cfg, *ts, *v);
            if let Some(e) = event {
                events.insert(*e);
            }
            if verdict.anomaly && (3906..3960).contains(&i) {
                continue; // the tail of the level shift, while the detector accepts it
            }
            if verdict.anomaly {
                match event {
                    Some(e) => {
                        detected_events.insert(*e);
                        true_pos += 1;
                    }
                    None => false_pos += 1,
                }
            }
        }
        let recall = detected_events.len() as f64 / events.len() as f64;
        let precision = true_pos as f64 / (true_pos + false_pos).max(1) as f64;
        eprintln!(
            "detector on the synthetic series: recall {recall:.2}, precision {precision:.2} ({true_pos} true, {false_pos} false positives)"
        );
        assert!(
            recall >= 0.9,
            "recall {recall}: detected {detected_events:?} of {events:?}"
        );
        assert!(
            precision >= 0.8,
            "precision {precision}: {true_pos} true, {false_pos} false positives"
        );
    }

    #[test]
    fn warm_up_then_fire_and_resolve() {
        let cfg = DetectorConfig {
            season_buckets: 1,
            ..DetectorConfig::default()
        };
        let mut d = Detector::new(&cfg);
        for i in 0..100 {
            let v = d.update(&cfg, i * 60, 100.0 + (i % 3) as f64);
            assert!(!v.anomaly, "point {i}");
            assert_eq!(v.warming_up, i < cfg.warmup as u64);
        }
        let spike = d.update(&cfg, 100 * 60, 400.0);
        assert!(spike.anomaly && spike.score > 0.9);
        assert_eq!(spike.transition, Some(Transition::Fired));
        assert!(spike.low < 101.0 && spike.high > 101.0 && spike.high < 400.0);
        let mut resolved_at = None;
        for i in 101..110 {
            let v = d.update(&cfg, i * 60, 101.0);
            if v.transition == Some(Transition::Resolved) {
                resolved_at = Some(i);
            }
        }
        assert_eq!(resolved_at, Some(100 + cfg.resolve_after as u64));
        // The spike did not move the baseline: the next normal point scores low.
        assert!(d.update(&cfg, 110 * 60, 100.0).score < 0.1);
    }

    #[test]
    fn state_round_trips_for_persistence() {
        let cfg = DetectorConfig::default();
        let mut d = Detector::new(&cfg);
        for i in 0..500 {
            d.update(&cfg, i * 300, 50.0 + (i % 7) as f64);
        }
        let json = serde_json::to_string(&d).unwrap();
        let mut back: Detector = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert_eq!(
            back.update(&cfg, 500 * 300, 400.0).anomaly,
            d.update(&cfg, 500 * 300, 400.0).anomaly
        );
    }
}
