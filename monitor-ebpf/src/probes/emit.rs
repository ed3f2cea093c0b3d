//! Writing events into the ring: data chunks (classifying each connection on its first bytes),
//! opens, closes and TLS marks. Shared by both data paths (syscall and socket layer) and the
//! TLS probes.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns, bpf_probe_read_user, generated},
};
use monitor_common::{
    BodyHintKey, CAPTURE_MAX, CAPTURE_SMALL, CLASS_HTTP, CLASS_OTHER, CLASS_TLS, CLASS_UNKNOWN,
    ConnCloseEvent, ConnInfo, ConnKey, ConnOpenEvent, DATA_FLAG_SENDFILE, DATA_FLAG_SKIPPED, DATA_FLAG_TLS,
    DATA_FLAG_VECTORED, DIR_INGRESS, DataEvent, DataHeader, EVENT_CONN_CLOSE, EVENT_CONN_OPEN,
    EVENT_CONN_TLS, EVENT_DATA, EVENT_PROC_EXEC, SockAddr, Stat,
};

use crate::maps::{
    ARGS_IOVEC, ARGS_MSGHDR, ARGS_PLAIN, ARGS_SENDFILE, BODY_HINTS, CAPTURE_BYTES, EVENTS, EXEC_WOKEN,
    GATHER, STATS, WAKEUP_BYTES, count, global_u32, global_u64,
};

/// Copies the head of one call's bytes into an event. `kind` (ARGS_*) says what `ptr` is: the
/// buffer, an iovec array (of `vlen` entries), a msghdr, or nothing (sendfile, splice: file bytes
/// are never copied, the count keeps the stream's byte accounting exact). `total` is what the call
/// moved; `base_flags` is DATA_FLAG_TLS for the plaintext of the SSL probes, else 0.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // as emit_prefix
pub fn emit_chunk(
    key: ConnKey,
    direction: u32,
    total: u64,
    kind: u32,
    ptr: u64,
    vlen: u64,
    base_flags: u32,
    info: *mut ConnInfo,
) {
    if kind == ARGS_SENDFILE {
        // SAFETY: `info` is the connection's map entry, found non-null before this function or
        // line, valid for this program's run; its fields are plain integers.
        if unsafe { (*info).class } == CLASS_HTTP {
            emit::<0>(key, direction, total, 0, 0, DATA_FLAG_SENDFILE, false, info);
        }
        return;
    }
    // Body bytes userspace only counts: nothing to copy (small calls are not worth the lookup).
    if total > CAPTURE_SMALL as u64 && inside_hinted_body(key, direction, total, info) {
        emit::<0>(
            key,
            direction,
            total,
            0,
            0,
            base_flags | DATA_FLAG_SKIPPED,
            false,
            info,
        );
        count(Stat::BodyCallsSkipped, 1);
        return;
    }
    let (iov, vlen) = match kind {
        ARGS_PLAIN => {
            emit_prefix(key, direction, total, ptr, total, base_flags, false, info);
            return;
        }
        ARGS_IOVEC => (ptr, vlen),
        ARGS_MSGHDR => {
            // struct user_msghdr: msg_name @0, msg_namelen @8, msg_iov @16, msg_iovlen @24
            // SAFETY: the helper copies from user memory and returns an error on an unmapped
            // address; the length is bounded for the verifier.
            let Ok([iov, vlen]) = (unsafe { bpf_probe_read_user((ptr + 16) as *const [u64; 2]) }) else {
                count(Stat::ReadUserFailed, 1);
                return;
            };
            (iov, vlen)
        }
        _ => return,
    };
    let Some((base, len)) = first_iovec(iov) else {
        return;
    };
    let want = total.min(global_u32(&CAPTURE_BYTES) as u64);
    if len >= want || vlen <= 1 {
        if len < total {
            count(Stat::VectoredPartial, 1);
        }
        emit_prefix(key, direction, total, base, len, DATA_FLAG_VECTORED, false, info);
        return;
    }
    // The head is spread over several iovecs (a status line, then headers, ...): gather it.
    let Some((buf, gathered)) = gather_iovecs(iov, vlen, want) else {
        return;
    };
    if gathered < want {
        count(Stat::VectoredPartial, 1);
    }
    emit_prefix(
        key,
        direction,
        total,
        buf,
        gathered,
        DATA_FLAG_VECTORED,
        true,
        info,
    );
}

