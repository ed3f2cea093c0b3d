//! Socket-layer capture, the default where the kernel has it: data from the `sock:sock_send_length`
//! and `sock:sock_recv_length` tracepoints (tp_btf), lifecycle from `sock:inet_sock_set_state`
//! and `tcp:tcp_destroy_sock`. None of them is a syscall tracepoint, so processes that do no
//! socket I/O pay nothing, and socket I/O pays one typed hook after the call (see TOOLCHAIN.md:
//! a socket read 136 -> 154 ns, against 202 ns with sys_enter/sys_exit attached).
//!
//! A socket is known by its `struct sock *` from the moment TCP establishes it (role from the
//! handshake: SYN_SENT -> client, SYN_RECV -> server); it gets its name in events, (tgid, fd),
//! from the first I/O a process does on it, read from the syscall's saved registers. A socket
//! established before start is adopted on its first I/O (role from the listening ports).
use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use monitor_common::{
    AF_INET, AF_INET6, CLASS_HTTP, CLASS_OTHER, CLASS_TLS, ConnInfo, ConnKey, DIR_EGRESS, DIR_INGRESS,
    OPEN_FLAG_MIDSTREAM, ROLE_CLIENT, ROLE_SERVER, SEEDED_CLASSIFY_TRIES, SockAddr, Stat,
};

use super::emit::{emit_chunk, emit_close, emit_open};
use super::tls::learn_ssl_socket;
use super::{traced_pid_tgid, traced_process};
use crate::maps::{
    ARGS_IOVEC, ARGS_MSGHDR, ARGS_PLAIN, ARGS_SENDFILE, FD_OWNER, LISTEN_PORTS, OWNER_TGIDS, SOCK_FLAG_OWNED,
    SOCKS, SockConn, count, new_epoch,
};

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;
const IPPROTO_TCP: u16 = 6;
const MSG_PEEK: i32 = 2;

// x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
const NR_READ: u64 = 0;
const NR_WRITE: u64 = 1;
const NR_READV: u64 = 19;
const NR_WRITEV: u64 = 20;
const NR_SENDFILE: u64 = 40;
const NR_SENDTO: u64 = 44;
const NR_RECVFROM: u64 = 45;
const NR_SENDMSG: u64 = 46;
const NR_RECVMSG: u64 = 47;
const NR_SPLICE: u64 = 275;
const NR_RECVMMSG: u64 = 299;
const NR_SENDMMSG: u64 = 307;
const NR_IO_URING_ENTER: u64 = 426;

/// The part of x86_64 `struct pt_regs` (arch/x86/include/asm/ptrace.h) a syscall's arguments
/// are in: dx @96, si @104, di @112, orig_ax (the syscall number) @120.
#[repr(C)]
#[derive(Clone, Copy)]
struct SyscallRegs {
    dx: u64,
    si: u64,
    di: u64,
    orig_ax: u64,
}
const PT_REGS_DX: usize = 96;

/// The registers the current task entered its syscall with.
#[inline(always)]
fn syscall_regs() -> Option<SyscallRegs> {
    // SAFETY: both helpers take no pointer from us; the current task's BTF pointer is what
    // bpf_task_pt_regs expects, and its result is checked for null below.
    let regs = unsafe { generated::bpf_task_pt_regs(generated::bpf_get_current_task_btf()) };
    if regs == 0 {
        return None;
    }
    // Read in place, not through bpf_probe_read_kernel: the helper's result is a typed pointer to
    // the task's `struct pt_regs` (BTF), whose fields the verifier lets a tracing program load
    // directly (as faulting-safe loads), one helper call less on every socket I/O.
    let p = regs as *const u64;
    // SAFETY: `p` is the task's saved registers, checked non-null above; the four loads are the
    // u64 fields dx, si, di and orig_ax at their offsets (96..128, see SyscallRegs).
    unsafe {
        Some(SyscallRegs {
            dx: core::ptr::read_volatile(p.add(PT_REGS_DX / 8)),
            si: core::ptr::read_volatile(p.add(PT_REGS_DX / 8 + 1)),
            di: core::ptr::read_volatile(p.add(PT_REGS_DX / 8 + 2)),
            orig_ax: core::ptr::read_volatile(p.add(PT_REGS_DX / 8 + 3)),
        })
    }
}

