//! Time as the pipeline and the alert sinks use it: the agent clock, Unix nanoseconds now, and
//! the RFC 3339 form of exchanges, findings and alerts. A leaf: it depends on nothing of ours.
//!
//! The agent clock is the kernel's CLOCK_MONOTONIC (what `bpf_ktime_get_ns` stamps events
//! with) set against the wall clock once, at the first use. Events, the pipeline's ticks and
//! every timer (alert resolution and resends, state saves, sink health, baseline windows) run on
//! it, so they always agree, and a step of the wall clock (an hour back by an operator or a bad
//! NTP source) stops or hurries none of them: on the wall clock, an hour back held every alert
//! firing and every save for that hour. The price: after such a step the timestamps keep the
//! reference taken at start until the agent restarts (NTP's usual slewing moves them by
//! milliseconds).
use std::sync::OnceLock;

/// Unix time now on the wall clock, in nanoseconds (0 if the clock is before 1970). For what
/// must match the wall clock outside (a webhook signature's timestamp), not for durations.
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Unix time minus CLOCK_MONOTONIC, in nanoseconds, taken once per process: the agent clock.
pub fn mono_to_unix_ns() -> i128 {
    static OFFSET: OnceLock<i128> = OnceLock::new();
    *OFFSET.get_or_init(|| unix_now_ns() as i128 - monotonic_ns() as i128)
}

/// The agent clock now, in Unix nanoseconds (see the module's comment).
pub fn agent_now_ns() -> u64 {
    (monotonic_ns() as i128 + mono_to_unix_ns()).max(0) as u64
}

/// RFC 3339 with a fixed six-digit fraction, so lines sort as text. The date and time of day
/// are formatted once per second and reused (formatting was a visible share of the pipeline).
pub fn rfc3339_micros(ts_ns: u64) -> String {
    let mut out = String::with_capacity(27);
    push_rfc3339_micros(&mut out, ts_ns);
    out
}

/// `rfc3339_micros` written into `out` (an exchange line: no string of its own).
pub fn push_rfc3339_micros(out: &mut impl crate::text::TextOut, ts_ns: u64) {
    use std::cell::RefCell;
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
        out.push_text(&cached.1);
        out.push_text(".");
        crate::text::push_decimal(out, micros, 6);
        out.push_text("Z");
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
    fn the_agent_clock_is_monotonic_and_set_against_the_wall_clock() {
        let (a, wall) = (agent_now_ns(), unix_now_ns());
        // Set against the wall clock at its first use (a step since would show here: none).
        assert!(a.abs_diff(wall) < 1_000_000_000, "agent {a}, wall {wall}");
        // Kernel event stamps (CLOCK_MONOTONIC) convert with the same offset.
        let mono = monotonic_ns();
        let converted = (mono as i128 + mono_to_unix_ns()) as u64;
        let b = agent_now_ns();
        assert!(converted >= a && converted <= b);
        assert_eq!(mono_to_unix_ns(), mono_to_unix_ns(), "taken once");
    }

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
