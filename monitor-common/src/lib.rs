//! Types shared by the eBPF programs and the userspace agent: the capture-event contract.
//!
//! Every record in the ring buffer starts with a `u32` kind (one of the `EVENT_*` constants), so the
//! userspace decoder can tell them apart before it looks at the rest. All structs are `#[repr(C)]`
//! with explicit padding and no `bool`/`Option`, so both sides agree on the layout byte for byte.
#![no_std]

/// Largest prefix of one syscall's buffer copied into a data event. A power of two, so the kernel
/// can mask lengths with `CAPTURE_MAX - 1` for the verifier.
pub const CAPTURE_MAX: usize = 4096;
/// Data events whose copy fits in this many bytes use a small ring reservation, so the common case
/// (request lines, response headers) does not pay for a 4 KiB slot.
pub const CAPTURE_SMALL: usize = 512;
/// Default prefix: measured against nginx, python and curl traffic, request and response headers
/// are 80..900 bytes; browser requests with cookies reach 2-3 KiB. 4 KiB holds them all.
pub const CAPTURE_DEFAULT: u32 = CAPTURE_MAX as u32;

pub const EVENT_CONN_OPEN: u32 = 1;
pub const EVENT_CONN_CLOSE: u32 = 2;
pub const EVENT_DATA: u32 = 3;
/// The connection's first bytes were a TLS handshake (same layout as ConnCloseEvent).
pub const EVENT_CONN_TLS: u32 = 4;
/// A process exited (same layout as ConnCloseEvent, fd unused): its connections are over.
/// Syscall mode only: an exit closes sockets without the close syscall.
pub const EVENT_PROC_EXIT: u32 = 5;
/// A process called exec (for the TLS scan: its executable may carry its own TLS); tgid only.
pub const EVENT_PROC_EXEC: u32 = 6;

pub const ROLE_SERVER: u32 = 1;
pub const ROLE_CLIENT: u32 = 2;

/// Bytes the process received from the socket.
pub const DIR_INGRESS: u32 = 1;
/// Bytes the process sent to the socket.
pub const DIR_EGRESS: u32 = 2;

/// Data-event flag: the bytes were sent by sendfile; none of them were copied.
pub const DATA_FLAG_SENDFILE: u32 = 1;
/// Data-event flag: only the first iovec of a vectored call was copied.
pub const DATA_FLAG_VECTORED: u32 = 2;
/// Data-event flag: plaintext of a TLS connection, from an OpenSSL uprobe.
pub const DATA_FLAG_TLS: u32 = 4;
/// Data-event flag: body bytes userspace said it does not need (a body hint): counted, not copied.
pub const DATA_FLAG_SKIPPED: u32 = 8;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Connection classification kept in the kernel's connection map.
pub const CLASS_UNKNOWN: u8 = 0;
pub const CLASS_HTTP: u8 = 1;
pub const CLASS_OTHER: u8 = 2;
/// The syscall stream is TLS: its bytes are ciphertext, plaintext comes from the SSL uprobes.
pub const CLASS_TLS: u8 = 3;

/// How many data chunks a connection seeded from /proc (opened before the agent) may show before it
/// is declared not HTTP: it may be in the middle of a body when we start watching it.
pub const SEEDED_CLASSIFY_TRIES: u8 = 8;

/// Per-CPU counters in the `STATS` map, one index per reason. Userspace exports every one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Events written to the ring buffer.
    EventsSubmitted = 0,
    /// The ring buffer was full: an event was lost.
    RingFull = 1,
    /// bpf_probe_read_user failed (the buffer was paged out or invalid).
    ReadUserFailed = 2,
    /// The connection map could not take a new entry.
    ConnMapInsertFailed = 3,
    /// The per-thread syscall-argument map was full.
    ArgsMapFull = 4,
    /// Connections classified as not HTTP (they stop producing data events).
    ConnNotHttp = 5,
    /// Data bytes seen by the probes but not copied (beyond the prefix, or sendfile).
    BytesNotCopied = 6,
    /// A vectored call had more data than its first iovec; the rest was counted, not copied.
    VectoredPartial = 7,
    /// Not a counter: bytes waiting in the ring as last seen by a probe on this CPU (userspace
    /// takes the maximum over CPUs).
    RingAvailBytes = 8,
    /// An SSL_read/SSL_write returned data but its socket was not known yet.
    TlsFdUnknown = 9,
    /// Socket layer: connections that do their I/O through io_uring, which the socket
    /// tracepoints see without a user buffer to read: counted, not captured.
    IoUringConnections = 10,
    /// Socket layer: I/O through a call whose buffer layout is not read (sendmmsg, recvmmsg).
    UnsupportedCall = 11,
    /// Socket layer: connections opened before the agent, adopted on their first I/O.
    ConnAdopted = 12,
    /// Calls wholly inside a body userspace hinted at: counted, not copied.
    BodyCallsSkipped = 13,
}
pub const STAT_COUNT: u32 = 14;

