//! Reading the trail back: `apiwatch audit verify` (is the chain whole?) and `apiwatch audit
//! query` (who accessed what, when).
use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use super::segment::{Chain, GENESIS, check_line, list_segments, open_lines};
use crate::clock::rfc3339_micros;

/// Where the chain first breaks.
#[derive(Debug, PartialEq, Eq)]
pub struct Broken {
    pub file: PathBuf,
    /// 1-based.
    pub line: u64,
    pub reason: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub segments: usize,
    pub lines: u64,
    pub exchanges: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
    /// Segments before the first one present, whose deletion a retention line records.
    pub deleted_by_retention: u64,
    /// Records the agent reported lost (its `gap` lines).
    pub reported_lost: u64,
    /// The open segment ends inside a line (being written now, or a crash the agent has not
    /// yet restarted after).
    pub torn_tail: bool,
    pub broken: Option<Broken>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(b) = &self.broken {
            return write!(f, "BROKEN: {}:{}: {}", b.file.display(), b.line, b.reason);
        }
        write!(
            f,
            "ok: {} exchanges in {} lines, {} segments, seq {}..{}",
            self.exchanges, self.lines, self.segments, self.first_seq, self.last_seq
        )?;
        if let (Some(a), Some(b)) = (&self.first_ts, &self.last_ts) {
            write!(f, ", {a} to {b}")?;
        }
        if self.deleted_by_retention > 0 {
            write!(
                f,
                "; {} older segments deleted by retention (recorded)",
                self.deleted_by_retention
            )?;
        }
        if self.reported_lost > 0 {
            write!(f, "; {} records reported lost by the agent", self.reported_lost)?;
        }
        if self.torn_tail {
            write!(
                f,
                "; the open segment ends inside a line (being written, or a crash)"
            )?;
        }
        Ok(())
    }
}

fn field<'a>(line: &'a [u8], name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":");
    let at = line.windows(key.len()).position(|w| w == key.as_bytes())? + key.len();
    let rest = std::str::from_utf8(&line[at..]).ok()?;
    if let Some(s) = rest.strip_prefix('"') {
        s.split('"').next()
    } else {
        rest.split([',', '}']).next()
    }
}

fn kind(line: &[u8]) -> Option<&str> {
    field(line, "type")
}

/// Checks every link of the chain in `dir`; the first break is reported with file and line.
pub fn verify(dir: &Path) -> io::Result<Report> {
    let segments = list_segments(dir)?;
    if segments.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no audit segments in {}", dir.display()),
        ));
    }
    // Retention lines first: they vouch for segments that are gone.
    let mut deleted: HashMap<u64, Chain> = HashMap::new();
    for (_, path, gz) in &segments {
        for line in open_lines(path, *gz)?.split(b'\n') {
            let line = line?;
            if kind(&line) != Some("retention") {
                continue;
            }
            let n = field(&line, "deleted_segment").and_then(|v| v.parse().ok());
            let seq = field(&line, "last_seq").and_then(|v| v.parse().ok());
            let hash = field(&line, "last_hash").and_then(super::segment::unhex);
            if let (Some(n), Some(seq), Some(hash)) = (n, seq, hash) {
                deleted.insert(n, Chain { seq, hash });
            }
        }
    }
    let mut r = Report {
        segments: segments.len(),
        ..Report::default()
    };
    let first = segments[0].0;
    let mut chain = if first == 0 {
        Chain {
            seq: 0,
            hash: GENESIS,
        }
    } else if let Some(c) = deleted.get(&(first - 1)) {
        r.deleted_by_retention = first;
        *c
    } else {
        r.broken = Some(Broken {
            file: segments[0].1.clone(),
            line: 1,
            reason: format!(
                "segment {} is missing and no retention line records its deletion: removed outside apiwatch",
                first - 1
            ),
        });
        return Ok(r);
    };
    r.first_seq = chain.seq + 1;
    let last_index = segments.len() - 1;
    for (i, (n, path, gz)) in segments.iter().enumerate() {
        let broken = |line: u64, reason: String| Broken {
            file: path.clone(),
            line,
            reason,
        };
        if i > 0 && *n != segments[i - 1].0 + 1 {
            r.broken = Some(broken(1, format!("segment {} is missing", segments[i - 1].0 + 1)));
            return Ok(r);
        }
        let mut reader = open_lines(path, *gz)?;
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            number += 1;
            let Some(body) = line.strip_suffix(b"\n") else {
                if i == last_index && !gz {
                    r.torn_tail = true;
                    break;
                }
                r.broken = Some(broken(number, "the segment ends inside a line".into()));
                return Ok(r);
            };
            if number == 1 {
                let header_ok =
                    kind(body) == Some("segment") && field(body, "segment") == Some(n.to_string().as_str());
                if !header_ok {
                    r.broken = Some(broken(
                        1,
                        format!(
                            "the first line is not the header of segment {n} (a file renamed or replaced)"
                        ),
                    ));
                    return Ok(r);
                }
            }
            match check_line(body, &chain) {
                Ok(c) => chain = c,
                Err(reason) => {
                    r.broken = Some(broken(number, reason));
                    return Ok(r);
                }
            }
            r.lines += 1;
            match kind(body) {
                Some("exchange") => {
                    r.exchanges += 1;
                    let ts = field(body, "ts").map(str::to_string);
                    if r.first_ts.is_none() {
                        r.first_ts = ts.clone();
                    }
                    r.last_ts = ts;
                }
                Some("gap") => {
                    r.reported_lost += field(body, "dropped").and_then(|v| v.parse().ok()).unwrap_or(0);
                }
                _ => {}
            }
        }
    }
    r.last_seq = chain.seq;
    Ok(r)
}

