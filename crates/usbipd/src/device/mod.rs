//! The device model: what the server core asks of any exportable USB device, virtual or host.
//!
//! The core speaks URBs. A [`Device`] describes itself for the device list and opens one
//! [`DeviceSession`] per import; the session takes URBs with [`DeviceSession::submit`] and hands
//! back each result, exactly once, through its [`Completer`]. Nothing here knows about sockets.

pub mod allowlist;
pub mod host;
pub mod registry;
pub mod setup;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod r#virtual;

use bytes::Bytes;
use tokio::sync::mpsc;
use usbip_proto::{Direction, ExportedDevice, IsoPacket};

pub use setup::SetupPacket;

/// One URB as the server core hands it to a device.
#[derive(Debug, Clone)]
pub struct Urb {
    pub seqnum: u32,
    /// Endpoint number without direction bit (0 is the default control pipe).
    pub endpoint: u8,
    pub direction: Direction,
    pub transfer_flags: u32,
    /// Bytes the client asked for (IN) or sent (OUT).
    pub transfer_length: u32,
    /// Raw setup packet; meaningful for control URBs only.
    pub setup: [u8; 8],
    /// OUT payload; empty for IN.
    pub data: Bytes,
    pub interval: u32,
    pub start_frame: u32,
    /// Isochronous packet descriptors; empty for other transfer types.
    pub iso: Vec<IsoPacket>,
}

impl Urb {
    /// Endpoint address with the direction bit, as USB descriptors write it (0x81 = EP1 IN).
    pub fn endpoint_address(&self) -> u8 {
        match self.direction {
            Direction::In => self.endpoint | 0x80,
            Direction::Out => self.endpoint,
        }
    }
}

/// The result of one URB.
#[derive(Debug, Clone, Default)]
pub struct UrbCompletion {
    pub seqnum: u32,
    /// 0 or a negative Linux errno (see `usbip_proto::errno`).
    pub status: i32,
    /// Bytes transferred. For IN it equals `data.len()`.
    pub actual_length: u32,
    /// IN payload; empty for OUT.
    pub data: Bytes,
    pub start_frame: u32,
    pub error_count: u32,
    pub iso: Vec<IsoPacket>,
}

impl UrbCompletion {
    /// A successful IN transfer carrying `data`.
    pub fn data_in(seqnum: u32, data: Bytes) -> UrbCompletion {
        UrbCompletion {
            seqnum,
            actual_length: data.len() as u32,
            data,
            ..Default::default()
        }
    }

    /// A successful OUT transfer of `len` bytes.
    pub fn done_out(seqnum: u32, len: u32) -> UrbCompletion {
        UrbCompletion {
            seqnum,
            actual_length: len,
            ..Default::default()
        }
    }

    /// A failed transfer with a negative errno and nothing transferred.
    pub fn error(seqnum: u32, status: i32) -> UrbCompletion {
        UrbCompletion {
            seqnum,
            status,
            ..Default::default()
        }
    }

    /// `urb` failed as a whole with `status`, nothing transferred. An isochronous URB still
    /// gets one descriptor per packet (each with `status`, counted in `error_count`): vhci-hcd
    /// takes `number_of_packets` from the RET_SUBMIT, so leaving them out would shrink the
    /// client's URB. For any other URB this is [`UrbCompletion::error`].
    pub fn failed(urb: &Urb, status: i32) -> UrbCompletion {
        let iso: Vec<IsoPacket> = urb
            .iso
            .iter()
            .map(|p| IsoPacket {
                offset: p.offset,
                length: p.length,
                actual_length: 0,
                status,
            })
            .collect();
        UrbCompletion {
            seqnum: urb.seqnum,
            status,
            error_count: iso.len() as u32,
            iso,
            ..Default::default()
        }
    }
}

/// Where a device session delivers completions. Cloneable so that device-side tasks can hold one.
/// A device session keeps one for as long as the device can complete URBs: once every clone is
/// dropped, the server takes the device as gone and ends the client's session (after sending
/// what was completed before).
#[derive(Clone, Debug)]
pub struct Completer {
    tx: mpsc::UnboundedSender<UrbCompletion>,
}

impl Completer {
    pub fn channel() -> (Completer, mpsc::UnboundedReceiver<UrbCompletion>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Completer { tx }, rx)
    }

    /// Delivers one completion. A session that has already ended drops it, which is right:
    /// its client is gone.
    pub fn complete(&self, completion: UrbCompletion) {
        let _ = self.tx.send(completion);
    }
}

/// Why a device could not be opened for an import.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("device is in use by another client")]
    Busy,
    #[error("device is gone")]
    Gone,
    #[error("device cannot be opened: {0}")]
    Failed(String),
}

/// Human-readable names of a device, for `usbipd list`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceNames {
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
}

/// An exportable device.
pub trait Device: Send + Sync + 'static {
    /// The device record and interface list for OP_REP_DEVLIST / OP_REP_IMPORT.
    fn describe(&self) -> ExportedDevice;

    /// Manufacturer, product and serial strings, where known.
    fn names(&self) -> DeviceNames {
        DeviceNames::default()
    }

    /// Opens the device for one client. The registry guarantees one session at a time.
    fn open(&self, completer: Completer) -> Result<Box<dyn DeviceSession>, OpenError>;
}

/// One client's use of a device. Dropping it cancels everything still in flight and releases
/// the device.
pub trait DeviceSession: Send {
    /// Starts a URB. Its completion arrives through the session's [`Completer`], exactly once,
    /// unless the URB is cancelled first.
    fn submit(&mut self, urb: Urb);

    /// Cancels the URB with this seqnum if it is still pending, so that it stops using the device.
    /// Whether the client is told it was cancelled is the caller's business, not the device's: a
    /// completion that still arrives afterwards is discarded by the caller.
    fn cancel(&mut self, seqnum: u32);
}
