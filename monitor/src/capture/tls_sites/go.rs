//! Go's crypto/tls in a Go binary: where `(*Conn).Read` and `(*Conn).Write` are, from the
//! function table every Go binary keeps for its own tracebacks (`.gopclntab`), so a stripped
//! binary is probed as well as one with a symbol table; and where in them the probes go.
//!
//! Go ≥ 1.18 only: the register ABI (arguments in rax, rbx, rcx; `g` in r14) that the kernel
//! programs read (monitor-ebpf/src/probes/go_tls.rs), and the function table layout read here.
//! The struct offsets to the socket are in `monitor_common::go`, the same for every such version.
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind};

use super::ProbeSite;

pub(super) const READ: &str = "crypto/tls.(*Conn).Read";
pub(super) const WRITE: &str = "crypto/tls.(*Conn).Write";
const MEMMOVE: &str = "runtime.memmove";

/// The function table's magic by version family (runtime/symtab.go); what is read here is laid
/// out the same in both.
const MAGIC_GO_1_18: u32 = 0xffff_fff0;
const MAGIC_GO_1_20: u32 = 0xffff_fff1;
/// Go 1.16 and 1.17; earlier ones end in 0xfb.
const MAGIC_GO_1_16: u32 = 0xffff_fffa;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum GoError {
    #[error("Go before 1.18 (function table magic {0:#x}): its calling convention is not supported")]
    TooOld(u32),
    #[error("unknown Go function table (magic {0:#x})")]
    UnknownMagic(u32),
    #[error("malformed .gopclntab: {0}")]
    Malformed(&'static str),
    #[error("{0} has no stack check to probe at")]
    NoStackCheck(&'static str),
}

/// The function table of a Go ≥ 1.18 binary (`runtime.pcHeader` and what follows it).
pub(super) struct FuncTable<'a> {
    data: &'a [u8],
    nfunc: usize,
    /// Address the entry offsets count from (`runtime.text`).
    text_start: u64,
    funcnames: usize,
    functab: usize,
}

impl<'a> FuncTable<'a> {
    /// `text` says where `runtime.text` is when the header leaves it 0 (a position-independent
    /// binary, where it is relocated at load).
    pub(super) fn parse(data: &'a [u8], text: impl FnOnce() -> u64) -> Result<Self, GoError> {
        let magic = u32_at(data, 0).ok_or(GoError::Malformed("no header"))?;
        match magic {
            MAGIC_GO_1_18 | MAGIC_GO_1_20 => {}
            MAGIC_GO_1_16 | 0xffff_fffb => return Err(GoError::TooOld(magic)),
            m => return Err(GoError::UnknownMagic(m)),
        }
        if data.get(7) != Some(&8) {
            return Err(GoError::Malformed("not a 64-bit table"));
        }
        let word = |i: usize| u64_at(data, 8 + 8 * i).ok_or(GoError::Malformed("short header"));
        let nfunc = word(0)? as usize;
        let text_start = match word(2)? {
            0 => text(),
            t => t,
        };
        let funcnames = word(3)? as usize;
        let functab = word(7)? as usize;
        let table_end = nfunc
            .checked_add(1)
            .and_then(|n| n.checked_mul(8))
            .and_then(|n| n.checked_add(functab));
        if funcnames >= data.len() || table_end.is_none_or(|end| end > data.len()) {
            return Err(GoError::Malformed("offsets outside the table"));
        }
        Ok(FuncTable {
            data,
            nfunc,
            text_start,
            funcnames,
            functab,
        })
    }

    /// (address, size) of the function named `name`; the size runs to the next function (padding
    /// included).
    pub(super) fn find(&self, name: &str) -> Option<(u64, u64)> {
        let want = name.as_bytes();
        (0..self.nfunc).find_map(|i| {
            let at = self.functab + 8 * i;
            let entry = u32_at(self.data, at)?;
            let func = self.functab + u32_at(self.data, at + 4)? as usize;
            let name_off = u32_at(self.data, func + 4)? as usize;
            let start = self.funcnames.checked_add(name_off)?;
            let named = self.data.get(start..start + want.len() + 1)?;
            if &named[..want.len()] != want || named[want.len()] != 0 {
                return None;
            }
            let next = u32_at(self.data, at + 8)?;
            Some((self.text_start + entry as u64, next.checked_sub(entry)? as u64))
        })
    }
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        d.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The probe sites for crypto/tls in a Go binary; None if the file is not a Go binary.
/// Write: its entry (the plaintext is in the argument). Read: its entry (the socket) and the
/// one `call runtime.memmove` that copies the decrypted bytes into the caller's buffer
/// (destination in rax, count in rcx); a direct call, which the kernel emulates. A Read built
/// otherwise is probed at each RET instead (the count in rax, the buffer saved at the entry):
/// single-stepped, ~14 µs a call, so reported as slow. Entries are probed at the stack check's
/// `jbe`, an instruction the kernel emulates, with the arguments still in their registers.
pub(super) fn plan<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
) -> Option<Result<Vec<ProbeSite>, GoError>> {
    let section = elf.section_by_name(".gopclntab")?;
    let data = section.data().ok()?;
    Some(plan_functions(elf, data))
}

fn plan_functions<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
    table: &[u8],
) -> Result<Vec<ProbeSite>, GoError> {
    // Only when the header does not say (a position-independent binary): a walk of the symbols.
    let text = || {
        elf.symbols()
            .find(|s| s.name() == Ok("runtime.text"))
            .map(|s| s.address())
            .or_else(|| elf.section_by_name(".text").map(|s| s.address()))
            .unwrap_or(0)
    };
    let table = FuncTable::parse(table, text)?;
    let memmove = table.find(MEMMOVE).map(|(addr, _)| addr);
    let mut sites = Vec::new();
    for (name, entry_program, is_read) in [(WRITE, "go_tls_write", false), (READ, "go_tls_read", true)] {
        let Some((addr, size)) = table.find(name) else {
            continue;
        };
        let Some((bytes, file_offset)) = code(elf, addr, size) else {
            return Err(GoError::Malformed("a function outside the executable sections"));
        };
        let entry = stack_check_jbe(bytes, addr).ok_or(GoError::NoStackCheck(name))?;
        sites.push(ProbeSite {
            program: entry_program,
            file_offset: file_offset + entry,
            label: name.to_string(),
            emulated: true,
            with_return: false,
        });
        if !is_read {
            continue;
        }
        let copies = memmove.map(|m| calls_to(bytes, addr, m)).unwrap_or_default();
        if let [copy] = copies[..] {
            sites.push(ProbeSite {
                program: "go_tls_read_copy",
                file_offset: file_offset + copy,
                label: format!("{name} (its copy to the caller)"),
                emulated: true,
                with_return: false,
            });
            continue;
        }
        for ret in returns(bytes, addr) {
            sites.push(ProbeSite {
                program: "go_tls_read_return",
                file_offset: file_offset + ret,
                label: format!("{name} (its RET instructions)"),
                emulated: false,
                with_return: false,
            });
        }
    }
    Ok(sites)
}

