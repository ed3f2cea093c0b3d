//! Data syscalls: arguments saved on enter (keyed by pid_tgid), bytes copied on exit when ret > 0.
//! Connections are classified on their first chunk; those that are not HTTP/1.x stop here.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use monitor_common::{
    CAPTURE_MAX, CAPTURE_SMALL, CLASS_HTTP, CLASS_OTHER, CLASS_TLS, CLASS_UNKNOWN, ConnCloseEvent, ConnInfo,
    ConnKey, DATA_FLAG_SENDFILE, DATA_FLAG_TLS, DATA_FLAG_VECTORED, DIR_EGRESS, DIR_INGRESS, DataEvent,
    DataHeader, EVENT_CONN_TLS, EVENT_DATA, Stat,
};

use super::traced_pid_tgid;
use crate::maps::{
    ARGS_IOVEC, ARGS_MSGHDR, ARGS_PLAIN, ARGS_SENDFILE, CAPTURE_BYTES, CONNS, DATA_ARGS, DataArgs, EVENTS,
    SSL_ARGS, SSL_FD, STATS, SslKey, WAKEUP_BYTES, count, global_u32, global_u64,
};

/// Submit without waking the reader unless enough data waits: a wakeup per record would cost
/// the traced thread over a microsecond; the reader drains on a short timer instead.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if let Some(p) = STATS.get_ptr_mut(Stat::RingAvailBytes as u32) {
        unsafe { *p = avail };
    }
    if avail >= global_u64(&WAKEUP_BYTES) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Saves the arguments of a data syscall on a tracked, not-yet-rejected socket.
#[inline(always)]
fn save_args(ctx: &TracePointContext, fd_off: usize, ptr_off: usize, direction: u32, kind: u32) {
    let Some(id) = traced_pid_tgid() else { return };
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(fd_off) }) else {
        return;
    };
    let key = ConnKey {
        tgid: (id >> 32) as u32,
        fd: fd as u32,
    };
    let Some(info) = (unsafe { CONNS.get(key) }) else {
        return;
    };
    // A syscall made inside SSL_read/SSL_write tells which socket that SSL object uses.
    if let Some(ssl) = SSL_ARGS.get_ptr_mut(id) {
        unsafe {
            (*ssl).fd = fd as u32;
            let k = SslKey {
                tgid: key.tgid,
                _pad: 0,
                ssl: (*ssl).ssl,
            };
            let _ = SSL_FD.insert(k, fd as u32, 0);
        }
    }
    // Rejected connections, and TLS ones whose syscall bytes are ciphertext, stop here.
    if info.class == CLASS_OTHER || info.class == CLASS_TLS {
        return;
    }
    let Ok(ptr) = (unsafe { ctx.read_at::<u64>(ptr_off) }) else {
        return;
    };
    let args = DataArgs {
        fd: fd as u32,
        direction,
        kind,
        _pad: 0,
        ptr,
    };
    if DATA_ARGS.insert(id, args, 0).is_err() {
        count(Stat::ArgsMapFull, 1);
    }
}

// read/recvfrom args: fd @16, buf @24; write/sendto the same (from .../format).
#[tracepoint]
pub fn enter_read(ctx: TracePointContext) -> u32 {
    save_args(&ctx, 16, 24, DIR_INGRESS, ARGS_PLAIN);
    0
}

#[tracepoint]
pub fn enter_write(ctx: TracePointContext) -> u32 {
    save_args(&ctx, 16, 24, DIR_EGRESS, ARGS_PLAIN);
    0
}

// readv/writev args: fd @16, vec @24, vlen @32
#[tracepoint]
pub fn enter_readv(ctx: TracePointContext) -> u32 {
    save_args(&ctx, 16, 24, DIR_INGRESS, ARGS_IOVEC);
    0
}