/// Iovecs gathered at most, for a head spread over several. nginx writes an HTTP/2 connection's
/// first response as 5 (its SETTINGS, WINDOW_UPDATE, SETTINGS ACK, then the HEADERS frame's
/// header and its block); gRPC's C core one slice per header name and value (13 for a first
/// unary response with its trailers, 29 for a channel's first request); HTTP/1 heads take up
/// to 4. The gathering stops at the capture limit, so more iovecs cost only on such calls.
const MAX_IOVECS: u64 = 32;

/// Copies the first `want` bytes of up to MAX_IOVECS iovecs into the per-CPU scratch buffer;
/// returns its address and how many bytes it holds.
#[inline(always)]
fn gather_iovecs(iov: u64, vlen: u64, want: u64) -> Option<(u64, u64)> {
    let buf = GATHER.get_ptr_mut(0)? as *mut u8;
    let mut off: u64 = 0;
    for i in 0..MAX_IOVECS {
        if i >= vlen || off >= want {
            break;
        }
        // SAFETY: the helper copies from user memory and returns an error on an unmapped address;
        // the length is bounded for the verifier.
        let Ok([base, len]) = (unsafe { bpf_probe_read_user((iov + i * 16) as *const [u64; 2]) }) else {
            count(Stat::ReadUserFailed, 1);
            break;
        };
        let mut n = want - off;
        if len < n {
            n = len;
        }
        // Masked so the verifier sees offset + length within the buffer (2 * CAPTURE_MAX).
        let at = off & (CAPTURE_MAX as u64 - 1);
        let n = n & (CAPTURE_MAX as u64 - 1);
        if n > 0 {
            // SAFETY: `buf + at` and `n` stay inside the per-CPU buffer (both masked above); the
            // helper returns an error on an unmapped user address.
            let rc = unsafe {
                generated::bpf_probe_read_user(
                    buf.add(at as usize).cast(),
                    n as u32,
                    base as *const core::ffi::c_void,
                )
            };
            if rc != 0 {
                count(Stat::ReadUserFailed, 1);
                break;
            }
        }
        off = at + n;
    }
    Some((buf as u64, off))
}

/// Index of a direction in ConnInfo::reported.
#[inline(always)]
fn dir_index(direction: u32) -> usize {
    if direction == DIR_INGRESS { 0 } else { 1 }
}

/// The whole call lies before the end of the body userspace told us about.
#[inline(always)]
fn inside_hinted_body(key: ConnKey, direction: u32, total: u64, info: *mut ConnInfo) -> bool {
    let hint_key = BodyHintKey {
        tgid: key.tgid,
        fd: key.fd,
        direction,
        _pad: 0,
    };
    // SAFETY: map values are plain data: another CPU updating this one meanwhile can make
    // what is read stale, never invalid.
    let Some(hint) = (unsafe { BODY_HINTS.get(hint_key) }) else {
        return false;
    };
    // SAFETY: `info` is the connection's map entry, found non-null before this function or line,
    // valid for this program's run; its fields are plain integers.
    let (epoch, at) = unsafe { ((*info).epoch, (*info).reported[dir_index(direction)]) };
    hint.epoch == epoch && at + total <= hint.until
}

/// Emits up to the configured prefix of `avail` bytes at `src`, in the smallest reservation
/// that holds it.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // inlined into each probe: plain registers, not a struct on the stack
fn emit_prefix(
    key: ConnKey,
    direction: u32,
    total: u64,
    src: u64,
    avail: u64,
    flags: u32,
    src_kernel: bool,
    info: *mut ConnInfo,
) {
    let limit = global_u32(&CAPTURE_BYTES) as u64;
    let mut want = if total < avail { total } else { avail };
    if want > limit {
        want = limit;
    }
    if want <= CAPTURE_SMALL as u64 {
        emit::<CAPTURE_SMALL>(key, direction, total, src, want, flags, src_kernel, info);
    } else {
        emit::<CAPTURE_MAX>(key, direction, total, src, want, flags, src_kernel, info);
    }
}

/// struct iovec { void *iov_base; size_t iov_len; }
#[inline(always)]
fn first_iovec(iov: u64) -> Option<(u64, u64)> {
    // SAFETY: the helper copies from user memory and returns an error on an unmapped address; the
    // length is bounded for the verifier.
    match unsafe { bpf_probe_read_user(iov as *const [u64; 2]) } {
        Ok([base, len]) => Some((base, len)),
        Err(_) => {
            count(Stat::ReadUserFailed, 1);
            None
        }
    }
}

