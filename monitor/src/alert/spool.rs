//! The durable alert spool: an alert is on disk (fsync'd) before it counts as accepted, and
//! stays there until a sink acknowledges it. A record torn by a crash is detected (length and
//! CRC-32) and skipped, not fatal.
//!
//! Group commit: `push` appends, `sync` makes everything appended durable with one fsync and
//! only then hands it to delivery (`pending`). The pipeline syncs once per batch of events, so
//! a scan raising hundreds of alerts costs one fsync per batch, not one per alert.
//!
//! File: records `[u32 LE body length][u32 LE crc32(body)][body]`; body = kind (1 job, 2 ack),
//! u64 LE id, then for a job its payload (JSON). Rewritten (temporary file, rename) at open so it
//! only ever holds what is still pending.
//!
//! A disk that refuses writes (full, read-only, gone) loses nothing that is accepted: a failed
//! append is cut back (no torn record stays to hide the records after it at the next open), the
//! job is held in memory and delivered all the same, and every `sync` writes what is held again
//! until the disk takes it; an acknowledgement that could not be written is retried the same
//! way. Only a crash while the disk refuses loses what memory held. Each refused write is
//! counted (`write_errors`).
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const KIND_JOB: u8 = 1;
const KIND_ACK: u8 = 2;
const MAX_RECORD: usize = 1 << 20;
/// A spool file is rewritten with only its pending records once it is this big and more than
/// half of it is acknowledged records: the file stays bounded however long the agent runs.
const COMPACT_MIN_BYTES: u64 = 1 << 20;
/// Room kept beyond `max_pending` for apiwatch's own alerts, so that a full spool can still
/// carry the alert saying it is full.
pub const RESERVE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the alert spool is full ({0} alerts pending)")]
    Full(usize),
    #[error("alert spool I/O: {0}")]
    Io(#[from] io::Error),
}

pub struct Spool {
    path: PathBuf,
    /// None while the file cannot be opened (a read-only or missing state_dir): everything is
    /// held in memory and the file is opened again at a later `sync`.
    file: Option<File>,
    next_id: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    /// Appended, not yet fsync'd: not accepted, not delivered, until `sync`.
    staged: Vec<(u64, Vec<u8>)>,
    max_pending: usize,
    /// Records found torn or corrupt at open (a crash while writing).
    pub torn_records: u64,
    /// Alerts refused because the spool was full.
    pub overflowed: u64,
    /// Bytes in the file, and of them the bytes of jobs not yet acknowledged.
    file_bytes: u64,
    live_bytes: u64,
    /// Jobs held (staged or pending) whose record the disk refused: written again at `sync`.
    unwritten: BTreeSet<u64>,
    /// Acknowledgements the disk refused: written again at `sync` (else a restart resends).
    acks_unwritten: Vec<u64>,
    /// Writes, fsyncs and rewrites the disk refused, since open.
    pub write_errors: u64,
    /// The last refusal, until a write succeeds again (for the log, once per outage).
    pub failing: Option<String>,
    /// When the file at `path` was last checked to be the one written to (FILE_CHECK).
    checked: std::time::Instant,
}

