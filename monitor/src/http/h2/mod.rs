//! HTTP/2 (RFC 9113): framing, HPACK, and what gRPC puts on top of them.
pub mod frame;
pub mod hpack;

pub use frame::{FrameEvent, FrameLosses, FrameReader, PREFACE, starts_connection, starts_with_frames};

/// A gRPC method path `/package.Service/Method` as (service, method).
pub fn grpc_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some((service, method))
}

/// `content-type: application/grpc`, `application/grpc+proto`, `application/grpc-web`...
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    value.len() >= 16 && value[..16].eq_ignore_ascii_case(b"application/grpc")
}

/// Counts the messages of one direction of a gRPC call from their 5-byte prefixes (a
/// compressed flag and a 32-bit length, gRPC over HTTP/2 "Length-Prefixed-Message"), following
/// the lengths across DATA frames and capture gaps. A gap over a prefix stops the count (`lost`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcMessages {
    prefix: [u8; 5],
    have: u8,
    /// Bytes of the current message still to come.
    left: u64,
    pub count: u32,
    /// The messages' declared lengths, summed.
    pub bytes: u64,
    pub lost: bool,
}

impl GrpcMessages {
    pub fn feed(&mut self, mut seen: &[u8], unseen: u64) {
        if self.lost {
            return;
        }
        while !seen.is_empty() {
            if self.left > 0 {
                let n = (self.left.min(seen.len() as u64)) as usize;
                self.left -= n as u64;
                seen = &seen[n..];
                continue;
            }
            let n = (5 - self.have as usize).min(seen.len());
            self.prefix[self.have as usize..self.have as usize + n].copy_from_slice(&seen[..n]);
            self.have += n as u8;
            seen = &seen[n..];
            if self.have == 5 {
                let len =
                    u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]);
                self.count += 1;
                self.bytes += len as u64;
                self.left = len as u64;
                self.have = 0;
            }
        }
        if unseen > 0 {
            if self.have == 0 && unseen <= self.left {
                self.left -= unseen;
            } else {
                self.lost = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths() {
        assert_eq!(
            grpc_method("/helloworld.Greeter/SayHello"),
            Some(("helloworld.Greeter", "SayHello"))
        );
        assert_eq!(grpc_method("/users/42/orders"), None);
        assert_eq!(grpc_method("/x/"), None);
        assert!(is_grpc_content_type(b"application/grpc+proto"));
        assert!(!is_grpc_content_type(b"application/json"));
    }

    #[test]
    fn messages_across_pieces_and_gaps() {
        let mut m = GrpcMessages::default();
        let mut bytes = vec![0, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0x10, 0];
        bytes.extend([0u8; 10]);
        // Split at every offset: always 2 messages, 3 + 4096 bytes.
        for cut in 0..bytes.len() {
            let mut m2 = GrpcMessages::default();
            m2.feed(&bytes[..cut], 0);
            m2.feed(&bytes[cut..], 4096 - 10);
            assert_eq!((m2.count, m2.bytes, m2.lost), (2, 3 + 4096, false), "cut {cut}");
        }
        // A gap past the message's end covers the next prefix: lost.
        m.feed(&[0, 0, 0, 0, 2], 10);
        assert!(m.lost);
    }
}
