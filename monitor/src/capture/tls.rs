//! Finding every TLS library on the host and attaching the TLS uprobes to it: OpenSSL (and
//! BoringSSL) wherever it is linked, libssl or inside an executable such as node, and GnuTLS.
//!
//! Candidates come from the ldconfig cache (libssl, libgnutls) and from the executable mappings
//! of running processes (through /proc/PID/root, so containers' own copies count too); the
//! symbol tables decide (tls_sites). Each distinct file (device, inode) is read once; a
//! periodic rescan covers processes and containers started later.
//!
//! With `capture.processes`, the probes are attached to the named processes only (one
//! attachment per process and library, detached when the process is gone): other processes'
//! SSL calls then do not even trap into the kernel.
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::programs::{
    UProbe,
    uprobe::{UProbeLinkId, UProbeScope},
};
use log::{debug, info, warn};

use super::tls_sites::{ProbeSite, plan_file};

/// The programs probed at sites (tls_sites); a site `with_return` also gets the shared return probe.
const ENTRY_PROGRAMS: &[&str] = &[
    "ssl_read",
    "ssl_read_ex",
    "ssl_write",
    "ssl_write_ex",
    "gnutls_recv",
    "gnutls_send",
    "go_tls_write",
    "go_tls_read",
    "go_tls_read_copy",
    "go_tls_read_return",
];
const RETURN_PROBE: &str = "ssl_return";
/// Slow probe sites warned about by name, at most (each is counted in the metric regardless).
const MAX_SLOW_WARNED: usize = 1024;

