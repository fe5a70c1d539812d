//! The IPC transport: length-framed messages on a Unix stream socket, each optionally carrying
//! one file descriptor (SCM_RIGHTS). Works the same on Linux and macOS (which has no
//! SOCK_SEQPACKET for Unix sockets).
//!
//! Frame: 4-byte big-endian length, 1 byte "carries a descriptor", the message. The kernel
//! delivers a descriptor no later than the first byte sent with it, so descriptors queue in
//! arrival order and each descriptor-carrying frame takes the oldest. A frame longer than the
//! reader's limit ends the connection; it is never buffered.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Mutex;

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};

const HEADER: usize = 5;

/// What the kernel says about the process at the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// One received message.
#[derive(Debug)]
pub struct Received {
    pub data: Vec<u8>,
    pub fd: Option<OwnedFd>,
}

#[derive(Default)]
struct RecvState {
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
    eof: bool,
}

/// A connected IPC socket.
pub struct IpcSocket {
    stream: UnixStream,
    recv: Mutex<RecvState>,
}

#[cfg(target_os = "linux")]
fn recv_flags() -> MsgFlags {
    MsgFlags::MSG_CMSG_CLOEXEC
}
#[cfg(not(target_os = "linux"))]
fn recv_flags() -> MsgFlags {
    MsgFlags::empty()
}

impl IpcSocket {
    pub async fn connect(path: &Path) -> io::Result<IpcSocket> {
        Ok(IpcSocket::new(UnixStream::connect(path).await?))
    }

    fn new(stream: UnixStream) -> IpcSocket {
        IpcSocket {
            stream,
            recv: Mutex::new(RecvState::default()),
        }
    }

    /// The socket itself, for the OS's questions about the peer (credentials, audit token).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// The kernel's record of who connected.
    pub fn peer_cred(&self) -> io::Result<PeerCred> {
        super::peer::peer_cred(self.stream.as_fd())
    }

    /// Sends one message, with `fd` attached if given.
    pub async fn send(&self, msg: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let len = u32::try_from(msg.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?;
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&len.to_be_bytes());
        header[4] = u8::from(fd.is_some());
        let raw: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
        let mut sent = 0usize;
        let total = HEADER + msg.len();
        while sent < total {
            let n = self
                .stream
                .async_io(Interest::WRITABLE, || {
                    let slices: Vec<IoSlice<'_>> = if sent < HEADER {
                        vec![IoSlice::new(&header[sent..]), IoSlice::new(msg)]
                    } else {
                        vec![IoSlice::new(&msg[sent - HEADER..])]
                    };
                    // The descriptor rides with the first byte of the frame only.
                    let rights = [ControlMessage::ScmRights(&raw)];
                    let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !raw.is_empty() {
                        &rights
                    } else {
                        &[]
                    };
                    #[cfg(target_os = "linux")]
                    let flags = MsgFlags::MSG_NOSIGNAL;
                    #[cfg(not(target_os = "linux"))]
                    let flags = MsgFlags::empty();
                    Ok(socket::sendmsg::<()>(
                        self.stream.as_raw_fd(),
                        &slices,
                        cmsgs,
                        flags,
                        None,
                    )?)
                })
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            sent += n;
        }
        Ok(())
    }

    /// Receives one message of at most `limit` bytes. `None`: the peer closed. A longer
    /// message is an error (the connection is no longer usable).
    pub async fn recv(&self, limit: usize) -> io::Result<Option<Received>> {
        loop {
            {
                let mut st = self.recv.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(frame) = take_frame(&mut st, limit)? {
                    return Ok(Some(frame));
                }
                if st.eof {
                    return if st.buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed inside a message",
                        ))
                    };
                }
            }
            self.stream
                .async_io(Interest::READABLE, || {
                    let mut chunk = [0u8; 16 * 1024];
                    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
                    let mut iov = [IoSliceMut::new(&mut chunk)];
                    let msg = socket::recvmsg::<()>(
                        self.stream.as_raw_fd(),
                        &mut iov,
                        Some(&mut cmsg),
                        recv_flags(),
                    )?;
                    let mut fds = Vec::new();
                    for c in msg.cmsgs()? {
                        if let ControlMessageOwned::ScmRights(received) = c {
                            for raw in received {
                                // SAFETY: the kernel just installed this descriptor in our
                                // table for us; nothing else owns it.
                                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                            }
                        }
                    }
                    let n = msg.bytes;
                    let mut st = self.recv.lock().unwrap_or_else(|e| e.into_inner());
                    st.buf.extend_from_slice(&chunk[..n]);
                    st.fds.extend(fds);
                    if n == 0 {
                        st.eof = true;
                    }
                    Ok(())
                })
                .await?;
        }
    }
}

fn take_frame(st: &mut RecvState, limit: usize) -> io::Result<Option<Received>> {
    if st.buf.len() < HEADER {
        return Ok(None);
    }
    let len = u32::from_be_bytes([st.buf[0], st.buf[1], st.buf[2], st.buf[3]]) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds the limit of {limit}"),
        ));
    }
    let has_fd = st.buf[4] != 0;
    if st.buf.len() < HEADER + len {
        return Ok(None);
    }
    let fd = if has_fd {
        Some(st.fds.pop_front().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "frame announces a descriptor that did not come",
            )
        })?)
    } else {
        None
    };
    let data = st.buf[HEADER..HEADER + len].to_vec();
    st.buf.drain(..HEADER + len);
    Ok(Some(Received { data, fd }))
}

/// A listening IPC socket.
pub struct IpcListener {
    listener: UnixListener,
}

impl IpcListener {
    /// Binds `path`, replacing a stale socket file but refusing to steal a live one. The file is
    /// open to everyone (0666): who may talk is decided per connection by the kernel's peer
    /// credentials, which a file mode could not express (root plus a configured user or group).
    pub fn bind(path: &Path) -> io::Result<IpcListener> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("an extension is already listening on {}", path.display()),
            ));
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        Ok(IpcListener { listener })
    }

    pub async fn accept(&self) -> io::Result<IpcSocket> {
        let (stream, _) = self.listener.accept().await?;
        Ok(IpcSocket::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_and_descriptors_arrive_together_and_in_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let (a, b) = (IpcSocket::new(a), IpcSocket::new(b));
        let file = tempfile::tempfile().unwrap();
        a.send(b"one", None).await.unwrap();
        a.send(b"two", Some(file.as_fd())).await.unwrap();
        a.send(&vec![7u8; 100_000], None).await.unwrap_or(());
        let one = b.recv(1 << 20).await.unwrap().unwrap();
        assert_eq!((&one.data[..], one.fd.is_some()), (&b"one"[..], false));
        let two = b.recv(1 << 20).await.unwrap().unwrap();
        assert_eq!((&two.data[..], two.fd.is_some()), (&b"two"[..], true));
        let big = b.recv(1 << 20).await.unwrap().unwrap();
        assert_eq!(big.data.len(), 100_000);
        drop(a);
        assert!(b.recv(1 << 20).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_oversized_frame_is_an_error_not_an_allocation() {
        let (a, b) = UnixStream::pair().unwrap();
        let (a, b) = (IpcSocket::new(a), IpcSocket::new(b));
        a.send(&[1u8; 2000], None).await.unwrap();
        assert_eq!(
            b.recv(1000).await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