#[tracepoint]
pub fn enter_writev(ctx: TracePointContext) -> u32 {
    save_args(&ctx, 16, 24, DIR_EGRESS, ARGS_IOVEC);
    0
}

// recvmsg/sendmsg args: fd @16, msg @24
#[tracepoint]
pub fn enter_recvmsg(ctx: TracePointContext) -> u32 {
    save_args(&ctx, 16, 24, DIR_INGRESS, ARGS_MSGHDR);
    0
}

#[tracepoint]
pub fn enter_sendmsg(ctx: TracePointContext) -> u32 {
    save_args(&ctx, 16, 24, DIR_EGRESS, ARGS_MSGHDR);
    0
}

// sendfile64 args: out_fd @16, in_fd @24
#[tracepoint]
pub fn enter_sendfile(ctx: TracePointContext) -> u32 {
    save_args(&ctx, 16, 24, DIR_EGRESS, ARGS_SENDFILE);
    0
}

/// One exit program for every data syscall: the saved arguments say what to copy.
#[tracepoint]
pub fn exit_data(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(args) = (unsafe { DATA_ARGS.get(id) }).copied() else {
        return 0;
    };
    let _ = DATA_ARGS.remove(id);
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
    let total = ret as u64;

    if args.kind == ARGS_SENDFILE {
        // File bytes are never copied; the count keeps the stream's byte accounting exact.
        if unsafe { (*info).class } == CLASS_HTTP {
            emit::<CAPTURE_SMALL>(key, args.direction, total, 0, 0, DATA_FLAG_SENDFILE, info);
        }
        return 0;
    }

    let (src, avail, flags) = match args.kind {
        ARGS_PLAIN => (args.ptr, total, 0),
        ARGS_IOVEC => match first_iovec(args.ptr) {
            Some((base, len)) => (base, len, DATA_FLAG_VECTORED),
            None => return 0,
        },
        ARGS_MSGHDR => {
            // struct user_msghdr: msg_name @0, msg_namelen @8, msg_iov @16, msg_iovlen @24
            let Ok(iov) = (unsafe { bpf_probe_read_user((args.ptr + 16) as *const u64) }) else {
                count(Stat::ReadUserFailed, 1);
                return 0;
            };
            match first_iovec(iov) {
                Some((base, len)) => (base, len, DATA_FLAG_VECTORED),
                None => return 0,
            }
        }
        _ => return 0,
    };
    let limit = global_u32(&CAPTURE_BYTES) as u64;
    let mut want = if total < avail { total } else { avail };
    if want > limit {
        want = limit;
    }
    if flags == DATA_FLAG_VECTORED && avail < total {
        count(Stat::VectoredPartial, 1);
    }
    if want <= CAPTURE_SMALL as u64 {
        emit::<CAPTURE_SMALL>(key, args.direction, total, src, want, flags, info);
    } else {
        emit::<CAPTURE_MAX>(key, args.direction, total, src, want, flags, info);
    }
    0
}

/// struct iovec { void *iov_base; size_t iov_len; }
#[inline(always)]
fn first_iovec(iov: u64) -> Option<(u64, u64)> {
    match unsafe { bpf_probe_read_user(iov as *const [u64; 2]) } {
        Ok([base, len]) => Some((base, len)),
        Err(_) => {
            count(Stat::ReadUserFailed, 1);
            None
        }
    }
}

