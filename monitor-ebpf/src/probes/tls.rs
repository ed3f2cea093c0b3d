//! OpenSSL uprobes: the plaintext of TLS connections. Entry probes save (SSL*, buffer); return
//! probes copy what was read or written. The socket is learnt from the syscall the SSL call
//! makes inside itself (see data::save_args), or from an earlier call on the same SSL object.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use monitor_common::{ConnInfo, ConnKey, DATA_FLAG_TLS, DIR_EGRESS, DIR_INGRESS, Stat};

use super::emit::emit_chunk;
use super::traced_process;
use crate::maps::{
    ARGS_PLAIN, CONNS, FD_OWNER, SOCKET_LAYER, SOCKS, SSL_ARGS, SSL_FD, SslArgs, SslKey, count, global_u32,
};

#[inline(always)]
fn enter(ctx: &ProbeContext, direction: u32, ex: bool) {
    let Some(id) = traced_process() else { return };
    // SSL_read(SSL *ssl, void *buf, int num); SSL_read_ex(SSL *ssl, void *buf, size_t num,
    // size_t *readbytes); the write twins alike.
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return;
    };
    let count_ptr = if ex { ctx.arg::<u64>(3).unwrap_or(0) } else { 0 };
    let key = SslKey {
        tgid: (id >> 32) as u32,
        _pad: 0,
        ssl,
    };
    let fd = unsafe { SSL_FD.get(key) }.copied().unwrap_or(u32::MAX);
    let args = SslArgs {
        ssl,
        buf,
        count_ptr,
        direction,
        fd,
    };
    if SSL_ARGS.insert(id, args, 0).is_err() {
        count(Stat::ArgsMapFull, 1);
    }
}

#[inline(always)]
fn exit(ctx: &RetProbeContext) {
    let id = bpf_get_current_pid_tgid();
    let Some(args) = (unsafe { SSL_ARGS.get(id) }).copied() else {
        return;
    };
    let _ = SSL_ARGS.remove(id);
    // All four return a C int: read 32 bits, or a -1 (WANT_READ) reads as 4 GiB.
    let ret = ctx.ret::<i32>() as i64;
    let bytes = if args.count_ptr != 0 {
        // The _ex variants (and the internal functions both forms call) return 1 on success and
        // the count through a pointer.
        if ret <= 0 {
            return;
        }
        match unsafe { bpf_probe_read_user(args.count_ptr as *const u64) } {
            Ok(n) => n,
            Err(_) => {
                count(Stat::ReadUserFailed, 1);
                return;
            }
        }
    } else if ret > 0 {
        ret as u64
    } else {
        return;
    };
    if bytes == 0 {
        return;
    }
    if args.fd == u32::MAX {
        count(Stat::TlsFdUnknown, 1);
        return;
    }
    let key = ConnKey {
        tgid: (id >> 32) as u32,
        fd: args.fd,
    };
    let Some(info) = conn_info(key) else {
        return;
    };
    emit_chunk(
        key,
        args.direction,
        bytes,
        ARGS_PLAIN,
        args.buf,
        0,
        DATA_FLAG_TLS,
        info,
    );
}

/// The connection state of a (tgid, fd), in whichever map the data path keeps it.
#[inline(always)]
fn conn_info(key: ConnKey) -> Option<*mut ConnInfo> {
    if global_u32(&SOCKET_LAYER) != 0 {
        let sk = unsafe { FD_OWNER.get(key) }.copied()?;
        let conn = SOCKS.get_ptr_mut(sk)?;
        Some(unsafe { &raw mut (*conn).info })
    } else {
        CONNS.get_ptr_mut(key)
    }
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_INGRESS, false);
    0
}

#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_INGRESS, true);
    0
}

#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_EGRESS, false);
    0
}

#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_EGRESS, true);
    0
}

/// One return probe for all four: the saved arguments say which.
#[uretprobe]
pub fn ssl_return(ctx: RetProbeContext) -> u32 {
    exit(&ctx);
    0
}

/// A socket I/O made inside an SSL call names the SSL object's socket: for this call, and
/// (per SSL object) for later calls served from OpenSSL's buffer without any I/O.
#[inline(always)]
pub fn learn_ssl_socket(id: u64, tgid: u32, fd: u32) {
    let Some(ssl) = SSL_ARGS.get_ptr_mut(id) else {
        return;
    };
    unsafe {
        // Known already (the entry read it from SSL_FD): no write. Updating an LRU entry takes a
        // lock that showed in profiles of TLS at saturation.
        if (*ssl).fd == fd {
            return;
        }
        (*ssl).fd = fd;
        let k = SslKey {
            tgid,
            _pad: 0,
            ssl: (*ssl).ssl,
        };
        let _ = SSL_FD.insert(k, fd, 0);
    }
}
