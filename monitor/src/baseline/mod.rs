//! Baselines: the streaming anomaly detector and its backtest over CSV histories.
pub mod backtest;
pub mod detector;
pub mod live;

pub use detector::{Detector, DetectorConfig, Transition, Verdict};
