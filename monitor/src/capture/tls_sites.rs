//! Where the SSL uprobes go in a library, so that a hit costs ~0.4 µs and not ~14 µs.
//!
//! x86 uprobes emulate a few instructions (push of a register, nops, direct calls and jumps) and
//! single-step every other one out of line, which costs about 14 µs a hit on this VM
//! (TOOLCHAIN.md). Debian's libssl 3.0 starts `SSL_read`, `SSL_write` and their `_ex` forms
//! with `sub $0x18,%rsp`; all four call an internal function (`ssl_read_internal`,
//! `ssl_write_internal`: `(SSL *, void *buf, size_t num, size_t *count)`, 1 on success) that
//! starts with `push`. So, in order of preference:
//! 1. the internal function both exported forms call (found by decoding their direct calls),
//!    probed with the `_ex` semantics: the count comes back through the 4th argument;
//! 2. each exported function at its first instruction when the kernel emulates it, or at the
//!    one after `endbr64` (which leaves the stack as it was, so the return probe still works);
//! 3. the exported entry, single-stepped: a slow site, reported.
mod go;

use std::collections::HashMap;
use std::path::Path;

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Mnemonic, OpKind};
use log::warn;
use object::{Object, ObjectSection, ObjectSymbol, ReadRef, SectionKind};

/// One uprobe (with the shared return probe at the same place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSite {
    /// The entry program: `ssl_read`/`ssl_write` (count returned) or `ssl_read_ex`/`ssl_write_ex`
    /// (count through the 4th argument).
    pub program: &'static str,
    /// Offset in the file, as uprobes are attached.
    pub file_offset: u64,
    /// What is probed, for the log: `SSL_read`, `ssl_read_internal (called by SSL_read)`, ...
    pub label: String,
    /// The kernel emulates the instruction there (cheap); false: single-stepped.
    pub emulated: bool,
    /// The shared return probe (`ssl_return`, a uretprobe) goes on the same site. Not for Go,
    /// whose return sites are probes of their own (`go_tls_read_return` on each RET).
    pub with_return: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("not an ELF object the probes understand: {0}")]
    Elf(#[from] object::Error),
    #[error("no SSL_read/SSL_write symbol")]
    NoSymbols,
}

/// OpenSSL and BoringSSL, wherever they are linked (libssl, node, statically linked servers):
/// (exported plain form, its program, exported _ex form, its program).
const FAMILIES: &[(&str, &str, &str, &str)] = &[
    ("SSL_read", "ssl_read", "SSL_read_ex", "ssl_read_ex"),
    ("SSL_write", "ssl_write", "SSL_write_ex", "ssl_write_ex"),
];

/// GnuTLS: (function, its program), in order of preference per direction. gnutls_record_send
/// is a tail call to gnutls_record_send2 (same first three arguments): probing send2 sees both.
const GNUTLS: &[&[(&str, &str)]] = &[
    &[("gnutls_record_recv", "gnutls_recv")],
    &[
        ("gnutls_record_send2", "gnutls_send"),
        ("gnutls_record_send", "gnutls_send"),
    ],
];

/// Functions longer than this are read only this far (enough for their calls and entries).
const MAX_CODE: u64 = 4096;

/// Reads only the symbol tables and the few functions probed: a node binary is ~100 MB.
pub fn plan_file(path: &Path) -> Result<Vec<ProbeSite>, SiteError> {
    let file = std::fs::File::open(path).map_err(|e| SiteError::Read(path.display().to_string(), e))?;
    let cache = object::ReadCache::new(file);
    plan(&cache)
}

