//! Numbers and addresses written into text without `core::fmt`: every exchange line has two
//! addresses and a timestamp, and the formatting machinery (padding, the `Display` of each
//! octet) cost more there than serializing the rest of the line (callgrind, docs).
use std::net::SocketAddr;

/// Where text is written: a `String`, or the byte buffer of an exchange line (written straight
/// into the line instead of through a temporary string).
pub trait TextOut {
    fn push_text(&mut self, s: &str);
    /// One ASCII character (a digit, a separator).
    fn push_ascii(&mut self, c: u8);
}

impl TextOut for String {
    fn push_text(&mut self, s: &str) {
        self.push_str(s);
    }
    fn push_ascii(&mut self, c: u8) {
        debug_assert!(c.is_ascii());
        self.push(c as char);
    }
}

impl TextOut for Vec<u8> {
    fn push_text(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
    fn push_ascii(&mut self, c: u8) {
        self.push(c);
    }
}

/// `n` in decimal, at least `width` digits (zero-padded).
pub fn push_decimal(out: &mut impl TextOut, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    for _ in digits.len()..width {
        out.push_text("0");
    }
    out.push_text(digits);
}

/// `addr` as its `Display` writes it: `1.2.3.4:80`, `[::1]:80`. IPv4 by hand, IPv6 (rare on
/// the hot path, and with its own compression rules) through `Display`.
pub fn push_socket_addr(out: &mut impl TextOut, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            push_octet(out, a);
            out.push_ascii(b'.');
            push_octet(out, b);
            out.push_ascii(b'.');
            push_octet(out, c);
            out.push_ascii(b'.');
            push_octet(out, d);
            out.push_ascii(b':');
            push_decimal(out, v4.port() as u64, 1);
        }
        SocketAddr::V6(_) => out.push_text(&addr.to_string()),
    }
}

/// One IPv4 octet in decimal: at most three digits, written without itoa's general loop.
fn push_octet(out: &mut impl TextOut, n: u8) {
    if n >= 100 {
        out.push_ascii(b'0' + n / 100);
    }
    if n >= 10 {
        out.push_ascii(b'0' + n / 10 % 10);
    }
    out.push_ascii(b'0' + n % 10);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_octet_reads_as_display_writes_it() {
        for n in 0..=255u8 {
            let mut s = String::new();
            push_octet(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

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
            "9.10.99.100:80",
            "199.200.249.250:65534",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut s = String::new();
            push_socket_addr(&mut s, &addr);
            assert_eq!(s, addr.to_string());
            let mut bytes = b"x".to_vec();
            push_socket_addr(&mut bytes, &addr);
            assert_eq!(bytes, format!("x{addr}").into_bytes());
        }
    }
}