/// Submit without waking the reader unless enough data waits: a wakeup per record would cost
/// the traced thread over a microsecond; the reader drains on a short timer instead.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if let Some(p) = STATS.get_ptr_mut(Stat::RingAvailBytes as u32) {
        // SAFETY: `p` is a per-CPU map value checked non-null above: only this CPU's program writes
        // it.
        unsafe { *p = avail };
    }
    if avail >= global_u64(&WAKEUP_BYTES) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)] // as emit_prefix
pub fn emit<const N: usize>(
    key: ConnKey,
    direction: u32,
    total: u64,
    src: u64,
    want: u64,
    flags: u32,
    src_kernel: bool,
    info: *mut ConnInfo,
) {
    // TLS plaintext of a connection already found not to be HTTP: nothing to reserve or copy.
    // SAFETY: `info` is the connection's map entry, found non-null before this function or line,
    // valid for this program's run; its fields are plain integers.
    if flags & DATA_FLAG_TLS != 0 && unsafe { (*info).plain_class } == CLASS_OTHER {
        return;
    }
    // Every discard below says NO_WAKEUP: a discard with flags 0 may wake the reader, which cost
    // about 1.5 µs a call here (measured by discarding every record).
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
        // SAFETY: `ev` is this program's ring reservation, checked non-null above and not yet
        // submitted.
        let dst = unsafe { (*ev).data.as_mut_ptr().cast() };
        let rc = if src_kernel {
            // The gathered head, in the per-CPU scratch buffer.
            // SAFETY: the helper copies from kernel memory and returns an error on a bad address.
            unsafe { generated::bpf_probe_read_kernel(dst, n, src as *const core::ffi::c_void) }
        } else {
            // SAFETY: the helper copies from user memory and returns an error on an unmapped
            // address; the length is bounded for the verifier.
            unsafe { generated::bpf_probe_read_user(dst, n, src as *const core::ffi::c_void) }
        };
        if rc == 0 {
            captured = n;
        } else {
            count(Stat::ReadUserFailed, 1);
        }
    }

    let head: u32 = if captured > 0 {
        // The reservation holds at least 4 bytes (N >= 4 whenever want > 0); the bytes past
        // `captured` are masked off by `probe`.
        // SAFETY: `ev` is a live ring reservation of at least 4 data bytes (see above); read copies
        // them unaligned-safe as a [u8; 4].
        u32::from_le_bytes(unsafe { core::ptr::read((*ev).data.as_ptr().cast::<[u8; 4]>()) })
    } else {
        0
    };
    if flags & DATA_FLAG_TLS != 0 {
        // Plaintext from the SSL uprobes: the syscall bytes of this socket are ciphertext.
        // SAFETY: `info` is the connection's map entry, found non-null before this function or
        // line, valid for this program's run; its fields are plain integers.
        unsafe {
            if (*info).class == CLASS_UNKNOWN {
                (*info).class = CLASS_TLS;
            }
        }
        // SAFETY: `info` is the connection's map entry, found non-null before this function or
        // line, valid for this program's run; its fields are plain integers.
        let plain = unsafe { (*info).plain_class };
        if plain == CLASS_OTHER {
            entry.discard(BPF_RB_NO_WAKEUP as u64);
            return;
        }
        if plain == CLASS_UNKNOWN {
            let Some(first) = probe(info, head, captured) else {
                return submit_data(entry, key, direction, total, captured, flags, info);
            };
            // SAFETY: `info` is the connection's map entry, found non-null before this function or
            // line, valid for this program's run; its fields are plain integers.
            let mid_stream = unsafe { (*info).tries_left } > 1;
            if looks_like_http(first) || looks_like_h2(first, mid_stream) {
                // SAFETY: `info` is the connection's map entry, found non-null before this function
                // or line, valid for this program's run; its fields are plain integers.
                unsafe { (*info).plain_class = CLASS_HTTP };
            } else {
                // Other protocols: not ours.
                // SAFETY: `info` is the connection's map entry, found non-null before this function
                // or line, valid for this program's run; its fields are plain integers.
                unsafe { (*info).plain_class = CLASS_OTHER };
                count(Stat::ConnNotHttp, 1);
                entry.discard(BPF_RB_NO_WAKEUP as u64);
                return;
            }
        }
    // SAFETY: `info` is the connection's map entry, found non-null before this function or line,
    // valid for this program's run; its fields are plain integers.
    } else if unsafe { (*info).class } == CLASS_UNKNOWN {
        let Some(first) = probe(info, head, captured) else {
            return submit_data(entry, key, direction, total, captured, flags, info);
        };
        // SAFETY: `info` is the connection's map entry, found non-null before this function or
        // line, valid for this program's run; its fields are plain integers.
        let mid_stream = unsafe { (*info).tries_left } > 1;
        if looks_like_http(first) || looks_like_h2(first, mid_stream) {
            // SAFETY: `info` is the connection's map entry, found non-null before this function or
            // line, valid for this program's run; its fields are plain integers.
            unsafe { (*info).class = CLASS_HTTP };
        } else if first[0] == 0x16 && first[1] == 0x03 {
            // A TLS handshake record: from now on only the SSL uprobes speak for this socket.
            // SAFETY: `info` is the connection's map entry, found non-null before this function or
            // line, valid for this program's run; its fields are plain integers.
            unsafe { (*info).class = CLASS_TLS };
            entry.discard(BPF_RB_NO_WAKEUP as u64);
            emit_tls_mark(key);
            return;
        } else {
            // SAFETY: `info` is the connection's map entry, found non-null before this function or
            // line, valid for this program's run; its fields are plain integers.
            let left = unsafe { (*info).tries_left };
            if left <= 1 {
                // SAFETY: `info` is the connection's map entry, found non-null before this function
                // or line, valid for this program's run; its fields are plain integers.
                unsafe { (*info).class = CLASS_OTHER };
                count(Stat::ConnNotHttp, 1);
            } else {
                // SAFETY: `info` is the connection's map entry, found non-null before this function
                // or line, valid for this program's run; its fields are plain integers.
                unsafe { (*info).tries_left = left - 1 };
            }
            entry.discard(BPF_RB_NO_WAKEUP as u64);
            return;
        }
    }

    submit_data(entry, key, direction, total, captured, flags, info);
}

