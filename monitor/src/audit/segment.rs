//! The audit trail on disk: hash-chained JSON lines in numbered segments.
//!
//! A directory holds `audit-NNNNNNNN.jsonl` (the open segment, appended to) and
//! `audit-NNNNNNNN.jsonl.gz` (closed segments, gzip). Every line is one JSON object whose last
//! field is `"hash"`: SHA-256 of the previous line's hash (32 bytes) followed by this line's
//! bytes up to the `,"hash":` separator, in hex. The chain runs across segments: a segment's
//! first line (`"type":"segment"`) names its number and the previous segment's last hash
//! (`"prev"`). Retention never deletes silently: before a segment is removed, a `retention`
//! line recording its number and last hash goes into the open segment, so `verify` can tell a
//! segment deleted by policy from one deleted by hand.
//!
//! Writes are group commits: a batch of lines is formatted against a tentative chain, written
//! and fdatasync'd, and only then does the chain move on. A failed write (a full disk) is cut
//! off again (ftruncate to the last durable length), so a crash or an error never leaves half
//! a group in the file, and earlier segments are never rewritten except to compress them
//! (temporary file, fsync, rename).
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{AuditOptions, AuditRecord};
use crate::clock::rfc3339_micros;

pub const GENESIS: [u8; 32] = [0; 32];
const HASH_SEP: &[u8] = b",\"hash\":\"";

/// The chain's position: the last line's sequence number and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chain {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// What goes into the trail besides exchanges.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Exchange(AuditRecord),
    /// Records lost before they reached the disk (a full queue, a disk that stayed full).
    Gap {
        dropped: u64,
        reason: &'static str,
    },
    /// The agent (re)started; `torn_bytes` were cut from the open segment's tail (a crash).
    Start {
        torn_bytes: u64,
    },
}

pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

pub fn unhex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let d = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        *o = d(b[2 * i])? << 4 | d(b[2 * i + 1])?;
    }
    Some(out)
}

/// Appends one line (`{"seq":N,"type":T,` + `fields` + `,"hash":"H"}\n`) to `buf`, chained
/// after `chain`, which moves on. `fields`: JSON object members, no braces.
pub fn push_line(buf: &mut Vec<u8>, chain: &mut Chain, kind: &str, fields: &[u8]) {
    let start = buf.len();
    let seq = chain.seq + 1;
    write!(buf, "{{\"seq\":{seq},\"type\":\"{kind}\"").expect("writing to a Vec");
    if !fields.is_empty() {
        buf.push(b',');
        buf.extend_from_slice(fields);
    }
    let mut h = Sha256::new();
    h.update(chain.hash);
    h.update(&buf[start..]);
    let hash: [u8; 32] = h.finalize().into();
    buf.extend_from_slice(HASH_SEP);
    buf.extend_from_slice(hex(&hash).as_bytes());
    buf.extend_from_slice(b"\"}\n");
    *chain = Chain { seq, hash };
}

/// One line checked against the chain before it: its sequence number and hash, or why not.
pub fn check_line(line: &[u8], prev: &Chain) -> Result<Chain, String> {
    let Some(at) = line.windows(HASH_SEP.len()).rposition(|w| w == HASH_SEP) else {
        return Err("no hash field".into());
    };
    let tail = &line[at + HASH_SEP.len()..];
    let claimed = std::str::from_utf8(tail)
        .ok()
        .and_then(|t| t.strip_suffix("\"}"))
        .and_then(unhex)
        .ok_or("malformed hash field")?;
    let body = &line[..at];
    let mut h = Sha256::new();
    h.update(prev.hash);
    h.update(body);
    let actual: [u8; 32] = h.finalize().into();
    let seq = body
        .strip_prefix(b"{\"seq\":")
        .and_then(|r| {
            let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
            std::str::from_utf8(&r[..n]).ok()?.parse::<u64>().ok()
        })
        .ok_or("no sequence number")?;
    if actual != claimed {
        return Err(format!(
            "hash mismatch at seq {seq}: the line was edited, or a line before it was removed or moved"
        ));
    }
    if seq != prev.seq + 1 {
        return Err(format!(
            "seq {seq} follows seq {}: records were removed or reordered",
            prev.seq
        ));
    }
    Ok(Chain { seq, hash: actual })
}

