//! The handshake phase: OP_REQ/REP_DEVLIST and OP_REQ/REP_IMPORT.
//!
//! Decoders take the bytes received so far and return `Ok(None)` until a whole message is there.

use crate::consts::{opcode, OpStatus, USBIP_VERSION};
use crate::device::{
    busid_field, parse_busid, DeviceRecord, ExportedDevice, InterfaceRecord, DEVICE_RECORD_LEN,
    INTERFACE_RECORD_LEN,
};
use crate::error::ProtoError;
use crate::Limits;

/// Length of the common handshake header: version u16, code u16, status u32.
pub const OP_HEADER_LEN: usize = 8;
const IMPORT_REQ_LEN: usize = OP_HEADER_LEN + 32;

/// What a client asks in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpRequest {
    DevList,
    Import { busid: String },
}

impl OpRequest {
    /// Decodes one request from the start of `buf`; returns it with the bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(OpRequest, usize)>, ProtoError> {
        let Some((code, _status)) = decode_header(buf)? else {
            return Ok(None);
        };
        match code {
            opcode::REQ_DEVLIST => Ok(Some((OpRequest::DevList, OP_HEADER_LEN))),
            opcode::REQ_IMPORT => {
                if buf.len() < IMPORT_REQ_LEN {
                    return Ok(None);
                }
                let busid = parse_busid(&buf[OP_HEADER_LEN..IMPORT_REQ_LEN])?;
                Ok(Some((OpRequest::Import { busid }, IMPORT_REQ_LEN)))
            }
            other => Err(ProtoError::UnknownOpcode(other)),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            OpRequest::DevList => encode_header(out, opcode::REQ_DEVLIST, 0),
            OpRequest::Import { busid } => {
                encode_header(out, opcode::REQ_IMPORT, 0);
                out.extend_from_slice(&busid_field(busid));
            }
        }
    }
}

/// What a server answers in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpReply {
    DevList(Vec<ExportedDevice>),
    /// `Ok` carries the device record (no interface list); any other status carries nothing.
    Import(Result<DeviceRecord, OpStatus>),
}

impl OpReply {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            OpReply::DevList(devices) => {
                encode_header(out, opcode::REP_DEVLIST, OpStatus::Ok as u32);
                out.extend_from_slice(&(devices.len() as u32).to_be_bytes());
                for dev in devices {
                    dev.record.encode(out);
                    for intf in &dev.interfaces {
                        intf.encode(out);
                    }
                }
            }
            OpReply::Import(Ok(record)) => {
                encode_header(out, opcode::REP_IMPORT, OpStatus::Ok as u32);
                record.encode(out);
            }
            OpReply::Import(Err(status)) => {
                encode_header(out, opcode::REP_IMPORT, *status as u32);
            }
        }
    }

    /// Decodes the reply to `request` from the start of `buf` (a client knows what it asked).
    pub fn decode(
        request: &OpRequest,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<(OpReply, usize)>, ProtoError> {
        let Some((code, status)) = decode_header(buf)? else {
            return Ok(None);
        };
        match (request, code) {
            (OpRequest::DevList, opcode::REP_DEVLIST) => decode_devlist(buf, status, limits),
            (OpRequest::Import { .. }, opcode::REP_IMPORT) => {
                let status = OpStatus::from_u32(status).ok_or(ProtoError::BadStatus(status))?;
                if status != OpStatus::Ok {
                    return Ok(Some((OpReply::Import(Err(status)), OP_HEADER_LEN)));
                }
                let end = OP_HEADER_LEN + DEVICE_RECORD_LEN;
                let Some(rec) = buf.get(OP_HEADER_LEN..end) else {
                    return Ok(None);
                };
                let rec = DeviceRecord::decode(rec.try_into().map_err(|_| ProtoError::BadBusid)?);
                Ok(Some((OpReply::Import(Ok(rec)), end)))
            }
            (_, other) => Err(ProtoError::UnknownOpcode(other)),
        }
    }
}

fn decode_devlist(
    buf: &[u8],
    status: u32,
    limits: &Limits,
) -> Result<Option<(OpReply, usize)>, ProtoError> {
    if status != 0 {
        return Err(ProtoError::BadStatus(status));
    }
    let Some(n) = buf.get(OP_HEADER_LEN..OP_HEADER_LEN + 4) else {
        return Ok(None);
    };
    let ndev = u32::from_be_bytes([n[0], n[1], n[2], n[3]]);
    if ndev > limits.max_devices {
        return Err(ProtoError::TooManyDevices(ndev, limits.max_devices));
    }
    let mut pos = OP_HEADER_LEN + 4;
    let mut devices = Vec::with_capacity(ndev as usize);
    for _ in 0..ndev {
        let Some(rec) = buf.get(pos..pos + DEVICE_RECORD_LEN) else {
            return Ok(None);
        };
        let mut arr = [0u8; DEVICE_RECORD_LEN];
        arr.copy_from_slice(rec);
        let record = DeviceRecord::decode(&arr);
        pos += DEVICE_RECORD_LEN;
        let nif = record.num_interfaces as usize;
        let Some(ifs) = buf.get(pos..pos + nif * INTERFACE_RECORD_LEN) else {
            return Ok(None);
        };
        let interfaces = ifs
            .chunks_exact(INTERFACE_RECORD_LEN)
            .map(|c| InterfaceRecord {
                class: c[0],
                subclass: c[1],
                protocol: c[2],
            })
            .collect();
        pos += nif * INTERFACE_RECORD_LEN;
        devices.push(ExportedDevice { record, interfaces });
    }
    Ok(Some((OpReply::DevList(devices), pos)))
}

