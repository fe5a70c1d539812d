//! The USB/IP v1.1.1 wire format, byte-exact with the Linux kernel, and nothing else.
//!
//! This crate never touches a socket: decoders take whatever bytes have arrived so far and
//! either return a whole message or ask for more; encoders write into caller buffers. Every
//! length and count is checked against [`Limits`] before anything is allocated for it.

pub mod consts;
pub mod device;
pub mod error;
pub mod op;
pub mod urb;

pub use consts::*;
pub use device::{DeviceRecord, ExportedDevice, InterfaceRecord, Speed, DEVICE_RECORD_LEN};
pub use error::ProtoError;
pub use op::{OpReply, OpRequest};
pub use urb::{
    CmdSubmit, CmdUnlink, Command, Direction, IsoPacket, Reply, RetSubmit, RetUnlink, UrbHeader,
    HEADER_LEN, ISO_PACKET_LEN,
};

/// Bounds a peer may not exceed. Checked before any allocation sized by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `transfer_buffer_length` accepted in a CMD_SUBMIT (and actual_length in a RET_SUBMIT).
    pub max_transfer_length: u32,
    /// Largest `number_of_packets` for an isochronous URB.
    pub max_iso_packets: u32,
    /// Largest number of devices accepted in an OP_REP_DEVLIST.
    pub max_devices: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Linux usbfs caps a single transfer at 16 MiB by default (usbfs_memory_mb); clients
            // never send more than a few MiB per URB.
            max_transfer_length: 16 * 1024 * 1024,
            // The kernel's USBIP_MAX_ISO_PACKETS.
            max_iso_packets: 1024,
            max_devices: 4096,
        }
    }
}
