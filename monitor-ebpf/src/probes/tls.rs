//! TLS library uprobes (OpenSSL and BoringSSL in any binary, GnuTLS): the plaintext of TLS
//! connections. Entry probes save (session, buffer); return probes copy what was read or
//! written. The socket is learnt from the syscall the call makes inside itself, from an earlier
//! call on the same session, or (for libraries that do no socket I/O, such as node's memory
//! BIOs) from the ciphertext socket the thread read last.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use monitor_common::{ConnInfo, ConnKey, DATA_FLAG_TLS, DIR_EGRESS, DIR_INGRESS, Stat};

use super::emit::emit_chunk;
use super::traced_process;
use crate::maps::{
    ARGS_PLAIN, CONNS, FD_OWNER, LAST_TLS_RECV, SOCKET_LAYER, SOCKS, SSL_ARGS, SSL_ARGS_DONE, SSL_ARGS_RET64,
    SSL_FD, SslArgs, SslKey, SslSock, count, global_u32,
};
use monitor_common::CLASS_TLS;

#[inline(always)]
fn enter(ctx: &ProbeContext, direction: u32, ex: bool, flags: u32) {
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
    // SAFETY: map values are plain data: another CPU updating this one meanwhile can make
    // what is read stale, never invalid.
    let sock = match unsafe { SSL_FD.get(key) } {
        Some(s) => *s,
        None => guess_socket(id, key).unwrap_or(SslSock {
            fd: u32::MAX,
            epoch: 0,
        }),
    };
    let args = SslArgs {
        ssl,
        buf,
        count_ptr,
        direction,
        fd: sock.fd,
        flags,
        epoch: sock.epoch,
    };
    match SSL_ARGS.get_ptr_mut(id) {
        // SAFETY: `p` is this thread's entry, found non-null; only this thread's probes write it.
        Some(p) => unsafe { *p = args },
        None => {
            if SSL_ARGS.insert(id, args, 0).is_err() {
                count(Stat::ArgsMapFull, 1);
            }
        }
    }
}

#[inline(always)]
fn exit(ctx: &RetProbeContext) {
    let id = bpf_get_current_pid_tgid();
    let Some(p) = SSL_ARGS.get_ptr_mut(id) else {
        return;
    };
    // SAFETY: `p` is this thread's entry, found non-null; only this thread's probes write it.
    let args = unsafe { *p };
    if args.flags & SSL_ARGS_DONE != 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { (*p).flags |= SSL_ARGS_DONE };
    // OpenSSL returns a C int: read 32 bits, or a -1 (WANT_READ) reads as 4 GiB. GnuTLS
    // returns a ssize_t.
    let ret = if args.flags & SSL_ARGS_RET64 != 0 {
        ctx.ret::<i64>()
    } else {
        ctx.ret::<i32>() as i64
    };
    let bytes = if args.count_ptr != 0 {
        // The _ex variants (and the internal functions both forms call) return 1 on success and
        // the count through a pointer.
        if ret <= 0 {
            return;
        }
        // SAFETY: the helper copies from user memory and returns an error on an unmapped address;
        // the length is bounded for the verifier.
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
    let tgid = (id >> 32) as u32;
    let mut key = ConnKey { tgid, fd: args.fd };
    let known = if args.fd == u32::MAX {
        None
    } else {
        // SAFETY: `info` is the connection's map entry, found non-null before this function or
        // line, valid for this program's run; its fields are plain integers.
        conn_info(key).filter(|&info| args.epoch == 0 || unsafe { (*info).epoch } == args.epoch)
    };
    let info = match known {
        Some(info) => info,
        None => {
            // Unknown, or stale (the connection it named is gone): what this thread read last.
            let ssl = SslKey {
                tgid,
                _pad: 0,
                ssl: args.ssl,
            };
            let guessed = guess_socket(id, ssl).and_then(|s| {
                key.fd = s.fd;
                conn_info(key)
            });
            match guessed {
                Some(info) => info,
                None => {
                    count(Stat::TlsFdUnknown, 1);
                    return;
                }
            }
        }
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
pub fn conn_info(key: ConnKey) -> Option<*mut ConnInfo> {
    if global_u32(&SOCKET_LAYER) != 0 {
        // SAFETY: the map value is read at once; another CPU may update it meanwhile, which can
        // only make it stale, never invalid (plain data).
        let sk = unsafe { FD_OWNER.get(key) }.copied()?;
        let conn = SOCKS.get_ptr_mut(sk)?;
        // SAFETY: `conn` is a map entry found non-null before this line, valid for this program's
        // run; its fields are plain integers.
        Some(unsafe { &raw mut (*conn).info })
    } else {
        CONNS.get_ptr_mut(key)
    }
}

/// A session seen for the first time, with no socket I/O inside the call yet: the ciphertext
/// socket this thread read last, if it is one (a TLS socket of this process). A call that then
/// does socket I/O of its own corrects it (learn_ssl_socket).
#[inline(always)]
fn guess_socket(id: u64, key: SslKey) -> Option<SslSock> {
    // SAFETY: map values are plain data: another CPU updating this one meanwhile can make
    // what is read stale, never invalid.
    let fd = (unsafe { LAST_TLS_RECV.get(id) }).copied()?;
    let info = conn_info(ConnKey { tgid: key.tgid, fd })?;
    // SAFETY: `info` is the connection's map entry, found non-null before this function or line,
    // valid for this program's run; its fields are plain integers.
    if unsafe { (*info).class } != CLASS_TLS {
        return None;
    }
    let sock = SslSock {
        fd,
        // SAFETY: `info` is the connection's map entry, found non-null before this function or
        // line, valid for this program's run; its fields are plain integers.
        epoch: unsafe { (*info).epoch },
    };
    let _ = SSL_FD.insert(key, sock, 0);
    Some(sock)
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_INGRESS, false, 0);
    0
}

#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_INGRESS, true, 0);
    0
}

#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_EGRESS, false, 0);
    0
}

