//! The IPC transport: length-framed messages on a Unix stream socket, each optionally carrying
//! one file descriptor (SCM_RIGHTS). Works the same on Linux and macOS (which has no
//! SOCK_SEQPACKET for Unix sockets).
//!
//! Frame: 4-byte big-endian length, 1 byte "carries a descriptor", the message. The kernel
//! delivers a descriptor no later than the first byte sent with it, so descriptors queue in
//! arrival order and each descriptor-carrying frame takes the oldest. A frame longer than the
//! reader's limit ends the connection; it is never buffered.
//!
//! Descriptors are a resource a peer could make us hold without limit, so the reader keeps
//! only as many as the frames it has seen (or may be starting) announce, and closes the rest
//! at once; more descriptors than the control buffer holds (MSG_CTRUNC: the kernel installed
//! them but cut the list) is a protocol error, and whatever did arrive is closed.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Mutex;

use nix::sys::socket::{self, ControlMessage};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tracing::debug;

use crate::platform::PeerCred;

const HEADER: usize = 5;

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

use crate::platform::net::recv_descriptor_flags as recv_flags;

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
        crate::platform::peer_cred(self.stream.as_fd())
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
                    let flags = crate::platform::net::send_flags();
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
                    let (n, fds, truncated) =
                        recv_with_rights(self.stream.as_raw_fd(), &mut chunk)?;
                    if truncated {
                        drop(fds);
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "more descriptors than one message may carry",
                        ));
                    }
                    let mut st = self.recv.lock().unwrap_or_else(|e| e.into_inner());
                    st.buf.extend_from_slice(&chunk[..n]);
                    st.fds.extend(fds);
                    let expected = announced_descriptors(&st.buf);
                    if st.fds.len() > expected {
                        debug!(
                            closed = st.fds.len() - expected,
                            "IPC descriptors no frame announced closed"
                        );
                        st.fds.truncate(expected);
                    }
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

/// One `recvmsg`: the bytes read, every descriptor the kernel installed, and whether it cut
/// the control data (MSG_CTRUNC). Written against libc because nix's decoder refuses a
/// truncated buffer without handing over the descriptors already installed in our table.
fn recv_with_rights(sock: RawFd, chunk: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>, bool)> {
    use nix::libc;
    // Room for four descriptors; a frame carries at most one.
    const FDS: usize = 4;
    let mut control = [0u64; 8];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    debug_assert!(space <= std::mem::size_of_val(&control));
    let mut iov = libc::iovec {
        iov_base: chunk.as_mut_ptr().cast(),
        iov_len: chunk.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no iov, no control).
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = space as _;
    // SAFETY: hdr points at live buffers of the lengths given.
    let n = unsafe { libc::recvmsg(sock, &mut hdr, recv_flags().bits()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` up to msg_controllen; CMSG_FIRSTHDR/NXTHDR stay
    // inside it, and each SCM_RIGHTS payload holds cmsg_len - CMSG_LEN(0) bytes of fds.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    // The kernel just installed this descriptor in our table for us.
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&hdr, c);
        }
    }
    let truncated = hdr.msg_flags & libc::MSG_CTRUNC != 0;
    Ok((n as usize, fds, truncated))
}

/// How many descriptors the buffered frames may claim: one per frame whose header announces
/// one, plus one for a trailing header not yet complete (its descriptor may already be here).
fn announced_descriptors(buf: &[u8]) -> usize {
    let mut count = 0;
    let mut at = 0;
    while buf.len() - at >= HEADER {
        let len = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        count += usize::from(buf[at + 4] != 0);
        match at.checked_add(HEADER + len) {
            Some(next) if next < buf.len() => at = next,
            _ => return count,
        }
    }
    count + usize::from(at < buf.len())
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
        crate::persist::private_dir::prepare_socket_path(path, crate::persist::runtime_dir_mode())?;
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

    /// How many of this process's descriptors refer to `file`: exact whatever other tests of
    /// this binary open meanwhile, since none of them can open this anonymous file.
    #[cfg(target_os = "linux")]
    fn descriptors_of(file: &std::fs::File) -> usize {
        use std::os::unix::fs::MetadataExt;
        let me = file.metadata().unwrap();
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| std::fs::metadata(entry.ok()?.path()).ok())
            .filter(|m| m.dev() == me.dev() && m.ino() == me.ino())
            .count()
    }

    /// Sends one frame of `msg` announcing no descriptor, with `fds` attached anyway.
    #[cfg(target_os = "linux")]
    fn send_unannounced(sock: &std::os::unix::net::UnixStream, msg: &[u8], fds: &[RawFd]) {
        let mut frame = (msg.len() as u32).to_be_bytes().to_vec();
        frame.push(0);
        frame.extend_from_slice(msg);
        let rights = [ControlMessage::ScmRights(fds)];
        let sent = socket::sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(&frame)],
            &rights,
            socket::MsgFlags::empty(),
            None,
        )
        .unwrap();
        assert_eq!(sent, frame.len());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn descriptors_no_frame_announces_are_closed_not_kept() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let b = IpcSocket::new(UnixStream::from_std(b).unwrap());
        let file = tempfile::tempfile().unwrap();
        let raw = file.as_raw_fd();
        for i in 0..200u32 {
            send_unannounced(&a, &i.to_be_bytes(), &[raw, raw, raw]);
            let got = b.recv(1024).await.unwrap().unwrap();
            assert_eq!(
                (got.data, got.fd.is_some()),
                (i.to_be_bytes().to_vec(), false)
            );
        }
        assert_eq!(
            descriptors_of(&file),
            1,
            "after 200 messages with 3 unannounced descriptors each (600 accumulated before)"
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn more_descriptors_than_the_buffer_holds_end_the_connection_and_are_closed() {
        let file = tempfile::tempfile().unwrap();
        let raw = [file.as_raw_fd(); 16];
        let mut kept = Vec::new();
        for _ in 0..100 {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            b.set_nonblocking(true).unwrap();
            let b = IpcSocket::new(UnixStream::from_std(b).unwrap());
            // Announced, so that only the truncation can make the reader refuse it.
            let mut frame = 2u32.to_be_bytes().to_vec();
            frame.extend_from_slice(&[1, b'h', b'i']);
            let rights = [ControlMessage::ScmRights(&raw)];
            socket::sendmsg::<()>(
                a.as_raw_fd(),
                &[IoSlice::new(&frame)],
                &rights,
                socket::MsgFlags::empty(),
                None,
            )
            .unwrap();
            let err = b.recv(1024).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
            // Kept open: the descriptors would be held as long as the connection.
            kept.push((a, b));
        }
        // Only our own: the truncated messages' descriptors (400 were kept before) are closed.
        assert_eq!(
            descriptors_of(&file),
            1,
            "after 100 truncated messages of 16 descriptors each"
        );
    }

    #[test]
    fn only_announced_or_possibly_starting_frames_may_claim_descriptors() {
        assert_eq!(announced_descriptors(&[]), 0);
        assert_eq!(announced_descriptors(&[0, 0]), 1);
        assert_eq!(announced_descriptors(&[0, 0, 0, 1, 0, 9]), 0);
        assert_eq!(announced_descriptors(&[0, 0, 0, 1, 1, 9]), 1);
        assert_eq!(announced_descriptors(&[0, 0, 0, 1, 1, 9, 0, 0, 0, 0, 1]), 2);
        assert_eq!(announced_descriptors(&[0, 0, 0, 1, 0, 9, 0]), 1);
        assert_eq!(announced_descriptors(&[0, 0, 0, 9, 1, 9]), 1);
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