/// Segment files in `dir`, sorted by number: (number, path, compressed).
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf, bool)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("audit-") else {
            continue;
        };
        let (num, gz) = if let Some(n) = rest.strip_suffix(".jsonl.gz") {
            (n, true)
        } else if let Some(n) = rest.strip_suffix(".jsonl") {
            (n, false)
        } else {
            continue;
        };
        if let Ok(n) = num.parse::<u64>() {
            out.push((n, entry.path(), gz));
        }
    }
    // A segment both open and compressed (a crash while compressing): the open one is whole.
    out.sort_by_key(|(n, _, gz)| (*n, *gz));
    out.dedup_by_key(|(n, _, _)| *n);
    Ok(out)
}

pub fn segment_path(dir: &Path, n: u64, gz: bool) -> PathBuf {
    dir.join(format!("audit-{n:08}.jsonl{}", if gz { ".gz" } else { "" }))
}

/// The lines of a segment, compressed or not.
pub fn open_lines(path: &Path, gz: bool) -> io::Result<Box<dyn BufRead>> {
    let f = File::open(path)?;
    Ok(if gz {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(f)))
    } else {
        Box::new(BufReader::new(f))
    })
}

/// A segment's first line: its `"prev"` hash and the sequence number before it.
pub fn segment_anchor(path: &Path, gz: bool) -> io::Result<Option<Chain>> {
    let mut first = Vec::new();
    open_lines(path, gz)?.read_until(b'\n', &mut first)?;
    let v: serde_json::Value = match serde_json::from_slice(&first) {
        Ok(v) => v,
        Err(_) => return Ok(None),
    };
    let prev = v.get("prev").and_then(|p| p.as_str()).and_then(unhex);
    let seq = v.get("seq").and_then(|s| s.as_u64());
    Ok(match (prev, seq) {
        (Some(hash), Some(seq)) if seq > 0 => Some(Chain { seq: seq - 1, hash }),
        _ => None,
    })
}

/// Counts kept by the writer (the audit metrics mirror them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterCounts {
    pub records: u64,
    pub segments_closed: u64,
    pub segments_deleted: u64,
}

/// The open segment and the chain; owned by the audit writer thread.
pub struct SegmentWriter {
    opts: AuditOptions,
    segment: u64,
    file: File,
    /// Bytes of the open segment known to be durable.
    len: u64,
    opened_ns: u64,
    chain: Chain,
    buf: Vec<u8>,
    fields: Vec<u8>,
    pub counts: WriterCounts,
    /// Bytes cut from the open segment's tail at open (a crash mid-write).
    pub torn_bytes: u64,
}

impl SegmentWriter {
    /// Opens the trail in `opts.dir`: continues the open segment after checking it (a tail
    /// a crash left unverifiable is cut off), or starts the next one.
    pub fn open(opts: &AuditOptions, now_ns: u64) -> io::Result<Self> {
        std::fs::create_dir_all(&opts.dir)?;
        let segments = list_segments(&opts.dir)?;
        // Open segments other than the last: a crash while closing them. Close them now.
        for (n, path, gz) in &segments {
            if !gz && Some(*n) != segments.last().map(|s| s.0) {
                compress(path, &segment_path(&opts.dir, *n, true))?;
            }
        }
        let mut w = match segments.last() {
            Some((n, path, false)) => Self::continue_open(opts, *n, path, now_ns)?,
            Some((n, path, true)) => {
                let chain = last_chain(path, true)?.unwrap_or(Chain {
                    seq: 0,
                    hash: GENESIS,
                });
                Self::create(opts, n + 1, chain, now_ns)?
            }
            None => Self::create(
                opts,
                0,
                Chain {
                    seq: 0,
                    hash: GENESIS,
                },
                now_ns,
            )?,
        };
        let torn = w.torn_bytes;
        w.append(&[Item::Start { torn_bytes: torn }], now_ns)?;
        Ok(w)
    }