/// (pid, device, inode): one process's mapping of one libssl file.
type ProcessLib = (u32, u64, u64);
/// The links attached for it, by program.
type Links = Vec<(&'static str, UProbeLinkId)>;

/// One object file that may hold TLS functions, with its probe sites (none: it holds none).
#[derive(Clone, Debug)]
pub struct TlsObject {
    /// Through /proc/PID/root.
    pub path: PathBuf,
    /// (device, inode).
    pub file: (u64, u64),
    pub sites: Vec<ProbeSite>,
}

/// What a scan found: objects for host-wide probes, or (with a process filter) per process:
/// of every named process (`all`: the others are gone), or of some that just called exec.
#[derive(Debug)]
pub enum Found {
    Host(Vec<TlsObject>),
    Processes {
        objects: Vec<(u32, TlsObject)>,
        all: bool,
    },
}

/// The slow half of a scan: walking /proc, ldconfig, reading ELF files. Runs on its own thread
/// after the first scan, so the thread draining the ring never waits on it.
#[derive(Default)]
pub struct TlsScanner {
    /// Probe sites by file (device, inode), planned once per file.
    plans: HashMap<(u64, u64), Vec<ProbeSite>>,
}

impl TlsScanner {
    /// Every process, or `only` these (just exec'd: their executables, without ldconfig).
    pub fn scan(&mut self, processes: &[String], only: Option<&[u32]>) -> Found {
        if processes.is_empty() {
            let objects = match only {
                None => find_tls_objects(),
                Some(pids) => executables(pids, |_| true).into_iter().map(|(_, p)| p).collect(),
            };
            Found::Host(objects.into_iter().filter_map(|p| self.object(p)).collect())
        } else {
            Found::Processes {
                objects: objects_of_named(processes, only)
                    .into_iter()
                    .filter_map(|(pid, p)| Some((pid, self.object(p)?)))
                    .collect(),
                all: only.is_none(),
            }
        }
    }

    fn object(&mut self, path: PathBuf) -> Option<TlsObject> {
        let meta = std::fs::metadata(&path).ok()?;
        let file = (meta.dev(), meta.ino());
        let sites = self
            .plans
            .entry(file)
            .or_insert_with(|| match plan_file(&path) {
                Ok(sites) => sites,
                // Most mapped objects hold no TLS functions: that is no news.
                Err(super::tls_sites::SiteError::NoSymbols) => Vec::new(),
                Err(e) => {
                    warn!("TLS: cannot probe {}: {e}", path.display());
                    Vec::new()
                }
            })
            .clone();
        Some(TlsObject { path, file, sites })
    }
}

/// The attachments (the fast half: needs the loaded programs, so it stays with the capture).
#[derive(Default)]
pub struct TlsProbes {
    attached: HashSet<(u64, u64)>,
    /// With a process filter: (pid, device, inode) -> the links made for that process.
    per_process: HashMap<ProcessLib, Links>,
    /// Libraries probed host-wide (per-process probes are in `per_process`, bounded by the
    /// processes alive).
    pub libraries: Vec<PathBuf>,
    /// Sites attached where the kernel must single-step (see tls_sites): each hit costs ~14 µs.
    pub slow_sites: usize,
    slow_warned: HashSet<(String, String)>,
    loaded: bool,
}

impl TlsProbes {
    /// Attaches to every object found that is not probed yet (host-wide, or per named process);
    /// returns how many new attachments were made.
    pub fn apply(&mut self, ebpf: &mut Ebpf, found: Found) -> usize {
        if !self.loaded {
            for name in ENTRY_PROGRAMS.iter().copied().chain([RETURN_PROBE]) {
                let loaded = ebpf
                    .program_mut(name)
                    .and_then(|p| <&mut UProbe>::try_from(p).ok())
                    .map(|p| p.load());
                if let Some(Err(e)) = loaded {
                    warn!("TLS probe {name} did not load: {e}; TLS plaintext will not be seen");
                    return 0;
                }
            }
            self.loaded = true;
        }
        let objects = match found {
            Found::Host(objects) => objects,
            Found::Processes { objects, all } => return self.apply_processes(ebpf, objects, all),
        };
        let mut new = 0;
        for TlsObject {
            path: lib,
            file,
            sites,
        } in objects
        {
            if !self.attached.insert(file) {
                continue;
            }
            let mut attached = 0;
            for site in &sites {
                let scope = UProbeScope::AllProcesses;
                if attach(ebpf, site.program, site, &lib, scope).is_some()
                    && (!site.with_return || attach(ebpf, RETURN_PROBE, site, &lib, scope).is_some())
                {
                    attached += 1;
                    self.count_site(site, &lib);
                }
            }
            if attached > 0 {
                let mut what: Vec<&str> = sites.iter().map(|s| s.label.as_str()).collect();
                what.dedup();
                info!("TLS: probing {} at {}", lib.display(), what.join(", "));
                self.libraries.push(lib);
                new += 1;
            }
        }
        new
    }
}

impl TlsProbes {
    /// The named processes' TLS objects, each attached once; after a scan of `all` of them, the
    /// links of processes that are gone are detached (bounded by the processes alive).
    fn apply_processes(&mut self, ebpf: &mut Ebpf, objects: Vec<(u32, TlsObject)>, all: bool) -> usize {
        let mut alive = HashSet::new();
        let mut new = 0;
        for (
            pid,
            TlsObject {
                path: lib,
                file,
                sites,
            },
        ) in objects
        {
            let key = (pid, file.0, file.1);
            alive.insert(key);
            if self.per_process.contains_key(&key) {
                continue;
            }
            let Some(scope) = std::num::NonZeroU32::new(pid).map(UProbeScope::OneProcess) else {
                continue;
            };
            let mut links = Vec::new();
            for site in sites {
                let before = links.len();
                let programs = if site.with_return {
                    &[site.program, RETURN_PROBE][..]
                } else {
                    &[site.program][..]
                };
                for &prog in programs {
                    if let Some(id) = attach(ebpf, prog, &site, &lib, scope) {
                        links.push((prog, id));
                    }
                }
                if links.len() == before + programs.len() {
                    self.count_site(&site, &lib);
                }
            }
            if !links.is_empty() {
                info!(
                    "TLS: probing {} for pid {pid} ({} probes)",
                    lib.display(),
                    links.len()
                );
                new += 1;
            }
            self.per_process.insert(key, links);
        }
        if !all {
            return new;
        }
        let gone: Vec<_> = self
            .per_process
            .keys()
            .filter(|k| !alive.contains(k))
            .copied()
            .collect();
        for key in gone {
            for (program, id) in self.per_process.remove(&key).unwrap_or_default() {
                if let Some(p) = ebpf
                    .program_mut(program)
                    .and_then(|p| <&mut UProbe>::try_from(p).ok())
                {
                    let _ = p.detach(id);
                }
            }
        }
        new
    }
}

impl TlsProbes {
    fn count_site(&mut self, site: &ProbeSite, lib: &Path) {
        if !site.emulated {
            self.slow_sites += 1;
            // Once per function and file name (not per process; at most MAX_SLOW_WARNED, then
            // the metric alone): a Go Read has a slow site at each of its RETs (one hit a call).
            let name = lib.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let key = (name, site.label.clone());
            if self.slow_warned.len() < MAX_SLOW_WARNED && self.slow_warned.insert(key) {
                warn!(
                    "TLS: {} in {} is probed at an instruction the kernel must single-step: each TLS \
                     read or write there costs ~14 µs more (apiwatch_tls_slow_probe_sites)",
                    site.label,
                    lib.display()
                );
            }
        }
    }
}

fn attach(
    ebpf: &mut Ebpf,
    program: &str,
    site: &ProbeSite,
    lib: &Path,
    scope: UProbeScope,
) -> Option<UProbeLinkId> {
    let prog = ebpf
        .program_mut(program)
        .and_then(|p| <&mut UProbe>::try_from(p).ok())?;
    match prog.attach(site.file_offset, lib, scope) {
        Ok(id) => Some(id),
        Err(e) => {
            debug!(
                "{program} on {}:{} ({:#x}): {e}",
                lib.display(),
                site.label,
                site.file_offset
            );
            None
        }
    }
}

/// (pid, object path through the process's root) for every process whose comm is named.
/// With `only` (processes that just called exec), their executables alone.
fn objects_of_named(processes: &[String], only: Option<&[u32]>) -> Vec<(u32, PathBuf)> {
    let keys: Vec<[u8; 16]> = processes.iter().map(|p| super::comm_key(p)).collect();
    let named = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| keys.contains(&super::comm_key(comm.trim_end_matches('\n'))))
    };
    match only {
        Some(pids) => executables(pids, named),
        None => mapped_objects(None, named, true),
    }
}

