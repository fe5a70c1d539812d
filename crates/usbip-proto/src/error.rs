//! What can be wrong with bytes from a peer. Each variant names the field and the value, so the
//! log line that closes a connection says exactly why.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtoError {
    #[error("unsupported protocol version {0:#06x} (expected 0x0111)")]
    Version(u16),
    #[error("unknown operation code {0:#06x}")]
    UnknownOpcode(u16),
    #[error("unknown URB command {0:#x}")]
    UnknownCommand(u32),
    #[error("unexpected message {0} in this phase")]
    Unexpected(&'static str),
    #[error("busid is not NUL-terminated ASCII")]
    BadBusid,
    #[error("invalid direction {0}")]
    BadDirection(u32),
    #[error("invalid endpoint {0}")]
    BadEndpoint(u32),
    #[error("transfer_buffer_length {0} exceeds max_transfer_length ({1})")]
    TransferTooLong(u32, u32),
    #[error("number_of_packets {0} exceeds max_iso_packets ({1})")]
    TooManyIsoPackets(u32, u32),
    #[error("isochronous packet {index} (offset {offset}, length {length}) lies outside the {buffer}-byte buffer")]
    IsoOutOfBounds {
        index: u32,
        offset: u32,
        length: u32,
        buffer: u32,
    },
    #[error("isochronous actual lengths add up to {sum}, header says {actual}")]
    IsoSumMismatch { sum: u64, actual: u32 },
    #[error("device count {0} exceeds max_devices ({1})")]
    TooManyDevices(u32, u32),
    #[error("bad operation status {0}")]
    BadStatus(u32),
    #[error("reply for unknown seqnum {0}")]
    UnknownSeqnum(u32),
}
