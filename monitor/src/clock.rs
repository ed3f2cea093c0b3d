//! Wall-clock time as the pipeline and the alert sinks use it: Unix nanoseconds now, and the
//! RFC 3339 form of exchanges, findings and alerts. A leaf: it depends on nothing of ours.

/// Unix time now, in nanoseconds (0 if the clock is before 1970).
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// RFC 3339 with a fixed six-digit fraction, so lines sort as text. The date and time of day
/// are formatted once per second and reused (formatting was a visible share of the pipeline).
pub fn rfc3339_micros(ts_ns: u64) -> String {
    use std::cell::RefCell;
    use std::fmt::Write;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let secs = ts_ns / 1_000_000_000;
    let micros = (ts_ns % 1_000_000_000) / 1_000;
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
                time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
            *cached = (secs, t.format(FORMAT).unwrap_or_default());
        }
        let mut out = String::with_capacity(cached.1.len() + 8);
        out.push_str(&cached.1);
        let _ = write!(out, ".{micros:06}Z");
        out
    })
}

/// "10/s", "100/min", "5000/hour" -> (count, seconds).
pub fn parse_rate(s: &str) -> Option<(u32, u64)> {
    let (n, unit) = s.split_once('/')?;
    let n: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
    let secs = match unit.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        _ => return None,
    };
    Some((n, secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_the_time_crate_across_seconds_and_days() {
        const FULL: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        // Same second twice (cached), the next second, a day boundary, the epoch.
        for ts in [
            1_700_000_000_123_456_789u64,
            1_700_000_000_999_999_999,
            1_700_000_001_000_000_000,
            1_700_006_399_999_999_000,
            1_700_006_400_000_001_000,
            0,
        ] {
            let want = time::OffsetDateTime::from_unix_timestamp_nanos(ts as i128)
                .unwrap()
                .format(FULL)
                .unwrap();
            assert_eq!(rfc3339_micros(ts), want, "{ts}");
        }
    }
}
