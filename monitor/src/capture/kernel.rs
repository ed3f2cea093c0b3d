//! Loading and attaching the kernel programs, draining their ring buffer, reading their counters.
use std::path::Path;
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use log::{info, warn};
use monitor_common::{
    BodyHint, BodyHintKey, ConnInfo, ConnKey, ROLE_CLIENT, ROLE_SERVER, SEEDED_CLASSIFY_TRIES, Stat,
};
use tokio::io::unix::AsyncFd;

use super::event::{Arena, CaptureEvent, ConnOpen, Decoder, Role};
use super::{comm_key, procfs};
use crate::clock::{agent_now_ns, unix_now_ns};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "apiwatch lacks {} in its effective capabilities (effective uid {uid}): run it as root, or with \
         the capabilities of deploy/systemd/apiwatch.service ({}); docs/install.md says what each is for",
        .missing.join(", "),
        REQUIRED_CAPABILITIES.iter().map(|c| c.1).collect::<Vec<_>>().join(" ")
    )]
    NotPrivileged { missing: Vec<&'static str>, uid: u32 },
    #[error(
        "this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing); apiwatch needs CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
    #[error("tracefs is not available at /sys/kernel/tracing and mounting it failed: {0}")]
    NoTracefs(String),
    #[error("loading the eBPF programs failed (does this kernel support BPF ring buffers, 5.8+?): {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("attaching {program} to {category}:{name} failed: {source}")]
    Attach {
        program: &'static str,
        category: &'static str,
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("eBPF map {0} is missing or has the wrong type: {1}")]
    Map(&'static str, String),
    #[error("the socket-layer capture is not available on this kernel: {0}")]
    SocketLayer(String),
    #[error("waiting on the ring buffer failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the data path hooks the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// The socket layer where the kernel has its tracepoints, else the syscall tracepoints.
    #[default]
    Auto,
    /// `sock:sock_send_length`/`sock_recv_length` and the TCP state tracepoint: only socket
    /// I/O pays, one hook after each call.
    Socket,
    /// The syscall tracepoints (read, write, ..., accept, connect, close): the fallback for
    /// kernels without the socket tracepoints. Every syscall of every task takes the slow path.
    Syscall,
}

impl CaptureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Auto => "auto",
            CaptureMode::Socket => "socket",
            CaptureMode::Syscall => "syscall",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(CaptureMode::Auto),
            "socket" => Some(CaptureMode::Socket),
            "syscall" => Some(CaptureMode::Syscall),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct KernelConfig {
    /// Socket layer, syscall tracepoints, or the best this kernel has.
    pub mode: CaptureMode,
    /// Bytes copied from each syscall buffer (at most monitor_common::CAPTURE_MAX).
    pub capture_bytes: u32,
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    pub ring_bytes: u32,
    /// How often the ring is drained when no wakeup came.
    pub drain_interval: Duration,
    /// Only connections of processes with these names (comm) are traced; empty: every process.
    /// Applied in the kernel where connections begin, so the others cost almost nothing.
    pub processes: Vec<String>,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            mode: CaptureMode::Auto,
            capture_bytes: monitor_common::CAPTURE_DEFAULT,
            ring_bytes: 16 << 20,
            drain_interval: Duration::from_millis(10),
            processes: Vec::new(),
        }
    }
}

const TLS_RESCAN: Duration = Duration::from_secs(30);

/// Socket layer: (program, tracepoint) attached as tp_btf.
const SOCKET_BTF_ATTACHMENTS: &[(&str, &str)] = &[
    ("sock_send", "sock_send_length"),
    ("sock_recv", "sock_recv_length"),
];
/// Socket layer: the lifecycle, on classic tracepoints (neither is a syscall tracepoint).
/// A process's exit too (once per exiting thread, reported for processes that owned a
/// connection): its pid may name another process next, whose facts must be read afresh.
const SOCKET_ATTACHMENTS: &[(&str, &str, &[&str])] = &[
    ("sock_lifecycle", "sock", &["inet_sock_set_state"]),
    ("sock_destroy", "tcp", &["tcp_destroy_sock"]),
    ("process_exit", "sched", &["sched_process_exit"]),
    ("process_exec", "sched", &["sched_process_exec"]),
];

