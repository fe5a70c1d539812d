//! A virtual CDC-ACM serial port (the kernel's cdc-acm makes it /dev/ttyACMn), bridged to one
//! TCP peer at a time.
//!
//! Bytes the USB host writes go to the peer; OUT URBs complete only once their bytes fit into
//! a bounded pipe, so a slow peer slows the writer down. With no peer connected, OUT bytes are
//! discarded, as on a serial line with nothing attached. Bytes from the peer wait in a bounded
//! pipe for bulk IN URBs; each IN URB completes as soon as any byte is there. Nothing here
//! ever blocks the caller of submit or holds a lock across I/O.

mod bridge;
mod pipe;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use usbip_proto::{errno, Speed};

use super::descriptors::{transfer_type, ConfigBuilder, Descriptors, DeviceDescriptor};
use super::{BusPosition, ControlResult, Function, FunctionSession, VirtualDevice};
use crate::device::setup::{Recipient, RequestKind, SetupPacket};
use crate::device::{Completer, Urb, UrbCompletion};
use pipe::Pipes;
pub use pipe::PIPE_CAPACITY;

pub const VENDOR_ID: u16 = 0x1209;
pub const PRODUCT_ID: u16 = 0x0002;

/// Where the TCP side listens unless told otherwise: 127.0.0.1:3250.
pub const DEFAULT_ADDRESS: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 3250));

const COMM_INTERFACE: u16 = 0;
const NOTIFY_ENDPOINT: u8 = 0x81;
const DATA_IN_ENDPOINT: u8 = 0x82;
const DATA_OUT_ENDPOINT: u8 = 0x02;
/// Room for a SERIAL_STATE notification (8-byte header + 2 bytes) with some to spare.
const NOTIFY_MAX_PACKET: u16 = 16;

/// CDC 1.2 and PSTN 1.2 numbers.
pub mod cdc {
    pub const CLASS_COMM: u8 = 0x02;
    pub const CLASS_DATA: u8 = 0x0a;
    pub const SUBCLASS_ACM: u8 = 0x02;
    /// AT commands (V.250): what cdc-acm expects of a modem-like port.
    pub const PROTOCOL_AT: u8 = 0x01;

    pub const CS_INTERFACE: u8 = 0x24;
    pub const SUBTYPE_HEADER: u8 = 0x00;
    pub const SUBTYPE_CALL_MANAGEMENT: u8 = 0x01;
    pub const SUBTYPE_ACM: u8 = 0x02;
    pub const SUBTYPE_UNION: u8 = 0x06;

    /// ACM bmCapabilities: line coding and control line state (0x02), SEND_BREAK (0x04).
    pub const ACM_CAPABILITIES: u8 = 0x02 | 0x04;

    pub const SET_LINE_CODING: u8 = 0x20;
    pub const GET_LINE_CODING: u8 = 0x21;
    pub const SET_CONTROL_LINE_STATE: u8 = 0x22;
    pub const SEND_BREAK: u8 = 0x23;

    pub const CONTROL_DTR: u16 = 0x01;
    pub const CONTROL_RTS: u16 = 0x02;

    pub const NOTIFICATION_SERIAL_STATE: u8 = 0x20;
    /// SERIAL_STATE bits: DCD (bRxCarrier) and DSR (bTxCarrier).
    pub const SERIAL_STATE_DCD: u16 = 0x01;
    pub const SERIAL_STATE_DSR: u16 = 0x02;
}

/// Interface association (USB ECN): device class 0xEF/2/1 names this descriptor.
const DESCRIPTOR_IAD: u8 = 0x0b;

#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("a virtual serial port cannot run at {0:?} speed (full or high only)")]
    UnsupportedSpeed(Speed),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// Line coding as SET_LINE_CODING sends it (PSTN 1.2 table 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCoding {
    pub rate: u32,
    /// 0: 1 stop bit, 1: 1.5, 2: 2.
    pub stop_bits: u8,
    /// 0 none, 1 odd, 2 even, 3 mark, 4 space.
    pub parity: u8,
    pub data_bits: u8,
}

impl Default for LineCoding {
    /// 9600 8N1.
    fn default() -> LineCoding {
        LineCoding {
            rate: 9600,
            stop_bits: 0,
            parity: 0,
            data_bits: 8,
        }
    }
}

impl LineCoding {
    fn to_bytes(self) -> [u8; 7] {
        let r = self.rate.to_le_bytes();
        [
            r[0],
            r[1],
            r[2],
            r[3],
            self.stop_bits,
            self.parity,
            self.data_bits,
        ]
    }