/// (pid, executable through the process's root) of the processes `wanted` accepts among `pids`.
/// Right after an exec the executable is all a process maps besides the dynamic loader (its
/// libraries come later, and the periodic rescan or the ldconfig cache covers them), so an exec
/// costs a readlink and a stat, and an ELF read only for a file not seen before.
fn executables(pids: &[u32], wanted: impl Fn(u32) -> bool) -> Vec<(u32, PathBuf)> {
    pids.iter()
        .copied()
        .filter(|&pid| wanted(pid))
        .filter_map(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            let exe = exe.to_str()?;
            (exe.starts_with('/') && !exe.ends_with(" (deleted)"))
                .then(|| (pid, PathBuf::from(format!("/proc/{pid}/root{exe}"))))
        })
        .collect()
}

/// Files that may hold TLS functions: libssl and libgnutls from the ldconfig cache, then every
/// object any process has mapped executable.
pub fn find_tls_objects() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    if let Ok(o) = std::process::Command::new("ldconfig").arg("-p").output() {
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some((_, path)) = line.split_once("=> ") {
                let p = PathBuf::from(path.trim());
                if is_tls_library(&p) {
                    out.push(p);
                }
            }
        }
    }
    out.extend(mapped_objects(None, |_| true, false).into_iter().map(|(_, p)| p));
    out.sort();
    out.dedup();
    out
}

/// (pid, path) of every file mapped executable by the processes `wanted` accepts (among `pids`,
/// or all): each once per process (`per_process`), or once per root filesystem. The path goes
/// through the process's root, so a container's own copy is the file probed.
fn mapped_objects(
    pids: Option<&[u32]>,
    wanted: impl Fn(u32) -> bool,
    per_process: bool,
) -> Vec<(u32, PathBuf)> {
    let mut out = Vec::new();
    let all: Vec<u32> = match pids {
        Some(_) => Vec::new(),
        None => match std::fs::read_dir("/proc") {
            Ok(dir) => dir
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
                .collect(),
            Err(_) => return out,
        },
    };
    // (root device, root inode, path): processes sharing a root share their objects' files.
    let mut seen: HashSet<(u64, u64, String)> = HashSet::new();
    for &pid in pids.unwrap_or(&all) {
        if !wanted(pid) {
            continue;
        }
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let root = if per_process {
            (pid as u64, 0)
        } else {
            match std::fs::metadata(format!("/proc/{pid}/root")) {
                Ok(m) => (m.dev(), m.ino()),
                Err(_) => continue,
            }
        };
        for (perms, path) in maps.lines().filter_map(mapping) {
            if perms.contains('x') && seen.insert((root.0, root.1, path.to_string())) {
                out.push((pid, PathBuf::from(format!("/proc/{pid}/root{path}"))));
            }
        }
    }
    out
}

/// (permissions, path) of a file-backed line of /proc/PID/maps (not `[vdso]`, not deleted).
fn mapping(line: &str) -> Option<(&str, &str)> {
    let mut fields = line.splitn(6, ' ');
    let perms = fields.nth(1)?;
    let path = fields.nth(3)?.trim_start();
    (path.starts_with('/') && !path.ends_with(" (deleted)")).then_some((perms, path))
}

fn is_tls_library(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("libssl.so") || n.starts_with("libgnutls.so"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        assert_eq!(
            mapping(
                "7f1c2a000000-7f1c2a1b0000 r-xp 00028000 fe:01 1234 /usr/lib/x86_64-linux-gnu/libssl.so.3"
            ),
            Some(("r-xp", "/usr/lib/x86_64-linux-gnu/libssl.so.3"))
        );
        assert_eq!(
            mapping("55d0-55e0 r-xp 00000000 fe:01 99 /opt/my app/bin/server"),
            Some(("r-xp", "/opt/my app/bin/server"))
        );
        assert_eq!(
            mapping("7ffd-7ffe r-xp 00000000 00:00 0                          [vdso]"),
            None
        );
        assert_eq!(mapping("7f00-7f10 rw-p 00000000 00:00 0 "), None);
        assert_eq!(mapping("7f00-7f10 r-xp 00000000 fe:01 5 /tmp/x (deleted)"), None);
    }

    /// This test's own process maps its executable: found as a candidate, through /proc/PID/root.
    #[test]
    fn executables_are_candidates() {
        let me = std::process::id();
        let objects = mapped_objects(None, |pid| pid == me, true);
        assert_eq!(objects, mapped_objects(Some(&[me]), |_| true, true));
        let exe = std::fs::canonicalize("/proc/self/exe").unwrap();
        // Just after an exec: the executable alone.
        let exe_through_root = PathBuf::from(format!("/proc/{me}/root{}", exe.display()));
        assert_eq!(executables(&[me], |_| true), vec![(me, exe_through_root)]);
        assert!(executables(&[me], |_| false).is_empty());
        assert!(
            objects
                .iter()
                .any(|(pid, p)| *pid == me && p.ends_with(exe.strip_prefix("/").unwrap())),
            "{objects:?}"
        );
    }
}