/// Syscall mode: (program, tracepoint category, tracepoint names) - one program may serve
/// several syscalls.
const ATTACHMENTS: &[(&str, &str, &[&str])] = &[
    (
        "enter_accept",
        "syscalls",
        &["sys_enter_accept", "sys_enter_accept4"],
    ),
    (
        "exit_accept",
        "syscalls",
        &["sys_exit_accept", "sys_exit_accept4"],
    ),
    ("enter_connect", "syscalls", &["sys_enter_connect"]),
    ("exit_connect", "syscalls", &["sys_exit_connect"]),
    ("sock_state", "sock", &["inet_sock_set_state"]),
    ("enter_close", "syscalls", &["sys_enter_close"]),
    ("process_exit", "sched", &["sched_process_exit"]),
    ("process_exec", "sched", &["sched_process_exec"]),
    ("enter_read", "syscalls", &["sys_enter_read"]),
    ("enter_recvfrom", "syscalls", &["sys_enter_recvfrom"]),
    (
        "enter_write",
        "syscalls",
        &["sys_enter_write", "sys_enter_sendto"],
    ),
    ("enter_readv", "syscalls", &["sys_enter_readv"]),
    ("enter_writev", "syscalls", &["sys_enter_writev"]),
    ("enter_recvmsg", "syscalls", &["sys_enter_recvmsg"]),
    ("enter_sendmsg", "syscalls", &["sys_enter_sendmsg"]),
    ("enter_sendfile", "syscalls", &["sys_enter_sendfile64"]),
    (
        "exit_data",
        "syscalls",
        &[
            "sys_exit_read",
            "sys_exit_recvfrom",
            "sys_exit_write",
            "sys_exit_sendto",
            "sys_exit_readv",
            "sys_exit_writev",
            "sys_exit_recvmsg",
            "sys_exit_sendmsg",
            "sys_exit_sendfile64",
        ],
    ),
];

/// Counters kept by the kernel programs: counters summed over CPUs, gauges their maximum
/// (`Stat::is_gauge`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct KernelStats {
    pub counters: Vec<(&'static str, u64)>,
}

impl KernelStats {
    pub fn get(&self, stat: Stat) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| *n == stat.name())
            .map(|(_, v)| *v)
            .unwrap_or(0)
    }

    /// Events lost in the kernel: the ring was full, or a map that tracks connections or
    /// in-flight calls was.
    pub fn lost_events(&self) -> u64 {
        self.get(Stat::RingFull) + self.get(Stat::ConnMapInsertFailed) + self.get(Stat::ArgsMapFull)
    }
}

/// What the capture asks the TLS scan thread for.
enum ScanRequest {
    /// Every process (the periodic rescan).
    All,
    /// The processes that just called exec (sched_process_exec): a program started after the
    /// agent, and carrying its own TLS (a Go binary, node), is probed within milliseconds
    /// instead of at the next rescan, and so is every later run of that file.
    Pids(Vec<u32>),
}

/// Execs waiting for the scan thread, at most: past it (a burst of execs while a scan runs) the
/// rest wait for the periodic rescan.
const MAX_PENDING_EXECS: usize = 4096;
/// The data arena's block: about a hundred full-size chunks (CAPTURE_MAX is 4 KiB).
const ARENA_BLOCK: usize = 512 * 1024;

/// The thread that walks /proc and reads ELF files for TLS objects (seconds on a big host); the
/// capture thread only attaches what it finds.
struct TlsScanWorker {
    requests: std::sync::mpsc::SyncSender<ScanRequest>,
    /// Async, so the capture loop attaches what a scan found the moment it is found.
    results: tokio::sync::mpsc::Receiver<super::tls::Found>,
}

