//! A virtual device compatible with Linux's Gadget Zero (g_zero), so that the kernel's usbtest
//! driver binds to it (0525:a4a0) and its test cases pass; also the project's benchmark device.
//!
//! Configuration 3 "source/sink": bulk IN sends a pattern, bulk OUT swallows (and checks) data,
//! vendor requests 0x5b/0x5c write and read back a control buffer; its alternate setting 1 adds
//! an isochronous source and sink (usbtest cases 15 and 16), paced like a bus by `iso::IsoPacer`.
//! Configuration 2 "loopback": bulk OUT data comes back on bulk IN. Everything else completes
//! inside `submit` or waits in the loopback queue; the data path must never allocate per URB
//! where a shared buffer will do.

mod descriptors;
#[cfg(test)]
mod iso_tests;
mod loopback;
mod pattern;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use usbip_proto::{errno, Direction};

pub use descriptors::{
    ALT_ISO, CONFIG_LOOPBACK, CONFIG_SOURCE_SINK, EP_IN, EP_ISO_IN, EP_ISO_OUT, EP_OUT, PRODUCT_ID,
    VENDOR_ID,
};
pub use pattern::Pattern;

use super::iso::{packets, IsoEndpoint, IsoPacer};
use super::{BusPosition, ControlResult, Descriptors, Function, FunctionSession, VirtualDevice};
use crate::device::setup::{
    descriptor_type, request, Recipient, RequestKind, SetupPacket, ENDPOINT_HALT,
};
use crate::device::{Completer, Urb, UrbCompletion};
use loopback::Loopback;

/// Vendor requests of Intel's USB 2.0 compliance device, which g_zero's source/sink answers.
const REQUEST_CONTROL_WRITE: u8 = 0x5b;
const REQUEST_CONTROL_READ: u8 = 0x5c;
/// bmRequestType of the two: vendor, device, OUT and IN.
const VENDOR_OUT: u8 = 0x40;
const VENDOR_IN: u8 = 0xc0;
/// g_zero's ep0 buffer size (USB_COMP_EP0_BUFSIZ), the longest 0x5b/0x5c transfer.
const CONTROL_BUFFER_LEN: usize = 4096;
/// The longest IN transfer the source produces, as the protocol codec's own limit; past it the
/// client gets an error rather than the server an allocation it did not plan for.
const MAX_SOURCE_LEN: usize = 16 * 1024 * 1024;

/// Settings, like g_zero's module parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GadgetZeroOptions {
    /// What the source sends and the sink checks.
    pub pattern: Pattern,
    /// Bytes the loopback holds before OUT URBs wait. The default is g_zero's: 32 requests
    /// (`qlen`) of 4096 bytes (`buflen`).
    pub loopback_buffer: usize,
}

impl Default for GadgetZeroOptions {
    fn default() -> Self {
        GadgetZeroOptions {
            pattern: Pattern::Zeros,
            loopback_buffer: 32 * 4096,
        }
    }
}

/// A Gadget Zero with default options at `position`.
pub fn new(position: BusPosition) -> VirtualDevice<GadgetZero> {
    with_options(GadgetZeroOptions::default(), position)
}

pub fn with_options(
    options: GadgetZeroOptions,
    position: BusPosition,
) -> VirtualDevice<GadgetZero> {
    VirtualDevice::new(GadgetZero::new(options), position)
}

/// The Gadget Zero function.
pub struct GadgetZero {
    options: GadgetZeroOptions,
    descriptors: Descriptors,
    qualifier: Vec<u8>,
    other_speed: Vec<Vec<u8>>,
    /// Source/sink's isochronous endpoints, as its descriptors declare them.
    iso_in: Option<IsoEndpoint>,
    iso_out: Option<IsoEndpoint>,
}

impl GadgetZero {
    pub fn new(options: GadgetZeroOptions) -> GadgetZero {
        let descriptors = descriptors::descriptors();
        let iso = |address| {
            let config = descriptors.configurations.first()?;
            IsoEndpoint::find(descriptors.speed, config, 0, ALT_ISO, address)
        };
        GadgetZero {
            options,
            iso_in: iso(EP_ISO_IN),
            iso_out: iso(EP_ISO_OUT),
            descriptors,
            qualifier: descriptors::device_qualifier(),
            other_speed: descriptors::other_speed_configurations(),
        }
    }
}

impl Function for GadgetZero {
    fn descriptors(&self) -> &Descriptors {
        &self.descriptors
    }

