//! The trail on disk: chaining, rotation, retention, compression, crashes, tampering.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::segment::{Item, SegmentWriter, list_segments, segment_path};
use super::verify::{Query, parse_time, query, verify};
use super::*;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_800_000_000 * S;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("apiwatch-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn opts(dir: &Path) -> AuditOptions {
    AuditOptions {
        dir: dir.to_path_buf(),
        ..AuditOptions::default()
    }
}

fn record(i: u64) -> AuditRecord {
    AuditRecord {
        ts: T0 + i * S,
        service: "nginx:8080".into(),
        route: "/users/{id}".into(),
        method: "GET".into(),
        path: None,
        status: Some(200),
        source: Some(format!("10.0.0.{}", i % 3)),
        zones: vec!["office".into()],
        identity: Some(format!("fp{:010}", i % 2)),
        auth: AuthScheme::Bearer,
        tls: true,
        latency_us: Some(1200),
        findings: vec![],
    }
}

fn write(dir: &Path, o: &AuditOptions, from: u64, n: u64) -> SegmentWriter {
    let mut w = SegmentWriter::open(o, T0 + from * S).unwrap();
    for i in from..from + n {
        w.append(&[Item::Exchange(record(i))], T0 + i * S).unwrap();
    }
    let _ = dir;
    w
}

fn lines_of(path: &Path) -> Vec<String> {
    let mut s = String::new();
    std::fs::File::open(path).unwrap().read_to_string(&mut s).unwrap();
    s.lines().map(str::to_string).collect()
}

fn rewrite(path: &Path, lines: &[String]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

#[test]
fn a_written_trail_verifies_and_survives_restarts() {
    let d = Dir::new("restart");
    let o = opts(&d.0);
    drop(write(&d.0, &o, 0, 10));
    drop(write(&d.0, &o, 10, 5));
    let r = verify(&d.0).unwrap();
    assert_eq!(r.broken, None, "{r}");
    assert_eq!(r.exchanges, 15);
    // A header, then per run a start line; 15 exchanges.
    assert_eq!(r.lines, 1 + 2 + 15);
    assert_eq!((r.first_seq, r.last_seq), (1, 18));
    assert_eq!(r.first_ts.as_deref(), Some("2027-01-15T08:00:00.000000Z"));
}

#[test]
fn verify_finds_an_edited_a_deleted_and_a_reordered_record() {
    let d = Dir::new("tamper");
    let o = opts(&d.0);
    drop(write(&d.0, &o, 0, 6));
    let path = segment_path(&d.0, 0, false);
    let good = lines_of(&path);
    let at = |lines: Vec<String>| {
        rewrite(&path, &lines);
        let r = verify(&d.0).unwrap();
        rewrite(&path, &good);
        let b = r.broken.expect("a break is found");
        assert_eq!(b.file, path);
        (b.line, b.reason)
    };
    // Edited: a status changed on line 4.
    let mut edited = good.clone();
    edited[3] = edited[3].replace("\"status\":200", "\"status\":403");
    let (line, reason) = at(edited);
    assert_eq!(line, 4, "{reason}");
    assert!(reason.contains("hash mismatch"), "{reason}");
    // Deleted: line 4 removed; line 5 no longer follows line 3.
    let mut deleted = good.clone();
    deleted.remove(3);
    assert_eq!(at(deleted).0, 4);
    // Reordered: lines 4 and 5 swapped.
    let mut swapped = good.clone();
    swapped.swap(3, 4);
    assert_eq!(at(swapped).0, 4);
    // A forged line with a recomputed hash still breaks the next link.
    let mut forged = good.clone();
    forged[3] = forged[3].replace("\"identity\":\"fp0000000001\"", "\"identity\":\"fp0000000009\"");
    assert_eq!(at(forged).0, 4);
    assert_eq!(verify(&d.0).unwrap().broken, None, "the original is whole");
}

#[test]
fn rotation_compresses_and_the_chain_runs_across_segments() {
    let d = Dir::new("rotate");
    let o = AuditOptions {
        segment_max_bytes: 2000,
        ..opts(&d.0)
    };
    let mut w = SegmentWriter::open(&o, T0).unwrap();
    for i in 0..40 {
        w.append(&[Item::Exchange(record(i))], T0 + i * S).unwrap();
        w.maintain(T0 + i * S).unwrap();
    }
    drop(w);
    let segs = list_segments(&d.0).unwrap();
    assert!(segs.len() >= 5, "{segs:?}");
    assert!(
        segs[..segs.len() - 1].iter().all(|s| s.2),
        "closed segments are gzip: {segs:?}"
    );
    // Any gzip reader takes them (a gzip round trip).
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&segs[0].1).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.starts_with("{\"seq\":1,\"type\":\"segment\""), "{text}");
    let r = verify(&d.0).unwrap();
    assert_eq!(r.broken, None, "{r}");
    assert_eq!(r.exchanges, 40);
    // Rotation by age: an hour later the open segment is closed.
    let mut w = SegmentWriter::open(&o, T0 + 100 * S).unwrap();
    let before = w.segment();
    w.maintain(T0 + 100 * S + 3601 * S).unwrap();
    assert_eq!(w.segment(), before + 1);
}