impl TlsScanWorker {
    fn start(mut scanner: super::tls::TlsScanner, processes: Vec<String>) -> Result<Self, CaptureError> {
        let (requests, asked) = std::sync::mpsc::sync_channel::<ScanRequest>(4);
        let (found, results) = tokio::sync::mpsc::channel(1);
        std::thread::Builder::new()
            .name("apiwatch-tls-scan".into())
            // Ends when the capture (the requests' sender) is dropped.
            .spawn(move || {
                while let Ok(request) = asked.recv() {
                    let only = match &request {
                        ScanRequest::All => None,
                        ScanRequest::Pids(pids) => Some(pids.as_slice()),
                    };
                    if found.blocking_send(scanner.scan(&processes, only)).is_err() {
                        break;
                    }
                }
            })
            .map_err(CaptureError::Io)?;
        Ok(Self { requests, results })
    }
}

pub struct KernelCapture {
    // Keeps the programs loaded and attached for as long as the capture lives.
    ebpf: Ebpf,
    tls: super::tls::TlsProbes,
    tls_scans: TlsScanWorker,
    last_tls_scan: std::time::Instant,
    /// Processes that called exec since the last request to the scan thread.
    execs: Vec<u32>,
    ring: AsyncFd<RingBuf<MapData>>,
    stats: PerCpuArray<MapData, u64>,
    body_hints: BpfHashMap<MapData, BodyHintKey, BodyHint>,
    decoder: Decoder,
    /// Where data chunks' bytes go (see Arena).
    arena: Arena,
    tick: tokio::time::Interval,
    /// capture.processes, for the TLS rescans.
    processes: Vec<String>,
    /// The data path in use (never Auto).
    mode: CaptureMode,
    /// Ring records taken and decoded; with `decode_errors`, every record the kernel submitted
    /// (`Stat::EventsSubmitted`) once the ring is drained.
    pub records_read: u64,
    /// Ring records that did not decode (logged, counted as dropped `decode_error`).
    pub decode_errors: u64,
}

impl KernelCapture {
    /// Checks prerequisites, loads and attaches every program. Returns the capture and the
    /// connections that were already open (seeded from /proc in syscall mode; the socket layer
    /// adopts them in the kernel on their first I/O), as open events.
    pub fn start(cfg: &KernelConfig) -> Result<(Self, Vec<CaptureEvent>), CaptureError> {
        preflight()?;
        match cfg.mode {
            CaptureMode::Socket => Self::start_in(cfg, CaptureMode::Socket),
            CaptureMode::Syscall => Self::start_in(cfg, CaptureMode::Syscall),
            CaptureMode::Auto if !socket_layer_available() => {
                warn!(
                    "this kernel has no sock:sock_send_length tracepoint: capturing on the syscall tracepoints, \
                     which slow every syscall on the host"
                );
                Self::start_in(cfg, CaptureMode::Syscall)
            }
            CaptureMode::Auto => Self::start_in(cfg, CaptureMode::Socket).or_else(|e| {
                warn!(
                    "the socket-layer capture did not start ({e}); falling back to the syscall tracepoints"
                );
                Self::start_in(cfg, CaptureMode::Syscall)
            }),
        }
    }

