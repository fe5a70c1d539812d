//! Protocol numbers: versions, operation codes, statuses and the Linux errnos URBs complete with.
//! Every other part of the project takes these numbers from here.

/// The protocol version every handshake header carries.
pub const USBIP_VERSION: u16 = 0x0111;

/// Default TCP port.
pub const USBIP_PORT: u16 = 3240;

/// Handshake operation codes.
pub mod opcode {
    pub const REQ_DEVLIST: u16 = 0x8005;
    pub const REP_DEVLIST: u16 = 0x0005;
    pub const REQ_IMPORT: u16 = 0x8003;
    pub const REP_IMPORT: u16 = 0x0003;
}

/// Status of a handshake reply, as the Linux tools define them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum OpStatus {
    Ok = 0,
    /// Device not available (not exported).
    Na = 1,
    /// Device already imported by another client.
    DevBusy = 2,
    /// Device in an error state.
    DevErr = 3,
    /// No such device.
    NoDev = 4,
    /// Unspecified error.
    Error = 5,
}

impl OpStatus {
    pub fn from_u32(v: u32) -> Option<OpStatus> {
        Some(match v {
            0 => OpStatus::Ok,
            1 => OpStatus::Na,
            2 => OpStatus::DevBusy,
            3 => OpStatus::DevErr,
            4 => OpStatus::NoDev,
            5 => OpStatus::Error,
            _ => return None,
        })
    }
}

/// URB phase command codes.
pub mod command {
    pub const CMD_SUBMIT: u32 = 1;
    pub const CMD_UNLINK: u32 = 2;
    pub const RET_SUBMIT: u32 = 3;
    pub const RET_UNLINK: u32 = 4;
}

/// `transfer_flags` bits the server looks at (Linux `URB_*`).
pub mod transfer_flags {
    pub const URB_SHORT_NOT_OK: u32 = 0x0001;
    pub const URB_ISO_ASAP: u32 = 0x0002;
    pub const URB_NO_TRANSFER_DMA_MAP: u32 = 0x0004;
    pub const URB_ZERO_PACKET: u32 = 0x0040;
    pub const URB_NO_INTERRUPT: u32 = 0x0080;
    pub const URB_FREE_BUFFER: u32 = 0x0100;
    pub const URB_DIR_IN: u32 = 0x0200;
}

/// Negative Linux errnos, the only status values a RET_SUBMIT/RET_UNLINK may carry besides 0.
pub mod errno {
    pub const EPERM: i32 = -1;
    pub const ENOENT: i32 = -2;
    pub const EIO: i32 = -5;
    pub const ENOMEM: i32 = -12;
    pub const EBUSY: i32 = -16;
    pub const ENODEV: i32 = -19;
    pub const EINVAL: i32 = -22;
    pub const EFBIG: i32 = -27;
    pub const EPIPE: i32 = -32;
    pub const ENOSYS: i32 = -38;
    pub const ETIME: i32 = -62;
    pub const ENOSR: i32 = -63;
    pub const EPROTO: i32 = -71;
    pub const EILSEQ: i32 = -84;
    pub const EOVERFLOW: i32 = -75;
    pub const ECONNRESET: i32 = -104;
    pub const ESHUTDOWN: i32 = -108;
    pub const ETIMEDOUT: i32 = -110;
    pub const EINPROGRESS: i32 = -115;
    pub const EREMOTEIO: i32 = -121;
    pub const EXDEV: i32 = -18;
    /// An isochronous packet longer than the endpoint can carry in one service interval.
    pub const EMSGSIZE: i32 = -90;
}