#[test]
fn retention_deletes_the_oldest_first_and_says_so_and_a_hand_deletion_is_caught() {
    let d = Dir::new("retain");
    let o = AuditOptions {
        segment_max_bytes: 2000,
        retention_max_bytes: 8000,
        ..opts(&d.0)
    };
    let mut w = SegmentWriter::open(&o, T0).unwrap();
    for i in 0..100 {
        w.append(&[Item::Exchange(record(i))], T0 + i * S).unwrap();
        w.maintain(T0 + i * S).unwrap();
    }
    assert!(w.counts.segments_deleted > 0);
    let (bytes, _) = w.disk_usage();
    assert!(bytes <= 8000 + 2000, "bounded: {bytes}");
    drop(w);
    let segs = list_segments(&d.0).unwrap();
    assert!(segs[0].0 > 0, "the oldest went: {segs:?}");
    let r = verify(&d.0).unwrap();
    assert_eq!(r.broken, None, "{r}");
    assert_eq!(r.deleted_by_retention, segs[0].0);
    // Deleting the oldest remaining segment by hand is not retention: verify says so.
    std::fs::remove_file(&segs[0].1).unwrap();
    let b = verify(&d.0).unwrap().broken.unwrap();
    assert!(b.reason.contains("removed outside apiwatch"), "{}", b.reason);
    // A segment missing in the middle too.
    let d2 = Dir::new("retain-middle");
    let o2 = AuditOptions {
        segment_max_bytes: 2000,
        ..opts(&d2.0)
    };
    let mut w = SegmentWriter::open(&o2, T0).unwrap();
    for i in 0..40 {
        w.append(&[Item::Exchange(record(i))], T0).unwrap();
        w.maintain(T0).unwrap();
    }
    drop(w);
    let segs = list_segments(&d2.0).unwrap();
    std::fs::remove_file(&segs[2].1).unwrap();
    let b = verify(&d2.0).unwrap().broken.unwrap();
    assert_eq!((b.file.clone(), b.line), (segs[3].1.clone(), 1), "{}", b.reason);
}

#[test]
fn retention_by_age() {
    let d = Dir::new("age");
    let o = AuditOptions {
        segment_max_bytes: 2000,
        retention_max_age_secs: 60,
        ..opts(&d.0)
    };
    let mut w = SegmentWriter::open(&o, T0).unwrap();
    for i in 0..30 {
        w.append(&[Item::Exchange(record(i))], T0).unwrap();
        w.maintain(unix_now_ns()).unwrap();
    }
    let closed = list_segments(&d.0).unwrap().len() - 1;
    assert!(closed > 1);
    // Segment ages come from their files' times: a day later the open segment is rotated (an
    // hour old) and every closed one is too old.
    w.maintain(unix_now_ns() + 86_400 * S).unwrap();
    assert_eq!(
        list_segments(&d.0).unwrap().len(),
        1,
        "only the open segment is left"
    );
    assert_eq!(w.counts.segments_deleted as usize, closed + 1);
    drop(w);
    assert_eq!(verify(&d.0).unwrap().broken, None);
}

#[test]
fn a_crash_mid_write_loses_only_the_unflushed_group() {
    let d = Dir::new("crash");
    let o = opts(&d.0);
    drop(write(&d.0, &o, 0, 5));
    let path = segment_path(&d.0, 0, false);
    let whole = std::fs::read(&path).unwrap();
    // A group half written: a whole line that the chain does not vouch for, then a torn one.
    let mut crashed = whole.clone();
    crashed.extend_from_slice(b"{\"seq\":99,\"type\":\"exchange\",\"hash\":\"00\"}\n{\"seq\":100,\"ty");
    std::fs::write(&path, &crashed).unwrap();
    let r = verify(&d.0).unwrap();
    assert!(r.broken.is_some(), "{r}");
    // The agent starts again: the bad tail is cut, earlier records are all there.
    let w = write(&d.0, &o, 5, 2);
    assert_eq!(w.torn_bytes, (crashed.len() - whole.len()) as u64);
    drop(w);
    let r = verify(&d.0).unwrap();
    assert_eq!(r.broken, None, "{r}");
    assert_eq!(r.exchanges, 7);
    assert!(std::fs::read(&path).unwrap().starts_with(&whole));
    let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    assert!(text.contains(&format!("\"torn_bytes\":{}", crashed.len() - whole.len())));
    // A torn last line alone is reported, not called a break (a writer may be mid-line).
    let mut torn = std::fs::read(&path).unwrap();
    torn.extend_from_slice(b"{\"seq\":");
    std::fs::write(&path, &torn).unwrap();
    let r = verify(&d.0).unwrap();
    assert!(r.torn_tail && r.broken.is_none(), "{r}");
}