    fn start_in(cfg: &KernelConfig, mode: CaptureMode) -> Result<(Self, Vec<CaptureEvent>), CaptureError> {
        let own = std::process::id();
        let capture = cfg.capture_bytes.clamp(64, monitor_common::CAPTURE_MAX as u32);
        let wakeup = u64::from(cfg.ring_bytes / 4);
        let filter_by_comm = u32::from(!cfg.processes.is_empty());
        let socket_layer = u32::from(mode == CaptureMode::Socket);
        let mut ebpf = EbpfLoader::new()
            .override_global("AGENT_TGID", &own, true)
            .override_global("CAPTURE_BYTES", &capture, true)
            .override_global("WAKEUP_BYTES", &wakeup, true)
            .override_global("FILTER_BY_COMM", &filter_by_comm, true)
            .override_global("SOCKET_LAYER", &socket_layer, true)
            .map_max_entries("EVENTS", cfg.ring_bytes)
            .load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor")))
            .map_err(|e| CaptureError::Load(Box::new(e)))?;

        if !cfg.processes.is_empty() {
            let map = ebpf
                .map_mut("TRACED_COMMS")
                .ok_or_else(|| CaptureError::Map("TRACED_COMMS", "missing".into()))?;
            let mut comms: BpfHashMap<&mut MapData, [u8; 16], u8> =
                BpfHashMap::try_from(map).map_err(|e| CaptureError::Map("TRACED_COMMS", e.to_string()))?;
            for name in &cfg.processes {
                comms
                    .insert(comm_key(name), 1, 0)
                    .map_err(|e| CaptureError::Map("TRACED_COMMS", e.to_string()))?;
            }
            info!("tracing only the connections of: {}", cfg.processes.join(", "));
        }

        let seeded = if mode == CaptureMode::Socket {
            attach_socket_layer(&mut ebpf)?;
            seed_listening_ports(&mut ebpf)?;
            info!("capture: socket layer (sock_send_length/sock_recv_length, inet_sock_set_state)");
            Vec::new()
        } else {
            attach_tracepoints(&mut ebpf, ATTACHMENTS)?;
            info!("capture: syscall tracepoints");
            // Seed after attaching, so a connection accepted meanwhile is not missed.
            seed_connections(&mut ebpf, own, &cfg.processes)?
        };

        // The first scan before returning, so TLS already running is probed once the agent says
        // it is ready; later ones on their own thread.
        let mut scanner = super::tls::TlsScanner::default();
        let mut tls = super::tls::TlsProbes::default();
        tls.apply(&mut ebpf, scanner.scan(&cfg.processes, None));
        let tls_scans = TlsScanWorker::start(scanner, cfg.processes.clone())?;

        let ring = ebpf
            .take_map("EVENTS")
            .ok_or_else(|| CaptureError::Map("EVENTS", "missing".into()))?;
        let ring = RingBuf::try_from(ring).map_err(|e| CaptureError::Map("EVENTS", e.to_string()))?;
        let stats = ebpf
            .take_map("STATS")
            .ok_or_else(|| CaptureError::Map("STATS", "missing".into()))?;
        let stats = PerCpuArray::try_from(stats).map_err(|e| CaptureError::Map("STATS", e.to_string()))?;
        let hints = ebpf
            .take_map("BODY_HINTS")
            .ok_or_else(|| CaptureError::Map("BODY_HINTS", "missing".into()))?;
        let body_hints =
            BpfHashMap::try_from(hints).map_err(|e| CaptureError::Map("BODY_HINTS", e.to_string()))?;
        let mut tick = tokio::time::interval(cfg.drain_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // SAFETY: the RingBuf owns its map fd and keeps it open for as long as the AsyncFd lives.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| CaptureError::Io(std::io::Error::other(e.to_string())))?;
        let capture = Self {
            ebpf,
            tls,
            tls_scans,
            last_tls_scan: std::time::Instant::now(),
            execs: Vec::new(),
            ring,
            stats,
            body_hints,
            decoder: Decoder::new(),
            arena: Arena::new(ARENA_BLOCK),
            tick,
            processes: cfg.processes.clone(),
            mode,
            records_read: 0,
            decode_errors: 0,
        };
        Ok((capture, seeded.into_iter().map(CaptureEvent::Open).collect()))
    }

    /// Tells the kernel where bodies in flight end, so it does not copy calls wholly inside
    /// them. A hint that cannot be written only means those bytes get copied.
    pub fn apply_hints(&mut self, hints: &[super::BodyHint]) {
        for h in hints {
            let key = BodyHintKey {
                tgid: h.id.tgid,
                fd: h.id.fd,
                direction: match h.direction {
                    super::Direction::Ingress => monitor_common::DIR_INGRESS,
                    super::Direction::Egress => monitor_common::DIR_EGRESS,
                },
                _pad: 0,
            };
            let value = BodyHint {
                epoch: h.epoch,
                _pad: 0,
                until: h.until,
            };
            let _ = self.body_hints.insert(key, value, 0);
        }
    }

    /// The data path in use: `Socket` or `Syscall`.
    pub fn mode(&self) -> CaptureMode {
        self.mode
    }

    /// Waits for events (a wakeup or the drain timer) and appends up to `max` of them to `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<CaptureEvent>, max: usize) -> Result<(), CaptureError> {
        loop {
            self.drain(out, max);
            self.scan_execs();
            if !out.is_empty() {
                return Ok(());
            }
            tokio::select! {
                guard = self.ring.readable_mut() => guard?.clear_ready(),
                Some(found) = self.tls_scans.results.recv() => {
                    self.tls.apply(&mut self.ebpf, found);
                }
                _ = self.tick.tick() => {}
            }
        }
    }

