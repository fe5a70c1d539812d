//! A virtual HID boot keyboard: the host side types text, the USB host reads key reports.
//!
//! The kernel's usbhid driver binds to it like to a real keyboard. Reports wait in a bounded
//! queue until an interrupt IN URB is parked to take them; the queue never grows past its
//! capacity, and a parked IN URB never holds up anything else.

mod keymap;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use usbip_proto::{errno, Direction, Speed};

use super::descriptors::{transfer_type, ConfigBuilder, Descriptors, DeviceDescriptor};
use super::{BusPosition, ControlResult, Function, FunctionSession, VirtualDevice};
use crate::device::setup::{request, Recipient, RequestKind, SetupPacket};
use crate::device::{Completer, Urb, UrbCompletion};

pub const VENDOR_ID: u16 = 0x1209;
pub const PRODUCT_ID: u16 = 0x0001;

/// Reports (not characters: each character is a press and a release) that may wait.
pub const QUEUE_CAPACITY: usize = 4096;

/// A boot keyboard input report: modifiers, reserved, six key usages.
pub type Report = [u8; 8];

const INTERFACE: u16 = 0;
const ENDPOINT_IN: u8 = 0x81;

/// HID class codes (HID 1.11, sections 4, 7.1 and 7.2).
pub mod hid {
    pub const CLASS: u8 = 0x03;
    pub const SUBCLASS_BOOT: u8 = 0x01;
    pub const PROTOCOL_KEYBOARD: u8 = 0x01;

    pub const DESCRIPTOR_HID: u8 = 0x21;
    pub const DESCRIPTOR_REPORT: u8 = 0x22;

    pub const GET_REPORT: u8 = 0x01;
    pub const GET_IDLE: u8 = 0x02;
    pub const GET_PROTOCOL: u8 = 0x03;
    pub const SET_REPORT: u8 = 0x09;
    pub const SET_IDLE: u8 = 0x0a;
    pub const SET_PROTOCOL: u8 = 0x0b;

    pub const REPORT_INPUT: u8 = 0x01;
    pub const REPORT_OUTPUT: u8 = 0x02;

    pub const PROTOCOL_BOOT: u8 = 0;
    pub const PROTOCOL_REPORT: u8 = 1;
}

/// The boot keyboard report descriptor of HID 1.11 appendix B.1: 8-byte input report
/// (modifier bits, a reserved byte, six key usages) and a 1-byte LED output report.
pub const REPORT_DESCRIPTOR: [u8; 63] = [
    0x05, 0x01, // Usage Page (Generic Desktop)
    0x09, 0x06, // Usage (Keyboard)
    0xa1, 0x01, // Collection (Application)
    0x05, 0x07, //   Usage Page (Keyboard/Keypad)
    0x19, 0xe0, //   Usage Minimum (Left Control)
    0x29, 0xe7, //   Usage Maximum (Right GUI)
    0x15, 0x00, //   Logical Minimum (0)
    0x25, 0x01, //   Logical Maximum (1)
    0x75, 0x01, //   Report Size (1)
    0x95, 0x08, //   Report Count (8)
    0x81, 0x02, //   Input (Data, Variable, Absolute): modifiers
    0x95, 0x01, //   Report Count (1)
    0x75, 0x08, //   Report Size (8)
    0x81, 0x01, //   Input (Constant): reserved byte
    0x95, 0x05, //   Report Count (5)
    0x75, 0x01, //   Report Size (1)
    0x05, 0x08, //   Usage Page (LEDs)
    0x19, 0x01, //   Usage Minimum (Num Lock)
    0x29, 0x05, //   Usage Maximum (Kana)
    0x91, 0x02, //   Output (Data, Variable, Absolute): LEDs
    0x95, 0x01, //   Report Count (1)
    0x75, 0x03, //   Report Size (3)
    0x91, 0x01, //   Output (Constant): padding
    0x95, 0x06, //   Report Count (6)
    0x75, 0x08, //   Report Size (8)
    0x15, 0x00, //   Logical Minimum (0)
    0x25, 0x65, //   Logical Maximum (101)
    0x05, 0x07, //   Usage Page (Keyboard/Keypad)
    0x19, 0x00, //   Usage Minimum (0)
    0x29, 0x65, //   Usage Maximum (101)
    0x81, 0x00, //   Input (Data, Array): key usages
    0xc0, // End Collection
];