fn decode_header(buf: &[u8]) -> Result<Option<(u16, u32)>, ProtoError> {
    if buf.len() < OP_HEADER_LEN {
        return Ok(None);
    }
    let version = u16::from_be_bytes([buf[0], buf[1]]);
    if version != USBIP_VERSION {
        return Err(ProtoError::Version(version));
    }
    let code = u16::from_be_bytes([buf[2], buf[3]]);
    let status = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Ok(Some((code, status)))
}

fn encode_header(out: &mut Vec<u8>, code: u16, status: u32) {
    out.extend_from_slice(&USBIP_VERSION.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&status.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Speed;

    fn dev(busid: &str, nif: u8) -> ExportedDevice {
        ExportedDevice {
            record: DeviceRecord {
                path: format!("/virtual/{busid}"),
                busid: busid.into(),
                busnum: 7,
                devnum: 3,
                speed: Speed::Super,
                id_vendor: 0x1209,
                id_product: 0x0001,
                bcd_device: 0x0100,
                device_class: 0,
                device_subclass: 0,
                device_protocol: 0,
                configuration_value: 1,
                num_configurations: 1,
                num_interfaces: nif,
            },
            interfaces: (0..nif)
                .map(|i| InterfaceRecord {
                    class: 2 + i,
                    subclass: i,
                    protocol: 1,
                })
                .collect(),
        }
    }

    /// The bytes `usbip list -r` sends, as captured from Debian's usbip 2.0.
    #[test]
    fn decodes_kernel_tool_requests() {
        let list = [0x01, 0x11, 0x80, 0x05, 0, 0, 0, 0];
        assert_eq!(
            OpRequest::decode(&list).unwrap(),
            Some((OpRequest::DevList, 8))
        );
        let mut import = vec![0x01, 0x11, 0x80, 0x03, 0, 0, 0, 0];
        import.extend_from_slice(b"1-1.4");
        import.resize(40, 0);
        assert_eq!(
            OpRequest::decode(&import).unwrap(),
            Some((
                OpRequest::Import {
                    busid: "1-1.4".into()
                },
                40
            ))
        );
    }

    #[test]
    fn every_split_of_a_request_waits_then_decodes() {
        let mut bytes = Vec::new();
        OpRequest::Import {
            busid: "2-3".into(),
        }
        .encode(&mut bytes);
        for cut in 0..bytes.len() {
            assert_eq!(OpRequest::decode(&bytes[..cut]).unwrap(), None);
        }
        assert!(OpRequest::decode(&bytes).unwrap().is_some());
    }

    #[test]
    fn rejects_bad_version_and_opcode() {
        assert_eq!(
            OpRequest::decode(&[0x01, 0x06, 0x80, 0x05, 0, 0, 0, 0]),
            Err(ProtoError::Version(0x0106))
        );
        assert_eq!(
            OpRequest::decode(&[0x01, 0x11, 0x80, 0x04, 0, 0, 0, 0]),
            Err(ProtoError::UnknownOpcode(0x8004))
        );
    }

    #[test]
    fn devlist_round_trips_at_every_split() {
        let reply = OpReply::DevList(vec![dev("1-1", 2), dev("1-2", 0), dev("2-1.3", 3)]);
        let mut bytes = Vec::new();
        reply.encode(&mut bytes);
        assert_eq!(bytes.len(), 8 + 4 + 3 * 312 + 5 * 4);
        let limits = Limits::default();
        for cut in 0..bytes.len() {
            assert_eq!(
                OpReply::decode(&OpRequest::DevList, &bytes[..cut], &limits).unwrap(),
                None
            );
        }
        let (decoded, used) = OpReply::decode(&OpRequest::DevList, &bytes, &limits)
            .unwrap()
            .unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(decoded, reply);
    }

    #[test]
    fn devlist_count_is_limited_before_allocating() {
        let mut bytes = Vec::new();
        encode_header(&mut bytes, opcode::REP_DEVLIST, 0);
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            OpReply::decode(&OpRequest::DevList, &bytes, &Limits::default()),
            Err(ProtoError::TooManyDevices(u32::MAX, 4096))
        );
    }

    #[test]
    fn import_reply_busy_is_header_only() {
        let req = OpRequest::Import {
            busid: "1-1".into(),
        };
        let mut bytes = Vec::new();
        OpReply::Import(Err(OpStatus::DevBusy)).encode(&mut bytes);
        assert_eq!(bytes, [0x01, 0x11, 0x00, 0x03, 0, 0, 0, 2]);
        let (reply, used) = OpReply::decode(&req, &bytes, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(used, 8);
        assert_eq!(reply, OpReply::Import(Err(OpStatus::DevBusy)));

        let mut ok = Vec::new();
        OpReply::Import(Ok(dev("1-1", 1).record)).encode(&mut ok);
        assert_eq!(ok.len(), 8 + 312);
        let (reply, _) = OpReply::decode(&req, &ok, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(reply, OpReply::Import(Ok(dev("1-1", 1).record)));
    }
}
