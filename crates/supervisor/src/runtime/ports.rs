//! Worker port allocation from the configured range, skipping ports in use.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use crate::config::PortRange;

/// Hands out ports of a range; a port is taken only if nobody holds it in
/// the supervisor and nothing on the machine listens on it.
#[derive(Debug)]
pub struct Ports {
    range: PortRange,
    used: HashSet<u16>,
    next: u16,
}

impl Ports {
    pub fn new(range: PortRange) -> Self {
        Ports {
            range,
            used: HashSet::new(),
            next: range.start,
        }
    }

    /// The lowest free port of the range (from the last one handed out, wrapping),
    /// or `None` when every port is in use.
    pub fn allocate(&mut self) -> Option<u16> {
        let len = u32::from(self.range.end - self.range.start) + 1;
        for i in 0..len {
            let port =
                self.range.start + ((u32::from(self.next - self.range.start) + i) % len) as u16;
            if self.used.contains(&port) || !is_free(port) {
                continue;
            }
            self.used.insert(port);
            self.next = if port == self.range.end {
                self.range.start
            } else {
                port + 1
            };
            return Some(port);
        }
        None
    }

    pub fn range(&self) -> PortRange {
        self.range
    }

    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }
}

/// Whether binding 127.0.0.1:port (and 0.0.0.0:port) works right now.
pub fn is_free(port: u16) -> bool {
    let lo = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    TcpListener::bind(lo).is_ok() && TcpListener::bind(any).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_ports_in_use_and_reuses_released_ones() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = held.local_addr().unwrap().port();
        if p == u16::MAX {
            return;
        }
        let mut ports = Ports::new(PortRange {
            start: p,
            end: p + 1,
        });
        let got = ports.allocate();
        if is_free(p + 1) {
            assert_eq!(got, Some(p + 1));
            assert_eq!(ports.allocate(), None);
            ports.release(p + 1);
            assert_eq!(ports.allocate(), Some(p + 1));
        } else {
            assert_eq!(got, None);
        }
    }
}
