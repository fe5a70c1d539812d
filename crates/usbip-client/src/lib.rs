//! A USB/IP client over `usbip-proto`: list a server's devices, import one, and submit and
//! unlink URBs with as many in flight as the caller likes.
//!
//! The tests and the benchmark use it; it talks to any USB/IP server, not only ours.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};
use usbip_proto::{
    transfer_flags, CmdSubmit, CmdUnlink, Command, DeviceRecord, Direction, ExportedDevice,
    IsoPacket, Limits, OpReply, OpRequest, OpStatus, ProtoError, Reply, UrbHeader,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Proto(#[from] ProtoError),
    #[error("import refused with status {0:?}")]
    Refused(OpStatus),
    #[error("server closed the connection")]
    Closed,
    #[error("server sent {0} bytes after the import reply, before any command")]
    Unexpected(usize),
}

/// Asks a server for its device list.
pub async fn list_devices(addr: impl ToSocketAddrs) -> Result<Vec<ExportedDevice>, Error> {
    let mut stream = TcpStream::connect(addr).await?;
    list_devices_over(&mut stream).await
}

/// Asks for the device list over a connected stream (TCP, or TLS around it).
pub async fn list_devices_over<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<Vec<ExportedDevice>, Error> {
    match handshake(stream, OpRequest::DevList).await?.0 {
        OpReply::DevList(devices) => Ok(devices),
        OpReply::Import(_) => Err(Error::Closed),
    }
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: OpRequest,
) -> Result<(OpReply, BytesMut), Error> {
    let mut out = Vec::new();
    request.encode(&mut out);
    stream.write_all(&out).await?;
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some((reply, used)) = OpReply::decode(&request, &buf, &Limits::default())? {
            let _ = buf.split_to(used);
            return Ok((reply, buf));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(Error::Closed);
        }
    }
}

/// Imports `busid` and returns the connected socket without starting the URB phase, for a caller
/// that hands the socket on (to the kernel's vhci-hcd, say). Fails with `Error::Proto` if the
/// server sent anything after the import reply, as that would be lost in the handover.
pub async fn import_socket(
    addr: impl ToSocketAddrs,
    busid: &str,
) -> Result<(TcpStream, DeviceRecord), Error> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let record = import_over(&mut stream, busid).await?;
    Ok((stream, record))
}

/// Imports `busid` over a connected stream (TCP, or TLS around it) and leaves the stream at
/// the start of the URB phase; fails with `Error::Unexpected` if the server sent anything after
/// the import reply, as that would be lost in a handover.
pub async fn import_over<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    busid: &str,
) -> Result<DeviceRecord, Error> {
    let (record, leftover) = import_on(stream, busid).await?;
    if !leftover.is_empty() {
        return Err(Error::Unexpected(leftover.len()));
    }
    Ok(record)
}

async fn import_on<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    busid: &str,
) -> Result<(DeviceRecord, BytesMut), Error> {
    let request = OpRequest::Import {
        busid: busid.to_string(),
    };
    match handshake(stream, request).await? {
        (OpReply::Import(Ok(record)), leftover) => Ok((record, leftover)),
        (OpReply::Import(Err(status)), _) => Err(Error::Refused(status)),
        (OpReply::DevList(_), _) => Err(Error::Closed),
    }
}

/// A URB to submit.
#[derive(Debug, Clone)]
pub struct Submit {
    pub endpoint: u8,
    pub direction: Direction,
    /// For IN: bytes to ask for. For OUT it is taken from `data`.
    pub length: u32,
    pub setup: [u8; 8],
    pub data: Bytes,
    pub transfer_flags: u32,
    pub interval: u32,
    pub iso: Vec<IsoPacket>,
}

impl Submit {
    pub fn bulk_in(endpoint: u8, length: u32) -> Submit {
        Submit {
            endpoint,
            direction: Direction::In,
            length,
            setup: [0; 8],
            data: Bytes::new(),
            transfer_flags: transfer_flags::URB_DIR_IN,
            interval: 0,
            iso: Vec::new(),
        }
    }

    pub fn bulk_out(endpoint: u8, data: impl Into<Bytes>) -> Submit {
        let data = data.into();
        Submit {
            endpoint,
            direction: Direction::Out,
            length: data.len() as u32,
            setup: [0; 8],
            data,
            transfer_flags: 0,
            interval: 0,
            iso: Vec::new(),
        }
    }

