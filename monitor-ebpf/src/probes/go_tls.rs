//! Go's crypto/tls: `(*Conn).Write` and `(*Conn).Read` in Go binaries (Go ≥ 1.18: the register
//! ABI, arguments in rax, rbx, rcx; the goroutine's `g` in r14). No uretprobe: it rewrites the
//! return address on the goroutine's stack, which Go's stack copying and traceback do not expect.
//! So Write is read at its entry (its plaintext is all in the argument), and Read at its entry
//! (the socket) and at the copy of the decrypted bytes to the caller's buffer (its one call
//! to runtime.memmove), or, in a Read built otherwise, at each of its RET instructions (rax is
//! the count; single-stepped, so slow), all found by decoding the function
//! (capture/tls_sites/go.rs). Every site is an instruction the kernel emulates but the RETs.
//! The socket comes straight from the Conn: the fd of the net.TCPConn it wraps, or of the one
//! inside a wrapper conn that embeds it (offsets in monitor_common::go), taken only when the
//! capture knows that socket of the process.
use aya_ebpf::{bindings::pt_regs, helpers::bpf_probe_read_user, macros::uprobe, programs::ProbeContext};
use monitor_common::{ConnInfo, ConnKey, DATA_FLAG_TLS, DIR_EGRESS, DIR_INGRESS, Stat, go};

use super::emit::emit_chunk;
use super::tls::conn_info;
use super::traced_process;
use crate::maps::{ARGS_PLAIN, GO_ARGS, GoArgs, GoKey, SSL_ARGS_DONE, count};

/// The probed entry is the `jbe` of the function's stack check (tls_sites::go_entry): with CF or
/// ZF set it jumps to runtime.morestack, which grows the stack and starts the call over, so that
/// hit is not the call's (the repeat is).
const JBE_TAKEN: u64 = 0x1 | 0x40;

#[inline(always)]
fn regs(ctx: &ProbeContext) -> pt_regs {
    // SAFETY: a uprobe's context is the task's saved registers, readable for the program's run.
    unsafe { *ctx.regs }
}

#[inline(always)]
fn read_u64(addr: u64) -> Option<u64> {
    // SAFETY: the helper copies from user memory and returns an error on an unmapped address.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// The fd of a *net.TCPConn: conn.fd (*netFD) -> pfd.Sysfd. None when a pointer is unreadable
/// or the value is no fd.
#[inline(always)]
fn tcpconn_fd(tcpconn: u64) -> Option<u32> {
    let netfd = read_u64(tcpconn + go::TCPCONN_NETFD)?;
    let fd = read_u64(netfd + go::NETFD_SYSFD)? as i64;
    (0..i32::MAX as i64).contains(&fd).then_some(fd as u32)
}

/// The socket under a `*tls.Conn` of process `tgid`: Conn.conn (a net.Conn interface) holds a
/// *net.TCPConn, or a wrapper embedding a net.Conn first, up to MAX_WRAPS deep. Each reading
/// is taken only if the process has that socket in the capture's table: what a wrapper's bytes
/// give when read as a TCPConn is no fd of a connection (an itab's hash, a pointer), so a wrong
/// reading is not a connection and the next level is tried. None: TlsFdUnknown.
#[inline(always)]
fn conn_socket(tgid: u32, conn: u64) -> Option<(ConnKey, *mut ConnInfo)> {
    let mut inner = read_u64(conn + go::CONN_NET_CONN_DATA)?;
    for _ in 0..=go::MAX_WRAPS {
        if let Some(fd) = tcpconn_fd(inner) {
            let key = ConnKey { tgid, fd };
            if let Some(info) = conn_info(key) {
                return Some((key, info));
            }
        }
        inner = read_u64(inner + go::EMBEDDED_CONN_DATA)?;
    }
    None
}

/// `func (c *Conn) Write(b []byte) (int, error)`: c in rax, b's pointer and length in rbx, rcx.
/// Go writes all of b or fails the connection, so the entry has the whole plaintext.
#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    let r = regs(&ctx);
    if r.eflags & JBE_TAKEN != 0 || r.rcx == 0 {
        return 0;
    }
    let Some(id) = traced_process() else { return 0 };
    let Some((key, info)) = conn_socket((id >> 32) as u32, r.rax) else {
        count(Stat::TlsFdUnknown, 1);
        return 0;
    };
    emit_chunk(key, DIR_EGRESS, r.rcx, ARGS_PLAIN, r.rbx, 0, DATA_FLAG_TLS, info);
    0
}

/// `func (c *Conn) Read(b []byte) (int, error)`: the buffer and the socket, for the return.
#[uprobe]
pub fn go_tls_read(ctx: ProbeContext) -> u32 {
    let r = regs(&ctx);
    if r.eflags & JBE_TAKEN != 0 {
        return 0;
    }
    let Some(id) = traced_process() else { return 0 };
    let tgid = (id >> 32) as u32;
    let Some((conn, _)) = conn_socket(tgid, r.rax) else {
        count(Stat::TlsFdUnknown, 1);
        return 0;
    };
    let key = GoKey {
        tgid,
        _pad: 0,
        g: r.r14,
    };
    let args = GoArgs {
        buf: r.rbx,
        fd: conn.fd,
        flags: 0,
    };
    match GO_ARGS.get_ptr_mut(key) {
        // SAFETY: `p` is this goroutine's entry, found non-null; only its own calls write it.
        Some(p) => unsafe { *p = args },
        None => {
            if GO_ARGS.insert(key, args, 0).is_err() {
                count(Stat::ArgsMapFull, 1);
            }
        }
    }
    0
}

/// At a RET of `(*Conn).Read`: n in rax.
#[uprobe]
pub fn go_tls_read_return(ctx: ProbeContext) -> u32 {
    let r = regs(&ctx);
    emit_read(r.r14, r.rax as i64, None);
    0
}

/// At Read's `call runtime.memmove(dst, src, n)`: the decrypted bytes going into the caller's
/// buffer, read from their source (rbx: the Conn's decrypted record; the destination in rax
/// still holds what was there before the copy), n in rcx, before Read returns n. The call is
/// emulated (cheap), where a RET would be single-stepped.
#[uprobe]
pub fn go_tls_read_copy(ctx: ProbeContext) -> u32 {
    let r = regs(&ctx);
    emit_read(r.r14, r.rcx as i64, Some(r.rbx));
    0
}

/// `n` bytes read by the Read in flight on goroutine `g` (saved by go_tls_read), from `from` or
/// else the caller's buffer; the call is marked done, so it emits once.
#[inline(always)]
fn emit_read(g: u64, n: i64, from: Option<u64>) {
    let key = GoKey {
        tgid: (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        g,
    };
    let Some(p) = GO_ARGS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: `p` is this goroutine's entry, found non-null; only its own calls write it.
    let args = unsafe { *p };
    if args.flags & SSL_ARGS_DONE != 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { (*p).flags |= SSL_ARGS_DONE };
    if n <= 0 {
        return;
    }
    let conn = ConnKey {
        tgid: key.tgid,
        fd: args.fd,
    };
    let Some(info) = conn_info(conn) else {
        count(Stat::TlsFdUnknown, 1);
        return;
    };
    let ptr = from.unwrap_or(args.buf);
    emit_chunk(
        conn,
        DIR_INGRESS,
        n as u64,
        ARGS_PLAIN,
        ptr,
        0,
        DATA_FLAG_TLS,
        info,
    );
}
