//! `apiwatch backtest`: the live detector over a CSV history (`timestamp,value` with a header;
//! ISO 8601 / RFC 3339 or epoch seconds), writing `timestamp,value,score,anomaly` for every row.
use std::io::{BufRead, Write};

use super::detector::{Detector, DetectorConfig, Transition};

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("line {line}: {reason}")]
    Row { line: usize, reason: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Default, PartialEq)]
pub struct BacktestSummary {
    pub rows: usize,
    pub anomalies: usize,
    /// Anomaly episodes: fired ... resolved.
    pub episodes: usize,
    pub warming_up: usize,
}

fn parse_ts(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs >= 0.0).then_some(secs as u64);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .or_else(|_| {
            time::OffsetDateTime::parse(&format!("{s}Z"), &time::format_description::well_known::Rfc3339)
        })
        .ok()?;
    u64::try_from(t.unix_timestamp()).ok()
}

/// Runs the detector over `input`, writing one output row per input row.
pub fn run<R: BufRead, W: Write>(
    input: R,
    mut out: W,
    cfg: &DetectorConfig,
) -> Result<BacktestSummary, BacktestError> {
    let mut detector = Detector::new(cfg);
    let mut summary = BacktestSummary::default();
    writeln!(out, "timestamp,value,score,anomaly")?;
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        let n = i + 1;
        if i == 0 || line.trim().is_empty() {
            continue; // the header line
        }
        let (ts, value) = line.split_once(',').ok_or_else(|| BacktestError::Row {
            line: n,
            reason: "expected timestamp,value".into(),
        })?;
        let secs = parse_ts(ts).ok_or_else(|| BacktestError::Row {
            line: n,
            reason: format!("timestamp {ts:?} is neither epoch seconds nor ISO 8601"),
        })?;
        let v: f64 = value
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| BacktestError::Row {
                line: n,
                reason: format!("value {value:?} is not a finite number"),
            })?;
        let verdict = detector.update(cfg, secs, v);
        summary.rows += 1;
        summary.anomalies += verdict.anomaly as usize;
        summary.warming_up += verdict.warming_up as usize;
        if verdict.transition == Some(Transition::Fired) {
            summary.episodes += 1;
        }
        writeln!(
            out,
            "{},{},{:.6},{}",
            ts.trim(),
            value.trim(),
            verdict.score,
            verdict.anomaly
        )?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_scored_and_a_spike_fires() {
        let mut csv = String::from("timestamp,value\n");
        for i in 0..200u64 {
            let v = if i == 150 { 500.0 } else { 100.0 + (i % 5) as f64 };
            if i % 2 == 0 {
                csv.push_str(&format!("{},{v}\n", 1_700_000_000 + i * 60));
            } else {
                let t = time::OffsetDateTime::from_unix_timestamp((1_700_000_000 + i * 60) as i64).unwrap();
                csv.push_str(&format!(
                    "{},{v}\n",
                    t.format(&time::format_description::well_known::Rfc3339).unwrap()
                ));
            }
        }
        let cfg = DetectorConfig {
            season_buckets: 1,
            ..DetectorConfig::default()
        };
        let mut out = Vec::new();
        let s = run(csv.as_bytes(), &mut out, &cfg).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(s.rows, 200);
        assert_eq!(s.episodes, 1);
        assert_eq!(text.lines().count(), 201);
        let spike = text.lines().nth(151).unwrap();
        assert!(spike.ends_with(",true"), "{spike}");
    }

    #[test]
    fn bad_rows_are_reported_with_their_line() {
        let cfg = DetectorConfig::default();
        let err = run("t,v\n1700000000,1\nyesterday,2\n".as_bytes(), Vec::new(), &cfg).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3: timestamp \"yesterday\" is neither epoch seconds nor ISO 8601"
        );
        let err = run("t,v\n1700000000,many\n".as_bytes(), Vec::new(), &cfg).unwrap_err();
        assert!(err.to_string().starts_with("line 2: value"));
    }
}
