//! Which TLS libraries a process has loaded, said beside its TLS blind spots (connections whose
//! plaintext no probe saw), so a user knows why: `java`, `nss`, `rustls`, `wolfssl`, `mbedtls`
//! are libraries apiwatch does not decrypt; `openssl`, `gnutls` or `go` there mean the probes
//! were expected to see it and did not (a build whose functions could not be planned, a process
//! filtered out, a Go connection wrapped in a type the probes do not follow).
//!
//! Read from /proc when a process makes its first TLS connection: the libraries by the names of
//! the files it maps, its executable by its ELF contents (Go, or OpenSSL, GnuTLS or rustls linked
//! in), each executable file read once. A process gone by then is `unknown`.
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use object::{Object, ObjectSymbol};

/// The label when nothing known is loaded (or the process is gone).
pub const UNKNOWN: &str = "unknown";

/// Shared libraries by the start of their file name (a version follows).
const LIBRARIES: &[(&str, &str)] = &[
    ("libssl.so", "openssl"),
    ("libgnutls.so", "gnutls"),
    // NSS's TLS is libssl3.so (not OpenSSL's libssl.so.3), beside libnss3.so.
    ("libssl3.so", "nss"),
    ("libnss3.so", "nss"),
    ("libwolfssl.so", "wolfssl"),
    ("libmbedtls.so", "mbedtls"),
    // The JVM's TLS (JSSE) is Java code: libjvm is the sign.
    ("libjvm.so", "java"),
];

/// Executables remembered, at most (then the cache starts again).
const MAX_EXECUTABLES: usize = 4096;
/// Symbols looked at in one executable, at most (a big unstripped binary has millions).
const MAX_SYMBOLS: usize = 1 << 20;

#[derive(Default)]
pub struct TlsLibraries {
    /// What each executable file (device, inode) links in.
    executables: HashMap<(u64, u64), Vec<&'static str>>,
}

impl TlsLibraries {
    /// The process's TLS libraries, sorted and joined by `+` (`openssl`, `go`, `java+openssl`),
    /// or UNKNOWN.
    pub fn of_process(&mut self, tgid: u32) -> String {
        let mut kinds: Vec<&'static str> = Vec::new();
        if let Ok(maps) = std::fs::read_to_string(format!("/proc/{tgid}/maps")) {
            kinds.extend(maps.lines().filter_map(mapped_file).filter_map(library_kind));
        }
        let exe = format!("/proc/{tgid}/exe");
        if let Ok(meta) = std::fs::metadata(&exe) {
            if self.executables.len() >= MAX_EXECUTABLES {
                self.executables.clear();
            }
            let linked = self
                .executables
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| executable_kinds(Path::new(&exe)));
            kinds.extend(linked.iter().copied());
        }
        label(kinds)
    }
}

fn label(mut kinds: Vec<&str>) -> String {
    kinds.sort_unstable();
    kinds.dedup();
    if kinds.is_empty() {
        UNKNOWN.to_string()
    } else {
        kinds.join("+")
    }
}

/// The file of a line of /proc/PID/maps, if any.
fn mapped_file(line: &str) -> Option<&str> {
    let path = line.splitn(6, ' ').nth(5)?.trim_start();
    path.starts_with('/').then_some(path)
}

fn library_kind(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next()?;
    LIBRARIES
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|&(_, kind)| kind)
}

/// What an executable links in: Go's runtime (its sections stay when the binary is stripped),
/// OpenSSL/BoringSSL or GnuTLS by their functions, rustls by its symbols' names.
fn executable_kinds(path: &Path) -> Vec<&'static str> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let cache = object::ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return Vec::new();
    };
    if elf.section_by_name(".gopclntab").is_some() || elf.section_by_name(".go.buildinfo").is_some() {
        // Go's own TLS is the one it uses; its symbol tables are large, and read on the
        // pipeline's thread.
        return vec!["go"];
    }
    let mut kinds = Vec::new();
    for sym in elf.dynamic_symbols().chain(elf.symbols()).take(MAX_SYMBOLS) {
        let Ok(name) = sym.name() else { continue };
        let kind = match name {
            "SSL_read" | "SSL_write" => "openssl",
            "gnutls_record_recv" => "gnutls",
            // Rust's mangling keeps the crate name: _ZN6rustls... (legacy), ...6rustls... (v0).
            _ if name.contains("6rustls") => "rustls",
            _ => continue,
        };
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_by_file_name() {
        let line = |path: &str| format!("7f1c2a000000-7f1c2a1b0000 r-xp 00028000 fe:01 1234     {path}");
        let kinds: Vec<_> = [
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "/usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3",
            "/usr/lib/x86_64-linux-gnu/libssl3.so",
            "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so",
            "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
            "/usr/bin/python3.11",
        ]
        .iter()
        .map(|p| mapped_file_kind(&line(p)))
        .collect();
        assert_eq!(
            kinds,
            [
                Some("openssl"),
                Some("gnutls"),
                Some("nss"),
                Some("java"),
                None,
                None
            ]
        );
        assert_eq!(mapped_file("7ffd-7ffe r-xp 00000000 00:00 0      [vdso]"), None);
        assert_eq!(label(vec!["openssl", "java", "openssl"]), "java+openssl");
        assert_eq!(label(Vec::new()), UNKNOWN);
    }

    fn mapped_file_kind(line: &str) -> Option<&'static str> {
        mapped_file(line).and_then(library_kind)
    }

    /// This test binary links rustls (through ureq, for the HTTPS sinks); Debian's caddy (Go,
    /// stripped) is Go; a process that is gone is unknown.
    #[test]
    fn executables_by_contents() {
        let me = std::fs::canonicalize("/proc/self/exe").unwrap();
        assert_eq!(executable_kinds(&me), ["rustls"]);
        let mut libs = TlsLibraries::default();
        assert_eq!(libs.of_process(std::process::id()), "rustls");
        assert_eq!(libs.of_process(u32::MAX), UNKNOWN);
        let caddy = Path::new("/usr/bin/caddy");
        assert!(caddy.exists(), "Debian's caddy is installed (cargo xtask setup)");
        assert_eq!(executable_kinds(caddy), ["go"]);
    }
}
