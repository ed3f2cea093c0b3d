//! One streaming anomaly detector for every series (request rate, error ratio, auth-failure
//! ratio, latency). See docs/anomaly-detection.md for the algorithm and its parameters.
//!
//! In short, two models of each series run side by side: a long-memory Gaussian of the series
//! (exponentially weighted mean and variance over about `GLOBAL_HORIZON` points), and a seasonal
//! profile per hour of the week (a robust level, the hour's offset, a scale from the weighted
//! absolute deviation, updates clipped while a point is anomalous, a level shift accepted after it
//! has lasted). The seasonal one speaks once it explains most of the series' variance (a series
//! with a daily or weekly cycle), the Gaussian one otherwise. The score is the two-sided tail
//! surprise of the point's z under the model that speaks (`score_of`: 0.5 at the threshold); an
//! alarm starts where it reaches `SCORE_THRESHOLD` and is followed by a cool-down in which the
//! series raises no new alarm and scores 0, so an episode is one strong point at its onset.
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
    /// Points after an alarm's onset during which the series raises no new one.
    #[serde(default = "default_cooldown")]
    pub cooldown: u32,
}

fn default_cooldown() -> u32 {
    COOLDOWN_POINTS
}

/// Memory of the Gaussian model, in points (the weight of a new point is 1/GLOBAL_HORIZON).
pub const GLOBAL_HORIZON: f64 = 3200.0;
/// Default cool-down after an alarm: chosen on the development corpus (NAB series at 5-minute
/// steps: 10 hours); 2 hours of 1-minute windows live.
pub const COOLDOWN_POINTS: u32 = 120;
/// The seasonal model speaks when its residual variance is below this share of the series'
/// variance (it explains at least three quarters of it), both over the last CHOICE_HORIZON
/// points, and once it has been checked on MIN_SEASONAL_SAMPLES of them.
const SEASONAL_EXPLAINS: f64 = 0.15;
const CHOICE_HORIZON: f64 = 1000.0;
const MIN_SEASONAL_SAMPLES: u32 = 100;
/// Tail calibration of each model: a running estimate of the 99.9th percentile of the series'
/// own |z|, against 3.29, a Gaussian's. A heavy-tailed series (bursty message volumes) has a
/// higher one, and its z are scaled down by the ratio: what is unusual is judged against the
/// series' own tail, not a bell curve. The estimate moves by multiplicative steps (a stochastic
/// quantile on the log scale, QUANTILE_STEP per point beyond it): a series whose ordinary bursts
/// sit 50 sd out learns that in tens of bursts, where steps of a fixed size took hundreds.
/// Chosen on the development corpus: steps of 0.05 scored 64.2 against 63.0 for the additive
/// steps before (0.03: 58.9, 0.1: 60.9).
const TAIL_QUANTILE: f64 = 0.999;
const GAUSSIAN_Q999: f64 = 3.29;
const QUANTILE_STEP: f64 = 0.05;

/// `z` against the series' own tail, and that tail (`q999`) learnt from `z` when `learn`.
fn calibrated(z: f64, q999: &mut f64, learn: bool) -> f64 {
    let out = z / (*q999 / GAUSSIAN_Q999).max(1.0);
    if learn {
        let step = if z > *q999 {
            QUANTILE_STEP * TAIL_QUANTILE
        } else {
            -QUANTILE_STEP * (1.0 - TAIL_QUANTILE)
        };
        *q999 = (*q999 * step.exp()).max(1.0);
    }
    out
}

/// A point outside every value the series has taken (its all-time range) is a record: the most
/// plain evidence that something new is happening, whatever the models' spread says (the
/// "spatial anomaly" of Numenta's detector on this benchmark). It counts once the range has
/// RECORD_WARMUP points behind it and the point is at least half way to the threshold under the
/// model that speaks (a ratio creeping to a new high by a hair is no news), and it then scores
/// as a point with twice the threshold's surprise (RECORD_SCORE). On the development corpus:
/// 65.0 against 64.2 without (warm-up 150: 64.7, 500: 65.2).
const RECORD_WARMUP: u32 = 300;
/// `1 - 2^-2`: see `score_of`; a surprise of twice the threshold's.
const RECORD_SCORE: f64 = 0.75;