// sock_send_length(struct sock *sk, int ret, int flags), fired after every socket send
// (net/socket.c, sock_sendmsg_nosec); sock_recv_length alike after every receive.
#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send(ctx: BtfTracePointContext) -> u32 {
    on_socket_io(&ctx, DIR_EGRESS);
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv(ctx: BtfTracePointContext) -> u32 {
    on_socket_io(&ctx, DIR_INGRESS);
    0
}

#[inline(always)]
fn on_socket_io(ctx: &BtfTracePointContext, direction: u32) {
    let sk: *mut core::ffi::c_void = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    let flags: i32 = ctx.arg(2);
    if ret <= 0 {
        return;
    }
    // A peek leaves the bytes in the socket: the read that takes them reports them.
    if direction == DIR_INGRESS && flags & MSG_PEEK != 0 {
        return;
    }
    let Some(id) = traced_pid_tgid() else { return };
    let key = sk as u64;
    let conn = match SOCKS.get_ptr_mut(key) {
        Some(c) => c,
        None => match adopt(sk, key) {
            Some(c) => c,
            None => return,
        },
    };
    let Some(regs) = syscall_regs() else { return };
    let nr = regs.orig_ax;
    // SAFETY: `conn` is a map entry found non-null before this line, valid for this program's run;
    // its fields are plain integers.
    if unsafe { (*conn).flags } & SOCK_FLAG_OWNED == 0 && !take_ownership(conn, key, id, &regs) {
        return;
    }
    // SAFETY: `conn` is a map entry found non-null before this line, valid for this program's run;
    // its fields are plain integers.
    let owner = unsafe { (*conn).owner };
    // SAFETY: `conn` is a map entry found non-null before this line, valid for this program's run;
    // its fields are plain integers.
    let info = unsafe { &raw mut (*conn).info };
    // SAFETY: `info` is the connection's map entry, found non-null before this function or line,
    // valid for this program's run; its fields are plain integers.
    let class = unsafe { (*info).class };
    if class == CLASS_OTHER {
        return;
    }
    // Inside SSL_read/SSL_write, this I/O tells which socket the SSL object uses.
    if class != CLASS_HTTP {
        learn_ssl_socket(
            id,
            owner.tgid,
            owner.fd,
            // SAFETY: `info` is the connection's map entry, found non-null before this function or
            // line, valid for this program's run; its fields are plain integers.
            unsafe { (*info).epoch },
            direction == DIR_INGRESS,
        );
        // Ciphertext: the SSL probes speak for this socket.
        if class == CLASS_TLS {
            return;
        }
    }
    let (kind, ptr, vlen) = match nr {
        NR_READ | NR_WRITE | NR_SENDTO | NR_RECVFROM => (ARGS_PLAIN, regs.si, 0),
        // readv/writev(fd, iov, iovcnt): iovcnt in dx.
        NR_READV | NR_WRITEV => (ARGS_IOVEC, regs.si, regs.dx),
        NR_SENDMSG | NR_RECVMSG => (ARGS_MSGHDR, regs.si, 0),
        NR_SENDFILE | NR_SPLICE => (ARGS_SENDFILE, 0, 0),
        NR_SENDMMSG | NR_RECVMMSG => {
            count(Stat::UnsupportedCall, 1);
            return;
        }
        // Kernel threads and anything else with no user buffer behind it.
        _ => return,
    };
    emit_chunk(owner, direction, ret as u64, kind, ptr, vlen, 0, info);
}