/// The probe sites for the TLS functions of one ELF file (OpenSSL/BoringSSL and GnuTLS).
pub fn plan<'d, R: ReadRef<'d>>(data: R) -> Result<Vec<ProbeSite>, SiteError> {
    let elf = object::File::parse(data)?;
    let go = go::plan(&elf);
    let mut symbols: HashMap<String, (u64, u64)> = HashMap::new();
    // A Go binary's own symbol table is Go's (tens of thousands of names, each a read of the
    // file): OpenSSL in it would be a dynamic library or exported. Skipping it keeps the scan of a
    // just-started Go program, which races its first TLS calls, to a few milliseconds.
    let own_symbols = if go.is_some() { None } else { Some(elf.symbols()) };
    for sym in elf.dynamic_symbols().chain(own_symbols.into_iter().flatten()) {
        if !sym.is_definition() {
            continue;
        }
        if let Ok(name) = sym.name() {
            if name.starts_with("SSL_read")
                || name.starts_with("SSL_write")
                || name.starts_with("gnutls_record_")
            {
                symbols
                    .entry(name.to_string())
                    .or_insert((sym.address(), sym.size()));
            }
        }
    }
    let mut sites = match go {
        Some(Ok(go)) => go,
        Some(Err(e)) => {
            warn!("Go crypto/tls not probed: {e}");
            Vec::new()
        }
        None => Vec::new(),
    };
    if symbols.is_empty() {
        return if sites.is_empty() {
            Err(SiteError::NoSymbols)
        } else {
            Ok(sites)
        };
    }
    let code = |addr: u64, size: u64| -> Option<Code_> {
        elf.sections().find_map(|s| {
            let (start, len) = (s.address(), s.size());
            if s.kind() != SectionKind::Text || addr < start || addr >= start + len {
                return None;
            }
            let (file_off, _) = s.file_range()?;
            let size = if size == 0 { MAX_CODE } else { size.min(MAX_CODE) };
            let size = size.min(start + len - addr);
            let bytes = s.data_range(addr, size).ok()??;
            Some(Code_ {
                bytes: bytes.to_vec(),
                vaddr: addr,
                section: (start, start + len, file_off),
            })
        })
    };
    for choices in GNUTLS {
        for (name, prog) in *choices {
            let Some(f) = symbols.get(*name).and_then(|&(a, s)| code(a, s)) else {
                continue;
            };
            sites.push(entry_site(&f, prog, name));
            break;
        }
    }
    for (plain, plain_prog, ex, ex_prog) in FAMILIES {
        let p = symbols.get(*plain).and_then(|&(a, s)| code(a, s));
        let e = symbols.get(*ex).and_then(|&(a, s)| code(a, s));
        // 1. The internal function both forms call.
        if let (Some(p), Some(e)) = (&p, &e) {
            let theirs = branch_targets(e);
            let shared = branch_targets(p).into_iter().find(|t| theirs.contains(t));
            if let Some(target) = shared {
                if let Some(internal) = code(target, 64) {
                    if let Some(off) = emulated_entry(&internal.bytes, target) {
                        sites.push(ProbeSite {
                            program: ex_prog,
                            file_offset: internal.file_offset(target + off),
                            label: format!("{}_internal (called by {plain} and {ex})", plain.to_lowercase()),
                            emulated: true,
                            with_return: true,
                        });
                        continue;
                    }
                }
            }
        }
        // 2 and 3. The exported functions themselves.
        for (f, prog, name) in [(&p, plain_prog, plain), (&e, ex_prog, ex)] {
            let Some(f) = f else { continue };
            sites.push(entry_site(f, prog, name));
        }
    }
    if sites.is_empty() {
        return Err(SiteError::NoSymbols);
    }
    Ok(sites)
}

/// A function probed at its own entry: its first emulated instruction, else (slow) its first.
fn entry_site(f: &Code_, program: &'static str, name: &str) -> ProbeSite {
    let (off, emulated) = match emulated_entry(&f.bytes, f.vaddr) {
        Some(off) => (off, true),
        None => (0, false),
    };
    ProbeSite {
        program,
        file_offset: f.file_offset(f.vaddr + off),
        label: name.to_string(),
        emulated,
        with_return: true,
    }
}

struct Code_ {
    bytes: Vec<u8>,
    vaddr: u64,
    /// (start address, end address, file offset) of the containing section.
    section: (u64, u64, u64),
}

impl Code_ {
    fn file_offset(&self, vaddr: u64) -> u64 {
        vaddr - self.section.0 + self.section.2
    }
}

