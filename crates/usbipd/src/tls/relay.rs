//! Relays between a TLS session and a plain socket that another party reads as USB/IP:
//! - the client's path to vhci-hcd where kernel TLS is not available: the kernel gets one end
//!   of a Unix stream socket pair (it takes any SOCK_STREAM socket);
//! - the server's path to the extension, which takes a TCP socket: it gets one end of a
//!   loopback TCP connection.
//!
//! This process copies between the other end and the TLS stream, both ways, until either
//! side closes.

use std::io;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream as StdUnixStream;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// Bytes per direction the copy moves at once: a whole 64 KiB URB and then some.
const BUFFER: usize = 256 * 1024;

/// A connected pair: the kernel's end (blocking, as vhci-hcd's receive thread wants it) and
/// ours (for the runtime).
pub fn socket_pair() -> std::io::Result<(StdUnixStream, UnixStream)> {
    let (kernel, ours) = StdUnixStream::pair()?;
    kernel.set_nonblocking(false)?;
    ours.set_nonblocking(true)?;
    Ok((kernel, UnixStream::from_std(ours)?))
}

/// A connected loopback TCP pair: (ours, theirs). The listener lives only until its one
/// connection arrives, and that connection must be the one we made: another process on this
/// machine connecting first makes this fail rather than be relayed.
pub async fn tcp_loopback_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let (ours, (theirs, from)) = tokio::try_join!(TcpStream::connect(addr), listener.accept())?;
    if from != ours.local_addr()? {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("loopback relay: {from} connected instead of us"),
        ));
    }
    ours.set_nodelay(true)?;
    theirs.set_nodelay(true)?;
    Ok((ours, theirs))
}

/// Copies between `tls` and `ours` until both directions are done (one side's end is passed
/// on to the other as a shutdown). Returns the bytes moved from the TLS side and to it.
pub async fn relay<S, O>(mut tls: S, mut ours: O) -> std::io::Result<(u64, u64)>
where
    S: AsyncRead + AsyncWrite + Unpin,
    O: AsyncRead + AsyncWrite + Unpin,
{
    // (from the TLS side to ours, from ours to the TLS side)
    tokio::io::copy_bidirectional_with_sizes(&mut tls, &mut ours, BUFFER, BUFFER).await
}

/// Which side ended a [`relay_until_either_ends`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The TLS peer closed (or failed): `ours` was closed after it.
    Tls,
    /// `ours` closed (or failed): the TLS peer got close_notify.
    Ours,
}

/// Copies between `tls` and `ours` until either side's stream ends, then closes the other:
/// USB/IP has no half-closed state, so a session that ended behind `ours` ends the TLS
/// connection at once, rather than when the client next closes its side.
pub async fn relay_until_either_ends<S, O>(tls: S, ours: O) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
    O: AsyncRead + AsyncWrite + Unpin,
{
    let (tls_r, mut tls_w) = tokio::io::split(tls);
    let (ours_r, mut ours_w) = tokio::io::split(ours);
    let mut tls_r = tokio::io::BufReader::with_capacity(BUFFER, tls_r);
    let mut ours_r = tokio::io::BufReader::with_capacity(BUFFER, ours_r);
    let up = tokio::io::copy_buf(&mut tls_r, &mut ours_w);
    let down = async {
        let _ = tokio::io::copy_buf(&mut ours_r, &mut tls_w).await;
        let _ = tls_w.shutdown().await;
    };
    tokio::select! {
        _ = up => Ended::Tls,
        () = down => Ended::Ours,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_both_ways_and_a_close_ends_the_relay() {
        let (kernel, ours) = socket_pair().unwrap();
        let (server_side, mut server) = tokio::io::duplex(1024);
        let relay = tokio::spawn(relay(server_side, ours));
        let mut kernel = UnixStream::from_std({
            kernel.set_nonblocking(true).unwrap();
            kernel
        })
        .unwrap();
        kernel.write_all(b"to server").await.unwrap();
        let mut buf = [0u8; 9];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"to server");
        server.write_all(b"to kernel").await.unwrap();
        kernel.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"to kernel");
        drop(server);
        assert_eq!(
            kernel.read(&mut buf).await.unwrap(),
            0,
            "server's close reaches the kernel"
        );
        drop(kernel);
        let (down, up) = relay.await.unwrap().unwrap();
        assert_eq!((down, up), (9, 9));
    }

    #[tokio::test]
    async fn either_side_ending_ends_the_relay_and_closes_the_other() {
        for ours_ends in [true, false] {
            let (ours, mut session) = tcp_loopback_pair().await.unwrap();
            let (tls_side, mut client) = tokio::io::duplex(1024);
            let relay = tokio::spawn(relay_until_either_ends(tls_side, ours));
            client.write_all(b"cmd").await.unwrap();
            let mut buf = [0u8; 3];
            session.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"cmd");
            session.write_all(b"ret").await.unwrap();
            client.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ret");
            // one side goes; the other is closed although it never closed its own side
            let ended = if ours_ends {
                drop(session);
                let ended = relay.await.unwrap();
                assert_eq!(
                    client.read(&mut buf).await.unwrap(),
                    0,
                    "the client was closed"
                );
                ended
            } else {
                drop(client);
                let ended = relay.await.unwrap();
                assert_eq!(
                    session.read(&mut buf).await.unwrap(),
                    0,
                    "the session was closed"
                );
                ended
            };
            assert_eq!(ended, if ours_ends { Ended::Ours } else { Ended::Tls });
        }
    }

    #[tokio::test]
    async fn the_loopback_pair_is_connected_end_to_end() {
        let (mut ours, mut theirs) = tcp_loopback_pair().await.unwrap();
        assert_eq!(ours.local_addr().unwrap(), theirs.peer_addr().unwrap());
        assert!(ours.nodelay().unwrap() && theirs.nodelay().unwrap());
        ours.write_all(b"usbip").await.unwrap();
        let mut buf = [0u8; 5];
        theirs.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"usbip");
    }
}
