//! The worker port range, held by the supervisor: every port of the range is
//! bound and listening from the start (before root is dropped, so ports below
//! 1024 work too), each worker is handed its port's listening socket
//! (`PAR_LISTEN_FD`) instead of binding the port itself, and the socket stays
//! here between one worker of a port and the next. Nothing else on the
//! machine — an agent binding ports, with `SO_REUSEADDR`, `SO_REUSEPORT` or on
//! `0.0.0.0` — can take a port of the range while the supervisor runs.
//!
//! A port whose worker is gone keeps listening (giving it up, even for a
//! moment, would let someone take it): from the worker's exit until the port
//! is handed on, the supervisor accepts and closes what connects, so a client
//! (the proxy, a probe) is told at once, as by a refused connection, instead
//! of waiting on a queue no one reads.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd as _, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

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
    held: BTreeMap<u16, Arc<Slot>>,
    used: HashSet<u16>,
    next: u16,
}

impl Ports {
    /// Binds every port of the range. A port something else listens on now
    /// is logged and tried again each time it would be allocated; past half
    /// the open-files limit (or out of descriptors) the binding stops, and the
    /// rest are bound when used.
    pub fn bind(range: PortRange) -> Self {
        let mut held = BTreeMap::new();
        let mut busy = Vec::new();
        // Half the open-files limit at most (a range of thousands of ports
        // must not leave the supervisor without descriptors); the rest are
        // bound when used.
        let budget = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(512, |(soft, _)| (soft / 2).max(64));
        for port in range.start..=range.end {
            if held.len() as u64 >= budget {
                tracing::warn!(
                    held = held.len(),
                    "half the open-files limit is held: the rest of the worker range is bound when used"
                );
                break;
            }
            match listen(port) {
                Ok(l) => {
                    held.insert(port, Slot::new(l));
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
        // Ports already held first: a port is bound anew only when none is
        // free (a range larger than what was bound at start stays bounded).
        self.pick(true).or_else(|| self.pick(false))
    }

    fn pick(&mut self, held: bool) -> Option<u16> {
        let len = u32::from(self.range.end - self.range.start) + 1;
        for i in 0..len {
            let port =
                self.range.start + ((u32::from(self.next - self.range.start) + i) % len) as u16;
            if self.used.contains(&port) || self.held.contains_key(&port) != held {
                continue;
            }
            match self.held.get(&port) {
                Some(slot) => slot.hand_on(),
                None => match listen(port) {
                    Ok(l) => {
                        self.held.insert(port, Slot::new(l));
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
    pub fn lease(&self, port: u16) -> Option<Lease> {
        let slot = self.held.get(&port)?;
        Some(Lease {
            slot: Arc::clone(slot),
            turn: slot.lock().turn,
        })
    }

    pub fn range(&self) -> PortRange {
        self.range
    }

    /// How many ports of the range the supervisor holds.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The port's worker is gone; its socket stays here, listening, and
    /// what connects to it is turned away until the port is handed on.
    pub fn release(&mut self, port: u16) {
        if self.used.remove(&port) {
            if let Some(slot) = self.held.get(&port) {
                let turn = slot.lock().turn;
                slot.turn_away(turn);
            }
        }
    }
}

/// One port's listening socket and whose it is now.
#[derive(Debug)]
struct Slot {
    socket: TcpListener,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// Counts the workers the port was handed to.
    turn: u64,
    /// Accepts and closes connections while no worker has the port.
    refuser: Option<JoinHandle<()>>,
}

impl Slot {
    fn new(socket: TcpListener) -> Arc<Self> {
        Arc::new(Slot {
            socket,
            state: Mutex::new(SlotState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new turn: nothing of before is turned away or queued any more.
    fn hand_on(&self) {
        let mut st = self.lock();
        st.turn += 1;
        if let Some(r) = st.refuser.take() {
            r.abort();
        }
        drain(&self.socket);
    }

    /// Turns connections away from now on, if `turn` is still the port's
    /// (a worker of an earlier turn that exits late changes nothing).
    fn turn_away(&self, turn: u64) {
        let mut st = self.lock();
        if st.turn != turn || st.refuser.is_some() {
            return;
        }
        drain(&self.socket);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(listener) = self
            .socket
            .try_clone()
            .ok()
            .and_then(|l| l.set_nonblocking(true).ok().map(|()| l))
        else {
            return;
        };
        let _guard = runtime.enter();
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        st.refuser = Some(runtime.spawn(refuse(listener)));
    }
}

/// What a worker holds of its port: the socket to inherit, and the turn it
/// was handed in.
#[derive(Debug)]
pub struct Lease {
    slot: Arc<Slot>,
    turn: u64,
}

impl Lease {
    /// The listening socket, for the worker to inherit.
    pub fn fd(&self) -> RawFd {
        self.slot.socket.as_raw_fd()
    }

    /// The worker exited: what connects is turned away at once (not queued
    /// for nobody until the runtime releases the port).
    pub fn worker_gone(&self) {
        self.slot.turn_away(self.turn);
    }
}

/// Accepts and closes every connection (an idle port's clients learn at once
/// that no worker is there).
async fn refuse(listener: tokio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => drop(conn),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
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
    // The flag belongs to the socket, which the previous worker shared (and
    // may have made blocking): the caller must not wait here.
    if l.set_nonblocking(true).is_err() {
        return;
    }
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
        if ports.lease(p + 1).is_none() {
            return; // p+1 is someone else's too
        }
        assert!(ports.lease(p).is_none(), "port {p} is another process's");
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
        if ports.lease(p).is_none() {
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
        if ports.lease(p).is_none() || ports.lease(p + 1).is_none() {
            return;
        }
        let mut stale = TcpStream::connect(("127.0.0.1", p)).unwrap();
        stale.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(ports.allocate(), Some(p));
        // Closed by the drain: the client reads the end (or a reset).
        assert!(closed_by_peer(stale), "the queued connection is still open");
        let fresh = TcpStream::connect(("127.0.0.1", p)).unwrap();
        let l = &ports.held.get(&p).unwrap().socket;
        let (accepted, _) = l.accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), fresh.local_addr().unwrap());
    }

    /// Reads until the peer closes (or resets) the connection.
    fn closed_by_peer(mut conn: TcpStream) -> bool {
        conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        match conn.read(&mut buf) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_released_port_turns_clients_away_until_it_is_handed_on() {
        let Some((other, range)) = range_of_two() else {
            return;
        };
        drop(other);
        let mut ports = Ports::bind(range);
        let p = range.start;
        if ports.lease(p).is_none() || ports.lease(p + 1).is_none() {
            return;
        }
        assert_eq!(ports.allocate(), Some(p));
        let first = ports.lease(p).unwrap();
        // The worker exits: a client connecting now is closed at once.
        first.worker_gone();
        let conn = TcpStream::connect(("127.0.0.1", p)).unwrap();
        let gone = tokio::task::spawn_blocking(move || closed_by_peer(conn));
        assert!(gone.await.unwrap(), "turned away while no worker has it");
        ports.release(p);
        assert_eq!(ports.allocate(), Some(p + 1));
        assert_eq!(ports.allocate(), Some(p), "handed on");
        // The first worker's late exit changes nothing for the second.
        first.worker_gone();
        let fresh = TcpStream::connect(("127.0.0.1", p)).unwrap();
        let socket = ports.held.get(&p).unwrap().socket.try_clone().unwrap();
        socket.set_nonblocking(false).unwrap();
        let accepted = tokio::task::spawn_blocking(move || socket.accept().unwrap().0)
            .await
            .unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), fresh.local_addr().unwrap());
    }

    #[test]
    fn holds_at_most_half_the_open_files_limit_and_hands_out_held_ports_first() {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, 200, hard).unwrap();
        let start = 30000 + fastrand::u16(..30000);
        let mut ports = Ports::bind(PortRange {
            start,
            end: start + 299,
        });
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
        let held = ports.held();
        assert!(
            (50..=100).contains(&held),
            "{held} ports held with a limit of 200"
        );
        for _ in 0..held {
            assert!(ports.allocate().is_some());
        }
        assert_eq!(ports.held(), held, "the ports held are handed out first");
        if ports.allocate().is_some() {
            assert_eq!(ports.held(), held + 1, "then one more is bound");
        }
    }
}
