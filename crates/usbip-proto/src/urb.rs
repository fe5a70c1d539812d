//! The URB phase: CMD_SUBMIT, CMD_UNLINK, RET_SUBMIT, RET_UNLINK, and isochronous descriptors.
//!
//! Every message starts with a 48-byte header. Decoders work on a `BytesMut` holding what has
//! been read so far and split whole messages off its front, so OUT and IN payloads reach the
//! caller as `Bytes` without being copied again.

use bytes::{Buf, Bytes, BytesMut};

use crate::consts::command;
use crate::error::ProtoError;
use crate::Limits;

pub const HEADER_LEN: usize = 48;
pub const ISO_PACKET_LEN: usize = 16;
/// `number_of_packets` value the protocol document uses for "not isochronous".
const NO_ISO: u32 = 0xffff_ffff;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Out = 0,
    In = 1,
}

impl Direction {
    fn from_u32(v: u32) -> Result<Direction, ProtoError> {
        match v {
            0 => Ok(Direction::Out),
            1 => Ok(Direction::In),
            other => Err(ProtoError::BadDirection(other)),
        }
    }
}

/// The 20 bytes every URB-phase message starts with (`struct usbip_header_basic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrbHeader {
    pub seqnum: u32,
    pub devid: u32,
    pub direction: Direction,
    /// Endpoint number without the direction bit, 0..=15.
    pub ep: u32,
}

/// CMD_SUBMIT (`struct usbip_header_cmd_submit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdSubmit {
    pub header: UrbHeader,
    pub transfer_flags: u32,
    pub transfer_buffer_length: u32,
    pub start_frame: u32,
    /// 0 for non-isochronous URBs (0xffffffff is read as 0).
    pub number_of_packets: u32,
    pub interval: u32,
    /// Raw USB setup packet, little-endian fields as on the bus.
    pub setup: [u8; 8],
}

/// CMD_UNLINK (`struct usbip_header_cmd_unlink`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdUnlink {
    pub header: UrbHeader,
    pub unlink_seqnum: u32,
}

/// RET_SUBMIT (`struct usbip_header_ret_submit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetSubmit {
    pub seqnum: u32,
    pub status: i32,
    pub actual_length: u32,
    pub start_frame: u32,
    pub number_of_packets: u32,
    pub error_count: u32,
}

/// RET_UNLINK (`struct usbip_header_ret_unlink`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetUnlink {
    pub seqnum: u32,
    pub status: i32,
}

/// One isochronous packet descriptor (`struct usbip_iso_packet_descriptor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IsoPacket {
    pub offset: u32,
    pub length: u32,
    pub actual_length: u32,
    pub status: i32,
}

/// A message from client to server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Submit {
        cmd: CmdSubmit,
        /// OUT payload (`transfer_buffer_length` bytes); empty for IN.
        data: Bytes,
        iso: Vec<IsoPacket>,
    },
    Unlink(CmdUnlink),
}

/// A message from server to client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Submit {
        ret: RetSubmit,
        /// IN payload (`actual_length` bytes); empty for OUT.
        data: Bytes,
        iso: Vec<IsoPacket>,
    },
    Unlink(RetUnlink),
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn iso_count(number_of_packets: u32) -> u32 {
    if number_of_packets == NO_ISO {
        0
    } else {
        number_of_packets
    }
}

impl IsoPacket {
    pub fn encode(&self, out: &mut [u8; ISO_PACKET_LEN]) {
        put32(out, 0, self.offset);
        put32(out, 4, self.length);
        put32(out, 8, self.actual_length);
        put32(out, 12, self.status as u32);
    }

    fn decode(b: &[u8]) -> IsoPacket {
        IsoPacket {
            offset: be32(b, 0),
            length: be32(b, 4),
            actual_length: be32(b, 8),
            status: be32(b, 12) as i32,
        }
    }

    /// Appends `packets` encoded to `out`.
    pub fn encode_all(packets: &[IsoPacket], out: &mut Vec<u8>) {
        for p in packets {
            let mut b = [0u8; ISO_PACKET_LEN];
            p.encode(&mut b);
            out.extend_from_slice(&b);
        }
    }
}

fn decode_iso(b: &[u8]) -> Vec<IsoPacket> {
    b.chunks_exact(ISO_PACKET_LEN)
        .map(IsoPacket::decode)
        .collect()
}

