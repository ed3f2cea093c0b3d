//! Finding every OpenSSL libssl on the host and attaching the SSL uprobes to it.
//!
//! Libraries come from the ldconfig cache and from the maps of running processes (through
//! /proc/PID/root, so containers' own copies count too). Each distinct file (device, inode) is
//! probed once; a periodic rescan covers processes and containers started later.
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

/// The entry programs; every site also gets the shared return probe.
const ENTRY_PROGRAMS: &[&str] = &["ssl_read", "ssl_read_ex", "ssl_write", "ssl_write_ex"];
const RETURN_PROBE: &str = "ssl_return";

/// (pid, device, inode): one process's mapping of one libssl file.
type ProcessLib = (u32, u64, u64);
/// The links attached for it, by program.
type Links = Vec<(&'static str, UProbeLinkId)>;

#[derive(Default)]
pub struct TlsProbes {
    attached: HashSet<(u64, u64)>,
    /// With a process filter: (pid, device, inode) -> the links made for that process.
    per_process: HashMap<ProcessLib, Links>,
    /// Libraries probed host-wide (per-process probes are in `per_process`, bounded by the
    /// processes alive).
    pub libraries: Vec<PathBuf>,
    /// Probe sites by library file (device, inode), planned once per file.
    plans: HashMap<(u64, u64), Vec<ProbeSite>>,
    /// Sites attached where the kernel must single-step (see tls_sites): each hit costs ~14 µs.
    pub slow_sites: usize,
    loaded: bool,
}

impl TlsProbes {
    /// Attaches to every libssl not probed yet (for every process, or with `processes` for
    /// those named only); returns how many new attachments were made.
    pub fn scan(&mut self, ebpf: &mut Ebpf, processes: &[String]) -> usize {
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
        if !processes.is_empty() {
            return self.scan_processes(ebpf, processes);
        }
        let mut new = 0;
        for lib in find_libssl() {
            let Ok(meta) = std::fs::metadata(&lib) else {
                continue;
            };
            if !self.attached.insert((meta.dev(), meta.ino())) {
                continue;
            }
            let sites = self.plan(&lib, (meta.dev(), meta.ino()));
            let mut attached = 0;
            for site in &sites {
                let scope = UProbeScope::AllProcesses;
                if attach(ebpf, site.program, site, &lib, scope).is_some()
                    && attach(ebpf, RETURN_PROBE, site, &lib, scope).is_some()
                {
                    attached += 1;
                    self.count_site(site, &lib);
                }
            }
            if attached > 0 {
                let what: Vec<&str> = sites.iter().map(|s| s.label.as_str()).collect();
                info!("TLS: probing {} at {}", lib.display(), what.join(", "));
                self.libraries.push(lib);
                new += 1;
            }
        }
        new
    }
}

impl TlsProbes {
    /// The named processes' libssl mappings, each attached once; links of processes that are
    /// gone are detached (bounded by the processes alive).
    fn scan_processes(&mut self, ebpf: &mut Ebpf, processes: &[String]) -> usize {
        let mut alive = HashSet::new();
        let mut new = 0;
        for (pid, lib) in libssl_of_named(processes) {
            let Ok(meta) = std::fs::metadata(&lib) else {
                continue;
            };
            let key = (pid, meta.dev(), meta.ino());
            alive.insert(key);
            if self.per_process.contains_key(&key) {
                continue;
            }
            let Some(scope) = std::num::NonZeroU32::new(pid).map(UProbeScope::OneProcess) else {
                continue;
            };
            let mut links = Vec::new();
            for site in self.plan(&lib, (meta.dev(), meta.ino())) {
                let before = links.len();
                for prog in [site.program, RETURN_PROBE] {
                    if let Some(id) = attach(ebpf, prog, &site, &lib, scope) {
                        links.push((prog, id));
                    }
                }
                if links.len() == before + 2 {
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
    /// The library's probe sites, planned on first sight of the file.
    fn plan(&mut self, lib: &Path, file: (u64, u64)) -> Vec<ProbeSite> {
        self.plans
            .entry(file)
            .or_insert_with(|| match plan_file(lib) {
                Ok(sites) => sites,
                Err(e) => {
                    warn!("TLS: cannot probe {}: {e}", lib.display());
                    Vec::new()
                }
            })
            .clone()
    }

    fn count_site(&mut self, site: &ProbeSite, lib: &Path) {
        if !site.emulated {
            self.slow_sites += 1;
            warn!(
                "TLS: {} in {} starts with an instruction the kernel must single-step: each TLS read or \
                 write there costs ~14 µs more (apiwatch_tls_slow_probe_sites)",
                site.label,
                lib.display()
            );
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

/// (pid, libssl path through the process's root) for every process whose comm is named.
fn libssl_of_named(processes: &[String]) -> Vec<(u32, PathBuf)> {
    let keys: Vec<[u8; 16]> = processes.iter().map(|p| super::comm_key(p)).collect();
    mapped_libssl(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| keys.contains(&super::comm_key(comm.trim_end_matches('\n'))))
    })
}

/// Paths of libssl files: the ldconfig cache, then every process's mapped libraries.
pub fn find_libssl() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    if let Ok(o) = std::process::Command::new("ldconfig").arg("-p").output() {
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some((_, path)) = line.split_once("=> ") {
                let p = PathBuf::from(path.trim());
                if is_libssl(&p) {
                    out.push(p);
                }
            }
        }
    }
    out.extend(mapped_libssl(|_| true).into_iter().map(|(_, p)| p));
    out.sort();
    out.dedup();
    out
}

/// (pid, path) of every libssl mapped by the processes `wanted` accepts, each once per process.
/// The path goes through the process's root, so a container's own copy is the file probed.
fn mapped_libssl(wanted: impl Fn(u32) -> bool) -> Vec<(u32, PathBuf)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if !wanted(pid) {
            continue;
        }
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let mut seen = HashSet::new();
        for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)) {
            if is_libssl(Path::new(path)) && seen.insert(path) {
                out.push((pid, PathBuf::from(format!("/proc/{pid}/root{path}"))));
            }
        }
    }
    out
}

fn is_libssl(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("libssl.so"))
}