/// The first I/O on a socket names it (tgid, fd) and opens it in userspace; a process not
/// traced (`capture.processes`), io_uring, or a kernel thread leave it unowned or rejected.
#[inline(always)]
fn take_ownership(conn: *mut SockConn, sk: u64, id: u64, regs: &SyscallRegs) -> bool {
    let nr = regs.orig_ax;
    let fd = match nr {
        NR_READ | NR_WRITE | NR_READV | NR_WRITEV | NR_SENDFILE | NR_SENDTO | NR_RECVFROM | NR_SENDMSG
        | NR_RECVMSG | NR_SENDMMSG | NR_RECVMMSG => regs.di,
        // splice(fd_in, off_in, fd_out, ...): a send's socket is fd_out.
        NR_SPLICE => regs.dx,
        _ => {
            // io_uring: inline in io_uring_enter, or on an io worker ("iou-wrk-*", "iou-sqp-*").
            let comm = aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16]);
            if nr == NR_IO_URING_ENTER
                || (comm[0] == b'i' && comm[1] == b'o' && comm[2] == b'u' && comm[3] == b'-')
            {
                // SAFETY: `conn` is a map entry found non-null before this line, valid for this
                // program's run; its fields are plain integers.
                unsafe {
                    (*conn).flags |= SOCK_FLAG_OWNED;
                    (*conn).info.class = CLASS_OTHER;
                }
                count(Stat::IoUringConnections, 1);
            }
            return false;
        }
    };
    if traced_process().is_none() {
        // SAFETY: `conn` is a map entry found non-null before this line, valid for this program's
        // run; its fields are plain integers.
        unsafe {
            (*conn).flags |= SOCK_FLAG_OWNED;
            (*conn).info.class = CLASS_OTHER;
        }
        return false;
    }
    let owner = ConnKey {
        tgid: (id >> 32) as u32,
        fd: fd as u32,
    };
    // SAFETY: `conn` is a map entry found non-null before this line, valid for this program's run;
    // its fields are plain integers.
    unsafe {
        (*conn).owner = owner;
        (*conn).flags |= SOCK_FLAG_OWNED;
    }
    let _ = FD_OWNER.insert(owner, sk, 0);
    // Once per process, not per connection: an LRU update takes a lock.
    // SAFETY: map values are plain data: another CPU updating this one meanwhile can make
    // what is read stale, never invalid.
    if unsafe { OWNER_TGIDS.get(owner.tgid) }.is_none() {
        let _ = OWNER_TGIDS.insert(owner.tgid, 1, 0);
    }
    // SAFETY: `conn` is a map entry found non-null above; the block only reads its plain integer
    // fields.
    unsafe {
        emit_open(
            owner,
            (*conn).info.role,
            (*conn).local,
            (*conn).peer,
            u32::MAX,
            (*conn).open_flags,
            (*conn).info.epoch,
        );
    }
    true
}

/// A TCP socket established before start, seen on its first I/O since.
#[inline(always)]
fn adopt(sk: *mut core::ffi::c_void, key: u64) -> Option<*mut SockConn> {
    // Unix, UDP and other sockets are not ours (and are the common miss).
    // SAFETY: `sk` is the socket the tracepoint passed; the helper checks its type and returns null
    // for anything but a TCP socket.
    if unsafe { generated::bpf_skc_to_tcp_sock(sk) }.is_null() {
        return None;
    }
    // struct sock_common: skc_daddr @0, skc_rcv_saddr @4, skc_dport @12 (network order),
    // skc_num @14 (host order), skc_family @16: a layout unchanged since Linux 2.6.
    // SAFETY: the helper copies from kernel memory and returns an error on a bad address.
    let head: [u8; 18] = unsafe { bpf_probe_read_kernel(sk as *const [u8; 18]) }.ok()?;
    let family = u16::from_ne_bytes([head[16], head[17]]);
    let lport = u16::from_ne_bytes([head[14], head[15]]);
    let rport = u16::from_be_bytes([head[12], head[13]]);
    let mut local = SockAddr::EMPTY;
    let mut peer = SockAddr::EMPTY;
    // IPv6 addresses sit at config-dependent offsets: userspace reads them from /proc.
    if family == AF_INET {
        local.family = AF_INET;
        local.port = lport;
        local.addr[..4].copy_from_slice(&head[4..8]);
        peer.family = AF_INET;
        peer.port = rport;
        peer.addr[..4].copy_from_slice(&head[0..4]);
    } else if family != AF_INET6 {
        return None;
    }
    // SAFETY: map values are plain data: another CPU updating this one meanwhile can make
    // what is read stale, never invalid.
    let role = if unsafe { LISTEN_PORTS.get(lport) }.is_some() {
        ROLE_SERVER
    } else {
        ROLE_CLIENT
    };
    let conn = SockConn {
        // It may be in the middle of a body: allow a few chunks to find a message start.
        info: ConnInfo::new(role, SEEDED_CLASSIFY_TRIES, new_epoch()),
        owner: ConnKey { tgid: 0, fd: 0 },
        flags: 0,
        open_flags: OPEN_FLAG_MIDSTREAM,
        local,
        peer,
    };
    // BPF_NOEXIST: the lifecycle program may have raced us with a fresher entry.
    let _ = SOCKS.insert(key, conn, 1);
    count(Stat::ConnAdopted, 1);
    SOCKS.get_ptr_mut(key)
}

