//! systemd readiness notification (sd_notify(3)) without libsystemd: one datagram to the
//! socket named by $NOTIFY_SOCKET. The extension calls `ready()` once its socket listens, so
//! `systemctl start` (Type=notify) returns only when it can serve.
//!
//! It never fails the caller when not run by systemd: no NOTIFY_SOCKET means nothing to do.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. "READY=1") to $NOTIFY_SOCKET; `Ok(false)` when there is none.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    notify_to(&path.to_string_lossy(), state)?;
    Ok(true)
}

/// READY=1 with our pid, so NotifyAccess=main accepts it even when sent from another thread.
pub fn ready() -> io::Result<bool> {
    notify(&format!("READY=1\nMAINPID={}", std::process::id()))
}

/// Sends one notification to `socket`: a path, or an abstract name written `@name`.
pub fn notify_to(socket: &str, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = socket.strip_prefix('@') {
        send_abstract(&sock, name.as_bytes(), state)
    } else if socket.starts_with('/') {
        sock.send_to(state.as_bytes(), socket).map(|_| ())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither a path nor an abstract name",
        ))
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &[u8], state: &str) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(state.as_bytes(), &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_socket_receives_the_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        notify_to(path.to_str().unwrap(), "READY=1").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_socket_receives_the_datagram() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("usbipd-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(&format!("@{name}"), "READY=1\nSTATUS=x").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=x");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(notify_to("relative/path", "READY=1").is_err());
    }
}