    /// Takes up to `max` waiting events without waiting.
    pub fn drain(&mut self, out: &mut Vec<CaptureEvent>, max: usize) {
        let ring = self.ring.get_mut();
        while out.len() < max {
            let Some(item) = ring.next() else { break };
            // An exec is for the TLS scan, not the pipeline (nor recordings).
            if let Some(tgid) = exec_record(&item) {
                self.records_read += 1;
                if self.execs.len() < MAX_PENDING_EXECS {
                    self.execs.push(tgid);
                }
                continue;
            }
            match self.decoder.decode_in(&item, &mut self.arena) {
                Ok(ev) => {
                    self.records_read += 1;
                    // Facts and missing addresses come from /proc on the resolver's thread
                    // (resolve.rs): nothing here waits on a file while the ring fills.
                    out.push(ev);
                }
                Err(e) => {
                    self.decode_errors += 1;
                    warn!("undecodable ring record: {e}");
                }
            }
        }
    }

    /// Attaches what the scan thread found, and asks it about the processes that called exec.
    fn scan_execs(&mut self) {
        while let Ok(found) = self.tls_scans.results.try_recv() {
            self.tls.apply(&mut self.ebpf, found);
        }
        if !self.execs.is_empty() {
            let pids = std::mem::take(&mut self.execs);
            // The scan thread busy: they wait for the next drain.
            if let Err(std::sync::mpsc::TrySendError::Full(ScanRequest::Pids(pids))) =
                self.tls_scans.requests.try_send(ScanRequest::Pids(pids))
            {
                self.execs = pids;
            }
        }
    }

    /// Looks for TLS objects loaded since the last scan (new processes, new containers), at most
    /// every `TLS_RESCAN`: asks the scan thread, and attaches what its last scan found.
    pub fn rescan_tls(&mut self) {
        self.scan_execs();
        // Filtered by name, a rescan reads only the named processes' maps: often enough that a
        // new worker is probed within seconds.
        let every = if self.processes.is_empty() {
            TLS_RESCAN
        } else {
            Duration::from_secs(5)
        };
        if self.last_tls_scan.elapsed() >= every {
            self.last_tls_scan = std::time::Instant::now();
            // A scan still running is not queued behind: the next tick asks again.
            let _ = self.tls_scans.requests.try_send(ScanRequest::All);
        }
    }

    /// TLS probe sites the kernel must single-step (slow; see tls_sites).
    pub fn tls_slow_sites(&self) -> usize {
        self.tls.slow_sites
    }

    pub fn tls_libraries(&self) -> &[std::path::PathBuf] {
        &self.tls.libraries
    }

    pub fn kernel_stats(&self) -> KernelStats {
        let counters = Stat::ALL
            .iter()
            .map(|s| {
                let v = self
                    .stats
                    .get(&(*s as u32), 0)
                    .map(|v| combine_cpus(*s, &v))
                    .unwrap_or(0);
                (s.name(), v)
            })
            .collect();
        KernelStats { counters }
    }
}

