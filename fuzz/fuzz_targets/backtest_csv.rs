//! The backtest CSV reader and the detector behind it on any history: rows or a located error,
//! never a panic; every score it writes is a number in [0, 1].
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::baseline::DetectorConfig;
use monitor::baseline::backtest::run;

fuzz_target!(|data: &[u8]| {
    let cfg = DetectorConfig {
        counts: false,
        ..DetectorConfig::default()
    };
    let mut out = Vec::new();
    if run(data, &mut out, &cfg).is_ok() {
        let text = String::from_utf8(out).unwrap();
        for line in text.lines().skip(1) {
            let score: f64 = line.split(',').nth(2).unwrap().parse().unwrap();
            assert!((0.0..=1.0).contains(&score), "{line}");
        }
    }
});