#[inline(always)]
fn submit_data<const N: usize>(
    mut entry: aya_ebpf::maps::ring_buf::RingBufEntry<DataEvent<N>>,
    key: ConnKey,
    direction: u32,
    total: u64,
    captured: u32,
    flags: u32,
    info: *mut ConnInfo,
) {
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is this program's ring reservation, non-null and not yet submitted: only this
    // program writes it.
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
    // SAFETY: `info` is the connection's map entry, found non-null before this function or line,
    // valid for this program's run; its fields are plain integers.
    unsafe { (*info).reported[dir_index(direction)] += total };
    count(Stat::EventsSubmitted, 1);
    if total > captured as u64 {
        count(Stat::BytesNotCopied, total - captured as u64);
    }
}

/// The first 4 bytes of a stream not classified yet, from the bytes of earlier short calls
/// (`ConnInfo::prefix`) and this call's (`head`, `captured` of them). `None`: fewer than 4 are
/// known and they could begin a method token (a head written a byte at a time, as a slow-loris
/// client does): the call is passed on unclassified, so that writing in small pieces neither
/// hides a head nor has it declared not HTTP; at most 3 calls can be short before 4 bytes are
/// known. Fewer than 4 that cannot begin one: zero-padded, which no class matches.
#[inline(always)]
fn probe(info: *mut ConnInfo, head: u32, captured: u32) -> Option<[u8; 4]> {
    // SAFETY: `info` is the connection's map entry, found non-null before this function or line,
    // valid for this program's run; its fields are plain integers.
    let known = unsafe { (*info).prefix_len } as u32 & 3;
    let taken = if captured > 4 { 4 } else { captured };
    let new = if taken >= 4 {
        head
    } else {
        head & ((1u32 << (8 * taken)) - 1)
    };
    // SAFETY: `info` is the connection's map entry, found non-null before this function or line,
    // valid for this program's run; its fields are plain integers.
    let bytes = unsafe { (*info).prefix } | (new << (8 * known));
    let len = known + taken;
    if len >= 4 {
        // SAFETY: `info` is the connection's map entry, found non-null before this function or
        // line, valid for this program's run; its fields are plain integers.
        unsafe { (*info).prefix_len = 0 };
        return Some(bytes.to_le_bytes());
    }
    let b = bytes.to_le_bytes();
    if len > 0 && could_begin_method(b, len) {
        // SAFETY: `info` is the connection's map entry, found non-null before this function or
        // line, valid for this program's run; its fields are plain integers.
        unsafe {
            (*info).prefix = bytes;
            (*info).prefix_len = len as u8;
        }
        return None;
    }
    // SAFETY: `info` is the connection's map entry, found non-null before this function or line,
    // valid for this program's run; its fields are plain integers.
    unsafe { (*info).prefix_len = 0 };
    Some(b)
}

