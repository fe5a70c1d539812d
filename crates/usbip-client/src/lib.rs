//! A USB/IP client over `usbip-proto`: list a server's devices, import one, and submit and
//! unlink URBs with as many in flight as the caller likes.
//!
//! The tests and the benchmark use it; it talks to any USB/IP server, not only ours. This file
//! holds the handshake and the URB types; `conn` the URB phase (submit, pipeline, unlink) and
//! `io` the per-connection reader and writer.

mod conn;
mod io;
mod owned;

pub use conn::{Connection, Pending, Pipeline};
pub use owned::OwnedPipeline;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use usbip_proto::{
    transfer_flags, CmdSubmit, Command, DeviceRecord, Direction, ExportedDevice, IsoPacket, Limits,
    OpReply, OpRequest, OpStatus, ProtoError, UrbHeader,
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

pub(crate) async fn import_on<S: AsyncRead + AsyncWrite + Unpin>(
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

/// The CMD_SUBMIT a [`Submit`] becomes.
pub(crate) fn command(seqnum: u32, devid: u32, submit: Submit) -> Command {
    Command::Submit {
        cmd: CmdSubmit {
            header: UrbHeader {
                seqnum,
                devid,
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
    }
}
