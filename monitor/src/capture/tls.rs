//! Finding every OpenSSL libssl on the host and attaching the SSL uprobes to it.
//!
//! Libraries come from the ldconfig cache and from the maps of running processes (through
//! /proc/PID/root, so containers' own copies count too). Each distinct file (device, inode) is
//! probed once; a periodic rescan covers processes and containers started later.
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::programs::{UProbe, uprobe::UProbeScope};
use log::{debug, info, warn};

/// (program, symbol); every symbol also gets the shared return probe.
const ENTRY_PROBES: &[(&str, &str)] = &[
    ("ssl_read", "SSL_read"),
    ("ssl_read_ex", "SSL_read_ex"),
    ("ssl_write", "SSL_write"),
    ("ssl_write_ex", "SSL_write_ex"),
];
const RETURN_PROBE: &str = "ssl_return";

#[derive(Default)]
pub struct TlsProbes {
    attached: HashSet<(u64, u64)>,
    pub libraries: Vec<PathBuf>,
    loaded: bool,
}

impl TlsProbes {
    /// Attaches to every libssl not probed yet; returns how many new libraries were probed.
    pub fn scan(&mut self, ebpf: &mut Ebpf) -> usize {
        if !self.loaded {
            for name in ENTRY_PROBES.iter().map(|(p, _)| *p).chain([RETURN_PROBE]) {
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
        let mut new = 0;
        for lib in find_libssl() {
            let Ok(meta) = std::fs::metadata(&lib) else {
                continue;
            };
            if !self.attached.insert((meta.dev(), meta.ino())) {
                continue;
            }
            let mut symbols = 0;
            for (program, symbol) in ENTRY_PROBES {
                if attach(ebpf, program, symbol, &lib) && attach(ebpf, RETURN_PROBE, symbol, &lib) {
                    symbols += 1;
                }
            }
            if symbols > 0 {
                info!("TLS: probing {} ({symbols} SSL functions)", lib.display());
                self.libraries.push(lib);
                new += 1;
            }
        }
        new
    }
}

fn attach(ebpf: &mut Ebpf, program: &str, symbol: &str, lib: &Path) -> bool {
    let Some(prog) = ebpf
        .program_mut(program)
        .and_then(|p| <&mut UProbe>::try_from(p).ok())
    else {
        return false;
    };
    match prog.attach(symbol, lib, UProbeScope::AllProcesses) {
        Ok(_) => true,
        Err(e) => {
            // SSL_read_ex/SSL_write_ex do not exist before OpenSSL 1.1.1: not an error.
            debug!("{program} on {}:{symbol}: {e}", lib.display());
            false
        }
    }
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
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let pid = entry.file_name();
            let Some(pid) = pid.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else {
                continue;
            };
            let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
                continue;
            };
            for line in maps.lines() {
                let Some(path) = line.split_whitespace().nth(5) else {
                    continue;
                };
                let p = Path::new(path);
                if is_libssl(p) {
                    // Through the process's root, so a container's own copy is the file probed.
                    out.push(PathBuf::from(format!("/proc/{pid}/root{path}")));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn is_libssl(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("libssl.so"))
}
