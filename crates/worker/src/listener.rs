//! The listening socket a supervised worker is handed instead of binding its
//! port (`PAR_LISTEN_FD`): the supervisor holds every port of the worker range
//! so that no agent can take one, and passes each worker its port's socket
//! across exec. Checked before use: an open descriptor, a listening TCP
//! socket, bound to the port the worker was told.
#![allow(unsafe_code)]

use std::net::TcpListener;
use std::os::fd::{BorrowedFd, FromRawFd as _, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockname, getsockopt, sockopt, SockaddrStorage};

/// Why an inherited descriptor cannot be served on.
#[derive(Debug, thiserror::Error)]
pub enum ListenFdError {
    #[error("PAR_LISTEN_FD={fd} is not a descriptor number this worker may take (3 or above)")]
    Reserved { fd: RawFd },
    #[error("PAR_LISTEN_FD={fd} is not an open descriptor of this worker: {source}")]
    NotOpen {
        fd: RawFd,
        #[source]
        source: nix::Error,
    },
    #[error("PAR_LISTEN_FD={fd} is not a listening socket")]
    NotListening { fd: RawFd },
    #[error("PAR_LISTEN_FD={fd} listens on {found}, not on port {port} (PAR_PORT)")]
    WrongPort { fd: RawFd, found: String, port: u16 },
    #[error("PAR_LISTEN_FD={fd} cannot be set up: {source}")]
    Setup {
        fd: RawFd,
        #[source]
        source: std::io::Error,
    },
}

/// Takes the listening socket `fd` (inherited from the supervisor) for
/// `port`: made close-on-exec, so the agent host and anything it starts never
/// hold it, and non-blocking for the async server.
pub fn inherited(fd: RawFd, port: u16) -> Result<TcpListener, ListenFdError> {
    if fd < 3 {
        return Err(ListenFdError::Reserved { fd });
    }
    // SAFETY: only borrowed for the checks below; an fd that is not open makes
    // fcntl fail (EBADF) before anything else uses it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_GETFD).map_err(|source| ListenFdError::NotOpen { fd, source })?;
    let listening = getsockopt(&borrowed, sockopt::AcceptConn).unwrap_or(false);
    if !listening {
        return Err(ListenFdError::NotListening { fd });
    }
    let found = getsockname::<SockaddrStorage>(fd).ok();
    let found_port = found.as_ref().and_then(|a| {
        a.as_sockaddr_in()
            .map(|a| a.port())
            .or_else(|| a.as_sockaddr_in6().map(|a| a.port()))
    });
    if found_port != Some(port) {
        return Err(ListenFdError::WrongPort {
            fd,
            found: found.map_or_else(|| "no address".into(), |a| a.to_string()),
            port,
        });
    }
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| ListenFdError::Setup {
        fd,
        source: e.into(),
    })?;
    // SAFETY: `fd` is open (checked above), a listening socket handed to this
    // process for it alone to use; nothing else in the worker owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let listener = TcpListener::from(owned);
    listener
        .set_nonblocking(true)
        .map_err(|source| ListenFdError::Setup { fd, source })?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd as _, IntoRawFd as _};

    #[test]
    fn takes_a_listening_socket_on_its_port() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let fd = l.into_raw_fd();
        let got = inherited(fd, port).unwrap();
        assert_eq!(got.local_addr().unwrap().port(), port);
        let flags = fcntl(&got, FcntlArg::F_GETFD).unwrap();
        assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
    }

    #[test]
    fn refuses_what_is_not_its_listening_socket() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let other = port.wrapping_add(1);
        let err = inherited(l.as_raw_fd(), other).unwrap_err().to_string();
        assert!(err.contains("not on port"), "{err}");
        assert!(err.contains("PAR_LISTEN_FD"), "{err}");
        let err = inherited(1, port).unwrap_err().to_string();
        assert!(err.contains("3 or above"), "{err}");
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let err = inherited(file.as_raw_fd(), port).unwrap_err().to_string();
        assert!(err.contains("not a listening socket"), "{err}");
        let err = inherited(100_000, port).unwrap_err().to_string();
        assert!(err.contains("not an open descriptor"), "{err}");
    }
}