impl UrbHeader {
    fn encode(&self, code: u32, out: &mut [u8; HEADER_LEN]) {
        put32(out, 0x00, code);
        put32(out, 0x04, self.seqnum);
        put32(out, 0x08, self.devid);
        put32(out, 0x0c, self.direction as u32);
        put32(out, 0x10, self.ep);
    }

    fn decode(b: &[u8]) -> Result<UrbHeader, ProtoError> {
        let ep = be32(b, 0x10);
        if ep > 15 {
            return Err(ProtoError::BadEndpoint(ep));
        }
        Ok(UrbHeader {
            seqnum: be32(b, 0x04),
            devid: be32(b, 0x08),
            direction: Direction::from_u32(be32(b, 0x0c))?,
            ep,
        })
    }
}

impl CmdSubmit {
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        *out = [0; HEADER_LEN];
        self.header.encode(command::CMD_SUBMIT, out);
        put32(out, 0x14, self.transfer_flags);
        put32(out, 0x18, self.transfer_buffer_length);
        put32(out, 0x1c, self.start_frame);
        put32(out, 0x20, self.number_of_packets);
        put32(out, 0x24, self.interval);
        out[0x28..0x30].copy_from_slice(&self.setup);
    }

    /// Bytes of OUT payload that follow the header on the wire.
    pub fn out_len(&self) -> usize {
        match self.header.direction {
            Direction::Out => self.transfer_buffer_length as usize,
            Direction::In => 0,
        }
    }
}

impl CmdUnlink {
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        *out = [0; HEADER_LEN];
        self.header.encode(command::CMD_UNLINK, out);
        put32(out, 0x14, self.unlink_seqnum);
    }
}

impl RetSubmit {
    /// Encodes the header as the Linux stub does: devid, direction and ep are zero.
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        *out = [0; HEADER_LEN];
        put32(out, 0x00, command::RET_SUBMIT);
        put32(out, 0x04, self.seqnum);
        put32(out, 0x14, self.status as u32);
        put32(out, 0x18, self.actual_length);
        put32(out, 0x1c, self.start_frame);
        put32(out, 0x20, self.number_of_packets);
        put32(out, 0x24, self.error_count);
    }
}

impl RetUnlink {
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        *out = [0; HEADER_LEN];
        put32(out, 0x00, command::RET_UNLINK);
        put32(out, 0x04, self.seqnum);
        put32(out, 0x14, self.status as u32);
    }
}

impl Command {
    /// Splits one whole command off the front of `buf`, or returns `Ok(None)` (leaving `buf`
    /// untouched, with room reserved for the rest) until it has all arrived.
    pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Command>, ProtoError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let h = &buf[..HEADER_LEN];
        let code = be32(h, 0);
        match code {
            command::CMD_SUBMIT => {}
            command::CMD_UNLINK => {
                let cmd = CmdUnlink {
                    header: UrbHeader::decode(h)?,
                    unlink_seqnum: be32(h, 0x14),
                };
                buf.advance(HEADER_LEN);
                return Ok(Some(Command::Unlink(cmd)));
            }
            command::RET_SUBMIT => return Err(ProtoError::Unexpected("RET_SUBMIT")),
            command::RET_UNLINK => return Err(ProtoError::Unexpected("RET_UNLINK")),
            other => return Err(ProtoError::UnknownCommand(other)),
        }
        let header = UrbHeader::decode(h)?;
        let length = be32(h, 0x18);
        if length > limits.max_transfer_length {
            return Err(ProtoError::TransferTooLong(
                length,
                limits.max_transfer_length,
            ));
        }
        let packets = iso_count(be32(h, 0x20));
        if packets > limits.max_iso_packets {
            return Err(ProtoError::TooManyIsoPackets(
                packets,
                limits.max_iso_packets,
            ));
        }
        let mut setup = [0u8; 8];
        setup.copy_from_slice(&h[0x28..0x30]);
        let cmd = CmdSubmit {
            header,
            transfer_flags: be32(h, 0x14),
            transfer_buffer_length: length,
            start_frame: be32(h, 0x1c),
            number_of_packets: packets,
            interval: be32(h, 0x24),
            setup,
        };
        let data_len = cmd.out_len();
        let total = HEADER_LEN + data_len + packets as usize * ISO_PACKET_LEN;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let iso = decode_iso(&buf[HEADER_LEN + data_len..total]);
        for (index, p) in iso.iter().enumerate() {
            if u64::from(p.offset) + u64::from(p.length) > u64::from(length) {
                return Err(ProtoError::IsoOutOfBounds {
                    index: index as u32,
                    offset: p.offset,
                    length: p.length,
                    buffer: length,
                });
            }
        }
        buf.advance(HEADER_LEN);
        // An empty payload (every IN URB) must not hold a reference to the read buffer while
        // the URB is in flight: that would make the next read allocate a new buffer.
        let data = if data_len == 0 {
            Bytes::new()
        } else {
            buf.split_to(data_len).freeze()
        };
        buf.advance(packets as usize * ISO_PACKET_LEN);
        Ok(Some(Command::Submit { cmd, data, iso }))
    }

    /// Encodes the whole command (header, OUT data, iso descriptors) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut h = [0u8; HEADER_LEN];
        match self {
            Command::Submit { cmd, data, iso } => {
                cmd.encode(&mut h);
                out.extend_from_slice(&h);
                out.extend_from_slice(data);
                IsoPacket::encode_all(iso, out);
            }
            Command::Unlink(u) => {
                u.encode(&mut h);
                out.extend_from_slice(&h);
            }
        }
    }
}