    /// A control transfer on endpoint 0; direction from bmRequestType, length from wLength.
    pub fn control(setup: [u8; 8], data: impl Into<Bytes>) -> Submit {
        let data = data.into();
        let is_in = setup[0] & 0x80 != 0;
        let w_length = u32::from(u16::from_le_bytes([setup[6], setup[7]]));
        Submit {
            endpoint: 0,
            direction: if is_in { Direction::In } else { Direction::Out },
            length: if is_in { w_length } else { data.len() as u32 },
            setup,
            data: if is_in { Bytes::new() } else { data },
            transfer_flags: if is_in { transfer_flags::URB_DIR_IN } else { 0 },
            interval: 0,
            iso: Vec::new(),
        }
    }
}

/// The server's answer to one URB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub status: i32,
    pub actual_length: u32,
    pub data: Bytes,
    pub iso: Vec<IsoPacket>,
}

/// What a RET_UNLINK said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnlinkResult {
    pub status: i32,
}

enum Waiter {
    Submit(Direction, oneshot::Sender<Completion>),
    /// The victim's seqnum, and who waits for the RET_UNLINK.
    Unlink(u32, oneshot::Sender<UnlinkResult>),
}

#[derive(Default)]
struct Shared {
    waiters: HashMap<u32, Waiter>,
    /// Replies nobody waited for (after an unlink raced a completion), kept for inspection.
    unexpected: Vec<u32>,
    closed: bool,
}

/// A URB on its way: its seqnum (to unlink it) and its completion.
pub struct Pending {
    pub seqnum: u32,
    rx: oneshot::Receiver<Completion>,
}

impl Pending {
    /// Waits for the RET_SUBMIT. `Err(Closed)` if the connection ended or the URB was unlinked.
    pub async fn wait(self) -> Result<Completion, Error> {
        self.rx.await.map_err(|_| Error::Closed)
    }
}

/// An imported device: submit URBs concurrently from any number of tasks.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Mutex<Shared>>,
    commands: mpsc::UnboundedSender<Command>,
    next_seqnum: Arc<std::sync::atomic::AtomicU32>,
    record: Arc<DeviceRecord>,
}

