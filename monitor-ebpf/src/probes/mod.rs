pub mod data;
pub mod emit;
pub mod go_tls;
pub mod socket_layer;
pub mod sockets;
pub mod tls;

/// The calling process, unless it is the agent itself.
#[inline(always)]
pub fn traced_pid_tgid() -> Option<u64> {
    let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    if (id >> 32) as u32 == crate::maps::global_u32(&crate::maps::AGENT_TGID) {
        None
    } else {
        Some(id)
    }
}

/// The calling process, unless it is the agent or (with `capture.processes`) a process not
/// named there. Only where connections begin (accept, connect) and where TLS calls enter: a
/// connection never opened is never looked up again, so the data path needs no name check.
#[inline(always)]
pub fn traced_process() -> Option<u64> {
    let id = traced_pid_tgid()?;
    if crate::maps::global_u32(&crate::maps::FILTER_BY_COMM) != 0 {
        let comm = aya_ebpf::helpers::bpf_get_current_comm().ok()?;
        // SAFETY: the map value is read at once; another CPU may update it meanwhile, which can
        // only make it stale, never invalid (plain data).
        unsafe { crate::maps::TRACED_COMMS.get(comm) }?;
    }
    Some(id)
}
