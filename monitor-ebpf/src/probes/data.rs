//! Syscall-tracepoint data path (the fallback for kernels without the socket tracepoints):
//! arguments saved on enter (keyed by pid_tgid), bytes copied on exit when ret > 0.
//! Connections are classified on their first chunk; those that are not HTTP/1.x stop here.
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext};
use monitor_common::{CLASS_HTTP, CLASS_OTHER, CLASS_TLS, ConnKey, DIR_EGRESS, DIR_INGRESS, Stat};

use super::emit::emit_chunk;
use super::tls::learn_ssl_socket;
use super::traced_pid_tgid;
use crate::maps::{
    ARGS_DONE, ARGS_IOVEC, ARGS_MSGHDR, ARGS_PLAIN, ARGS_SENDFILE, CONNS, DATA_ARGS, DataArgs, count,
};

/// recv flag: the bytes stay in the socket (socket.h).
const MSG_PEEK: u64 = 2;

/// Saves the arguments of a data syscall on a tracked, not-yet-rejected socket. `flags_off`:
/// where a receive's flags lie (0: the call has none).
#[inline(always)]
fn save_args(
    ctx: &TracePointContext,
    fd_off: usize,
    ptr_off: usize,
    flags_off: usize,
    direction: u32,
    kind: u32,
) {
    // readv/writev: vlen @32 (from .../format).
    let vlen = if kind == ARGS_IOVEC {
        // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
        // Err, never a fault); the offsets are the tracepoint's or the probed function's (see
        // above).
        unsafe { ctx.read_at::<u64>(32) }.unwrap_or(1) as u32
    } else {
        0
    };
    let Some(id) = traced_pid_tgid() else { return };
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(fd_off) }) else {
        return;
    };
    let key = ConnKey {
        tgid: (id >> 32) as u32,
        fd: fd as u32,
    };
    // SAFETY: map values are plain data: another CPU updating this one meanwhile can make
    // what is read stale, never invalid.
    let Some(info) = (unsafe { CONNS.get(key) }) else {
        return;
    };
    // A syscall made inside SSL_read/SSL_write tells which socket that SSL object uses (a
    // read of ciphertext outside one, which socket the thread decrypts next).
    learn_ssl_socket(
        id,
        key.tgid,
        fd as u32,
        info.epoch,
        // Not for sockets known to be plain HTTP or another protocol: no map write per read.
        direction == DIR_INGRESS && info.class != CLASS_HTTP && info.class != CLASS_OTHER,
    );
    // Rejected connections, and TLS ones whose syscall bytes are ciphertext, stop here.
    if info.class == CLASS_OTHER || info.class == CLASS_TLS {
        return;
    }
    // A peek leaves the bytes in the socket: the read that takes them reports them (curl peeks
    // one byte of an HTTP/2 connection before each read).
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's (see above).
    if flags_off != 0 && unsafe { ctx.read_at::<u64>(flags_off) }.is_ok_and(|f| f & MSG_PEEK != 0) {
        return;
    }
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    let Ok(ptr) = (unsafe { ctx.read_at::<u64>(ptr_off) }) else {
        return;
    };
    let args = DataArgs {
        fd: fd as u32,
        direction,
        kind,
        vlen,
        ptr,
    };
    match DATA_ARGS.get_ptr_mut(id) {
        // SAFETY: `p` is this thread's entry, found non-null; only this thread's probes write it.
        Some(p) => unsafe { *p = args },
        None => {
            if DATA_ARGS.insert(id, args, 0).is_err() {
                count(Stat::ArgsMapFull, 1);
            }
        }
    }
}

// read args: fd @16, buf @24; write/sendto the same (from .../format).
#[tracepoint]
pub fn enter_read(ctx: TracePointContext) -> u32 {
    save_args(&ctx, 16, 24, 0, DIR_INGRESS, ARGS_PLAIN);
    0
}

// recvfrom args: fd @16, ubuf @24, size @32, flags @40
#[tracepoint]
pub fn enter_recvfrom(ctx: TracePointContext) -> u32 {
    save_args(&ctx, 16, 24, 40, DIR_INGRESS, ARGS_PLAIN);
    0
}

#[tracepoint]
pub fn enter_write(ctx: TracePointContext) -> u32 {
    save_args(&ctx, 16, 24, 0, DIR_EGRESS, ARGS_PLAIN);
    0
}

// readv/writev args: fd @16, vec @24, vlen @32
#[tracepoint]
pub fn enter_readv(ctx: TracePointContext) -> u32 {
    save_args(&ctx, 16, 24, 0, DIR_INGRESS, ARGS_IOVEC);
    0
}

#[tracepoint]
pub fn enter_writev(ctx: TracePointContext) -> u32 {
    save_args(&ctx, 16, 24, 0, DIR_EGRESS, ARGS_IOVEC);
    0
}

// recvmsg/sendmsg args: fd @16, msg @24; recvmsg flags @32
#[tracepoint]
pub fn enter_recvmsg(ctx: TracePointContext) -> u32 {
    save_args(&ctx, 16, 24, 32, DIR_INGRESS, ARGS_MSGHDR);
    0
}

#[tracepoint]
pub fn enter_sendmsg(ctx: TracePointContext) -> u32 {
    save_args(&ctx, 16, 24, 0, DIR_EGRESS, ARGS_MSGHDR);
    0
}

// sendfile64 args: out_fd @16, in_fd @24
#[tracepoint]
pub fn enter_sendfile(ctx: TracePointContext) -> u32 {
    save_args(&ctx, 16, 24, 0, DIR_EGRESS, ARGS_SENDFILE);
    0
}

/// One exit program for every data syscall: the saved arguments say what to copy.
#[tracepoint]
pub fn exit_data(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: map values are plain data: another CPU updating this one meanwhile can make
    // what is read stale, never invalid.
    let Some(p) = DATA_ARGS.get_ptr_mut(id) else {
        return 0;
    };
    // SAFETY: `p` is this thread's entry, found non-null; only this thread's probes write it.
    let args = unsafe { *p };
    if args.kind == ARGS_DONE {
        return 0;
    }
    // SAFETY: as above.
    unsafe { (*p).kind = ARGS_DONE };
    // SAFETY: read_at copies from the program's context with a checked read (a bad offset is an
    // Err, never a fault); the offsets are the tracepoint's or the probed function's (see above).
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(16) }) else {
        return 0;
    };
    if ret <= 0 {
        return 0;
    }
    let key = ConnKey {
        tgid: (id >> 32) as u32,
        fd: args.fd,
    };
    let Some(info) = CONNS.get_ptr_mut(key) else {
        return 0;
    };
    emit_chunk(
        key,
        args.direction,
        ret as u64,
        args.kind,
        args.ptr,
        u64::from(args.vlen),
        0,
        info,
    );
    0
}
