//! The worker port range, held by the supervisor: every port of the range is
//! bound and listening from the start (before root is dropped, so ports below
//! 1024 work too), each worker is handed its port's listening socket
//! (`PAR_LISTEN_FD`) instead of binding the port itself, and the socket stays
//! here between one worker of a port and the next. Nothing else on the
//! machine — an agent binding ports, with `SO_REUSEADDR`, `SO_REUSEPORT` or on
//! `0.0.0.0` — can take a port of the range while the supervisor runs.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, RawFd};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};

use crate::config::PortRange;

/// Connections a worker's listening socket queues before it accepts them
/// (what a worker binding its own port with tokio gets).
const BACKLOG: i32 = 1024;

/// The address workers listen on (`PAR_HOST` of every supervised worker).
pub const WORKER_HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Hands out the ports of the range with their listening sockets; a port is
/// taken only if nobody holds it in the supervisor.
#[derive(Debug)]
pub struct Ports {
    range: PortRange,
    /// The listening sockets, one per port the supervisor could bind.
    held: BTreeMap<u16, TcpListener>,
    used: HashSet<u16>,
    next: u16,
}

impl Ports {
    /// Binds every port of the range. A port something else listens on now
    /// is logged and tried again each time it would be allocated; running out
    /// of file descriptors stops the binding (the rest are tried the same way).
    pub fn bind(range: PortRange) -> Self {
        let mut held = BTreeMap::new();
        let mut busy = Vec::new();
        for port in range.start..=range.end {
            match listen(port) {
                Ok(l) => {
                    held.insert(port, l);
                }
                Err(e) if e.raw_os_error().is_some_and(is_out_of_fds) => {
                    tracing::warn!(
                        port,
                        error = %e,
                        "out of file descriptors: the rest of the worker range is bound when used"
                    );
                    break;
                }
                Err(_) => busy.push(port),
            }
        }
        if !busy.is_empty() {
            tracing::warn!(
                ports = ?busy,
                "worker ports already in use by another process: each is tried again when needed"
            );
        }
        tracing::info!(
            range = %format!("{}-{}", range.start, range.end),
            held = held.len(),
            "the supervisor holds the worker port range"
        );
        Ports {
            range,
            held,
            used: HashSet::new(),
            next: range.start,
        }
    }

    /// The next free port of the range (from the last one handed out,
    /// wrapping), its socket emptied of connections queued before (nothing
    /// meant for an earlier worker of the port reaches the next), or `None`
    /// when every port is in use.
    pub fn allocate(&mut self) -> Option<u16> {
        let len = u32::from(self.range.end - self.range.start) + 1;
        for i in 0..len {
            let port =
                self.range.start + ((u32::from(self.next - self.range.start) + i) % len) as u16;
            if self.used.contains(&port) {
                continue;
            }
            match self.held.get(&port) {
                Some(l) => drain(l),
                None => match listen(port) {
                    Ok(l) => {
                        self.held.insert(port, l);
                    }
                    Err(_) => continue,
                },
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

    /// The listening socket of an allocated port, for its worker to inherit.
    pub fn listener(&self, port: u16) -> Option<BorrowedFd<'_>> {
        self.held.get(&port).map(|l| l.as_fd())
    }

    pub fn range(&self) -> PortRange {
        self.range
    }

    /// How many ports of the range the supervisor holds.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The port's worker is gone; its socket stays here, listening.
    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }
}

fn is_out_of_fds(errno: i32) -> bool {
    errno == nix::errno::Errno::EMFILE as i32 || errno == nix::errno::Errno::ENFILE as i32
}

/// A non-blocking, close-on-exec socket listening on `WORKER_HOST:port`, with
/// `SO_REUSEADDR` (a port with connections in TIME_WAIT binds) and without
/// `SO_REUSEPORT` (no other socket can join it).
fn listen(port: u16) -> std::io::Result<TcpListener> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(WORKER_HOST, port)),
    )?;
    socket::listen(
        &fd,
        socket::Backlog::new(BACKLOG).unwrap_or(socket::Backlog::MAXCONN),
    )?;
    Ok(TcpListener::from(fd))
}

/// Closes every connection queued on `l` (a client of the previous worker of
/// the port, or one that connected while no worker had it).
fn drain(l: &TcpListener) {
    for _ in 0..(BACKLOG * 2) {
        if l.accept().is_err() {
            return;
        }
    }
}

/// Lets the worker spawned by `cmd` inherit `fd` (close-on-exec here): the
/// flag is cleared in the child only, between fork and exec, so no other
/// process started meanwhile gets the socket.
pub fn inherit(cmd: &mut tokio::process::Command, fd: RawFd) {
    // SAFETY: the closure runs between fork and exec and only calls fcntl,
    // which is async-signal-safe; it allocates nothing. `fd` stays open in
    // the parent (held by `Ports`) across the fork.
    unsafe {
        cmd.pre_exec(move || {
            use nix::fcntl::{fcntl, FcntlArg, FdFlag};
            let fd = BorrowedFd::borrow_raw(fd);
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;

    fn range_of_two() -> Option<(TcpListener, PortRange)> {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = held.local_addr().unwrap().port();
        (p < u16::MAX).then_some((
            held,
            PortRange {
                start: p,
                end: p + 1,
            },
        ))
    }

    #[test]
    fn holds_the_range_and_retries_ports_in_use_when_allocating() {
        let Some((other, range)) = range_of_two() else {
            return;
        };
        let p = range.start;
        let mut ports = Ports::bind(range);
        if ports.listener(p + 1).is_none() {
            return; // p+1 is someone else's too
        }
        assert!(ports.listener(p).is_none(), "port {p} is another process's");
        assert_eq!(ports.allocate(), Some(p + 1));
        assert_eq!(ports.allocate(), None, "{p} is still in use");
        drop(other);
        assert_eq!(ports.allocate(), Some(p), "taken once it is free");
        ports.release(p + 1);
        assert_eq!(ports.allocate(), Some(p + 1));
        assert_eq!(ports.held(), 2);
    }

    #[test]
    fn nothing_else_binds_a_held_port() {
        let Some((other, range)) = range_of_two() else {
            return;
        };
        drop(other);
        let ports = Ports::bind(range);
        let p = range.start;
        if ports.listener(p).is_none() {
            return;
        }
        assert!(std::net::TcpListener::bind(("127.0.0.1", p)).is_err());
        assert!(std::net::TcpListener::bind(("0.0.0.0", p)).is_err());
        // SO_REUSEPORT on the intruder's side only joins nothing.
        let fd = socket::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        socket::setsockopt(&fd, sockopt::ReusePort, &true).unwrap();
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
        let addr = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p));
        assert!(socket::bind(fd.as_raw_fd(), &addr).is_err());
    }

    #[test]
    fn a_port_handed_out_again_has_no_connection_of_before() {
        let Some((other, range)) = range_of_two() else {
            return;
        };
        drop(other);
        let mut ports = Ports::bind(range);
        let p = range.start;
        if ports.listener(p).is_none() || ports.listener(p + 1).is_none() {
            return;
        }
        let mut stale = TcpStream::connect(("127.0.0.1", p)).unwrap();
        stale.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(ports.allocate(), Some(p));
        // Closed by the drain: the client reads the end (or a reset).
        let mut buf = [0u8; 1];
        stale
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        match stale.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("the queued connection is still open: {other:?}"),
        }
        let fresh = TcpStream::connect(("127.0.0.1", p)).unwrap();
        let l = ports.held.get(&p).unwrap();
        let (accepted, _) = l.accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), fresh.local_addr().unwrap());
    }
}
