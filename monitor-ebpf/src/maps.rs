//! Every map and load-time global of the kernel side, in one place.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use monitor_common::{BodyHint, BodyHintKey, ConnInfo, ConnKey, STAT_COUNT, SockAddr, Stat};

/// Set by the loader: the agent's own tgid, whose sockets are never traced.
#[unsafe(no_mangle)]
pub static AGENT_TGID: u32 = 0;
/// Set by the loader: how many bytes of each buffer to copy (at most CAPTURE_MAX).
#[unsafe(no_mangle)]
pub static CAPTURE_BYTES: u32 = monitor_common::CAPTURE_DEFAULT;
/// Set by the loader: once this many bytes wait in the ring, wake the reader; below it, records are
/// submitted without a wakeup and the reader drains on its own timer.
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: u64 = 1 << 20;
/// Set by the loader: 1 when only the processes named in TRACED_COMMS are traced.
#[unsafe(no_mangle)]
pub static FILTER_BY_COMM: u32 = 0;

#[inline(always)]
pub fn global_u32(v: &'static u32) -> u32 {
    // SAFETY: `v` is a reference to a global the loader sets before the program runs; a volatile
    // read keeps the compiler from folding its zero initial value.
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
pub fn global_u64(v: &'static u64) -> u64 {
    // SAFETY: `v` is a reference to a global the loader sets before the program runs; a volatile
    // read keeps the compiler from folding its zero initial value.
    unsafe { core::ptr::read_volatile(v) }
}

/// Set by the loader: 1 when the data path is the socket layer (socket_layer.rs), 0 for the
/// syscall tracepoints; tells the TLS probes which connection map holds the socket.
#[unsafe(no_mangle)]
pub static SOCKET_LAYER: u32 = 0;

/// Process names (comm, NUL-padded to 16 bytes) whose connections are traced, when
/// FILTER_BY_COMM is set (`capture.processes`).
#[map]
pub static TRACED_COMMS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(64, 0);

/// The size is set by the loader (`capture.ring_bytes`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Sockets we track, keyed by (tgid, fd); LRU so a host with many idle sockets cannot exhaust it.
#[map]
pub static CONNS: LruHashMap<ConnKey, ConnInfo> = LruHashMap::with_max_entries(65536, 0);

/// Socket layer: every TCP socket established since start (and those adopted on first I/O),
/// keyed by the kernel's `struct sock *`. LRU bounds it; an entry is replaced when the same
/// address is established again, so a stale entry cannot outlive its socket's reuse.
#[map]
pub static SOCKS: LruHashMap<u64, SockConn> = LruHashMap::with_max_entries(65536, 0);

/// Socket layer: which socket a (tgid, fd) names now. A close is reported only by the socket
/// that still owns its fd: an fd closed and reused before its old socket reached TCP_CLOSE
/// must not close the new connection.
#[map]
pub static FD_OWNER: LruHashMap<ConnKey, u64> = LruHashMap::with_max_entries(65536, 0);

/// Socket layer: local ports some socket listens on (port -> listening sockets), so a socket
/// adopted without its handshake gets its role. Seeded from /proc by the loader.
#[map]
pub static LISTEN_PORTS: HashMap<u16, u32> = HashMap::with_max_entries(8192, 0);

/// Socket layer: processes that own a connection reported open, so that their exit is reported
/// (userspace must forget their facts, the cgroup above all, before the pid names another
/// process) without a ring record for every process exit on the host. LRU: a process evicted by
/// 16,384 younger ones is not seen exiting, and its next namesake by pid gets its facts again
/// only after the resolver's set is cleared.
#[map]
pub static OWNER_TGIDS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

pub const SOCK_FLAG_OWNED: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockConn {
    pub info: ConnInfo,
    /// The (tgid, fd) that did the first I/O: the connection's name in events.
    pub owner: ConnKey,
    /// SOCK_FLAG_* bits.
    pub flags: u32,
    /// OPEN_FLAG_* bits for the open event.
    pub open_flags: u32,
    pub local: SockAddr,
    pub peer: SockAddr,
}

/// Arguments of a data syscall in flight, saved on enter, used on exit; keyed by pid_tgid. As
/// SSL_ARGS, a thread's entry stays between its calls (kind ARGS_DONE once used, overwritten in
/// place by the next enter, removed at the thread's exit): no insert and delete per syscall.
#[map]
pub static DATA_ARGS: HashMap<u64, DataArgs> = HashMap::with_max_entries(16384, 0);

#[map]
pub static ACCEPT_ARGS: HashMap<u64, AcceptArgs> = HashMap::with_max_entries(4096, 0);

#[map]
pub static CONNECT_ARGS: HashMap<u64, ConnectArgs> = HashMap::with_max_entries(4096, 0);

/// Server side: the local address of a freshly created child socket, keyed by its peer address;
/// filled from `sock:inet_sock_set_state` (softirq) and taken by accept's exit.
#[map]
pub static PEER_LOCAL: LruHashMap<SockAddr, SockAddr> = LruHashMap::with_max_entries(16384, 0);

/// Written by userspace: where the body of the message in flight ends (see BodyHint).
#[map]
pub static BODY_HINTS: LruHashMap<BodyHintKey, BodyHint> = LruHashMap::with_max_entries(16384, 0);

/// A connection's epoch: any non-zero value a later connection is unlikely to repeat.
#[inline(always)]
pub fn new_epoch() -> u32 {
    // SAFETY: a helper with no arguments.
    (unsafe { aya_ebpf::helpers::bpf_get_prandom_u32() }) | 1
}

/// Scratch for gathering the head of a vectored call from several iovecs (twice the copy limit,
/// so a masked offset plus a masked length always fits).
#[map]
pub static GATHER: PerCpuArray<[u8; 2 * monitor_common::CAPTURE_MAX]> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

#[inline(always)]
pub fn count(stat: Stat, n: u64) {
    if let Some(p) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: `p` is a per-CPU map value checked non-null above: only this CPU's program writes
        // it.
        unsafe { *p += n };
    }
}