    fn open(&self, completer: Completer) -> Box<dyn FunctionSession> {
        Box::new(Session {
            pattern: self.options.pattern,
            qualifier: Bytes::copy_from_slice(&self.qualifier),
            other_speed: self
                .other_speed
                .iter()
                .map(|c| Bytes::copy_from_slice(c))
                .collect(),
            configuration: 0,
            alt: 0,
            halted_in: false,
            halted_out: false,
            control_buffer: vec![0; CONTROL_BUFFER_LEN],
            loopback: Loopback::new(self.options.loopback_buffer),
            iso_in: self.iso_in.map(|e| IsoPacer::new(e, completer.clone())),
            iso_out: self.iso_out.map(|e| IsoPacer::new(e, completer.clone())),
            completer,
        })
    }
}

struct Session {
    completer: Completer,
    pattern: Pattern,
    qualifier: Bytes,
    other_speed: Vec<Bytes>,
    configuration: u8,
    /// Alternate setting of interface 0.
    alt: u8,
    halted_in: bool,
    halted_out: bool,
    /// What 0x5b wrote and 0x5c reads back.
    control_buffer: Vec<u8>,
    loopback: Loopback,
    iso_in: Option<IsoPacer>,
    iso_out: Option<IsoPacer>,
}

impl Session {
    /// Endpoints go back to their initial state: not halted, nothing queued.
    fn reset_endpoints(&mut self) {
        self.halted_in = false;
        self.halted_out = false;
        self.loopback.reset(&self.completer);
        for pacer in [&mut self.iso_in, &mut self.iso_out].into_iter().flatten() {
            pacer.reset();
        }
    }

    fn get_descriptor(&self, setup: &SetupPacket) -> ControlResult {
        let index = usize::from(setup.value & 0xff);
        match (setup.value >> 8) as u8 {
            descriptor_type::DEVICE_QUALIFIER if index == 0 => Ok(self.qualifier.clone()),
            descriptor_type::OTHER_SPEED_CONFIGURATION => {
                self.other_speed.get(index).cloned().ok_or(errno::EPIPE)
            }
            // Interface and endpoint descriptors cannot be read alone; no BOS in USB 2.0.
            _ => Err(errno::EPIPE),
        }
    }

    fn set_halt(&mut self, endpoint: u8) -> ControlResult {
        if self.configuration == 0 {
            return Err(errno::EPIPE);
        }
        // URBs waiting on a halted endpoint see the stall.
        match endpoint {
            EP_IN => {
                self.halted_in = true;
                self.loopback.fail_in(errno::EPIPE, &self.completer);
            }
            EP_OUT => {
                self.halted_out = true;
                self.loopback.fail_out(errno::EPIPE, &self.completer);
            }
            _ => return Err(errno::EPIPE),
        }
        Ok(Bytes::new())
    }

    /// 0x5b and 0x5c, which g_zero answers in its source/sink configuration only.
    fn vendor(&mut self, setup: &SetupPacket, data: &[u8]) -> ControlResult {
        let length = usize::from(setup.length);
        if self.configuration != CONFIG_SOURCE_SINK
            || setup.value != 0
            || setup.index != 0
            || length > CONTROL_BUFFER_LEN
        {
            return Err(errno::EPIPE);
        }
        match (setup.request, setup.request_type) {
            (REQUEST_CONTROL_WRITE, VENDOR_OUT) => {
                let n = data.len().min(length);
                self.control_buffer[..n].copy_from_slice(&data[..n]);
                Ok(Bytes::new())
            }
            (REQUEST_CONTROL_READ, VENDOR_IN) => {
                Ok(Bytes::copy_from_slice(&self.control_buffer[..length]))
            }
            _ => Err(errno::EPIPE),
        }
    }

    fn source(&self, urb: &Urb) -> UrbCompletion {
        let len = urb.transfer_length as usize;
        if len > MAX_SOURCE_LEN {
            return UrbCompletion::error(urb.seqnum, errno::EINVAL);
        }
        UrbCompletion::data_in(urb.seqnum, self.pattern.source(len))
    }

    /// An isochronous URB, served in source/sink's alternate setting 1 only.
    fn submit_iso(&mut self, urb: Urb) {
        let active = self.configuration == CONFIG_SOURCE_SINK && self.alt == ALT_ISO;
        let pacer = match urb.endpoint_address() {
            EP_ISO_IN => self.iso_in.as_mut(),
            _ => self.iso_out.as_mut(),
        };
        let Some(pacer) = pacer.filter(|_| active) else {
            return self
                .completer
                .complete(UrbCompletion::failed(&urb, errno::EPIPE));
        };
        let endpoint = *pacer.endpoint();
        if let Err(status) = packets::check(&urb, &endpoint) {
            return self.completer.complete(UrbCompletion::failed(&urb, status));
        }
        let answer = match urb.direction {
            Direction::In => iso_source(self.pattern, &urb, &endpoint),
            // f_sourcesink checks bulk OUT data only, and usbtest writes zeroes to the iso sink
            // whatever its pattern: every packet is taken as it is.
            Direction::Out => packets::answer_out(&urb, |_| Ok(())),
        };
        pacer.schedule(answer);
    }

