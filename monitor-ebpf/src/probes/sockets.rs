//! Syscall-tracepoint lifecycle (the fallback mode): accept (server role), connect (client role), close, and the TCP state
//! tracepoint that tells us each socket's local address.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use monitor_common::{
    AF_INET, AF_INET6, ConnInfo, ConnKey, EVENT_PROC_EXIT, ROLE_CLIENT, ROLE_SERVER, SockAddr, Stat,
};

use super::emit::{emit_close, emit_conn_event, emit_exec, emit_open};
use super::{traced_pid_tgid, traced_process};
use crate::maps::{
    ACCEPT_ARGS, AcceptArgs, CONNECT_ARGS, CONNS, ConnectArgs, DATA_ARGS, OWNER_TGIDS, PEER_LOCAL,
    SOCKET_LAYER, SSL_ARGS, count, global_u32, new_epoch,
};

const EINPROGRESS: i64 = -115;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const IPPROTO_TCP: u16 = 6;

// sys_enter_accept/accept4 args: fd @16, upeer_sockaddr @24, upeer_addrlen @32 (from .../format)
#[tracepoint]
pub fn enter_accept(ctx: TracePointContext) -> u32 {
    let Some(id) = traced_process() else {
        return 0;
    };
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    let (Ok(fd), Ok(addr)) = (unsafe { ctx.read_at::<u64>(16) }, unsafe {
        ctx.read_at::<u64>(24)
    }) else {
        return 0;
    };
    let args = AcceptArgs {
        listen_fd: fd as u32,
        _pad: 0,
        addr,
    };
    if ACCEPT_ARGS.insert(id, args, 0).is_err() {
        count(Stat::ArgsMapFull, 1);
    }
    0
}

// sys_exit_*: ret @16
#[tracepoint]
pub fn exit_accept(ctx: TracePointContext) -> u32 {
    let Some(id) = traced_process() else {
        return 0;
    };
    // No saved arguments when the thread was already blocked in accept() as we attached: the
    // connection is still ours, its addresses come from /proc in userspace.
    // SAFETY: map values are plain data: another CPU updating this one meanwhile can make
    // what is read stale, never invalid.
    let args = (unsafe { ACCEPT_ARGS.get(id) }).copied();
    if args.is_some() {
        let _ = ACCEPT_ARGS.remove(id);
    }
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(16) }) else {
        return 0;
    };
    if ret < 0 {
        return 0;
    }
    let (peer, listen_fd) = match args {
        Some(a) => (read_user_sockaddr(a.addr), a.listen_fd),
        None => (SockAddr::EMPTY, u32::MAX),
    };
    if peer.family != AF_INET && peer.family != AF_INET6 && peer.family != 0 {
        return 0; // unix and other families: not tracked
    }
    let mut local = SockAddr::EMPTY;
    if peer.family != 0 {
        // SAFETY: the map value is read at once; another CPU may update it meanwhile, which can
        // only make it stale, never invalid (plain data).
        if let Some(l) = unsafe { PEER_LOCAL.get(peer) } {
            local = *l;
            let _ = PEER_LOCAL.remove(peer);
        }
    }
    open_conn(id, ret as u32, ROLE_SERVER, local, peer, listen_fd);
    0
}

// sys_enter_connect args: fd @16, uservaddr @24, addrlen @32
#[tracepoint]
pub fn enter_connect(ctx: TracePointContext) -> u32 {
    let Some(id) = traced_process() else {
        return 0;
    };
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    let (Ok(fd), Ok(addr)) = (unsafe { ctx.read_at::<u64>(16) }, unsafe {
        ctx.read_at::<u64>(24)
    }) else {
        return 0;
    };
    let peer = read_user_sockaddr(addr);
    if peer.family != AF_INET && peer.family != AF_INET6 {
        return 0;
    }
    let args = ConnectArgs {
        fd: fd as u32,
        _pad: 0,
        sk: 0,
        peer,
        local: SockAddr::EMPTY,
    };
    if CONNECT_ARGS.insert(id, args, 0).is_err() {
        count(Stat::ArgsMapFull, 1);
    }
    0
}