/// `b[..len]` (len 1-3) could begin a request method or "HTTP"/"PRI ": the first letter of one,
/// then capital letters (the 4th byte, where "GET " and "PUT " have their space, is never here).
#[inline(always)]
fn could_begin_method(b: [u8; 4], len: u32) -> bool {
    let upper = |c: u8| c.is_ascii_uppercase();
    matches!(b[0], b'G' | b'P' | b'H' | b'D' | b'O' | b'C' | b'T')
        && (len < 2 || upper(b[1]))
        && (len < 3 || upper(b[2]))
}

/// Tells userspace the connection is TLS, so it can count blind spots (TLS it never sees the
/// plaintext of).
#[inline(always)]
pub fn emit_tls_mark(key: ConnKey) {
    emit_conn_event(EVENT_CONN_TLS, key);
}

/// An event of the ConnCloseEvent layout: a close, a TLS mark, a process exit (fd unused).
#[inline(always)]
pub fn emit_conn_event(kind: u32, key: ConnKey) {
    emit_conn_event_with(kind, key, wakeup_flags());
}

/// An exec, for the TLS scan: the reader is woken at once (not at its next drain), since the new
/// program's first TLS calls are only seen once its probes are attached; but at most once per
/// EXEC_WAKEUP_NS, the rest wait for that wakeup or the drain timer: a wakeup costs the agent
/// ~90 µs (its threads' round trip), and a host running thousands of short programs a second
/// would pay that for each (measured here: 103 µs of agent CPU per exec woken, 5 µs not).
#[inline(always)]
pub fn emit_exec(tgid: u32) {
    let key = ConnKey { tgid, fd: u32::MAX };
    // SAFETY: a helper with no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let flags = match EXEC_WOKEN.get_ptr_mut(0) {
        // SAFETY: the map's one value, found non-null; another CPU racing on it can only cause
        // one more wakeup.
        Some(last) if now.wrapping_sub(unsafe { *last }) >= EXEC_WAKEUP_NS => {
            // SAFETY: as above.
            unsafe { *last = now };
            BPF_RB_FORCE_WAKEUP as u64
        }
        _ => wakeup_flags(),
    };
    emit_conn_event_with(EVENT_PROC_EXEC, key, flags);
}

const EXEC_WAKEUP_NS: u64 = 5_000_000;

#[inline(always)]
fn emit_conn_event_with(kind: u32, key: ConnKey, flags: u64) {
    let Some(mut entry) = EVENTS.reserve::<ConnCloseEvent>(0) else {
        count(Stat::RingFull, 1);
        return;
    };
    entry.write(ConnCloseEvent {
        kind,
        _pad: 0,
        tgid: key.tgid,
        fd: key.fd,
        // SAFETY: a helper with no arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    });
    entry.submit(flags);
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

/// HTTP/2 (RFC 9113): the client preface ("PRI * HTTP/2.0"), or the server's first frame, a
/// SETTINGS frame (length a multiple of 6, type 4), which a server may write before it reads
/// the preface. A connection joined mid-way (`mid_stream`) may start at any frame: a length
/// below 16 KiB (the default maximum frame size) and a known type (0-9); userspace checks the
/// frames further and counts what it cannot follow.
#[inline(always)]
fn looks_like_h2(b: [u8; 4], mid_stream: bool) -> bool {
    if b == *b"PRI " {
        return true;
    }
    if b[0] != 0 {
        return false;
    }
    let len = ((b[1] as u32) << 8) | b[2] as u32;
    (b[3] == 4 && len.is_multiple_of(6)) || (mid_stream && b[1] < 0x40 && b[3] <= 9)
}

/// A connection the probes will report on from now on.
#[inline(always)]
pub fn emit_open(
    key: ConnKey,
    role: u32,
    local: SockAddr,
    peer: SockAddr,
    listen_fd: u32,
    flags: u32,
    epoch: u32,
) {
    let Some(mut entry) = EVENTS.reserve::<ConnOpenEvent>(0) else {
        count(Stat::RingFull, 1);
        return;
    };
    entry.write(ConnOpenEvent {
        kind: EVENT_CONN_OPEN,
        role,
        tgid: key.tgid,
        fd: key.fd,
        // SAFETY: a helper with no arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        local,
        peer,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        listen_fd,
        flags,
        epoch,
        _pad: 0,
    });
    entry.submit(wakeup_flags());
    count(Stat::EventsSubmitted, 1);
}

#[inline(always)]
pub fn emit_close(key: ConnKey) {
    emit_conn_event(EVENT_CONN_CLOSE, key);
}