#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_EGRESS, true, 0);
    0
}

// gnutls_record_recv(gnutls_session_t, void *data, size_t size) -> ssize_t; the send twin
// (gnutls_record_send2 adds pad and flags after the same three).
#[uprobe]
pub fn gnutls_recv(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_INGRESS, false, SSL_ARGS_RET64);
    0
}

#[uprobe]
pub fn gnutls_send(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_EGRESS, false, SSL_ARGS_RET64);
    0
}

/// One return probe for all: the saved arguments say which.
#[uretprobe]
pub fn ssl_return(ctx: RetProbeContext) -> u32 {
    exit(&ctx);
    0
}

/// A socket I/O made inside an SSL call names the SSL object's socket: for this call, and
/// (per SSL object) for later calls served from OpenSSL's buffer without any I/O. A read
/// of a socket that may carry ciphertext (not known to be plain HTTP)
/// outside any call is remembered for the thread (see guess_socket).
#[inline(always)]
pub fn learn_ssl_socket(id: u64, tgid: u32, fd: u32, epoch: u32, maybe_ciphertext_read: bool) {
    // SAFETY: a non-null entry is this thread's; only this thread's probes write it.
    let in_call = SSL_ARGS
        .get_ptr_mut(id)
        .filter(|&p| unsafe { (*p).flags } & SSL_ARGS_DONE == 0);
    let Some(ssl) = in_call else {
        if maybe_ciphertext_read {
            let _ = LAST_TLS_RECV.insert(id, fd, 0);
        }
        return;
    };
    // SAFETY: `ssl` is the map entry get_ptr_mut just returned non-null, valid for this program's
    // run; its fields are plain integers.
    unsafe {
        // Known already (the entry read it from SSL_FD): no write. Updating an LRU entry takes a
        // lock that showed in profiles of TLS at saturation.
        if (*ssl).fd == fd && (*ssl).epoch == epoch {
            return;
        }
        (*ssl).fd = fd;
        (*ssl).epoch = epoch;
        let k = SslKey {
            tgid,
            _pad: 0,
            ssl: (*ssl).ssl,
        };
        let _ = SSL_FD.insert(k, SslSock { fd, epoch }, 0);
    }
}