/// A recent view of the series (weight 1/RECENT_HORIZON): a series that stayed far from its
/// Gaussian model for most of an alarm's cool-down has moved to a new level, and the model is
/// re-anchored there at the cool-down's end instead of alarming again every cool-down while its
/// long memory catches up.
const RECENT_HORIZON: f64 = 5.0;
/// Through an alarm's cool-down, a series younger than this learns points at most CLIP_Z of the
/// sd at the onset out, not of the sd its previous point inflated: there a point weighs 1/n, and a
/// burst growing over three windows otherwise teaches the model that such bursts are normal (the
/// baseline tier's restart check failed so). Older series weigh points at 1/GLOBAL_HORIZON and
/// learn an episode's spread as before. Development corpus: 64.9 (65.0 without; frozen at every
/// age: 64.6).
const YOUNG_POINTS: u64 = 300;
/// How far out (in sd) the Gaussian model learns a point.
const CLIP_Z: f64 = 50.0;

fn gaussian_q999() -> f64 {
    GAUSSIAN_Q999
}

/// The score at which a point is anomalous, whatever the threshold on z: see `score_of`.
pub const SCORE_THRESHOLD: f64 = 0.5;

/// The score of a point whose z (under the model that speaks) is `z`, with the alarm threshold
/// `threshold` on z: `1 - 2^(-L(z) / L(threshold))`, where L(z) = -ln(2Q(z)) is the surprise of
/// the two-sided Gaussian tail. 0 when as expected, 0.5 at the threshold, towards 1 beyond
/// without saturating (z = 6 scores 0.76 for a threshold of 4, z = 10 scores 0.98), so
/// unusual points stay ranked among themselves.
pub fn score_of(z: f64, threshold: f64) -> f64 {
    score_of_surprise(surprise(z), surprise(threshold))
}

/// The same from surprises: `at_threshold` is the surprise that scores 0.5.
fn score_of_surprise(l: f64, at_threshold: f64) -> f64 {
    1.0 - (-(l / at_threshold.max(1e-12)) * std::f64::consts::LN_2).exp()
}

/// -ln(2Q(z)) = -ln(erfc(z / sqrt 2)); the asymptotic form where erfc underflows.
pub fn surprise(z: f64) -> f64 {
    let z = z.abs();
    if !z.is_finite() {
        return f64::MAX;
    }
    let tail = erfc(z / std::f64::consts::SQRT_2);
    if tail > 1e-300 {
        -tail.ln()
    } else {
        // erfc(x) ~ exp(-x^2) / (x sqrt(pi)), x = z / sqrt 2
        z * z / 2.0 + (z * (std::f64::consts::PI / 2.0).sqrt()).ln()
    }
}

/// Complementary error function, fractional error below 1.2e-7 everywhere (Numerical Recipes,
/// 2nd ed., 6.2, Chebyshev fit).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
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
            cooldown: COOLDOWN_POINTS,
        }
    }
}

/// A metric stuck on one value (a dead exporter, a disk no longer written, a route gone silent) is
/// news even when the value itself is ordinary. A run of STUCK_POINTS or more repeats, longer than
/// any the series had (once RECORD_WARMUP points are behind it), scores by its surprise under the
/// series' own rate of repeats (of zeros, for a run at zero) as if independent: -run * ln(p),
/// against STUCK_SURPRISE times a point at the threshold's (repeats cluster: a quiet night's
/// counts repeat more than the series' average rate says). Development corpus 64.9 -> 66.0
/// (anomaly column 63.5 -> 64.4); factors of 3 to 6 score the same, 1: 65.4, 10: 64.9; without the
/// longest-yet rule 63.7 (a count series' quiet nights fire).
const STUCK_POINTS: u32 = 3;
const STUCK_SURPRISE: f64 = 4.0;
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
    /// The Gaussian model: weighted mean and variance of every point (see GLOBAL_HORIZON).
    #[serde(default)]
    gauss: EwStats,
    /// Weighted variance of the seasonal model's residuals (where its hour was known) and of the
    /// series around its mean, over CHOICE_HORIZON points: which model speaks.
    #[serde(default)]
    s_var: f64,
    #[serde(default)]
    s_n: u32,
    #[serde(default)]
    choice: EwStats,
    /// Points left in the cool-down after an alarm.
    #[serde(default)]
    cooldown: u32,
    /// The series' own 99.9th percentile of |z| under the Gaussian model (see TAIL_QUANTILE).
    #[serde(default = "gaussian_q999")]
    z_q999: f64,
    /// The same for the seasonal model's z.
    #[serde(default = "gaussian_q999")]
    zs_q999: f64,
    /// Points of the cool-down so far beyond half the threshold of the Gaussian model.
    #[serde(default)]
    cool_beyond: u32,
    #[serde(default)]
    recent: EwStats,
    /// The series' all-time range, over `range_n` points (0: not started, as in a state saved
    /// before the range was kept, so a restored series waits RECORD_WARMUP points).
    #[serde(default)]
    lo: f64,
    #[serde(default)]
    hi: f64,
    #[serde(default)]
    range_n: u32,
    /// The Gaussian model's sd at the last alarm's onset: through the cool-down, points are
    /// learnt at most CLIP_Z of it out (see `update`).
    #[serde(default)]
    onset_sd: f64,
    /// The last point, the run of points equal to it, the longest run so far, and how often a
    /// point has equalled the one before or been zero (weighted over CHOICE_HORIZON points): see
    /// STUCK_POINTS.
    #[serde(default)]
    last: f64,
    #[serde(default)]
    same_run: u32,
    #[serde(default = "half")]
    p_same: f64,
    #[serde(default = "half")]
    p_zero: f64,
    #[serde(default)]
    max_run: u32,
}