    fn parse(b: &[u8]) -> Option<LineCoding> {
        let b: &[u8; 7] = b.try_into().ok()?;
        Some(LineCoding {
            rate: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            stop_bits: b[4],
            parity: b[5],
            data_bits: b[6],
        })
    }
}

/// What the host last set with SET_CONTROL_LINE_STATE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlLines {
    pub dtr: bool,
    pub rts: bool,
}

#[derive(Default)]
struct Line {
    coding: LineCoding,
    control: ControlLines,
}

/// State shared by the USB session and the bridge task.
#[derive(Default)]
struct Shared {
    pipes: Mutex<Pipes>,
    line: Mutex<Line>,
    /// Bytes were added for the peer.
    to_peer_ready: Notify,
    /// Room was freed in the pipe to the host.
    to_host_room: Notify,
}

impl Shared {
    // Both locks guard plain data and no I/O; a panic elsewhere leaves them consistent.
    fn pipes(&self) -> MutexGuard<'_, Pipes> {
        self.pipes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn line(&self) -> MutexGuard<'_, Line> {
        self.line.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The serial function. Build it with [`Serial::bind`].
pub struct Serial {
    descriptors: Descriptors,
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    _bridge: bridge::BridgeTask,
}

impl Serial {
    /// Listens on `addr` and returns the device at `position`. Must run inside a tokio runtime:
    /// it spawns the bridge task, which ends when the device is dropped.
    pub async fn bind(
        addr: SocketAddr,
        speed: Speed,
        serial: &str,
        position: BusPosition,
    ) -> Result<VirtualDevice<Serial>, SerialError> {
        let descriptors = descriptors(speed, serial)?;
        let bind_error = |source| SerialError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let shared = Arc::new(Shared::default());
        let bridge = bridge::spawn(listener, shared.clone());
        let serial = Serial {
            descriptors,
            shared,
            local_addr,
            _bridge: bridge,
        };
        Ok(VirtualDevice::new(serial, position))
    }

    /// The address the TCP side listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TCP peer connected now, if any.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.shared.pipes().peer()
    }

    pub fn line_coding(&self) -> LineCoding {
        self.shared.line().coding
    }

    pub fn control_lines(&self) -> ControlLines {
        self.shared.line().control
    }
}

fn descriptors(speed: Speed, serial: &str) -> Result<Descriptors, SerialError> {
    let (bulk_max_packet, notify_interval) = match speed {
        Speed::Full => (64, 32),
        // 2^(9-1) microframes: 32 ms, as at full speed.
        Speed::High => (512, 9),
        other => return Err(SerialError::UnsupportedSpeed(other)),
    };
    let device = DeviceDescriptor {
        usb_version: 0x0200,
        // Miscellaneous / common class / interface association: the IAD groups the two
        // interfaces into one function.
        class: 0xef,
        subclass: 0x02,
        protocol: 0x01,
        max_packet_size0: 64,
        vendor: VENDOR_ID,
        product: PRODUCT_ID,
        device_version: 0x0100,
        manufacturer_string: 1,
        product_string: 2,
        serial_string: 3,
        num_configurations: 1,
    };
    let comm = (cdc::CLASS_COMM, cdc::SUBCLASS_ACM, cdc::PROTOCOL_AT);
    let config = ConfigBuilder::new(1, 0, 0x80, 100)
        .raw(&[8, DESCRIPTOR_IAD, 0, 2, comm.0, comm.1, comm.2, 0])
        .interface(0, 0, comm, 1, 0)
        // Header, CDC 1.10.
        .raw(&[5, cdc::CS_INTERFACE, cdc::SUBTYPE_HEADER, 0x10, 0x01])
        // Call management: none by the device; data interface 1.
        .raw(&[5, cdc::CS_INTERFACE, cdc::SUBTYPE_CALL_MANAGEMENT, 0x00, 1])
        .raw(&[
            4,
            cdc::CS_INTERFACE,
            cdc::SUBTYPE_ACM,
            cdc::ACM_CAPABILITIES,
        ])
        // Union: interface 0 controls interface 1.
        .raw(&[5, cdc::CS_INTERFACE, cdc::SUBTYPE_UNION, 0, 1])
        .endpoint(
            NOTIFY_ENDPOINT,
            transfer_type::INTERRUPT,
            NOTIFY_MAX_PACKET,
            notify_interval,
        )
        .interface(1, 0, (cdc::CLASS_DATA, 0, 0), 2, 0)
        .endpoint(DATA_IN_ENDPOINT, transfer_type::BULK, bulk_max_packet, 0)
        .endpoint(DATA_OUT_ENDPOINT, transfer_type::BULK, bulk_max_packet, 0)
        .build();
    Ok(Descriptors {
        speed,
        device: device.to_bytes().into(),
        configurations: vec![config.into()],
        strings: vec![
            "usbipd".to_string(),
            "usbipd virtual serial".to_string(),
            serial.to_string(),
        ],
    })
}