impl Reply {
    /// Splits one whole reply off the front of `buf`. RET_SUBMIT carries IN data only, and its
    /// header does not say the direction, so `direction_of(seqnum)` tells it from the client's
    /// own record (`None`: the client never sent that seqnum).
    pub fn decode(
        buf: &mut BytesMut,
        limits: &Limits,
        direction_of: impl FnOnce(u32) -> Option<Direction>,
    ) -> Result<Option<Reply>, ProtoError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let h = &buf[..HEADER_LEN];
        let seqnum = be32(h, 0x04);
        match be32(h, 0) {
            command::RET_UNLINK => {
                let r = RetUnlink {
                    seqnum,
                    status: be32(h, 0x14) as i32,
                };
                buf.advance(HEADER_LEN);
                Ok(Some(Reply::Unlink(r)))
            }
            command::RET_SUBMIT => {
                let ret = RetSubmit {
                    seqnum,
                    status: be32(h, 0x14) as i32,
                    actual_length: be32(h, 0x18),
                    start_frame: be32(h, 0x1c),
                    number_of_packets: iso_count(be32(h, 0x20)),
                    error_count: be32(h, 0x24),
                };
                if ret.actual_length > limits.max_transfer_length {
                    return Err(ProtoError::TransferTooLong(
                        ret.actual_length,
                        limits.max_transfer_length,
                    ));
                }
                if ret.number_of_packets > limits.max_iso_packets {
                    return Err(ProtoError::TooManyIsoPackets(
                        ret.number_of_packets,
                        limits.max_iso_packets,
                    ));
                }
                let dir = direction_of(seqnum).ok_or(ProtoError::UnknownSeqnum(seqnum))?;
                let data_len = match dir {
                    Direction::In => ret.actual_length as usize,
                    Direction::Out => 0,
                };
                let total = HEADER_LEN + data_len + ret.number_of_packets as usize * ISO_PACKET_LEN;
                if buf.len() < total {
                    buf.reserve(total - buf.len());
                    return Ok(None);
                }
                let iso = decode_iso(&buf[HEADER_LEN + data_len..total]);
                if dir == Direction::In && !iso.is_empty() {
                    let sum: u64 = iso.iter().map(|p| u64::from(p.actual_length)).sum();
                    if sum != u64::from(ret.actual_length) {
                        return Err(ProtoError::IsoSumMismatch {
                            sum,
                            actual: ret.actual_length,
                        });
                    }
                }
                buf.advance(HEADER_LEN);
                let data = buf.split_to(data_len).freeze();
                buf.advance(ret.number_of_packets as usize * ISO_PACKET_LEN);
                Ok(Some(Reply::Submit { ret, data, iso }))
            }
            command::CMD_SUBMIT => Err(ProtoError::Unexpected("CMD_SUBMIT")),
            command::CMD_UNLINK => Err(ProtoError::Unexpected("CMD_UNLINK")),
            other => Err(ProtoError::UnknownCommand(other)),
        }
    }

    /// Encodes the whole reply (header, IN data, iso descriptors) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut h = [0u8; HEADER_LEN];
        match self {
            Reply::Submit { ret, data, iso } => {
                ret.encode(&mut h);
                out.extend_from_slice(&h);
                out.extend_from_slice(data);
                IsoPacket::encode_all(iso, out);
            }
            Reply::Unlink(u) => {
                u.encode(&mut h);
                out.extend_from_slice(&h);
            }
        }
    }
}