/// How often `sync` checks that the spool file is still the one at its path: deleted or replaced
/// by hand, it would take what it holds away from the next start.
const FILE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl Spool {
    pub fn open(path: &Path, max_pending: usize) -> Result<Self, SpoolError> {
        // A directory that cannot be made (a read-only state_dir) is not fatal: the open below
        // fails too, and the spool holds everything in memory until the file can be written.
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(path) {
            f.read_to_end(&mut bytes)?;
        }
        let mut pending = BTreeMap::new();
        let mut torn = 0;
        let mut next_id = 1;
        let mut pos = 0;
        while pos < bytes.len() {
            let Some(head) = bytes.get(pos..pos + 8) else {
                torn += 1;
                break;
            };
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let Some(body) = bytes
                .get(pos + 8..pos + 8 + len)
                .filter(|_| (9..=MAX_RECORD).contains(&len))
            else {
                torn += 1;
                break;
            };
            if crc32fast::hash(body) != crc {
                torn += 1;
                break;
            }
            let id = u64::from_le_bytes(body[1..9].try_into().unwrap_or_default());
            match body[0] {
                KIND_JOB => {
                    pending.insert(id, body[9..].to_vec());
                }
                KIND_ACK => {
                    pending.remove(&id);
                }
                _ => torn += 1,
            }
            next_id = next_id.max(id + 1);
            pos += 8 + len;
        }
        if torn > 0 {
            log::warn!(
                "alert spool {}: {torn} torn record(s) skipped (written during a crash?)",
                path.display()
            );
        }
        let mut spool = Self {
            path: path.to_path_buf(),
            file: None,
            next_id,
            pending,
            staged: Vec::new(),
            max_pending,
            torn_records: torn,
            overflowed: 0,
            file_bytes: 0,
            live_bytes: 0,
            unwritten: BTreeSet::new(),
            acks_unwritten: Vec::new(),
            write_errors: 0,
            failing: None,
            checked: std::time::Instant::now(),
        };
        match rewrite(path, spool.pending.iter()) {
            Ok((file, size)) => {
                spool.file = Some(file);
                spool.file_bytes = size;
                spool.live_bytes = size;
            }
            Err(e) => {
                // No room for the rewrite: keep the file as it is, without its torn tail (a cut
                // needs no space), and append to it; or, if it cannot even be opened, hold
                // everything in memory until it can.
                spool.refused(&e);
                let appendable = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .and_then(|f| f.set_len(pos as u64).map(|()| f));
                match appendable {
                    Ok(f) => {
                        spool.file = Some(f);
                        spool.file_bytes = pos as u64;
                        spool.live_bytes = pos as u64;
                    }
                    Err(e) => {
                        spool.refused(&e);
                        // Where the file's whole records end, to cut a torn tail once it opens.
                        spool.hold_all_in_memory(pos as u64);
                    }
                }
            }
        }
        Ok(spool)
    }

    /// Counts a write the disk refused and remembers why, for the engine's log.
    /// Logged once per outage, at its start; `sync` logs its end.
    fn refused(&mut self, e: &dyn std::fmt::Display) {
        self.write_errors += 1;
        if self.failing.is_none() {
            log::error!(
                "alert spool {}: the disk refuses writes ({e}): alerts are held in memory and still delivered, and written when it takes them again (apiwatch_alert_spool_write_errors_total); a crash meanwhile loses them",
                self.path.display()
            );
        }
        self.failing = Some(e.to_string());
    }

    /// Appends one record, or cuts the file back to where it was: a torn record must not stay,
    /// it would hide every record after it at the next open.
    fn append(&mut self, rec: &[u8]) -> io::Result<()> {
        let Some(file) = &mut self.file else {
            return Err(io::Error::other("the spool file is not open"));
        };
        match file.write_all(rec) {
            Ok(()) => {
                self.file_bytes += rec.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = file.set_len(self.file_bytes);
                Err(e)
            }
        }
    }

    /// Writes again what the disk refused before, oldest first; stops at the first refusal.
    fn write_backlog(&mut self) {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let opened = OpenOptions::new()
                .append(true)
                .create(true)
                .open(&self.path)
                .and_then(|f| f.set_len(self.file_bytes).map(|()| f));
            match opened {
                Ok(f) => {
                    self.live_bytes = self.file_bytes;
                    self.file = Some(f);
                }
                Err(e) => {
                    self.refused(&e);
                    return;
                }
            }
        }
        let ids: Vec<u64> = self.unwritten.iter().copied().collect();
        for id in ids {
            let payload = match self.pending.get(&id) {
                Some(p) => p.clone(),
                None => match self.staged.iter().find(|(i, _)| *i == id) {
                    Some((_, p)) => p.clone(),
                    None => {
                        self.unwritten.remove(&id);
                        continue;
                    }
                },
            };
            let rec = record(KIND_JOB, id, &payload);
            if let Err(e) = self.append(&rec) {
                self.refused(&e);
                return;
            }
            self.live_bytes += rec.len() as u64;
            self.unwritten.remove(&id);
        }
        while let Some(&id) = self.acks_unwritten.first() {
            if let Err(e) = self.append(&record(KIND_ACK, id, &[])) {
                self.refused(&e);
                return;
            }
            self.acks_unwritten.remove(0);
        }
    }

    /// A spool file deleted (or replaced) under the running agent: appends would go to an
    /// unlinked file and be gone at the next start. Written again, whole, from memory.
    fn check_file(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Some(file) = &self.file else { return };
        let same = match (file.metadata(), std::fs::metadata(&self.path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if !same {
            log::warn!(
                "alert spool {}: the file was deleted or replaced under the agent; written again from memory ({} alert(s) pending)",
                self.path.display(),
                self.len()
            );
            if let Err(e) = self.compact() {
                // Not even room for a new file (or its directory is gone): everything is held
                // in memory, and written to a new file as soon as one can be made.
                self.refused(&e);
                self.hold_all_in_memory(0);
            }
        }
    }

    /// No usable file: every job held is to be written (to a file cut to `good_len`, where its
    /// whole records end) once one opens; a new file needs no acknowledgements.
    fn hold_all_in_memory(&mut self, good_len: u64) {
        self.file = None;
        self.file_bytes = good_len;
        self.unwritten = self
            .pending
            .keys()
            .chain(self.staged.iter().map(|(id, _)| id))
            .copied()
            .collect();
        if good_len == 0 {
            self.acks_unwritten.clear();
        }
    }

    /// True while something accepted is held in memory only (the disk refused it).
    pub fn holds_unwritten(&self) -> bool {
        !self.unwritten.is_empty() || !self.acks_unwritten.is_empty()
    }

    /// Rewrites the file with only the jobs not yet acknowledged (staged ones included, which
    /// the rewrite makes durable).
    fn compact(&mut self) -> Result<(), SpoolError> {
        let staged = self.staged.iter().map(|(id, p)| (id, p));
        let (file, size) = rewrite(&self.path, self.pending.iter().chain(staged))?;
        self.pending.extend(self.staged.drain(..));
        self.file = Some(file);
        self.file_bytes = size;
        self.live_bytes = size;
        // Everything held is in the new file, and no acknowledged job is.
        self.unwritten.clear();
        self.acks_unwritten.clear();
        Ok(())
    }

    /// Bytes the file holds now (bounded by compaction).
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Appends a job; `sync` makes it durable and deliverable. `reserved`: may use the RESERVE
    /// beyond max_pending (apiwatch's own alerts).
    pub fn push(&mut self, payload: &[u8], reserved: bool) -> Result<u64, SpoolError> {
        let max = self.max_pending + if reserved { RESERVE } else { 0 };
        if self.len() >= max {
            self.overflowed += 1;
            return Err(SpoolError::Full(self.len()));
        }
        let id = self.next_id;
        self.next_id += 1;
        let rec = record(KIND_JOB, id, payload);
        // Behind a refused write, later ones wait their turn (the file keeps the order); only
        // a write the disk refuses is counted as one.
        if !self.unwritten.is_empty() {
            self.unwritten.insert(id);
        } else if let Err(e) = self.append(&rec) {
            self.refused(&e);
            self.unwritten.insert(id);
        } else {
            self.live_bytes += rec.len() as u64;
        }
        self.staged.push((id, payload.to_vec()));
        Ok(id)
    }

    /// One fsync for everything pushed since the last: from now on it survives a crash and is
    /// handed to delivery. What the disk refused is written again first; if it still refuses,
    /// those jobs are delivered from memory (and written when the disk takes them). An error
    /// here means the fsync itself failed: nothing staged is handed on, the next sync retries.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.checked.elapsed() >= FILE_CHECK {
            self.checked = std::time::Instant::now();
            self.check_file();
        }
        if self.holds_unwritten() {
            self.write_backlog();
        }
        if self.staged.is_empty() {
            return Ok(());
        }
        if let Some(file) = &self.file {
            if let Err(e) = file.sync_data() {
                self.refused(&e);
                return Err(e.into());
            }
        }
        if !self.holds_unwritten() && self.failing.take().is_some() {
            log::info!(
                "alert spool {}: the disk takes writes again; every alert held is on disk",
                self.path.display()
            );
        }
        self.pending.extend(self.staged.drain(..));
        Ok(())
    }

    /// The sink delivered it: it will not be sent again, even after a restart (unless the disk
    /// refuses the acknowledgement until then: it is retried at each sync).
    pub fn ack(&mut self, id: u64) -> Result<(), SpoolError> {
        let Some(payload) = self.pending.remove(&id) else {
            return Ok(());
        };
        if self.unwritten.remove(&id) {
            return Ok(()); // never reached the file: nothing to cancel there
        }
        self.live_bytes = self.live_bytes.saturating_sub(record_len(payload.len()));
        if !self.acks_unwritten.is_empty() {
            self.acks_unwritten.push(id); // behind earlier ones the disk refused
            return Ok(());
        }
        let rec = record(KIND_ACK, id, &[]);
        if let Err(e) = self.append(&rec).and_then(|()| match &self.file {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }) {
            self.refused(&e);
            self.acks_unwritten.push(id);
            return Ok(()); // counted and logged; written again at the next sync
        }
        if self.file_bytes > COMPACT_MIN_BYTES && self.file_bytes > 2 * self.live_bytes {
            if let Err(e) = self.compact() {
                // The old file is whole (the rewrite goes to a temporary file): keep using it.
                self.refused(&e);
            }
        }
        Ok(())
    }

    /// Durable jobs not yet acknowledged, oldest first (at most `max`).
    pub fn pending(&self, max: usize) -> Vec<(u64, Vec<u8>)> {
        self.pending
            .iter()
            .take(max)
            .map(|(id, p)| (*id, p.clone()))
            .collect()
    }

    /// Jobs held, durable or staged.
    pub fn len(&self) -> usize {
        self.pending.len() + self.staged.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes `jobs` to a new file and renames it over `path`; returns it open for appending, and
/// its size.
fn rewrite<'a>(
    path: &Path,
    jobs: impl Iterator<Item = (&'a u64, &'a Vec<u8>)>,
) -> Result<(File, u64), SpoolError> {
    let tmp = path.with_extension("tmp");
    let mut size = 0;
    let written = (|| {
        let mut f = File::create(&tmp)?;
        for (id, payload) in jobs {
            let rec = record(KIND_JOB, *id, payload);
            f.write_all(&rec)?;
            size += rec.len() as u64;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // A full disk: the partial copy must not keep the space the next write needs.
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    if let Some(dir) = path.parent() {
        crate::state::sync_dir(dir)?;
    }
    Ok((OpenOptions::new().append(true).open(path)?, size))
}

/// The bytes a job record of `payload_len` takes: header, kind, id, payload.
fn record_len(payload_len: usize) -> u64 {
    (8 + 9 + payload_len) as u64
}

fn record(kind: u8, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(9 + payload.len());
    body.push(kind);
    body.extend_from_slice(&id.to_le_bytes());
    body.extend_from_slice(payload);
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("aw-spool-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn pending_survives_reopen_and_acked_does_not() {
        let d = dir("reopen");
        let p = d.join("spool");
        let mut s = Spool::open(&p, 10).unwrap();
        let a = s.push(b"alert-a", false).unwrap();
        let _b = s.push(b"alert-b", false).unwrap();
        assert!(
            s.pending(10).is_empty(),
            "nothing is delivered before it is durable"
        );
        s.sync().unwrap();
        s.ack(a).unwrap();
        drop(s);
        let s = Spool::open(&p, 10).unwrap();
        assert_eq!(
            s.pending(10).into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
            vec![b"alert-b".to_vec()]
        );
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_torn_tail_is_skipped_not_fatal() {
        let d = dir("torn");
        let p = d.join("spool");
        let mut s = Spool::open(&p, 10).unwrap();
        s.push(b"kept", false).unwrap();
        s.push(b"torn-away", false).unwrap();
        s.sync().unwrap();
        drop(s);
        let full = std::fs::read(&p).unwrap();
        for cut in 1..("torn-away".len() + 17) {
            std::fs::write(&p, &full[..full.len() - cut]).unwrap();
            let s = Spool::open(&p, 10).unwrap();
            assert_eq!(s.torn_records, 1, "cut {cut}");
            assert_eq!(
                s.pending(10).into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
                vec![b"kept".to_vec()]
            );
        }
        // A flipped byte is caught by the checksum.
        let mut bad = full.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        std::fs::write(&p, &bad).unwrap();
        assert_eq!(Spool::open(&p, 10).unwrap().torn_records, 1);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_long_run_keeps_the_file_bounded_and_the_pending_intact() {
        let d = dir("compact");
        let p = d.join("spool");
        let mut s = Spool::open(&p, 100).unwrap();
        let payload = vec![b'x'; 500];
        let mut max = 0;
        // 5,000 alerts through (about 2.7 MB written), one kept pending all along.
        let kept = s.push(b"kept", false).unwrap();
        s.sync().unwrap();
        for _ in 0..5_000 {
            let id = s.push(&payload, false).unwrap();
            s.sync().unwrap();
            s.ack(id).unwrap();
            max = max.max(s.file_bytes());
        }
        assert!(max <= COMPACT_MIN_BYTES + 1024, "{max} bytes");
        assert!(std::fs::metadata(&p).unwrap().len() <= COMPACT_MIN_BYTES + 1024);
        drop(s);
        let s = Spool::open(&p, 100).unwrap();
        assert_eq!(s.pending(10), vec![(kept, b"kept".to_vec())]);
        assert_eq!(s.torn_records, 0);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_spool_file_deleted_under_the_agent_is_written_again() {
        let d = dir("deleted");
        let p = d.join("spool");
        let mut s = Spool::open(&p, 10).unwrap();
        let a = s.push(b"a", false).unwrap();
        s.push(b"b", false).unwrap();
        s.sync().unwrap();
        s.ack(a).unwrap();
        std::fs::remove_file(&p).unwrap();
        std::thread::sleep(FILE_CHECK + std::time::Duration::from_millis(100));
        s.push(b"c", false).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = Spool::open(&p, 10).unwrap();
        let held: Vec<Vec<u8>> = s.pending(10).into_iter().map(|(_, p)| p).collect();
        assert_eq!(held, vec![b"b".to_vec(), b"c".to_vec()]);
        let _ = std::fs::remove_dir_all(d);
    }

    /// A state_dir read-only at start: the spool's directory cannot even be made. The spool
    /// opens anyway, holds its jobs in memory, and writes them once the directory can be made.
    #[test]
    fn a_spool_whose_directory_cannot_be_made_holds_its_jobs_until_it_can() {
        let d = dir("no-dir");
        // A file where the directory should be: create_dir_all fails as on a read-only mount.
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("alerts"), b"").unwrap();
        let p = d.join("alerts/spool");
        let mut s = Spool::open(&p, 10).unwrap();
        s.push(b"a", false).unwrap();
        s.push(b"b", false).unwrap();
        s.sync().unwrap();
        assert!(s.holds_unwritten());
        assert!(s.write_errors >= 1);
        std::fs::remove_file(d.join("alerts")).unwrap();
        s.push(b"c", false).unwrap();
        s.sync().unwrap();
        assert!(!s.holds_unwritten());
        drop(s);
        let s = Spool::open(&p, 10).unwrap();
        let held: Vec<Vec<u8>> = s.pending(10).into_iter().map(|(_, p)| p).collect();
        assert_eq!(held, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn bounded_and_overflow_counted() {
        let d = dir("full");
        let mut s = Spool::open(&d.join("spool"), 2).unwrap();
        s.push(b"1", false).unwrap();
        s.push(b"2", false).unwrap();
        assert!(matches!(s.push(b"3", false), Err(SpoolError::Full(2))));
        assert_eq!(s.overflowed, 1);
        // The reserve still takes apiwatch's own alerts, up to RESERVE more.
        for _ in 0..RESERVE {
            s.push(b"self", true).unwrap();
        }
        assert!(s.push(b"self", true).is_err());
        let _ = std::fs::remove_dir_all(d);
    }
}