/// The process of an exec record (sched_process_exec), or None for any other record.
fn exec_record(rec: &[u8]) -> Option<u32> {
    let kind = u32::from_ne_bytes(rec.get(..4)?.try_into().ok()?);
    if kind != monitor_common::EVENT_PROC_EXEC {
        return None;
    }
    // ConnCloseEvent: kind, pad, tgid.
    Some(u32::from_ne_bytes(rec.get(8..12)?.try_into().ok()?))
}

/// One stat from its per-CPU values: a counter is their sum, a gauge (the last value each CPU
/// saw) their maximum; summing a gauge would overstate it N_CPU times.
pub fn combine_cpus(stat: Stat, per_cpu: &[u64]) -> u64 {
    if stat.is_gauge() {
        per_cpu.iter().copied().max().unwrap_or(0)
    } else {
        per_cpu.iter().sum()
    }
}

/// The kernel has the socket tracepoints (Linux 6.3+, net/socket.c).
fn socket_layer_available() -> bool {
    Path::new("/sys/kernel/tracing/events/sock/sock_send_length").exists()
        && Path::new("/sys/kernel/tracing/events/sock/sock_recv_length").exists()
}

fn attach_tracepoints(
    ebpf: &mut Ebpf,
    attachments: &[(&'static str, &'static str, &'static [&'static str])],
) -> Result<(), CaptureError> {
    for (program, category, names) in attachments {
        let prog: &mut TracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| CaptureError::Map(program, "program not in object".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| CaptureError::Map(program, e.to_string()))?;
        prog.load().map_err(|source| CaptureError::Attach {
            program,
            category,
            name: "load",
            source: Box::new(source),
        })?;
        for name in *names {
            prog.attach(category, name)
                .map_err(|source| CaptureError::Attach {
                    program,
                    category,
                    name,
                    source: Box::new(source),
                })?;
        }
    }
    Ok(())
}

fn attach_socket_layer(ebpf: &mut Ebpf) -> Result<(), CaptureError> {
    let btf = Btf::from_sys_fs().map_err(|e| CaptureError::SocketLayer(format!("kernel BTF: {e}")))?;
    // The lifecycle first: a socket established from here on is known before its first I/O.
    attach_tracepoints(ebpf, SOCKET_ATTACHMENTS)?;
    for (program, tracepoint) in SOCKET_BTF_ATTACHMENTS {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| CaptureError::Map(program, "program not in object".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| CaptureError::Map(program, e.to_string()))?;
        let attach_err = |source| CaptureError::Attach {
            program,
            category: "tp_btf",
            name: tracepoint,
            source: Box::new(source),
        };
        prog.load(tracepoint, &btf).map_err(attach_err)?;
        prog.attach().map_err(attach_err)?;
    }
    Ok(())
}

/// Listening sockets that existed before start, so adopted connections get their role.
fn seed_listening_ports(ebpf: &mut Ebpf) -> Result<(), CaptureError> {
    let map = ebpf
        .map_mut("LISTEN_PORTS")
        .ok_or_else(|| CaptureError::Map("LISTEN_PORTS", "missing".into()))?;
    let mut ports: BpfHashMap<&mut MapData, u16, u32> =
        BpfHashMap::try_from(map).map_err(|e| CaptureError::Map("LISTEN_PORTS", e.to_string()))?;
    for (port, n) in procfs::listening_ports() {
        // BPF_NOEXIST: a listen the lifecycle probe saw meanwhile is already counted.
        let _ = ports.insert(port, n, 1);
    }
    Ok(())
}

