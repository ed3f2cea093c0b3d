//! /proc: connections that were open before the agent started, and addresses the kernel side
//! could not give (an accept without an address buffer).
use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::event::{ConnId, ConnOpen, Role};

const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0A;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
}

/// The process name of a tgid, from /proc/PID/comm.
pub fn comm_of(tgid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{tgid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// A process's name and cgroup v2 path, as the capture records them (see ProcessFacts).
pub fn process_facts(tgid: u32, ts_ns: u64) -> super::event::ProcessFacts {
    let cgroup = fs::read_to_string(format!("/proc/{tgid}/cgroup"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("0::").map(str::to_string)))
        .unwrap_or_default();
    super::event::ProcessFacts {
        ts_ns,
        tgid,
        comm: comm_of(tgid).unwrap_or_default(),
        cgroup,
        tls_library: String::new(),
    }
}

/// Parses /proc/net/tcp or tcp6 text: inode -> socket.
pub fn parse_tcp_table(text: &str) -> HashMap<u64, TcpSocket> {
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Some(local), Some(remote)) = (parse_hex_addr(f[1]), parse_hex_addr(f[2])) else {
            continue;
        };
        let Ok(state) = u8::from_str_radix(f[3], 16) else {
            continue;
        };
        let Ok(inode) = f[9].parse::<u64>() else {
            continue;
        };
        if inode != 0 {
            out.insert(inode, TcpSocket { local, remote, state });
        }
    }
    out
}

/// "0100007F:1F90" (IPv4, each 32-bit word in host order) or the 32-hex-digit IPv6 form.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => {
            let w = u32::from_str_radix(ip, 16).ok()?;
            IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes()))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                let w = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The TCP sockets visible from a process's network namespace.
fn tcp_sockets_of(pid: u32) -> HashMap<u64, TcpSocket> {
    let mut all = HashMap::new();
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            all.extend(parse_tcp_table(&text));
        }
    }
    all
}

fn socket_inode(pid: u32, fd: u32) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Local and peer address of one socket fd, if it is still open.
pub fn resolve(pid: u32, fd: u32) -> Option<TcpSocket> {
    let inode = socket_inode(pid, fd)?;
    tcp_sockets_of(pid).get(&inode).copied()
}

/// Every established TCP connection of every process (but `skip_tgid`), as seeded open events.
/// Role: server if its local port is one some socket listens on, client otherwise.
pub fn established_connections(skip_tgid: u32, now_ns: u64) -> Vec<ConnOpen> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    // Network namespaces differ per container: read each namespace's tables once.
    let mut tables: HashMap<String, (HashMap<u64, TcpSocket>, HashSet<u16>)> = HashMap::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == skip_tgid {
            continue;
        }
        let Ok(ns) = fs::read_link(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        let ns = ns.to_string_lossy().into_owned();
        let (sockets, listening) = tables.entry(ns).or_insert_with(|| {
            let s = tcp_sockets_of(pid);
            let l = s
                .values()
                .filter(|t| t.state == TCP_LISTEN)
                .map(|t| t.local.port())
                .collect();
            (s, l)
        });
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let mut comm = None;
        for fd in fds.flatten() {
            let Some(fd) = fd.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Some(inode) = socket_inode(pid, fd) else {
                continue;
            };
            let Some(sock) = sockets.get(&inode) else {
                continue;
            };
            if sock.state != TCP_ESTABLISHED {
                continue;
            }
            let role = if listening.contains(&sock.local.port()) {
                Role::Server
            } else {
                Role::Client
            };
            let comm = comm
                .get_or_insert_with(|| comm_of(pid).unwrap_or_default())
                .clone();
            out.push(ConnOpen {
                ts_ns: now_ns,
                id: ConnId { tgid: pid, fd },
                role,
                local: Some(sock.local),
                peer: Some(sock.remote),
                comm,
                seeded: true,
                epoch: 0,
            });
        }
    }
    out
}

/// Local ports listened on, with how many listening sockets each has, across every network
/// namespace a process is in (the socket layer's role for connections it adopts).
pub fn listening_ports() -> HashMap<u16, u32> {
    let mut ports = HashMap::new();
    let mut namespaces = HashSet::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return ports;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(ns) = fs::read_link(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if !namespaces.insert(ns) {
            continue;
        }
        for sock in tcp_sockets_of(pid).values().filter(|t| t.state == TCP_LISTEN) {
            *ports.entry(sock.local.port()).or_insert(0) += 1;
        }
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0000000000000000 100 0 0 10 0\n";
        let t = parse_tcp_table(text);
        assert_eq!(t[&12345].state, TCP_LISTEN);
        assert_eq!(t[&12346].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t[&12346].remote, "127.0.0.1:54321".parse().unwrap());
        let v6 = parse_hex_addr("00000000000000000000000001000000:0050").unwrap();
        assert_eq!(v6, "[::1]:80".parse().unwrap());
        let mapped = parse_hex_addr("0000000000000000FFFF00000100007F:0050").unwrap();
        assert_eq!(mapped, "127.0.0.1:80".parse().unwrap());
    }
}