fn half() -> f64 {
    0.5
}

/// An exponentially weighted mean and variance; the weight of a new point is `1/horizon`, or
/// `1/(n+1)` while fewer points than that have been seen (a plain average to begin with).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct EwStats {
    mean: f64,
    var: f64,
}

impl EwStats {
    /// Learns `x` as the `n`-th point (from 0).
    fn learn(&mut self, x: f64, n: u64, horizon: f64) {
        if n == 0 {
            self.mean = x;
            return;
        }
        let w = (1.0 / horizon).max(1.0 / (n + 1) as f64);
        let d = x - self.mean;
        self.mean += w * d;
        self.var = (1.0 - w) * (self.var + w * d * d);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Fired,
    Resolved,
}

/// The largest magnitude a point is taken at (see Detector::update).
pub const MAX_VALUE: f64 = 1e100;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// How surprising the point is under the model that speaks (`score_of`: 0 = exactly as
    /// expected, `SCORE_THRESHOLD` = 0.5 at the threshold, towards 1 the further beyond); 0 in
    /// the cool-down after an alarm.
    pub score: f64,
    /// An alarm starts at this point (its onset: one point per episode).
    pub anomaly: bool,
    pub expected: f64,
    pub low: f64,
    pub high: f64,
    /// Set on the point where the series starts or stops firing.
    pub transition: Option<Transition>,
    pub warming_up: bool,
    /// The point lies outside every value the series took before (a record).
    pub record: bool,
    /// The series has repeated this value this many points in a row, longer than ever before,
    /// and that is the anomaly (0 otherwise).
    pub stuck_run: u32,
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
            gauss: EwStats::default(),
            s_var: 0.0,
            s_n: 0,
            choice: EwStats::default(),
            cooldown: 0,
            z_q999: GAUSSIAN_Q999,
            zs_q999: GAUSSIAN_Q999,
            cool_beyond: 0,
            recent: EwStats::default(),
            lo: 0.0,
            hi: 0.0,
            range_n: 0,
            onset_sd: 0.0,
            last: 0.0,
            same_run: 0,
            p_same: 0.5,
            p_zero: 0.5,
            max_run: 0,
        }
    }

    pub fn is_firing(&self) -> bool {
        self.firing
    }

    /// Feeds one point (its window's start, Unix seconds) and returns the verdict on it.
    /// Values are taken within ±MAX_VALUE (NaN as 0): squares of larger ones overflow, and one
    /// infinity would turn the whole state to NaN for good (found by fuzzing).
    pub fn update(&mut self, cfg: &DetectorConfig, ts_secs: u64, x: f64) -> Verdict {
        let x = if x.is_nan() {
            0.0
        } else {
            x.clamp(-MAX_VALUE, MAX_VALUE)
        };
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
        let z_seasonal_raw = (x - expected).abs() / scale;
        let z_seasonal = calibrated(
            z_seasonal_raw,
            &mut self.zs_q999,
            bucket.n >= 2 && self.cooldown == 0,
        );
        // The Gaussian model's view, before it learns this point.
        let g_sd = self
            .gauss
            .var
            .sqrt()
            .max(if cfg.counts {
                self.gauss.mean.max(0.0).sqrt()
            } else {
                0.0
            })
            .max(cfg.min_scale);
        let z_raw = if g_sd > 0.0 {
            (x - self.gauss.mean).abs() / g_sd
        } else if x == self.gauss.mean {
            0.0
        } else {
            f64::INFINITY
        };
        let z_global = calibrated(z_raw, &mut self.z_q999, self.n >= 2 && self.cooldown == 0);
        // The seasonal model speaks for a series it explains: its hour known, its residuals
        // small against the series' own spread.
        let seasonal = bucket.n >= 2
            && self.s_n >= MIN_SEASONAL_SAMPLES
            && self.s_var < SEASONAL_EXPLAINS * self.choice.var;
        let z = if seasonal { z_seasonal } else { z_global };
        let warming_up = self.n < cfg.warmup as u64;
        // A sustained move to one side of the seasonal expectation is evidence too (a quiet
        // series dropping to zero, a shift that is large for the series but small for one point).
        self.drift_run = match (z_seasonal_raw > cfg.threshold / 2.0, x > expected) {
            (true, true) => self.drift_run.max(0) + 1,
            (true, false) => self.drift_run.min(0) - 1,
            (false, _) => 0,
        };
        let drifting = seasonal && self.drift_run.unsigned_abs() >= DRIFT_POINTS;
        if self.range_n == 0 {
            (self.lo, self.hi) = (x, x);
        }
        let record = self.range_n >= RECORD_WARMUP
            && self.hi > self.lo
            && (x > self.hi || x < self.lo)
            && z >= cfg.threshold / 2.0;
        self.lo = self.lo.min(x);
        self.hi = self.hi.max(x);
        self.range_n = self.range_n.saturating_add(1);
        // A series stuck on one value where repeats were rare (see STUCK_POINTS).
        let same = self.n > 0 && x == self.last;
        self.same_run = if same { self.same_run.saturating_add(1) } else { 0 };
        let longest_yet = self.same_run > self.max_run && self.range_n >= RECORD_WARMUP;
        self.max_run = self.max_run.max(self.same_run);
        // A run of zeros is as likely as the series is at zero (a quiet hour), or as a repeat.
        let p_run = if x == 0.0 {
            self.p_zero.max(self.p_same)
        } else {
            self.p_same
        };
        let stuck_score = if self.same_run >= STUCK_POINTS && longest_yet {
            let run_surprise = -(self.same_run as f64) * p_run.max(1e-6).ln();
            score_of_surprise(run_surprise, STUCK_SURPRISE * surprise(cfg.threshold))
        } else {
            0.0
        };
        if self.n > 0 {
            let w = (1.0 / CHOICE_HORIZON).max(1.0 / (self.n + 1) as f64);
            self.p_same += w * (same as u8 as f64 - self.p_same);
            self.p_zero += w * ((x == 0.0) as u8 as f64 - self.p_zero);
        }
        self.last = x;
        let stuck = stuck_score >= SCORE_THRESHOLD;
        let beyond = !warming_up && (z > cfg.threshold || drifting || record || stuck);
        let raw_score = if warming_up {
            0.0
        } else {
            let z_score = if drifting { z.max(cfg.threshold) } else { z };
            let score = score_of(z_score, cfg.threshold).max(stuck_score);
            if record { score.max(RECORD_SCORE) } else { score }
        };
        // An alarm starts here unless one started within the cool-down.
        let onset = beyond && self.cooldown == 0;
        let score = if self.cooldown > 0 { 0.0 } else { raw_score };
        let clip_sd = if self.cooldown > 0 && self.onset_sd > 0.0 && self.n < YOUNG_POINTS {
            g_sd.min(self.onset_sd)
        } else {
            g_sd
        };
        if onset {
            self.onset_sd = g_sd;
            self.cooldown = cfg.cooldown;
            self.cool_beyond = 0;
        } else if self.cooldown > 0 {
            self.cooldown -= 1;
            if (x - self.gauss.mean).abs() > cfg.threshold / 2.0 * g_sd {
                self.cool_beyond += 1;
            }
            // Elsewhere for most of the cool-down: a new level, not a run of anomalies.
            if self.cooldown == 0 && self.cool_beyond >= cfg.cooldown.saturating_mul(4) / 5 {
                self.gauss.mean = self.recent.mean;
                self.gauss.var = self.gauss.var.max(self.recent.var);
            }
        }

        // Learn the seasonal model: a normal point fully; an anomalous one clipped to the edge
        // of the band, unless the anomaly has lasted long enough to be the new normal (a level
        // shift).
        let shifted = beyond && self.anomalous_run + 1 >= cfg.shift_patience;
        let band = cfg.threshold * scale;
        let learn = if beyond && !shifted {
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
        if bucket.n > 0 {
            let r = x - expected;
            self.s_var += (1.0 / CHOICE_HORIZON).max(1.0 / (self.s_n + 1) as f64) * (r * r - self.s_var);
            self.s_n = self.s_n.saturating_add(1);
        }
        self.choice.learn(x, self.n, CHOICE_HORIZON);
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
        // Learn the Gaussian model from every point (its long memory absorbs single outliers).
        self.recent.learn(x, self.n, RECENT_HORIZON);
        // Past the warm-up a point is learnt at most CLIP_Z deviations out: one burst on a short
        // history must not blow the variance up and blind the model to the next (a new level is
        // taken by the re-anchoring above, not by letting outliers in).
        let x_learnt = if warming_up || clip_sd == 0.0 {
            x
        } else {
            x.clamp(
                self.gauss.mean - CLIP_Z * clip_sd,
                self.gauss.mean + CLIP_Z * clip_sd,
            )
        };
        self.gauss.learn(x_learnt, self.n, GLOBAL_HORIZON);
        self.n += 1;

        if beyond && !shifted {
            self.anomalous_run += 1;
            self.normal_run = 0;
        } else {
            self.anomalous_run = 0;
            self.normal_run += 1;
        }
        let transition = if onset && !self.firing {
            self.firing = true;
            Some(Transition::Fired)
        } else if self.firing && self.normal_run >= cfg.resolve_after {
            self.firing = false;
            Some(Transition::Resolved)
        } else {
            None
        };
        let (expected, band) = if seasonal {
            (expected, band)
        } else {
            (self.gauss.mean, cfg.threshold * g_sd)
        };
        Verdict {
            score,
            anomaly: onset,
            expected,
            low: (expected - band).max(if cfg.counts { 0.0 } else { f64::MIN }),
            high: expected + band,
            transition,
            warming_up,
            record,
            stuck_run: if stuck && !warming_up {
                self.same_run + 1
            } else {
                0
            },
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

    /// A generic metric (as `backtest` reads it): no Poisson floor, no absolute scale floor.
    fn metric_cfg() -> DetectorConfig {
        DetectorConfig {
            season_buckets: 1,
            counts: false,
            min_scale: 0.0,
            ..DetectorConfig::default()
        }
    }

    #[test]
    fn a_point_outside_every_value_seen_is_a_record() {
        let cfg = metric_cfg();
        let mut d = Detector::new(&cfg);
        let mut rng = Rng(7);
        for i in 0..1000 {
            let v = d.update(&cfg, i * 300, 10.0 + rng.next());
            assert!(!v.record, "point {i}");
        }
        // 3 sd above the mean: below the threshold (4), above every value taken (10 +- 1).
        let x = (d.gauss.mean + 3.0 * d.gauss.var.sqrt()).max(d.hi + 0.01);
        assert!(
            x < d.gauss.mean + 3.5 * d.gauss.var.sqrt(),
            "the point stays below the threshold"
        );
        let v = d.update(&cfg, 1000 * 300, x);
        assert!(v.record && v.anomaly, "{v:?}");
        assert!(v.score >= RECORD_SCORE, "{v:?}");
        // A new high by a hair, well inside the model's spread, is no news.
        let mut d = Detector::new(&cfg);
        for i in 0..1000 {
            d.update(&cfg, i * 300, 10.0 + (i % 2) as f64);
        }
        let v = d.update(&cfg, 1000 * 300, 11.01);
        assert!(!v.record && !v.anomaly, "{v:?}");
    }

    #[test]
    fn a_restored_state_without_a_range_waits_before_records() {
        let cfg = metric_cfg();
        let mut d = Detector::new(&cfg);
        for i in 0..1000 {
            d.update(&cfg, i * 300, 10.0 + (i % 2) as f64);
        }
        // A state saved before the range was kept: its fields are absent.
        let mut json = serde_json::to_value(&d).unwrap();
        for field in ["lo", "hi", "range_n"] {
            json.as_object_mut().unwrap().remove(field);
        }
        let mut restored: Detector = serde_json::from_value(json).unwrap();
        for i in 0..RECORD_WARMUP as u64 {
            let v = restored.update(&cfg, (1000 + i) * 300, 10.0 + (i % 2) as f64);
            assert!(!v.record, "point {i} after the restore");
        }
    }

    #[test]
    fn ordinary_bursts_far_out_are_learnt_as_the_series_tail() {
        // A quiet series with a burst 60 sd out every 100 points (a cron job): the first bursts
        // alarm, then the tail estimate has caught up and they stop (steps of a fixed size
        // needed hundreds of bursts for that).
        let cfg = DetectorConfig {
            cooldown: 10,
            ..metric_cfg()
        };
        let mut d = Detector::new(&cfg);
        let mut rng = Rng(11);
        let mut alarms_late = 0;
        for i in 0..6000u64 {
            let burst = i % 100 == 50;
            let x = if burst { 70.0 } else { 10.0 + rng.next() };
            let v = d.update(&cfg, i * 300, x);
            if burst && i > 3000 && v.anomaly {
                alarms_late += 1;
            }
        }
        assert_eq!(alarms_late, 0, "bursts still alarm after 30 of them");
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
    fn an_episode_scores_at_its_onset_then_cools_down() {
        let cfg = DetectorConfig {
            season_buckets: 1,
            cooldown: 50,
            ..DetectorConfig::default()
        };
        let mut d = Detector::new(&cfg);
        for i in 0..200 {
            d.update(&cfg, i * 60, 100.0 + (i % 5) as f64);
        }
        // Five points far out: one alarm, at the first; the others score 0.
        let burst: Vec<Verdict> = (200..205).map(|i| d.update(&cfg, i * 60, 900.0)).collect();
        assert!(burst[0].anomaly && burst[0].score >= SCORE_THRESHOLD);
        assert!(
            burst[1..].iter().all(|v| !v.anomaly && v.score == 0.0),
            "{burst:?}"
        );
        // Within the cool-down a new spike raises nothing; after it, it does.
        for i in 205..230 {
            d.update(&cfg, i * 60, 100.0 + (i % 5) as f64);
        }
        assert!(!d.update(&cfg, 230 * 60, 900.0).anomaly);
        for i in 231..260 {
            d.update(&cfg, i * 60, 100.0 + (i % 5) as f64);
        }
        let later = d.update(&cfg, 260 * 60, 900.0);
        assert!(later.anomaly, "{later:?}");
    }

    /// A request-rate series as the live tier sees it on 1-second windows (its detector settings).
    struct LiveTier {
        cfg: DetectorConfig,
        d: Detector,
        t: u64,
    }

    impl LiveTier {
        fn new() -> Self {
            let cfg = DetectorConfig {
                season_buckets: 1,
                warmup: 8,
                cooldown: 5,
                ..DetectorConfig::default()
            };
            let d = Detector::new(&cfg);
            Self { cfg, d, t: 0 }
        }

        fn step(&mut self, v: f64) -> Verdict {
            self.t += 1;
            self.d.update(&self.cfg, self.t, v)
        }

        /// `n` windows of about `level` requests.
        fn steady(&mut self, n: u32, level: f64) {
            for i in 0..n {
                self.step(level + (i % 3) as f64);
            }
        }
    }

    #[test]
    fn a_burst_early_in_a_series_life_does_not_blind_it_to_the_next() {
        // As the live tier sees it on 1-second windows: ~25 requests a window, a wrk run of two
        // windows at ~20,000, quiet again, then a second run.
        let mut s = LiveTier::new();
        s.steady(12, 25.0);
        let first = [s.step(20_000.0), s.step(21_000.0)];
        assert!(first[0].anomaly, "{first:?}");
        s.steady(15, 25.0);
        let second = s.step(20_000.0);
        assert!(
            second.anomaly,
            "the first burst taught the model that bursts are normal: {second:?}"
        );
    }

    /// The baseline tier's failure in CI: the first wrk run's windows grew (3,000 then 6,000 a
    /// window), each learnt 50 sd out of an sd the window before had inflated, and after a
    /// restart the same run was inside the normal range. Through a cool-down a young series now
    /// learns points at most 50 sd of the onset's sd out.
    #[test]
    fn a_burst_that_grows_over_its_windows_does_not_hide_the_next() {
        let mut s = LiveTier::new();
        s.steady(12, 25.0);
        assert!(s.step(3000.0).anomaly);
        s.step(6000.0);
        s.step(6000.0);
        s.steady(6, 25.0);
        // The wave of 401s lifts the rate a little.
        s.steady(3, 40.0);
        s.steady(25, 25.0);
        let second = s.step(3000.0);
        assert!(second.anomaly, "the first run hid the second: {second:?}");
    }

    /// A metric that varied and then repeats one ordinary value (a dead exporter) is an anomaly
    /// within a dozen points (the run's own repeats raise the series' repeat rate as it goes:
    /// freezing that rate at the run's start scored 64.1 and fired on quiet nights); a series
    /// whose quiet hours sit at zero is not one each night.
    #[test]
    fn a_series_stuck_on_one_value_is_seen_but_quiet_nights_are_not() {
        let cfg = metric_cfg();
        let mut rng = Rng(7);
        let mut d = Detector::new(&cfg);
        let mut t = 0;
        for _ in 0..400 {
            t += 300;
            d.update(&cfg, t, 50.0 + 10.0 * rng.next());
        }
        let verdicts: Vec<Verdict> = (0..20)
            .map(|_| {
                t += 300;
                d.update(&cfg, t, 47.5)
            })
            .collect();
        let onset = verdicts.iter().position(|v| v.anomaly);
        assert!(onset.is_some_and(|i| i <= 12), "{verdicts:#?}");
        let at = &verdicts[onset.unwrap()];
        assert!(at.stuck_run >= 3 && !at.record, "{at:?}");

        // Counts at zero for a third of every day: runs of zeros are this series' normal.
        let mut d = Detector::new(&cfg);
        let mut alarms = 0;
        for i in 0..(288 * 10) {
            let quiet = i % 288 < 96;
            let x = if quiet {
                0.0
            } else {
                (20.0 + 10.0 * rng.next()).round()
            };
            let v = d.update(&cfg, i as u64 * 300, x);
            // The first morning is news to a series that has only been at zero.
            alarms += (v.anomaly && i >= 288) as u32;
        }
        assert_eq!(alarms, 0, "the quiet nights fired");
    }

    #[test]
    fn the_score_is_the_surprise_of_the_gaussian_tail() {
        // erfc against known values: 2Q(1) = 0.31731, 2Q(4) = 6.3342e-5.
        assert!((surprise(1.0) - -(0.317_310_5f64).ln()).abs() < 1e-6);
        assert!((surprise(4.0) - -(6.334_2e-5f64).ln()).abs() < 1e-3);
        assert!(score_of(0.0, 4.0).abs() < 1e-6);
        assert!((score_of(4.0, 4.0) - SCORE_THRESHOLD).abs() < 1e-9);
        assert!(score_of(6.0, 4.0) > 0.75 && score_of(6.0, 4.0) < 0.77);
        assert!(score_of(10.0, 4.0) > 0.97 && score_of(10.0, 4.0) < score_of(12.0, 4.0));
        // Continuous where the exact tail gives way to the asymptotic form.
        let (a, b) = (surprise(37.0), surprise(39.0));
        assert!(a < b && surprise(38.5) > a && surprise(38.5) < b);
        assert_eq!(score_of(f64::INFINITY, 4.0), 1.0);
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

    /// Found by fuzzing the backtest: one infinite (or huge) point turned every later score to
    /// NaN (and `clamp` on NaN panicked). Now the series goes on being scored.
    #[test]
    fn an_infinite_or_huge_point_does_not_poison_the_series() {
        let cfg = DetectorConfig {
            counts: false,
            ..DetectorConfig::default()
        };
        for bad in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e300, -1e308] {
            let mut d = Detector::new(&cfg);
            for i in 0..400u64 {
                let x = if i == 200 { bad } else { 100.0 + (i % 7) as f64 };
                let v = d.update(&cfg, 1_700_000_000 + i * 300, x);
                assert!(
                    v.score.is_finite() && (0.0..=1.0).contains(&v.score),
                    "{bad}: {i}: {v:?}"
                );
                assert!(v.expected.is_finite(), "{bad}: {i}: {v:?}");
            }
            // Normal again afterwards: a point far out is still seen.
            let v = d.update(&cfg, 1_700_000_000 + 400 * 300, 10_000.0);
            assert!(v.score > 0.5, "{bad}: {v:?}");
        }
    }
}