    fn continue_open(opts: &AuditOptions, n: u64, path: &Path, now_ns: u64) -> io::Result<Self> {
        let mut file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let anchor = segment_anchor(path, false)?;
        let mut chain = anchor.unwrap_or(Chain {
            seq: 0,
            hash: GENESIS,
        });
        // Keep the lines that verify, up to the first that does not (the unflushed group of a
        // crash: torn, or blocks the file system never wrote).
        let mut good = 0usize;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let Some(body) = line.strip_suffix(b"\n") else {
                break;
            };
            match check_line(body, &chain) {
                Ok(c) => {
                    chain = c;
                    good += line.len();
                }
                Err(_) => break,
            }
        }
        if anchor.is_none() || good == 0 {
            // Not even its first line survived: start the segment again.
            drop(file);
            std::fs::remove_file(path)?;
            let prev = if n == 0 {
                Chain {
                    seq: 0,
                    hash: GENESIS,
                }
            } else {
                let before = list_segments(&opts.dir)?.into_iter().rfind(|(k, _, _)| *k < n);
                match before {
                    Some((_, p, gz)) => last_chain(&p, gz)?.unwrap_or(Chain {
                        seq: 0,
                        hash: GENESIS,
                    }),
                    None => Chain {
                        seq: 0,
                        hash: GENESIS,
                    },
                }
            };
            let mut w = Self::create(opts, n, prev, now_ns)?;
            w.torn_bytes = bytes.len() as u64;
            return Ok(w);
        }
        let torn = (bytes.len() - good) as u64;
        if torn > 0 {
            file.set_len(good as u64)?;
            file.sync_data()?;
        }
        file.seek(io::SeekFrom::End(0))?;
        let opened_ns = std::fs::metadata(path)
            .and_then(|m| m.created().or_else(|_| m.modified()))
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(now_ns, |d| d.as_nanos() as u64);
        Ok(Self {
            opts: opts.clone(),
            segment: n,
            file,
            len: good as u64,
            opened_ns,
            chain,
            buf: Vec::new(),
            fields: Vec::new(),
            counts: WriterCounts::default(),
            torn_bytes: torn,
        })
    }

    /// A new open segment `n`, its first line chained after `prev`.
    fn create(opts: &AuditOptions, n: u64, prev: Chain, now_ns: u64) -> io::Result<Self> {
        let path = segment_path(&opts.dir, n, false);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        let mut w = Self {
            opts: opts.clone(),
            segment: n,
            file,
            len: 0,
            opened_ns: now_ns,
            chain: prev,
            buf: Vec::new(),
            fields: Vec::new(),
            counts: WriterCounts::default(),
            torn_bytes: 0,
        };
        let mut fields = Vec::new();
        write!(
            fields,
            "\"ts\":\"{}\",\"segment\":{n},\"prev\":\"{}\"",
            rfc3339_micros(now_ns),
            hex(&prev.hash)
        )?;
        let mut chain = w.chain;
        push_line(&mut w.buf, &mut chain, "segment", &fields);
        w.commit(chain)?;
        crate::state::sync_dir(&opts.dir)?;
        Ok(w)
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    pub fn chain(&self) -> Chain {
        self.chain
    }

    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Writes `items` as one group: all durable, or none in the file (the error is returned
    /// and the items can be offered again).
    pub fn append(&mut self, items: &[Item], now_ns: u64) -> io::Result<()> {
        self.buf.clear();
        let mut chain = self.chain;
        for item in items {
            self.fields.clear();
            let kind = match item {
                Item::Exchange(r) => {
                    serde_json::to_writer(&mut self.fields, r).map_err(io::Error::other)?;
                    // Members only: the record's braces come off.
                    self.fields.pop();
                    self.fields.remove(0);
                    "exchange"
                }
                Item::Gap { dropped, reason } => {
                    write!(
                        self.fields,
                        "\"ts\":\"{}\",\"dropped\":{dropped},\"reason\":\"{reason}\"",
                        rfc3339_micros(now_ns)
                    )?;
                    "gap"
                }
                Item::Start { torn_bytes } => {
                    write!(
                        self.fields,
                        "\"ts\":\"{}\",\"torn_bytes\":{torn_bytes}",
                        rfc3339_micros(now_ns)
                    )?;
                    "start"
                }
            };
            push_line(&mut self.buf, &mut chain, kind, &self.fields);
        }
        self.commit(chain)?;
        self.counts.records += items.iter().filter(|i| matches!(i, Item::Exchange(_))).count() as u64;
        Ok(())
    }

    /// Writes `buf` and fdatasyncs; the chain moves to `chain` only then. On failure the file
    /// is cut back to its durable length.
    fn commit(&mut self, chain: Chain) -> io::Result<()> {
        let r = self.file.write_all(&self.buf).and_then(|_| self.file.sync_data());
        match r {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                self.chain = chain;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                let _ = self.file.seek(io::SeekFrom::Start(self.len));
                Err(e)
            }
        }
    }

    /// Rotation (by size and age) and retention (by age and total size, oldest first).
    pub fn maintain(&mut self, now_ns: u64) -> io::Result<()> {
        let age = now_ns.saturating_sub(self.opened_ns);
        if self.len >= self.opts.segment_max_bytes || age >= self.opts.segment_max_age_secs * 1_000_000_000 {
            self.rotate(now_ns)?;
        }
        self.retain(now_ns)
    }

    /// Closes the open segment (compressed) and opens the next.
    pub fn rotate(&mut self, now_ns: u64) -> io::Result<()> {
        let dir = self.opts.dir.clone();
        let next = Self::create(&self.opts, self.segment + 1, self.chain, now_ns)?;
        let closed = std::mem::replace(self, next);
        self.counts = closed.counts;
        self.counts.segments_closed += 1;
        let n = closed.segment;
        drop(closed);
        compress(&segment_path(&dir, n, false), &segment_path(&dir, n, true))
    }

    fn retain(&mut self, now_ns: u64) -> io::Result<()> {
        let segments = list_segments(&self.opts.dir)?;
        let mut sizes: Vec<(u64, PathBuf, bool, u64, u64)> = Vec::new();
        for (n, path, gz) in segments {
            let m = std::fs::metadata(&path)?;
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(now_ns, |d| d.as_nanos() as u64);
            sizes.push((n, path, gz, m.len(), mtime));
        }
        let mut total: u64 = sizes.iter().map(|s| s.3).sum();
        let max_age_ns = self.opts.retention_max_age_secs.saturating_mul(1_000_000_000);
        for i in 0..sizes.len() {
            let (n, path, gz, bytes, mtime) = &sizes[i];
            if *n >= self.segment {
                break;
            }
            let too_old = now_ns.saturating_sub(*mtime) > max_age_ns;
            if !too_old && total <= self.opts.retention_max_bytes {
                break;
            }
            // The deleted segment's last hash is the next one's "prev".
            let (next_path, next_gz) = match sizes.get(i + 1) {
                Some((_, p, g, _, _)) => (p.clone(), *g),
                None => break,
            };
            let Some(last) = segment_anchor(&next_path, next_gz)? else {
                break;
            };
            let mut fields = Vec::new();
            write!(
                fields,
                "\"ts\":\"{}\",\"deleted_segment\":{n},\"last_seq\":{},\"last_hash\":\"{}\",\"why\":\"{}\"",
                rfc3339_micros(now_ns),
                last.seq,
                hex(&last.hash),
                if too_old { "age" } else { "size" }
            )?;
            self.buf.clear();
            let mut chain = self.chain;
            push_line(&mut self.buf, &mut chain, "retention", &fields);
            self.commit(chain)?;
            let _ = gz;
            std::fs::remove_file(path)?;
            self.counts.segments_deleted += 1;
            total = total.saturating_sub(*bytes);
        }
        Ok(())
    }

    /// Bytes of every segment in the directory, and how many there are.
    pub fn disk_usage(&self) -> (u64, u64) {
        let Ok(segments) = list_segments(&self.opts.dir) else {
            return (0, 0);
        };
        let bytes = segments
            .iter()
            .filter_map(|(_, p, _)| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        (bytes, segments.len() as u64)
    }
}

/// The chain after a segment's last good line.
fn last_chain(path: &Path, gz: bool) -> io::Result<Option<Chain>> {
    let Some(mut chain) = segment_anchor(path, gz)? else {
        return Ok(None);
    };
    for line in open_lines(path, gz)?.split(b'\n') {
        match check_line(&line?, &chain) {
            Ok(c) => chain = c,
            Err(_) => break,
        }
    }
    Ok(Some(chain))
}

/// `from` gzip'd into `to` (temporary file, fsync, rename, directory fsync), then removed.
fn compress(from: &Path, to: &Path) -> io::Result<()> {
    let tmp = to.with_extension("gz.tmp");
    {
        let mut input = File::open(from)?;
        let out = File::create(&tmp)?;
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::new(3));
        io::copy(&mut input, &mut gz)?;
        gz.finish()?.sync_all()?;
    }
    std::fs::rename(&tmp, to)?;
    if let Some(dir) = to.parent() {
        crate::state::sync_dir(dir)?;
    }
    std::fs::remove_file(from)
}