/// Syscall mode: the connections open before start, from /proc, into the kernel's map.
fn seed_connections(ebpf: &mut Ebpf, own: u32, processes: &[String]) -> Result<Vec<ConnOpen>, CaptureError> {
    let mut seeded = procfs::established_connections(own, agent_now_ns());
    let mut epoch = (unix_now_ns() as u32) | 1;
    if !processes.is_empty() {
        seeded.retain(|o| processes.iter().any(|p| comm_key(p) == comm_key(&o.comm)));
    }
    let map = ebpf
        .map_mut("CONNS")
        .ok_or_else(|| CaptureError::Map("CONNS", "missing".into()))?;
    let mut conns: BpfHashMap<&mut MapData, ConnKey, ConnInfo> =
        BpfHashMap::try_from(map).map_err(|e| CaptureError::Map("CONNS", e.to_string()))?;
    for open in &mut seeded {
        // Any non-zero number the kernel's own (random) epochs are unlikely to repeat.
        epoch = epoch.wrapping_add(2);
        open.epoch = epoch;
        let key = ConnKey {
            tgid: open.id.tgid,
            fd: open.id.fd,
        };
        let role = if open.role == Role::Server {
            ROLE_SERVER
        } else {
            ROLE_CLIENT
        };
        let info = ConnInfo::new(role, SEEDED_CLASSIFY_TRIES, open.epoch);
        // BPF_NOEXIST: an entry the probes made meanwhile is newer than ours.
        let _ = conns.insert(key, info, 1);
    }
    info!("seeded {} connections that were open before start", seeded.len());
    Ok(seeded)
}

/// What the probes need, measured on this kernel (6.18) by removing each in turn (docs/install.md):
/// (bit in the capability sets, name).
pub const REQUIRED_CAPABILITIES: &[(u32, &str)] = &[
    // Programs and maps.
    (39, "CAP_BPF"),
    // Tracepoints, and reading kernel and user memory from the programs.
    (38, "CAP_PERFMON"),
    // perf_event_open of the TLS uprobes (refused with CAP_PERFMON alone here), mounting tracefs.
    (21, "CAP_SYS_ADMIN"),
    // tracefs (root-only directories) for the tracepoint ids.
    (2, "CAP_DAC_READ_SEARCH"),
    // Other users' /proc/PID/maps, /proc/PID/root and /proc/PID/fd: TLS objects inside processes
    // (node), containers' copies, connections open before start.
    (19, "CAP_SYS_PTRACE"),
];

fn preflight() -> Result<(), CaptureError> {
    // Checked whatever the uid: root under a capability bounding set is not all-powerful.
    let missing = missing_capabilities();
    if !missing.is_empty() {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        return Err(CaptureError::NotPrivileged { missing, uid });
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(CaptureError::NoBtf);
    }
    ensure_tracefs()
}

/// The required capabilities missing from the effective set (all of them if it cannot be read).
fn missing_capabilities() -> Vec<&'static str> {
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .unwrap_or(0);
    REQUIRED_CAPABILITIES
        .iter()
        .filter(|(bit, _)| effective & (1u64 << bit) == 0)
        .map(|c| c.1)
        .collect()
}

/// Tracepoints need tracefs; a fresh boot may not have it mounted. Mount it and say so.
fn ensure_tracefs() -> Result<(), CaptureError> {
    let tracing = Path::new("/sys/kernel/tracing");
    if tracing.join("events").exists() {
        return Ok(());
    }
    let src = c"nodev";
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(CaptureError::NoTracefs(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    warn!("tracefs was not mounted: mounted it at /sys/kernel/tracing");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_over_cpus_and_the_ring_fill_gauge_does_not() {
        assert_eq!(combine_cpus(Stat::RingFull, &[3, 4]), 7);
        // Both CPUs saw the same 1 MiB waiting: 1 MiB waits, not 2.
        assert_eq!(combine_cpus(Stat::RingAvailBytes, &[1 << 20, 1 << 20]), 1 << 20);
        assert_eq!(combine_cpus(Stat::RingAvailBytes, &[5, 9]), 9);
        assert_eq!(combine_cpus(Stat::EventsSubmitted, &[]), 0);
    }
}