pub const ARGS_PLAIN: u32 = 0;
pub const ARGS_IOVEC: u32 = 1;
pub const ARGS_MSGHDR: u32 = 2;
pub const ARGS_SENDFILE: u32 = 3;
/// A DATA_ARGS entry whose syscall has returned (the thread's slot for its next one).
pub const ARGS_DONE: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataArgs {
    pub fd: u32,
    pub direction: u32,
    pub kind: u32,
    /// Number of iovecs (readv/writev), else 0.
    pub vlen: u32,
    /// Buffer, iovec array or msghdr, depending on `kind`.
    pub ptr: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct AcceptArgs {
    pub listen_fd: u32,
    pub _pad: u32,
    pub addr: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectArgs {
    pub fd: u32,
    pub _pad: u32,
    /// The kernel `struct sock *`, learnt at the SYN_SENT transition.
    pub sk: u64,
    pub peer: SockAddr,
    pub local: SockAddr,
}

/// An SSL_read/SSL_write in flight on a thread, saved on entry, used on return; keyed by
/// pid_tgid. `fd` is learnt from the socket syscall the SSL call makes inside itself. A thread's
/// entry stays between its calls, marked SSL_ARGS_DONE by the return and overwritten in place by
/// the next entry: a hash-map insert and delete per call (bucket locks, the free list) cost
/// more than the lookups. A thread's exit removes it (process_exit), so the map holds at most the
/// live threads that use TLS.
#[map]
pub static SSL_ARGS: HashMap<u64, SslArgs> = HashMap::with_max_entries(16384, 0);

/// The socket of each SSL object (per process), for SSL calls served from OpenSSL's buffer
/// without a syscall.
#[map]
pub static SSL_FD: LruHashMap<SslKey, SslSock> = LruHashMap::with_max_entries(65536, 0);

/// An SSL object's socket: the fd, and the connection's epoch, so that an entry left by a freed
/// SSL object whose address is reused (or an fd reused since) is seen to be stale.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslSock {
    pub fd: u32,
    pub epoch: u32,
}

/// The last ciphertext socket each thread read from outside any TLS call (pid_tgid -> fd):
/// libraries that do no socket I/O of their own (node's TLS over memory BIOs) decrypt what the
/// thread just read, so an SSL object whose socket is unknown is taken to be that one.
#[map]
pub static LAST_TLS_RECV: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16384, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslArgs {
    pub ssl: u64,
    pub buf: u64,
    /// For the _ex variants: where OpenSSL writes the byte count; 0 otherwise.
    pub count_ptr: u64,
    pub direction: u32,
    pub fd: u32,
    /// SSL_ARGS_* bits.
    pub flags: u32,
    /// The epoch of the connection `fd` was learnt for (0: not known).
    pub epoch: u32,
}

/// The call returns a byte count as a 64-bit ssize_t (GnuTLS), not a C int (OpenSSL).
pub const SSL_ARGS_RET64: u32 = 1;
/// The call has returned: the entry is the thread's slot for its next call, not a call in flight.
pub const SSL_ARGS_DONE: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ssl: u64,
}

/// A Go crypto/tls `(*Conn).Read` in flight, keyed by goroutine (tgid, g): a goroutine parked in
/// Read resumes on whichever thread the scheduler picks, so the thread id cannot name the call.
/// Saved by go_tls_read at the call's entry, used by go_tls_read_return at one of its RET
/// instructions, then marked SSL_ARGS_DONE in place (as SSL_ARGS). LRU: a goroutine that never
/// returns (its process exits) must not hold a slot for ever; 10k server connections park 10k
/// goroutines in Read, so the map has room for many more.
#[map]
pub static GO_ARGS: LruHashMap<GoKey, GoArgs> = LruHashMap::with_max_entries(65536, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoKey {
    pub tgid: u32,
    pub _pad: u32,
    /// The goroutine's `g` (register r14 in Go's internal ABI).
    pub g: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoArgs {
    pub buf: u64,
    /// The socket under the tls.Conn (read through net.Conn at the entry).
    pub fd: u32,
    /// SSL_ARGS_DONE once returned.
    pub flags: u32,
}

/// When the reader was last woken for an exec (kernel ns; see emit_exec).
#[map]
pub static EXEC_WOKEN: Array<u64> = Array::with_max_entries(1, 0);