/// Which exchanges `query` prints.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// Unix ns, inclusive.
    pub since_ns: Option<u64>,
    /// Unix ns, exclusive.
    pub until_ns: Option<u64>,
    pub service: Option<String>,
    pub route: Option<String>,
    pub identity: Option<String>,
    pub source: Option<String>,
}

/// Prints the matching exchange lines (as stored, hash included); returns how many.
pub fn query(dir: &Path, q: &Query, out: &mut dyn Write) -> io::Result<u64> {
    // Timestamps are fixed-width RFC 3339 (microseconds, Z): they compare as strings.
    let since = q.since_ns.map(rfc3339_micros);
    let until = q.until_ns.map(rfc3339_micros);
    let mut n = 0;
    for (_, path, gz) in list_segments(dir)? {
        for line in open_lines(&path, gz)?.split(b'\n') {
            let line = line?;
            if kind(&line) != Some("exchange") {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            let s = |k: &str| v.get(k).and_then(|x| x.as_str());
            let ts = s("ts").unwrap_or_default();
            let matches = since.as_deref().is_none_or(|a| ts >= a)
                && until.as_deref().is_none_or(|b| ts < b)
                && q.service.as_deref().is_none_or(|x| s("service") == Some(x))
                && q.route.as_deref().is_none_or(|x| s("route") == Some(x))
                && q.identity.as_deref().is_none_or(|x| s("identity") == Some(x))
                && q.source.as_deref().is_none_or(|x| s("source") == Some(x));
            if matches {
                out.write_all(&line)?;
                out.write_all(b"\n")?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// A time for `--since`/`--until`: RFC 3339 (`2026-12-01T10:00:00Z`), Unix seconds, or an age
/// before `now_ns` (`90s`, `15m`, `2h`, `7d`).
pub fn parse_time(s: &str, now_ns: u64) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return u64::try_from(t.unix_timestamp_nanos()).map_err(|_| format!("{s:?} is before 1970"));
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(secs.saturating_mul(1_000_000_000));
    }
    let unit = match s.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        _ => 0,
    };
    match s[..s.len().saturating_sub(1)].parse::<u64>() {
        Ok(n) if unit > 0 => Ok(now_ns.saturating_sub(n.saturating_mul(unit).saturating_mul(1_000_000_000))),
        _ => Err(format!(
            "{s:?} is not a time: RFC 3339 (2026-12-01T10:00:00Z), Unix seconds, or an age (90s, 15m, 2h, 7d)"
        )),
    }
}