/// SERIAL_STATE with carrier and DSR up: a line with something attached.
fn serial_state_notification() -> Bytes {
    let [i0, i1] = COMM_INTERFACE.to_le_bytes();
    let [s0, s1] = (cdc::SERIAL_STATE_DCD | cdc::SERIAL_STATE_DSR).to_le_bytes();
    Bytes::copy_from_slice(&[
        0xa1,
        cdc::NOTIFICATION_SERIAL_STATE,
        0,
        0,
        i0,
        i1,
        2,
        0,
        s0,
        s1,
    ])
}

impl Function for Serial {
    fn descriptors(&self) -> &Descriptors {
        &self.descriptors
    }

    fn open(&self, completer: Completer) -> Box<dyn FunctionSession> {
        // A new client sees a freshly plugged port.
        *self.shared.line() = Line::default();
        let generation = self.shared.pipes().open_session(completer.clone());
        Box::new(SerialSession {
            shared: self.shared.clone(),
            completer,
            generation,
        })
    }
}

struct SerialSession {
    shared: Arc<Shared>,
    completer: Completer,
    generation: u64,
}

impl FunctionSession for SerialSession {
    fn control(&mut self, setup: &SetupPacket, data: &[u8]) -> ControlResult {
        if setup.kind() != RequestKind::Class
            || setup.recipient() != Recipient::Interface
            || setup.index != COMM_INTERFACE
        {
            return Err(errno::EPIPE);
        }
        match (setup.request, setup.is_in()) {
            (cdc::SET_LINE_CODING, false) => {
                let coding = LineCoding::parse(data).ok_or(errno::EPIPE)?;
                self.shared.line().coding = coding;
                Ok(Bytes::new())
            }
            (cdc::GET_LINE_CODING, true) => Ok(Bytes::copy_from_slice(
                &self.shared.line().coding.to_bytes(),
            )),
            (cdc::SET_CONTROL_LINE_STATE, false) => {
                let control = ControlLines {
                    dtr: setup.value & cdc::CONTROL_DTR != 0,
                    rts: setup.value & cdc::CONTROL_RTS != 0,
                };
                let dtr_rose = {
                    let mut line = self.shared.line();
                    let rose = control.dtr && !line.control.dtr;
                    line.control = control;
                    rose
                };
                if dtr_rose {
                    // Answer the terminal being ready with carrier, so that a program that
                    // waits for DCD (CLOCAL off) can open the port.
                    self.shared.pipes().notify(serial_state_notification());
                }
                Ok(Bytes::new())
            }
            // Breaks have no meaning on a TCP byte stream: accepted and dropped.
            (cdc::SEND_BREAK, false) => Ok(Bytes::new()),
            _ => Err(errno::EPIPE),
        }
    }

    fn submit(&mut self, urb: Urb) {
        let mut pipes = self.shared.pipes();
        match urb.endpoint_address() {
            DATA_IN_ENDPOINT => {
                if pipes.submit_in(urb.seqnum, urb.transfer_length) {
                    self.shared.to_host_room.notify_one();
                }
            }
            DATA_OUT_ENDPOINT => {
                if pipes.submit_out(urb.seqnum, urb.data) {
                    self.shared.to_peer_ready.notify_one();
                }
            }
            NOTIFY_ENDPOINT => pipes.submit_notify(urb.seqnum, urb.transfer_length),
            _ => {
                drop(pipes);
                self.completer
                    .complete(UrbCompletion::error(urb.seqnum, errno::EPIPE));
            }
        }
    }

    fn cancel(&mut self, seqnum: u32) {
        if self.shared.pipes().cancel(seqnum) {
            self.shared.to_peer_ready.notify_one();
        }
    }
}

impl Drop for SerialSession {
    fn drop(&mut self) {
        self.shared.pipes().close_session(self.generation);
    }
}