/// Targets of the direct calls and jumps that leave the function, in the section's code, in order.
fn branch_targets(f: &Code_) -> Vec<u64> {
    let end = f.vaddr + f.bytes.len() as u64;
    let mut out = Vec::new();
    let mut decoder = Decoder::with_ip(64, &f.bytes, f.vaddr, DecoderOptions::NONE);
    for insn in &mut decoder {
        let direct = matches!(
            insn.flow_control(),
            FlowControl::Call | FlowControl::UnconditionalBranch
        ) && insn.op0_kind() == OpKind::NearBranch64;
        if !direct {
            continue;
        }
        let t = insn.near_branch_target();
        let in_code = t >= f.section.0 && t < f.section.1;
        if in_code && (t < f.vaddr || t >= end) && !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// Offset from the function's start of a cheap probe site that keeps the return address at
/// the stack top: the first instruction if the kernel emulates it, or the one after endbr64.
pub fn emulated_entry(bytes: &[u8], vaddr: u64) -> Option<u64> {
    let mut decoder = Decoder::with_ip(64, bytes, vaddr, DecoderOptions::NONE);
    let first = decoder.decode();
    if first.is_invalid() {
        return None;
    }
    if emulated(&first) {
        return Some(0);
    }
    if first.code() == Code::Endbr64 {
        let second = decoder.decode();
        if !second.is_invalid() && emulated(&second) {
            return Some(first.len() as u64);
        }
    }
    None
}

/// Instructions x86 uprobes run without single-stepping (arch/x86/kernel/uprobes.c): push of a
/// register, nops, and direct relative calls, jumps and conditional jumps.
fn emulated(insn: &iced_x86::Instruction) -> bool {
    match insn.mnemonic() {
        Mnemonic::Push => insn.op0_kind() == OpKind::Register,
        Mnemonic::Nop => true,
        Mnemonic::Call | Mnemonic::Jmp => insn.op0_kind() == OpKind::NearBranch64,
        _ => insn.is_jcc_short_or_near(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_entries_the_kernel_emulates() {
        // push %r13 / sub $0x18,%rsp / endbr64; push %rbp / endbr64; sub / nop
        assert_eq!(emulated_entry(&[0x41, 0x55], 0x1000), Some(0));
        assert_eq!(emulated_entry(&[0x48, 0x83, 0xec, 0x18], 0x1000), None);
        assert_eq!(emulated_entry(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55], 0x1000), Some(4));
        assert_eq!(
            emulated_entry(&[0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x83, 0xec, 0x18], 0x1000),
            None
        );
        assert_eq!(emulated_entry(&[0x90], 0x1000), Some(0));
        assert_eq!(emulated_entry(&[], 0x1000), None);
    }

    /// Debian's libssl 3.0 (a real part of this machine; the TLS tier uses it too).
    #[test]
    fn debian_libssl_probes_the_internal_functions() {
        let lib = Path::new("/lib/x86_64-linux-gnu/libssl.so.3");
        let sites = plan_file(lib).expect("Debian's libssl3 is installed (cargo xtask setup)");
        assert_eq!(sites.len(), 2, "{sites:#?}");
        assert!(sites.iter().all(|s| s.emulated), "{sites:#?}");
        assert_eq!(sites[0].program, "ssl_read_ex");
        assert!(sites[0].label.starts_with("ssl_read_internal"), "{sites:#?}");
        assert_eq!(sites[1].program, "ssl_write_ex");
        // The site is a push, not SSL_read's own `sub`.
        let data = std::fs::read(lib).unwrap();
        for s in &sites {
            let b = data[s.file_offset as usize];
            assert!(
                b == 0x41 || (0x50..=0x57).contains(&b),
                "{s:?} starts with {b:#x}"
            );
        }
    }

    /// Debian's libgnutls30 (wget's TLS): recv at its exported entry (a `sub`: single-stepped,
    /// reported), send at gnutls_record_send2, which starts with a push.
    #[test]
    fn debian_gnutls_probes_recv_and_send2() {
        let lib = Path::new("/lib/x86_64-linux-gnu/libgnutls.so.30");
        let sites = plan_file(lib).expect("Debian's libgnutls30 is installed (wget depends on it)");
        let programs: Vec<&str> = sites.iter().map(|s| s.program).collect();
        assert_eq!(programs, ["gnutls_recv", "gnutls_send"], "{sites:#?}");
        assert_eq!(sites[1].label, "gnutls_record_send2");
        assert!(sites[1].emulated, "{sites:#?}");
    }

    /// OpenSSL linked into an executable (node carries its own): found by symbol, whatever the
    /// file is called; a library without TLS functions has no sites.
    #[test]
    fn openssl_inside_an_executable_and_none_in_libc() {
        if let Ok(node) = which("node") {
            let sites = plan_file(&node).expect("node exports SSL_read and SSL_write");
            assert!(
                sites.iter().any(|s| s.program.starts_with("ssl_read")),
                "{sites:#?}"
            );
            assert!(sites.iter().any(|s| s.program.starts_with("ssl_write")));
        }
        assert!(matches!(
            plan_file(Path::new("/lib/x86_64-linux-gnu/libc.so.6")),
            Err(SiteError::NoSymbols)
        ));
    }

    fn which(name: &str) -> std::io::Result<std::path::PathBuf> {
        let paths = std::env::var("PATH").unwrap_or_default();
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.exists())
            .map(|p| std::fs::canonicalize(p).unwrap_or_default())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
}
