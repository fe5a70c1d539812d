//! Socket options and flags only some kernels have, with what stands in for them elsewhere.

use std::io;
use std::time::Duration;

use nix::sys::socket::MsgFlags;
use socket2::SockRef;

/// Whether the kernel gives up a TCP connection whose sent data stays unacknowledged for a
/// set time (Linux TCP_USER_TIMEOUT).
pub const HAS_USER_TIMEOUT: bool = cfg!(target_os = "linux");

/// Sets TCP_USER_TIMEOUT where there is one; elsewhere nothing to set.
pub fn set_user_timeout(socket: &SockRef<'_>, timeout: Duration) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    return socket.set_tcp_user_timeout(Some(timeout));
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, timeout);
        Ok(())
    }
}

/// The TCP_USER_TIMEOUT of `socket`; `None` where there is none.
pub fn user_timeout(socket: &SockRef<'_>) -> io::Result<Option<Duration>> {
    #[cfg(target_os = "linux")]
    return socket.tcp_user_timeout();
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        Ok(None)
    }
}

/// `recvmsg` flags for a Unix socket that receives descriptors: close-on-exec as they arrive
/// where the kernel can (Linux MSG_CMSG_CLOEXEC).
pub fn recv_descriptor_flags() -> MsgFlags {
    #[cfg(target_os = "linux")]
    return MsgFlags::MSG_CMSG_CLOEXEC;
    #[cfg(not(target_os = "linux"))]
    MsgFlags::empty()
}

/// `sendmsg` flags: no SIGPIPE on a closed peer where the kernel can (Linux MSG_NOSIGNAL;
/// elsewhere the process ignores SIGPIPE, as Rust programs do).
pub fn send_flags() -> MsgFlags {
    #[cfg(target_os = "linux")]
    return MsgFlags::MSG_NOSIGNAL;
    #[cfg(not(target_os = "linux"))]
    MsgFlags::empty()
}