#[inline(always)]
pub fn emit<const N: usize>(
    key: ConnKey,
    direction: u32,
    total: u64,
    src: u64,
    want: u64,
    flags: u32,
    info: *mut ConnInfo,
) {
    let Some(mut entry) = EVENTS.reserve::<DataEvent<N>>(0) else {
        count(Stat::RingFull, 1);
        return;
    };
    let ev = entry.as_mut_ptr();
    let mut n = want as u32;
    if n > N as u32 {
        n = N as u32;
    }
    let mut captured = 0u32;
    if n > 0 {
        let rc = unsafe {
            generated::bpf_probe_read_user((*ev).data.as_mut_ptr().cast(), n, src as *const core::ffi::c_void)
        };
        if rc == 0 {
            captured = n;
        } else {
            count(Stat::ReadUserFailed, 1);
        }
    }

    let first: [u8; 4] = if captured >= 4 {
        unsafe { core::ptr::read((*ev).data.as_ptr().cast::<[u8; 4]>()) }
    } else {
        [0; 4]
    };
    if flags & DATA_FLAG_TLS != 0 {
        // Plaintext from the SSL uprobes: the syscall bytes of this socket are ciphertext.
        unsafe {
            if (*info).class == CLASS_UNKNOWN {
                (*info).class = CLASS_TLS;
            }
        }
        let plain = unsafe { (*info).plain_class };
        if plain == CLASS_OTHER {
            entry.discard(0);
            return;
        }
        if plain == CLASS_UNKNOWN {
            if looks_like_http(first) {
                unsafe { (*info).plain_class = CLASS_HTTP };
            } else {
                // HTTP/2 over TLS ("PRI * HTTP/2.0") and other protocols: not ours.
                unsafe { (*info).plain_class = CLASS_OTHER };
                count(Stat::ConnNotHttp, 1);
                entry.discard(0);
                return;
            }
        }
    } else if unsafe { (*info).class } == CLASS_UNKNOWN {
        if looks_like_http(first) {
            unsafe { (*info).class = CLASS_HTTP };
        } else if first[0] == 0x16 && first[1] == 0x03 {
            // A TLS handshake record: from now on only the SSL uprobes speak for this socket.
            unsafe { (*info).class = CLASS_TLS };
            entry.discard(0);
            emit_tls_mark(key);
            return;
        } else {
            let left = unsafe { (*info).tries_left };
            if left <= 1 {
                unsafe { (*info).class = CLASS_OTHER };
                count(Stat::ConnNotHttp, 1);
            } else {
                unsafe { (*info).tries_left = left - 1 };
            }
            entry.discard(0);
            return;
        }
    }

    unsafe {
        (*ev).header = DataHeader {
            kind: EVENT_DATA,
            direction,
            tgid: key.tgid,
            fd: key.fd,
            ts_ns: bpf_ktime_get_ns(),
            total_len: total,
            captured,
            flags,
        };
    }
    entry.submit(wakeup_flags());
    count(Stat::EventsSubmitted, 1);
    if total > captured as u64 {
        count(Stat::BytesNotCopied, total - captured as u64);
    }
}

/// Tells userspace the connection is TLS, so it can count blind spots (TLS it never sees the
/// plaintext of).
#[inline(always)]
fn emit_tls_mark(key: ConnKey) {
    let Some(mut entry) = EVENTS.reserve::<ConnCloseEvent>(0) else {
        count(Stat::RingFull, 1);
        return;
    };
    entry.write(ConnCloseEvent {
        kind: EVENT_CONN_TLS,
        _pad: 0,
        tgid: key.tgid,
        fd: key.fd,
        ts_ns: unsafe { bpf_ktime_get_ns() },
    });
    entry.submit(wakeup_flags());
    count(Stat::EventsSubmitted, 1);
}

/// HTTP/1.x starts with a method token or, for a response, "HTTP".
#[inline(always)]
fn looks_like_http(b: [u8; 4]) -> bool {
    matches!(
        b,
        [b'G', b'E', b'T', b' ']
            | [b'P', b'O', b'S', b'T']
            | [b'P', b'U', b'T', b' ']
            | [b'H', b'E', b'A', b'D']
            | [b'D', b'E', b'L', b'E']
            | [b'P', b'A', b'T', b'C']
            | [b'O', b'P', b'T', b'I']
            | [b'C', b'O', b'N', b'N']
            | [b'T', b'R', b'A', b'C']
            | [b'H', b'T', b'T', b'P']
    )
}
