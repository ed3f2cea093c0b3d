//! Numbers and addresses written into text without `core::fmt`: every exchange line has two
//! addresses and a timestamp, and the formatting machinery (padding, the `Display` of each
//! octet) cost more there than serializing the rest of the line (callgrind, docs).
use std::net::SocketAddr;

/// `n` in decimal, at least `width` digits (zero-padded).
pub fn push_decimal(out: &mut String, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

/// `addr` as its `Display` writes it: `1.2.3.4:80`, `[::1]:80`. IPv4 by hand, IPv6 (rare on
/// the hot path, and with its own compression rules) through `Display`.
pub fn push_socket_addr(out: &mut String, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_decimal(out, octet as u64, 1);
            }
            out.push(':');
            push_decimal(out, v4.port() as u64, 1);
        }
        SocketAddr::V6(_) => {
            use std::fmt::Write;
            let _ = write!(out, "{addr}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_and_addresses_read_as_display_writes_them() {
        for (n, width) in [
            (0, 1),
            (7, 1),
            (42, 6),
            (999_999, 6),
            (1_000_000, 6),
            (u64::MAX, 1),
            (5, 0),
        ] {
            let mut s = String::new();
            push_decimal(&mut s, n, width);
            assert_eq!(s, format!("{n:0width$}"));
        }
        for a in [
            "0.0.0.0:0",
            "127.0.0.1:18080",
            "255.255.255.255:65535",
            "10.20.3.4:5",
            "[::1]:443",
            "[2001:db8::17]:8080",
            "[::ffff:1.2.3.4]:1",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut s = String::new();
            push_socket_addr(&mut s, &addr);
            assert_eq!(s, addr.to_string());
        }
    }
}