#[tracepoint]
pub fn exit_connect(ctx: TracePointContext) -> u32 {
    let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    // SAFETY: map values are plain data: another CPU updating this one meanwhile can make
    // what is read stale, never invalid.
    let Some(mut args) = (unsafe { CONNECT_ARGS.get(id) }).copied() else {
        return 0;
    };
    let _ = CONNECT_ARGS.remove(id);
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(16) }) else {
        return 0;
    };
    // A non-blocking connect returns EINPROGRESS; the socket is still ours from here on.
    if ret != 0 && ret != EINPROGRESS {
        return 0;
    }
    // UDP sockets connect too (DNS resolvers); they never got a TCP SYN_SENT, so no local address.
    if args.local.family == 0 {
        return 0;
    }
    // SYN_SENT is set before inet_hash_connect() picks the local port, so the tracepoint saw
    // port 0. Read it now from struct sock_common: skc_dport @12, skc_num @14 (host order), a
    // layout unchanged since Linux 2.6 (include/net/sock.h).
    if args.local.port == 0 && args.sk != 0 {
        // SAFETY: the helper copies from kernel memory and returns an error on a bad address.
        if let Ok(port) = unsafe { bpf_probe_read_kernel((args.sk + 14) as *const u16) } {
            args.local.port = port;
        }
    }
    open_conn(id, args.fd, ROLE_CLIENT, args.local, args.peer, u32::MAX);
    0
}

// sock:inet_sock_set_state: oldstate @16, newstate @20, sport @24, dport @26, family @28,
// skaddr @8, protocol @30, saddr @32, daddr @36, saddr_v6 @40, daddr_v6 @56; ports in host order.
#[tracepoint]
pub fn sock_state(ctx: TracePointContext) -> u32 {
    let _ = try_sock_state(&ctx);
    0
}

fn try_sock_state(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    let newstate: i32 = unsafe { ctx.read_at(20)? };
    if newstate != TCP_SYN_SENT && newstate != TCP_SYN_RECV {
        return Ok(());
    }
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    let protocol: u16 = unsafe { ctx.read_at(30)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let Some((local, remote)) = state_addresses(ctx)? else {
        return Ok(());
    };
    if newstate == TCP_SYN_SENT {
        // connect() runs this transition in the caller's context: the thread in CONNECT_ARGS.
        let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
        if let Some(args) = CONNECT_ARGS.get_ptr_mut(id) {
            // SAFETY: read_at copies from the program's context with a checked read (a bad offset
            // is an Err, never a fault); the offsets are the tracepoint's or the probed function's
            // (see above).
            let sk: u64 = unsafe { ctx.read_at(8)? };
            // SAFETY: `args` is the map entry get_ptr_mut just returned non-null, valid for this
            // program's run.
            unsafe {
                (*args).local = local;
                (*args).sk = sk;
            }
        }
    } else if PEER_LOCAL.insert(remote, local, 0).is_err() {
        count(Stat::ConnMapInsertFailed, 1);
    }
    Ok(())
}

/// Local and remote address from an inet_sock_set_state record (layout above); None for a
/// family other than IPv4 and IPv6.
#[inline(always)]
pub fn state_addresses(ctx: &TracePointContext) -> Result<Option<(SockAddr, SockAddr)>, i64> {
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    let family: u16 = unsafe { ctx.read_at(28)? };
    let mut local = SockAddr {
        family,
        // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
        // Err, never a fault); the offsets are the tracepoint's or the probed function's (see
        // above).
        port: unsafe { ctx.read_at(24)? },
        _pad: 0,
        addr: [0; 16],
    };
    let mut remote = SockAddr {
        family,
        // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
        // Err, never a fault); the offsets are the tracepoint's or the probed function's (see
        // above).
        port: unsafe { ctx.read_at(26)? },
        _pad: 0,
        addr: [0; 16],
    };
    if family == AF_INET {
        // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
        // Err, never a fault); the offsets are the tracepoint's or the probed function's (see
        // above).
        let s: [u8; 4] = unsafe { ctx.read_at(32)? };
        // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
        // Err, never a fault); the offsets are the tracepoint's or the probed function's (see
        // above).
        let d: [u8; 4] = unsafe { ctx.read_at(36)? };
        local.addr[..4].copy_from_slice(&s);
        remote.addr[..4].copy_from_slice(&d);
    } else if family == AF_INET6 {
        // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
        // Err, never a fault); the offsets are the tracepoint's or the probed function's (see
        // above).
        local.addr = unsafe { ctx.read_at(40)? };
        // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
        // Err, never a fault); the offsets are the tracepoint's or the probed function's (see
        // above).
        remote.addr = unsafe { ctx.read_at(56)? };
    } else {
        return Ok(None);
    }
    Ok(Some((local, remote)))
}

// sys_enter_close args: fd @16
#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    let Some(id) = traced_pid_tgid() else {
        return 0;
    };
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(16) }) else {
        return 0;
    };
    let key = ConnKey {
        tgid: (id >> 32) as u32,
        fd: fd as u32,
    };
    // SAFETY: map values are plain data: another CPU updating this one meanwhile can make
    // what is read stale, never invalid.
    if unsafe { CONNS.get(key) }.is_none() {
        return 0;
    }
    let _ = CONNS.remove(key);
    emit_close(key);
    0
}