/// A function's bytes and the file offset of its first.
fn code<'a, 'd: 'a, R: object::ReadRef<'d>>(
    elf: &'a object::File<'d, R>,
    addr: u64,
    size: u64,
) -> Option<(&'d [u8], u64)> {
    elf.sections().find_map(|s| {
        let (start, len) = (s.address(), s.size());
        if s.kind() != SectionKind::Text || addr < start || addr + size > start + len {
            return None;
        }
        let (file_off, _) = s.file_range()?;
        Some((s.data_range(addr, size).ok()??, addr - start + file_off))
    })
}

/// Offset of the `jbe` to runtime.morestack that every Go function with a frame begins with:
/// `cmp 0x10(%r14),%rsp` (or `lea -N(%rsp),%r12; cmp 0x10(%r14),%r12` for large frames), `jbe`.
fn stack_check_jbe(bytes: &[u8], vaddr: u64) -> Option<u64> {
    let mut decoder = Decoder::with_ip(64, bytes, vaddr, DecoderOptions::NONE);
    let mut compared = false;
    for insn in decoder.iter().take(3) {
        match insn.mnemonic() {
            Mnemonic::Lea if !compared => {}
            Mnemonic::Cmp if insn.memory_base() == Register::R14 => compared = true,
            Mnemonic::Jbe if compared => return Some(insn.ip() - vaddr),
            _ => return None,
        }
    }
    None
}

/// Offsets of the function's direct calls to `target`.
fn calls_to(bytes: &[u8], vaddr: u64, target: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, bytes, vaddr, DecoderOptions::NONE);
    decoder
        .iter()
        .filter(|i| i.mnemonic() == Mnemonic::Call && i.op0_kind() == OpKind::NearBranch64)
        .filter(|i| i.near_branch_target() == target)
        .map(|i| i.ip() - vaddr)
        .collect()
}