impl Connection {
    /// Imports `busid` from the server at `addr`.
    pub async fn import(addr: impl ToSocketAddrs, busid: &str) -> Result<Connection, Error> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (record, leftover) = import_on(&mut stream, busid).await?;
        let (read, write) = stream.into_split();
        Ok(Connection::run(read, write, record, leftover))
    }

    /// Imports `busid` over a connected stream (TCP, or TLS around it), and runs the URB
    /// phase on it.
    pub async fn import_over<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        mut stream: S,
        busid: &str,
    ) -> Result<Connection, Error> {
        let (record, leftover) = import_on(&mut stream, busid).await?;
        let (read, write) = tokio::io::split(stream);
        Ok(Connection::run(read, write, record, leftover))
    }

    fn run(
        read: impl AsyncRead + Unpin + Send + 'static,
        write: impl AsyncWrite + Unpin + Send + 'static,
        record: DeviceRecord,
        leftover: BytesMut,
    ) -> Connection {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(write, rx));
        tokio::spawn(read_loop(read, leftover, shared.clone()));
        Connection {
            shared,
            commands,
            next_seqnum: Arc::new(std::sync::atomic::AtomicU32::new(1)),
            record: Arc::new(record),
        }
    }

    /// The device record the import reply carried.
    pub fn record(&self) -> &DeviceRecord {
        &self.record
    }

    fn seqnum(&self) -> u32 {
        self.next_seqnum
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a URB without waiting for it.
    pub fn start(&self, submit: Submit) -> Result<Pending, Error> {
        let seqnum = self.seqnum();
        let (tx, rx) = oneshot::channel();
        {
            let mut shared = self.lock();
            if shared.closed {
                return Err(Error::Closed);
            }
            shared
                .waiters
                .insert(seqnum, Waiter::Submit(submit.direction, tx));
        }
        let cmd = Command::Submit {
            cmd: CmdSubmit {
                header: UrbHeader {
                    seqnum,
                    devid: self.record.devid(),
                    direction: submit.direction,
                    ep: u32::from(submit.endpoint),
                },
                transfer_flags: submit.transfer_flags,
                transfer_buffer_length: submit.length,
                start_frame: 0,
                number_of_packets: submit.iso.len() as u32,
                interval: submit.interval,
                setup: submit.setup,
            },
            data: submit.data,
            iso: submit.iso,
        };
        self.commands.send(cmd).map_err(|_| Error::Closed)?;
        Ok(Pending { seqnum, rx })
    }

    /// Sends a URB and waits for its completion.
    pub async fn submit(&self, submit: Submit) -> Result<Completion, Error> {
        self.start(submit)?.wait().await
    }

    /// Unlinks a URB; returns what RET_UNLINK said (-ECONNRESET: cancelled; 0: too late).
    pub async fn unlink(&self, victim: u32) -> Result<UnlinkResult, Error> {
        let seqnum = self.seqnum();
        let (tx, rx) = oneshot::channel();
        self.lock()
            .waiters
            .insert(seqnum, Waiter::Unlink(victim, tx));
        let cmd = Command::Unlink(CmdUnlink {
            header: UrbHeader {
                seqnum,
                devid: self.record.devid(),
                direction: Direction::Out,
                ep: 0,
            },
            unlink_seqnum: victim,
        });
        self.commands.send(cmd).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Seqnums of protocol-order violations seen: a reply nobody waited for (e.g. a RET_SUBMIT
    /// after its RET_UNLINK said cancelled), or a RET_UNLINK saying "too late" before the
    /// victim's RET_SUBMIT arrived. A correct server produces none.
    pub fn unexpected_replies(&self) -> Vec<u32> {
        self.lock().unexpected.clone()
    }

    /// Sends raw bytes on the connection, for tests of malformed traffic.
    pub fn send_raw(&self, cmd: Command) -> Result<(), Error> {
        self.commands.send(cmd).map_err(|_| Error::Closed)
    }

    /// Whether the server has closed the connection.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

async fn write_loop(
    mut socket: impl AsyncWrite + Unpin,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut batch = Vec::with_capacity(64);
    while commands.recv_many(&mut batch, 64).await > 0 {
        out.clear();
        for cmd in batch.drain(..) {
            cmd.encode(&mut out);
        }
        if socket.write_all(&out).await.is_err() || socket.flush().await.is_err() {
            return;
        }
    }
}

async fn read_loop(
    mut socket: impl AsyncRead + Unpin,
    mut buf: BytesMut,
    shared: Arc<Mutex<Shared>>,
) {
    let limits = Limits::default();
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    'read: loop {
        loop {
            let decoded = {
                let guard = lock();
                Reply::decode(&mut buf, &limits, |seq| match guard.waiters.get(&seq) {
                    Some(Waiter::Submit(dir, _)) => Some(*dir),
                    // An unexpected RET_SUBMIT: parse it as OUT to stay in sync; it is recorded.
                    _ => Some(Direction::Out),
                })
            };
            match decoded {
                Ok(Some(reply)) => deliver(&mut lock(), reply),
                Ok(None) => break,
                Err(_) => break 'read,
            }
        }
        match socket.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
    }
    let mut shared = lock();
    shared.closed = true;
    shared.waiters.clear();
}

fn deliver(shared: &mut Shared, reply: Reply) {
    match reply {
        Reply::Submit { ret, data, iso } => match shared.waiters.remove(&ret.seqnum) {
            Some(Waiter::Submit(_, tx)) => {
                let _ = tx.send(Completion {
                    status: ret.status,
                    actual_length: ret.actual_length,
                    data,
                    iso,
                });
            }
            _ => shared.unexpected.push(ret.seqnum),
        },
        Reply::Unlink(u) => {
            if let Some(Waiter::Unlink(victim, tx)) = shared.waiters.remove(&u.seqnum) {
                let victim_waiting = shared.waiters.contains_key(&victim);
                if u.status != 0 {
                    // Cancelled: a RET_SUBMIT for the victim must never follow.
                    shared.waiters.remove(&victim);
                } else if victim_waiting {
                    // "Too late to cancel" promises that the RET_SUBMIT came first.
                    shared.unexpected.push(victim);
                }
                let _ = tx.send(UnlinkResult { status: u.status });
            } else {
                shared.unexpected.push(u.seqnum);
            }
        }
    }
}