// sched:sched_process_exit, once per exiting thread. A process that exits without close()
// makes no close syscall; its connections end with it. The socket layer sees the TCP close
// itself, but the exit still matters there: the pid may come back as another process, which
// must not inherit this one's facts (its cgroup) in userspace.
#[tracepoint]
pub fn process_exit(_ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // Every thread: its call slots go with it (see SSL_ARGS, DATA_ARGS).
    // SAFETY: map values are plain data: another CPU updating this one meanwhile can make
    // what is read stale, never invalid.
    if unsafe { SSL_ARGS.get(id) }.is_some() {
        let _ = SSL_ARGS.remove(id);
    }
    // SAFETY: as above.
    if unsafe { DATA_ARGS.get(id) }.is_some() {
        let _ = DATA_ARGS.remove(id);
    }
    let tgid = (id >> 32) as u32;
    // Only the thread-group leader: the process, not one of its threads.
    if tgid != id as u32 {
        return 0;
    }
    if global_u32(&SOCKET_LAYER) != 0 {
        // Only processes that owned a reported connection (see OWNER_TGIDS).
        // SAFETY: map values are plain data: another CPU updating this one meanwhile can make
        // what is read stale, never invalid.
        if unsafe { OWNER_TGIDS.get(tgid) }.is_none() {
            return 0;
        }
        let _ = OWNER_TGIDS.remove(tgid);
    } else if traced_process().is_none() {
        // With `capture.processes`, only the named ones: no other process ever had a connection
        // opened, and every exit on the host would otherwise be a ring record (and, in a full
        // ring, a drop counted against the traced traffic). A process renamed after opening its
        // connections is not seen exiting; its connections end at the idle timeout instead.
        return 0;
    }
    let key = ConnKey {
        tgid: (id >> 32) as u32,
        fd: u32::MAX,
    };
    emit_conn_event(EVENT_PROC_EXIT, key);
    0
}

#[inline(always)]
fn open_conn(id: u64, fd: u32, role: u32, local: SockAddr, peer: SockAddr, listen_fd: u32) {
    let key = ConnKey {
        tgid: (id >> 32) as u32,
        fd,
    };
    let info = ConnInfo::new(role, 1, new_epoch());
    if CONNS.insert(key, info, 0).is_err() {
        count(Stat::ConnMapInsertFailed, 1);
        return;
    }
    emit_open(key, role, local, peer, listen_fd, 0, info.epoch);
}

/// Reads a user `struct sockaddr` (in or in6); family 0 if absent or unreadable.
#[inline(always)]
pub fn read_user_sockaddr(ptr: u64) -> SockAddr {
    let mut out = SockAddr::EMPTY;
    if ptr == 0 {
        return out;
    }
    let base = ptr as *const u8;
    // SAFETY: the helper copies from user memory and returns an error on an unmapped address; the
    // length is bounded for the verifier.
    let Ok(family) = (unsafe { bpf_probe_read_user(base as *const u16) }) else {
        return out;
    };
    // sockaddr_in: family @0, port @2 (network order), addr @4; sockaddr_in6: addr @8.
    // SAFETY: the helper copies from user memory and returns an error on an unmapped address; the
    // length is bounded for the verifier.
    let Ok(port) = (unsafe { bpf_probe_read_user(base.add(2) as *const u16) }) else {
        return out;
    };
    if family == AF_INET {
        // SAFETY: the helper copies from user memory and returns an error on an unmapped address;
        // the length is bounded for the verifier.
        let Ok(a) = (unsafe { bpf_probe_read_user(base.add(4) as *const [u8; 4]) }) else {
            return out;
        };
        out.addr[..4].copy_from_slice(&a);
    } else if family == AF_INET6 {
        // SAFETY: the helper copies from user memory and returns an error on an unmapped address;
        // the length is bounded for the verifier.
        let Ok(a) = (unsafe { bpf_probe_read_user(base.add(8) as *const [u8; 16]) }) else {
            return out;
        };
        out.addr = a;
    } else {
        out.family = family; // reported so the caller can skip it
        return out;
    }
    out.family = family;
    out.port = u16::from_be(port);
    out
}

// sched:sched_process_exec: a new program (not a syscall tracepoint, so other syscalls pay
// nothing). Userspace scans its executable for TLS functions at once (a Go binary, node), so a
// program started after the agent is probed within milliseconds rather than at the next rescan.
#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    let Some(id) = traced_process() else { return 0 };
    emit_exec((id >> 32) as u32);
    0
}
