pub mod data;
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