impl Stat {
    pub const ALL: [Stat; STAT_COUNT as usize] = [
        Stat::EventsSubmitted,
        Stat::RingFull,
        Stat::ReadUserFailed,
        Stat::ConnMapInsertFailed,
        Stat::ArgsMapFull,
        Stat::ConnNotHttp,
        Stat::BytesNotCopied,
        Stat::VectoredPartial,
        Stat::RingAvailBytes,
        Stat::TlsFdUnknown,
        Stat::IoUringConnections,
        Stat::UnsupportedCall,
        Stat::ConnAdopted,
        Stat::BodyCallsSkipped,
    ];

    /// How the per-CPU values of this stat combine: counters add up, a gauge (the last value a
    /// CPU saw) is read as the maximum over CPUs.
    pub const fn is_gauge(self) -> bool {
        matches!(self, Stat::RingAvailBytes)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Stat::EventsSubmitted => "events_submitted",
            Stat::RingFull => "ring_full",
            Stat::ReadUserFailed => "read_user_failed",
            Stat::ConnMapInsertFailed => "conn_map_insert_failed",
            Stat::ArgsMapFull => "args_map_full",
            Stat::ConnNotHttp => "conn_not_http",
            Stat::BytesNotCopied => "bytes_not_copied",
            Stat::VectoredPartial => "vectored_partial",
            Stat::RingAvailBytes => "ring_avail_bytes",
            Stat::TlsFdUnknown => "tls_fd_unknown",
            Stat::IoUringConnections => "io_uring_connections",
            Stat::UnsupportedCall => "unsupported_call",
            Stat::ConnAdopted => "conn_adopted",
            Stat::BodyCallsSkipped => "body_calls_skipped",
        }
    }
}

/// Key of the kernel connection map: a socket is an fd in a process (threads share the table).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub fd: u32,
}

/// Value of the kernel connection map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub role: u32,
    /// Class of the syscall byte stream (CLASS_*).
    pub class: u8,
    /// Data chunks still allowed before an unclassified connection is declared not HTTP.
    pub tries_left: u8,
    /// Class of the TLS plaintext stream (CLASS_UNKNOWN, CLASS_HTTP or CLASS_OTHER).
    pub plain_class: u8,
    /// Bytes in `prefix` (0-3).
    pub prefix_len: u8,
    /// Names this connection, not its reusable fd, in body hints; never 0.
    pub epoch: u32,
    /// The first bytes of a stream still unclassified because they came in calls of fewer than
    /// 4 bytes (a head written a byte at a time): byte i at bits 8i. The stream is classified
    /// once 4 bytes are known; shared by the socket stream and, on a TLS connection, the
    /// plaintext stream (the socket one is classified TLS by then).
    pub prefix: u32,
    /// Bytes reported per direction ([ingress, egress]): the offsets body hints are given in.
    pub reported: [u64; 2],
}

impl ConnInfo {
    pub const fn new(role: u32, tries_left: u8, epoch: u32) -> Self {
        Self {
            role,
            class: CLASS_UNKNOWN,
            tries_left,
            plain_class: CLASS_UNKNOWN,
            prefix_len: 0,
            epoch,
            prefix: 0,
            reported: [0, 0],
        }
    }
}

/// Userspace to kernel: in this direction of this connection, the bytes up to stream offset
/// `until` are body the parser only counts; a call whose bytes all lie before it is not copied.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BodyHintKey {
    pub tgid: u32,
    pub fd: u32,
    pub direction: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyHint {
    /// The connection's epoch (ConnInfo::epoch): a hint never applies to a later connection
    /// that reuses the fd.
    pub epoch: u32,
    pub _pad: u32,
    pub until: u64,
}