/// The HID descriptor: HID 1.11, no country code, one report descriptor.
pub fn hid_descriptor() -> [u8; 9] {
    let len = (REPORT_DESCRIPTOR.len() as u16).to_le_bytes();
    [
        9,
        hid::DESCRIPTOR_HID,
        0x11,
        0x01,
        0,
        1,
        hid::DESCRIPTOR_REPORT,
        len[0],
        len[1],
    ]
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyboardError {
    #[error("a virtual keyboard cannot run at {0:?} speed (low, full or high only)")]
    UnsupportedSpeed(Speed),
    #[error("no key of a US keyboard types {0:?}")]
    UnknownChar(char),
    #[error("keyboard queue is full: {needed} more reports do not fit ({pending} of {capacity} pending)")]
    QueueFull {
        needed: usize,
        pending: usize,
        capacity: usize,
    },
}

/// The keyboard function. Build it with [`Keyboard::new`].
pub struct Keyboard {
    descriptors: Descriptors,
    shared: Arc<Shared>,
}

/// The host side of a keyboard: cheap to clone, usable from any thread or task.
#[derive(Clone)]
pub struct KeyboardHandle {
    shared: Arc<Shared>,
}

impl Keyboard {
    /// A keyboard at `position`, and the handle that types on it. `serial` becomes the serial
    /// number string.
    pub fn new(
        speed: Speed,
        serial: &str,
        position: BusPosition,
    ) -> Result<(VirtualDevice<Keyboard>, KeyboardHandle), KeyboardError> {
        let (max_packet0, interval) = match speed {
            Speed::Low => (8, 10),
            Speed::Full => (64, 10),
            // 2^(7-1) microframes: 8 ms.
            Speed::High => (64, 7),
            other => return Err(KeyboardError::UnsupportedSpeed(other)),
        };
        let device = DeviceDescriptor {
            usb_version: if speed == Speed::High { 0x0200 } else { 0x0110 },
            class: 0,
            subclass: 0,
            protocol: 0,
            max_packet_size0: max_packet0,
            vendor: VENDOR_ID,
            product: PRODUCT_ID,
            device_version: 0x0100,
            manufacturer_string: 1,
            product_string: 2,
            serial_string: 3,
            num_configurations: 1,
        };
        let config = ConfigBuilder::new(1, 0, 0x80, 100)
            .interface(
                0,
                0,
                (hid::CLASS, hid::SUBCLASS_BOOT, hid::PROTOCOL_KEYBOARD),
                1,
                0,
            )
            // usbhid looks for the HID descriptor between the interface and its endpoint.
            .raw(&hid_descriptor())
            .endpoint(ENDPOINT_IN, transfer_type::INTERRUPT, 8, interval)
            .build();
        let shared = Arc::new(Shared::default());
        let keyboard = Keyboard {
            descriptors: Descriptors {
                speed,
                device: device.to_bytes().into(),
                configurations: vec![config.into()],
                strings: vec![
                    "usbipd".to_string(),
                    "usbipd virtual keyboard".to_string(),
                    serial.to_string(),
                ],
            },
            shared: shared.clone(),
        };
        Ok((
            VirtualDevice::new(keyboard, position),
            KeyboardHandle { shared },
        ))
    }

    /// Another handle on this keyboard.
    pub fn handle(&self) -> KeyboardHandle {
        KeyboardHandle {
            shared: self.shared.clone(),
        }
    }
}

impl KeyboardHandle {
    /// Queues a press and a release report for each character of `text`. All or nothing: an
    /// unknown character or a queue without room for the whole text queues nothing. Text
    /// longer than the queue can ever hold (half its capacity) is refused; split it.
    pub fn type_text(&self, text: &str) -> Result<(), KeyboardError> {
        let mut reports = Vec::with_capacity((text.len() * 2).min(QUEUE_CAPACITY));
        for c in text.chars() {
            let (modifiers, usage) = keymap::key_for(c).ok_or(KeyboardError::UnknownChar(c))?;
            if reports.len() + 2 > QUEUE_CAPACITY {
                // It could never fit: stop before building an unbounded list.
                return Err(KeyboardError::QueueFull {
                    needed: text.chars().count() * 2,
                    pending: self.pending(),
                    capacity: QUEUE_CAPACITY,
                });
            }
            reports.push([modifiers, 0, usage, 0, 0, 0, 0, 0]);
            reports.push([0; 8]);
        }
        self.send_reports(&reports)
    }

    /// Queues raw boot reports as they are, all or nothing.
    pub fn send_reports(&self, reports: &[Report]) -> Result<(), KeyboardError> {
        let mut state = self.shared.lock();
        let pending = state.queue.len();
        if pending + reports.len() > QUEUE_CAPACITY {
            return Err(KeyboardError::QueueFull {
                needed: reports.len(),
                pending,
                capacity: QUEUE_CAPACITY,
            });
        }
        state.queue.extend(reports.iter().copied());
        state.deliver();
        Ok(())
    }

    /// Reports still waiting for the USB host to read them.
    pub fn pending(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// The LED bits the host last set (bit 0 Num Lock, 1 Caps Lock, 2 Scroll Lock).
    pub fn leds(&self) -> u8 {
        self.shared.lock().leds
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock guards plain data and no I/O; a panic elsewhere leaves it consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An interrupt IN URB waiting for a report.
struct Parked {
    seqnum: u32,
    length: u32,
}

struct State {
    queue: VecDeque<Report>,
    parked: VecDeque<Parked>,
    /// The session that is open, if any, and where its completions go.
    session: Option<(u64, Completer)>,
    generation: u64,
    /// The keys down as last reported, for GET_REPORT(Input).
    last_report: Report,
    leds: u8,
    protocol: u8,
    /// Idle rate in 4 ms units. Stored for GET_IDLE only: reports go out on change, which is
    /// what the rate 0 that usbhid sets asks for.
    idle: u8,
}

impl Default for State {
    fn default() -> State {
        State {
            queue: VecDeque::new(),
            parked: VecDeque::new(),
            session: None,
            generation: 0,
            last_report: [0; 8],
            leds: 0,
            protocol: hid::PROTOCOL_REPORT,
            idle: 0,
        }
    }
}

impl State {
    /// Hands queued reports to parked URBs, oldest to oldest. Completing under the lock keeps
    /// completions in queue order when the handle and the session deliver at the same time;
    /// `complete` is a non-blocking channel send.
    fn deliver(&mut self) {
        let Some((_, completer)) = &self.session else {
            return;
        };
        while !self.parked.is_empty() && !self.queue.is_empty() {
            let (Some(urb), Some(report)) = (self.parked.pop_front(), self.queue.pop_front())
            else {
                break;
            };
            self.last_report = report;
            let completion = if (urb.length as usize) < report.len() {
                // The keyboard sent a full packet into a smaller buffer: babble.
                UrbCompletion::error(urb.seqnum, errno::EOVERFLOW)
            } else {
                UrbCompletion::data_in(urb.seqnum, Bytes::copy_from_slice(&report))
            };
            completer.complete(completion);
        }
    }

    fn control(&mut self, setup: &SetupPacket, data: &[u8]) -> ControlResult {
        if setup.recipient() != Recipient::Interface || setup.index != INTERFACE {
            return Err(errno::EPIPE);
        }
        let [value_low, value_high] = setup.value.to_le_bytes();
        match (setup.kind(), setup.request, setup.is_in()) {
            (RequestKind::Standard, request::GET_DESCRIPTOR, true) => match value_high {
                hid::DESCRIPTOR_HID => Ok(Bytes::copy_from_slice(&hid_descriptor())),
                hid::DESCRIPTOR_REPORT => Ok(Bytes::from_static(&REPORT_DESCRIPTOR)),
                _ => Err(errno::EPIPE),
            },
            // Our only report has no report ID, so the ID in the low byte must be 0.
            (RequestKind::Class, hid::GET_REPORT, true) if value_low == 0 => match value_high {
                hid::REPORT_INPUT => Ok(Bytes::copy_from_slice(&self.last_report)),
                hid::REPORT_OUTPUT => Ok(Bytes::copy_from_slice(&[self.leds])),
                _ => Err(errno::EPIPE),
            },
            (RequestKind::Class, hid::SET_REPORT, false)
                if value_low == 0 && value_high == hid::REPORT_OUTPUT =>
            {
                let &leds = data.first().ok_or(errno::EPIPE)?;
                self.leds = leds;
                Ok(Bytes::new())
            }
            (RequestKind::Class, hid::GET_IDLE, true) => Ok(Bytes::copy_from_slice(&[self.idle])),
            (RequestKind::Class, hid::SET_IDLE, false) => {
                self.idle = value_high;
                Ok(Bytes::new())
            }
            (RequestKind::Class, hid::GET_PROTOCOL, true) => {
                Ok(Bytes::copy_from_slice(&[self.protocol]))
            }
            (RequestKind::Class, hid::SET_PROTOCOL, false) if matches!(setup.value, 0 | 1) => {
                // Boot and report protocol send the same bytes: our report is the boot report.
                self.protocol = value_low;
                Ok(Bytes::new())
            }
            _ => Err(errno::EPIPE),
        }
    }
}

impl Function for Keyboard {
    fn descriptors(&self) -> &Descriptors {
        &self.descriptors
    }

    fn open(&self, completer: Completer) -> Box<dyn FunctionSession> {
        let mut state = self.shared.lock();
        state.generation += 1;
        let generation = state.generation;
        state.session = Some((generation, completer.clone()));
        // A new client sees a freshly plugged keyboard; queued text stays queued for it.
        state.parked.clear();
        state.protocol = hid::PROTOCOL_REPORT;
        state.idle = 0;
        state.leds = 0;
        state.last_report = [0; 8];
        Box::new(KeyboardSession {
            shared: self.shared.clone(),
            completer,
            generation,
        })
    }
}

struct KeyboardSession {
    shared: Arc<Shared>,
    completer: Completer,
    generation: u64,
}

impl FunctionSession for KeyboardSession {
    fn control(&mut self, setup: &SetupPacket, data: &[u8]) -> ControlResult {
        self.shared.lock().control(setup, data)
    }

    fn submit(&mut self, urb: Urb) {
        if urb.endpoint_address() != ENDPOINT_IN || urb.direction != Direction::In {
            return self
                .completer
                .complete(UrbCompletion::error(urb.seqnum, errno::EPIPE));
        }
        let mut state = self.shared.lock();
        state.parked.push_back(Parked {
            seqnum: urb.seqnum,
            length: urb.transfer_length,
        });
        state.deliver();
    }

    fn cancel(&mut self, seqnum: u32) {
        self.shared.lock().parked.retain(|p| p.seqnum != seqnum);
    }
}

impl Drop for KeyboardSession {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        // Only if no newer session has taken over in the meantime.
        if matches!(state.session, Some((g, _)) if g == self.generation) {
            state.session = None;
            state.parked.clear();
        }
    }
}