/// Offsets of the function's RET instructions (Go puts no data in its code, so a linear
/// decoding sees every instruction).
fn returns(bytes: &[u8], vaddr: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, bytes, vaddr, DecoderOptions::NONE);
    decoder
        .iter()
        .filter(|i| i.mnemonic() == Mnemonic::Ret)
        .map(|i| i.ip() - vaddr)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function table of `funcs` (name, entry offset, size) with the given magic.
    fn table(magic: u32, text_start: u64, funcs: &[(&str, u32, u32)]) -> Vec<u8> {
        let header = 8 + 8 * 8;
        let mut names = Vec::new();
        let mut name_offs = Vec::new();
        for (n, _, _) in funcs {
            name_offs.push(names.len() as u32);
            names.extend_from_slice(n.as_bytes());
            names.push(0);
        }
        let funcnames = header;
        let functab = funcnames + names.len();
        let mut functab_bytes = Vec::new();
        let mut funcs_bytes = Vec::new();
        let func_base = 8 * (funcs.len() + 1);
        for (i, (_, entry, _)) in funcs.iter().enumerate() {
            functab_bytes.extend_from_slice(&entry.to_le_bytes());
            functab_bytes.extend_from_slice(&((func_base + funcs_bytes.len()) as u32).to_le_bytes());
            funcs_bytes.extend_from_slice(&entry.to_le_bytes());
            funcs_bytes.extend_from_slice(&name_offs[i].to_le_bytes());
        }
        let end = funcs.last().map(|&(_, e, s)| e + s).unwrap_or(0);
        functab_bytes.extend_from_slice(&end.to_le_bytes());
        functab_bytes.extend_from_slice(&0u32.to_le_bytes());
        let mut d = Vec::new();
        d.extend_from_slice(&magic.to_le_bytes());
        d.extend_from_slice(&[0, 0, 1, 8]);
        for w in [
            funcs.len() as u64,
            0,
            text_start,
            funcnames as u64,
            0,
            0,
            0,
            functab as u64,
        ] {
            d.extend_from_slice(&w.to_le_bytes());
        }
        d.extend(names);
        d.extend(functab_bytes);
        d.extend(funcs_bytes);
        d
    }

    /// Both version families the probes support read alike; older ones and junk are refused.
    #[test]
    fn function_tables_of_each_supported_version_family() {
        let funcs = [
            ("crypto/tls.(*Conn).Readx", 0x100, 0x20),
            (READ, 0x200, 0x400),
            (WRITE, 0x600, 0x2c0),
        ];
        for magic in [MAGIC_GO_1_18, MAGIC_GO_1_20] {
            let d = table(magic, 0x401000, &funcs);
            let t = FuncTable::parse(&d, || 0).unwrap();
            assert_eq!(t.find(READ), Some((0x401200, 0x400)));
            assert_eq!(t.find(WRITE), Some((0x401600, 0x2c0)));
            assert_eq!(t.find("crypto/tls.(*Conn).Rea"), None);
            // Position independent: the header's text start is 0, the caller's is used.
            let pie = table(magic, 0, &funcs);
            assert_eq!(
                FuncTable::parse(&pie, || 0x1000).unwrap().find(READ),
                Some((0x1200, 0x400))
            );
        }
        for (magic, want) in [
            (MAGIC_GO_1_16, GoError::TooOld(MAGIC_GO_1_16)),
            (0x1234_5678, GoError::UnknownMagic(0x1234_5678)),
        ] {
            assert_eq!(FuncTable::parse(&table(magic, 0, &funcs), || 0).err(), Some(want));
        }
        let mut cut = table(MAGIC_GO_1_20, 0, &funcs);
        cut.truncate(90);
        assert!(matches!(FuncTable::parse(&cut, || 0), Err(GoError::Malformed(_))));
    }

    /// Go 1.19's prologues (small and large frames) and what is not one.
    #[test]
    fn the_stack_check_jump_is_the_entry_site() {
        // cmp 0x10(%r14),%rsp; jbe rel32; sub $0x68,%rsp
        let small = [
            0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xc2, 0x03, 0, 0, 0x48, 0x83, 0xec, 0x68,
        ];
        assert_eq!(stack_check_jbe(&small, 0x1000), Some(4));
        // lea -0x1018(%rsp),%r12; cmp 0x10(%r14),%r12; jbe rel8
        let large = [
            0x4c, 0x8d, 0xa4, 0x24, 0xe8, 0xef, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x76, 0x10,
        ];
        assert_eq!(stack_check_jbe(&large, 0x1000), Some(12));
        // push %rbp; mov %rsp,%rbp (C code): none.
        assert_eq!(stack_check_jbe(&[0x55, 0x48, 0x89, 0xe5], 0x1000), None);
        // mov 0x10(%rsp),%rax; ret
        let code = [
            0x48, 0x8b, 0x44, 0x24, 0x10, 0xc3, 0x48, 0x8b, 0x44, 0x24, 0x10, 0xc3,
        ];
        assert_eq!(returns(&code, 0x1000), vec![5, 11]);
    }

    /// Debian's caddy (Go 1.19, stripped: the function table is all there is; built with cgo).
    #[test]
    fn debian_caddy_is_planned_from_its_function_table() {
        let caddy = std::path::Path::new("/usr/bin/caddy");
        let sites = super::super::plan_file(caddy).expect("Debian's caddy is installed (cargo xtask setup)");
        let programs: Vec<&str> = sites.iter().map(|s| s.program).collect();
        assert_eq!(
            programs,
            ["go_tls_write", "go_tls_read", "go_tls_read_copy"],
            "{sites:#?}"
        );
        assert!(sites.iter().all(|s| s.emulated && !s.with_return), "{sites:#?}");
        let data = std::fs::read(caddy).unwrap();
        // Entries on a jbe (0x76 or 0x0f 0x86), the copy on a call rel32.
        for s in &sites {
            let at = s.file_offset as usize;
            let ok = match s.program {
                "go_tls_read_copy" => data[at] == 0xe8,
                _ => data[at] == 0x76 || data[at..at + 2] == [0x0f, 0x86],
            };
            assert!(ok, "{s:?} at {:x?}", &data[at..at + 2]);
        }
    }
}