/// An IPv4 or IPv6 socket address; IPv4 uses the first 4 bytes of `addr`. `family == 0` means the
/// kernel could not tell (userspace resolves it from /proc).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockAddr {
    pub family: u16,
    /// Host byte order.
    pub port: u16,
    pub _pad: u32,
    pub addr: [u8; 16],
}

impl SockAddr {
    pub const EMPTY: SockAddr = SockAddr {
        family: 0,
        port: 0,
        _pad: 0,
        addr: [0; 16],
    };
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnOpenEvent {
    pub kind: u32,
    pub role: u32,
    pub tgid: u32,
    pub fd: u32,
    /// CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
    pub ts_ns: u64,
    pub local: SockAddr,
    pub peer: SockAddr,
    pub comm: [u8; 16],
    /// The listening fd an accepted socket came from, or u32::MAX.
    pub listen_fd: u32,
    /// OPEN_FLAG_* bits.
    pub flags: u32,
    /// ConnInfo::epoch, for body hints.
    pub epoch: u32,
    pub _pad: u32,
}

/// Open-event flag: the connection existed before the agent started; its stream may be seen
/// from the middle of a message.
pub const OPEN_FLAG_MIDSTREAM: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnCloseEvent {
    pub kind: u32,
    pub _pad: u32,
    pub tgid: u32,
    pub fd: u32,
    pub ts_ns: u64,
}

/// Header of a data event; `captured` bytes of payload follow it in the same record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataHeader {
    pub kind: u32,
    pub direction: u32,
    pub tgid: u32,
    pub fd: u32,
    pub ts_ns: u64,
    /// Bytes the syscall really moved (its return value).
    pub total_len: u64,
    /// Bytes copied into `data` (a prefix of the total).
    pub captured: u32,
    pub flags: u32,
}

/// A data event with room for `N` captured bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataEvent<const N: usize> {
    pub header: DataHeader,
    pub data: [u8; N],
}

pub type DataEventSmall = DataEvent<CAPTURE_SMALL>;
pub type DataEventLarge = DataEvent<CAPTURE_MAX>;

const _: () = assert!(size_of::<SockAddr>() == 24);
const _: () = assert!(size_of::<ConnOpenEvent>() == 104);
const _: () = assert!(size_of::<ConnInfo>() == 32);
const _: () = assert!(size_of::<ConnCloseEvent>() == 24);
const _: () = assert!(size_of::<DataHeader>() == 40);
const _: () = assert!(size_of::<DataEventLarge>() == 40 + CAPTURE_MAX);
const _: () = assert!(CAPTURE_MAX.is_power_of_two() && CAPTURE_SMALL.is_power_of_two());

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for ConnKey {}
    unsafe impl aya::Pod for ConnInfo {}
    unsafe impl aya::Pod for SockAddr {}
    unsafe impl aya::Pod for BodyHintKey {}
    unsafe impl aya::Pod for BodyHint {}
}

/// Where Go keeps a TLS connection's socket, for the crypto/tls probes: the one table of Go
/// struct offsets, the same in every Go the probes support (1.18 and later; userspace checks the
/// version family from the binary's pclntab, capture/tls_sites.rs). From Go's sources:
/// `crypto/tls.Conn{conn net.Conn, ...}` (an interface: type word, data word),
/// `net.TCPConn{conn}`, `net.conn{fd *netFD}`, `net.netFD{pfd poll.FD, ...}`,
/// `internal/poll.FD{fdmu fdMutex (uint64 + 2 × uint32), Sysfd int, ...}`.
pub mod go {
    /// The data word of `Conn.conn` (the *net.TCPConn).
    pub const CONN_NET_CONN_DATA: u64 = 8;
    /// `TCPConn.conn.fd` (*netFD).
    pub const TCPCONN_NETFD: u64 = 0;
    /// `netFD.pfd.Sysfd`.
    pub const NETFD_SYSFD: u64 = 16;
    /// A wrapper conn that embeds a net.Conn as its first field (`struct { net.Conn; ... }`,
    /// as netutil.LimitListener's and most counting or deadline conns do): the data word of that
    /// interface, at the start of the struct the outer data word points to.
    pub const EMBEDDED_CONN_DATA: u64 = 8;
    /// Wrappers unwrapped at most.
    pub const MAX_WRAPS: usize = 2;
}