#[test]
fn a_crash_while_compressing_is_finished_at_the_next_start() {
    let d = Dir::new("compress-crash");
    let o = AuditOptions {
        segment_max_bytes: 2000,
        ..opts(&d.0)
    };
    let mut w = SegmentWriter::open(&o, T0).unwrap();
    for i in 0..20 {
        w.append(&[Item::Exchange(record(i))], T0).unwrap();
        w.maintain(T0).unwrap();
    }
    drop(w);
    // Segment 0 back to its uncompressed form, as if the crash came before the rename.
    let gz = segment_path(&d.0, 0, true);
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap())
        .read_to_end(&mut text)
        .unwrap();
    std::fs::write(segment_path(&d.0, 0, false), &text).unwrap();
    std::fs::write(&gz, b"partial").unwrap();
    assert_eq!(verify(&d.0).unwrap().broken, None, "the whole file is read");
    drop(SegmentWriter::open(&o, T0).unwrap());
    assert!(!segment_path(&d.0, 0, false).exists());
    assert_eq!(verify(&d.0).unwrap().broken, None);
}

#[test]
fn query_answers_who_accessed_what_when() {
    let d = Dir::new("query");
    let o = opts(&d.0);
    drop(write(&d.0, &o, 0, 10));
    let mut out = Vec::new();
    let q = Query {
        since_ns: Some(T0 + 2 * S),
        until_ns: Some(T0 + 8 * S),
        identity: Some("fp0000000001".into()),
        ..Query::default()
    };
    assert_eq!(query(&d.0, &q, &mut out).unwrap(), 3, "seconds 3, 5, 7");
    let text = String::from_utf8(out).unwrap();
    assert!(text.lines().all(|l| l.contains("\"identity\":\"fp0000000001\"")));
    let q = Query {
        source: Some("10.0.0.0".into()),
        route: Some("/users/{id}".into()),
        ..Query::default()
    };
    assert_eq!(query(&d.0, &q, &mut Vec::new()).unwrap(), 4);
    assert_eq!(parse_time("2h", 10_000 * S).unwrap(), 2_800 * S);
    assert_eq!(parse_time("2027-01-15T08:00:00Z", 0).unwrap(), T0);
    assert_eq!(parse_time("1800000000", 0).unwrap(), T0);
    assert!(parse_time("yesterday", 0).is_err());
}

/// The writer thread writes every record the pipeline handed it, before `finish` returns.
/// (A disk that refuses writes is the root tier's tests/tests/audit.rs: a full tmpfs.)
#[test]
fn the_writer_thread_writes_every_record_before_a_stop_returns() {
    let d = Dir::new("writer");
    let m = AuditMetrics::default();
    let mut log = AuditLog::start(opts(&d.0), m.clone()).unwrap();
    let mut ex = crate::exchange::tests::sample();
    for i in 0..5000 {
        ex.ts = T0 + i * S;
        log.record(&ex, vec![], vec![]);
        if i % 100 == 99 {
            log.end_batch();
        }
    }
    ex.role = Role::Client;
    log.record(&ex, vec![], vec![]);
    log.finish();
    assert_eq!(
        m.records.get(),
        5000,
        "client-side exchanges are not in the trail"
    );
    assert_eq!(m.failing.get(), 0);
    let r = verify(&d.0).unwrap();
    assert_eq!((r.exchanges, r.broken), (5000, None));
}

#[test]
fn no_secret_reaches_a_segment() {
    let d = Dir::new("secrets");
    let o = AuditOptions {
        include_paths: true,
        ..opts(&d.0)
    };
    let mut log = AuditLog::start(o, AuditMetrics::default()).unwrap();
    let mut ex = crate::exchange::tests::sample();
    ex.path = "/reset/alice@example.com".into();
    ex.url_detectors = vec!["email"];
    ex.query_keys = vec!["api_key".into()];
    log.record(&ex, vec![], vec!["secret_in_url"]);
    let mut plain = crate::exchange::tests::sample();
    plain.path = "/users/42".into();
    log.record(&plain, vec![], vec![]);
    log.finish();
    let text = String::from_utf8(std::fs::read(segment_path(&d.0, 0, false)).unwrap()).unwrap();
    assert!(!text.contains("alice@example.com"), "{text}");
    assert!(
        !text.contains("api_key"),
        "query keys and values stay out: {text}"
    );
    assert!(text.contains("\"path\":\"/users/42\""), "{text}");
}