// sock:inet_sock_set_state: skaddr @8, oldstate @16, newstate @20, sport @24, dport @26,
// family @28, protocol @30, saddr @32, daddr @36, saddr_v6 @40, daddr_v6 @56; ports in host
// order (from .../format).
#[tracepoint]
pub fn sock_lifecycle(ctx: TracePointContext) -> u32 {
    let _ = try_sock_lifecycle(&ctx);
    0
}

fn try_sock_lifecycle(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    let protocol: u16 = unsafe { ctx.read_at(30)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    let old: i32 = unsafe { ctx.read_at(16)? };
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    let new: i32 = unsafe { ctx.read_at(20)? };
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    let sk: u64 = unsafe { ctx.read_at(8)? };
    match new {
        TCP_ESTABLISHED => {
            let role = match old {
                TCP_SYN_SENT => ROLE_CLIENT,
                TCP_SYN_RECV => ROLE_SERVER,
                _ => return Ok(()),
            };
            let Some((local, peer)) = super::sockets::state_addresses(ctx)? else {
                return Ok(());
            };
            let conn = SockConn {
                info: ConnInfo::new(role, 1, new_epoch()),
                owner: ConnKey { tgid: 0, fd: 0 },
                flags: 0,
                open_flags: 0,
                local,
                peer,
            };
            // Replaces whatever an earlier socket at this address left behind.
            if SOCKS.insert(sk, conn, 0).is_err() {
                count(Stat::ConnMapInsertFailed, 1);
            }
        }
        TCP_LISTEN => {
            // SAFETY: read_at copies from the program's context with a checked read (a bad offset
            // is an Err, never a fault); the offsets are the tracepoint's or the probed function's
            // (see above).
            let port: u16 = unsafe { ctx.read_at(24)? };
            // SAFETY: the map value is read at once; another CPU may update it meanwhile, which can
            // only make it stale, never invalid (plain data).
            let n = unsafe { LISTEN_PORTS.get(port) }.copied().unwrap_or(0);
            let _ = LISTEN_PORTS.insert(port, n + 1, 0);
        }
        TCP_CLOSE => {
            if old == TCP_LISTEN {
                // SAFETY: read_at copies from the program's context with a checked read (a bad
                // offset is an Err, never a fault); the offsets are the tracepoint's or the probed
                // function's (see above).
                let port: u16 = unsafe { ctx.read_at(24)? };
                // SAFETY: the map value is read at once; another CPU may update it meanwhile, which
                // can only make it stale, never invalid (plain data).
                match unsafe { LISTEN_PORTS.get(port) }.copied() {
                    Some(n) if n > 1 => {
                        let _ = LISTEN_PORTS.insert(port, n - 1, 0);
                    }
                    Some(_) => {
                        let _ = LISTEN_PORTS.remove(port);
                    }
                    None => {}
                }
            } else {
                close_sock(sk);
            }
        }
        _ => {}
    }
    Ok(())
}

// tcp:tcp_destroy_sock: skaddr @8. Every socket reaches TCP_CLOSE first; this is the backstop
// that keeps the map exact if one did not.
#[tracepoint]
pub fn sock_destroy(ctx: TracePointContext) -> u32 {
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    if let Ok(sk) = unsafe { ctx.read_at::<u64>(8) } {
        close_sock(sk);
    }
    0
}

/// Forgets a socket; reports its close when it was reported open and still owns its fd. This
/// runs whether the process called close() or exited (the kernel closes its sockets then).
#[inline(always)]
fn close_sock(sk: u64) {
    // SAFETY: map values are plain data: another CPU updating this one meanwhile can make
    // what is read stale, never invalid.
    let Some(conn) = (unsafe { SOCKS.get(sk) }).copied() else {
        return;
    };
    let _ = SOCKS.remove(sk);
    // Never opened in userspace (not traced, io_uring, no I/O yet): nothing to close there; the
    // FD_OWNER check below would say so too.
    if conn.flags & SOCK_FLAG_OWNED == 0 {
        return;
    }
    // SAFETY: map values are plain data: another CPU updating this one meanwhile can make
    // what is read stale, never invalid.
    if unsafe { FD_OWNER.get(conn.owner) }.copied() != Some(sk) {
        return;
    }
    let _ = FD_OWNER.remove(conn.owner);
    emit_close(conn.owner);
}