    fn sink(&mut self, urb: &Urb) -> UrbCompletion {
        if self.pattern.check(&urb.data) {
            UrbCompletion::done_out(urb.seqnum, urb.data.len() as u32)
        } else {
            // Like f_sourcesink: bad data halts the OUT endpoint until the host clears it.
            self.halted_out = true;
            UrbCompletion::error(urb.seqnum, errno::EPIPE)
        }
    }
}

impl FunctionSession for Session {
    fn control(&mut self, setup: &SetupPacket, data: &[u8]) -> ControlResult {
        match (setup.kind(), setup.recipient(), setup.request) {
            (RequestKind::Standard, Recipient::Device, request::GET_DESCRIPTOR) => {
                self.get_descriptor(setup)
            }
            (RequestKind::Standard, Recipient::Endpoint, request::SET_FEATURE)
                if setup.value == ENDPOINT_HALT =>
            {
                self.set_halt((setup.index & 0xff) as u8)
            }
            (RequestKind::Vendor, Recipient::Device, _) => self.vendor(setup, data),
            _ => Err(errno::EPIPE),
        }
    }

    fn set_configuration(&mut self, value: u8) {
        self.reset_endpoints();
        self.configuration = value;
        self.alt = 0;
    }

    fn set_interface(&mut self, interface: u8, alt: u8) -> Result<(), i32> {
        let known = match self.configuration {
            CONFIG_SOURCE_SINK => alt == 0 || alt == ALT_ISO,
            CONFIG_LOOPBACK => alt == 0,
            _ => false,
        };
        if interface != 0 || !known {
            return Err(errno::EPIPE);
        }
        // Like g_zero's set_alt: endpoints restart, isochronous ones only exist in alt 1.
        self.reset_endpoints();
        self.alt = alt;
        Ok(())
    }

    fn clear_halt(&mut self, endpoint_address: u8) {
        match endpoint_address {
            EP_IN => self.halted_in = false,
            EP_OUT => self.halted_out = false,
            _ => {}
        }
    }

    fn is_halted(&self, endpoint_address: u8) -> bool {
        match endpoint_address {
            EP_IN => self.halted_in,
            EP_OUT => self.halted_out,
            _ => false,
        }
    }

    fn submit(&mut self, urb: Urb) {
        if matches!(urb.endpoint_address(), EP_ISO_IN | EP_ISO_OUT) {
            return self.submit_iso(urb);
        }
        let halted = match urb.endpoint_address() {
            EP_IN => self.halted_in,
            EP_OUT => self.halted_out,
            _ => true,
        };
        if halted || self.configuration == 0 {
            return self
                .completer
                .complete(UrbCompletion::error(urb.seqnum, errno::EPIPE));
        }
        match (self.configuration, urb.direction) {
            (CONFIG_SOURCE_SINK, Direction::In) => self.completer.complete(self.source(&urb)),
            (CONFIG_SOURCE_SINK, Direction::Out) => {
                let completion = self.sink(&urb);
                self.completer.complete(completion);
            }
            (CONFIG_LOOPBACK, Direction::In) => self.loopback.submit_in(urb, &self.completer),
            (CONFIG_LOOPBACK, Direction::Out) => self.loopback.submit_out(urb, &self.completer),
            _ => self
                .completer
                .complete(UrbCompletion::error(urb.seqnum, errno::EPIPE)),
        }
    }

    fn cancel(&mut self, seqnum: u32) {
        // Only the loopback and the isochronous pacers keep URBs; bulk source and sink complete
        // them at once.
        if self.loopback.cancel(seqnum, &self.completer) {
            return;
        }
        for pacer in [&mut self.iso_in, &mut self.iso_out].into_iter().flatten() {
            if pacer.cancel(seqnum) {
                return;
            }
        }
    }
}

/// The source's answer to an isochronous IN URB: every packet full, the pattern restarting with
/// each packet (g_zero queues one request per packet). When every packet but the last is a
/// whole wMaxPacketSize that is the pattern with a period of one packet, sent without a copy.
fn iso_source(pattern: Pattern, urb: &Urb, endpoint: &IsoEndpoint) -> UrbCompletion {
    let packet = endpoint.max_packet;
    let lengths: Vec<usize> = urb.iso.iter().map(|p| p.length as usize).collect();
    let (_, but_last) = lengths.split_last().unwrap_or((&0, &[]));
    if but_last.iter().all(|&len| len == packet) {
        let total = lengths.iter().sum();
        packets::answer_in(urb, pattern.source_every(total, packet))
    } else {
        packets::answer_in_each(urb, |len| pattern.source_every(len, packet))
    }
}
