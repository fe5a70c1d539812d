//! Virtual devices: USB functions implemented in software, which need no privileges.
//!
//! [`VirtualDevice`] turns a [`Function`] into a [`Device`]: it answers the chapter-9 standard
//! requests on endpoint 0 from the function's [`Descriptors`] and passes class and vendor
//! requests and all other endpoints to the function's [`FunctionSession`].

pub mod descriptors;
pub mod gadget_zero;
pub mod iso;
pub mod keyboard;
pub mod mass_storage;
pub mod serial;

use std::sync::Arc;

use bytes::Bytes;
use usbip_proto::{errno, DeviceRecord, Direction, ExportedDevice, InterfaceRecord};

use super::setup::{descriptor_type, request, Recipient, RequestKind, SetupPacket, ENDPOINT_HALT};
use super::{Completer, Device, DeviceNames, DeviceSession, OpenError, Urb, UrbCompletion};
pub use descriptors::{parse_configuration, ConfigBuilder, Descriptors, DeviceDescriptor};

/// What a control request returns: IN data (truncated to wLength by the caller) or an errno.
pub type ControlResult = Result<Bytes, i32>;

/// A USB function implemented in software.
pub trait Function: Send + Sync + 'static {
    fn descriptors(&self) -> &Descriptors;

    /// Starts one client's session. Sessions never overlap: the registry sees to that.
    fn open(&self, completer: Completer) -> Box<dyn FunctionSession>;
}

/// One client's use of a function.
pub trait FunctionSession: Send {
    /// A class or vendor request, or a standard request to an interface or endpoint that the
    /// framework does not answer itself (e.g. GET_DESCRIPTOR of a HID report descriptor, or a
    /// device-level GET_DESCRIPTOR of a type other than device, configuration and string, such
    /// as the device qualifier or BOS). `data` is the OUT payload.
    fn control(&mut self, setup: &SetupPacket, data: &[u8]) -> ControlResult {
        let _ = (setup, data);
        Err(errno::EPIPE)
    }

    /// The host selected configuration `value` (0: unconfigured).
    fn set_configuration(&mut self, value: u8) {
        let _ = value;
    }

    /// The host selected an alternate setting. The default accepts only alternate setting 0.
    fn set_interface(&mut self, interface: u8, alt: u8) -> Result<(), i32> {
        let _ = interface;
        if alt == 0 {
            Ok(())
        } else {
            Err(errno::EPIPE)
        }
    }

    /// CLEAR_FEATURE(ENDPOINT_HALT) on `endpoint_address`.
    fn clear_halt(&mut self, endpoint_address: u8) {
        let _ = endpoint_address;
    }

    /// Whether `endpoint_address` is halted, for GET_STATUS.
    fn is_halted(&self, endpoint_address: u8) -> bool {
        let _ = endpoint_address;
        false
    }

    /// A URB for a non-zero endpoint. Completes through the completer given to `open`.
    fn submit(&mut self, urb: Urb);

    /// Cancels a pending URB of a non-zero endpoint.
    fn cancel(&mut self, seqnum: u32);
}

/// Where a virtual device sits on the (virtual) bus.
#[derive(Debug, Clone)]
pub struct BusPosition {
    pub busid: String,
    pub busnum: u32,
    pub devnum: u32,
}

impl BusPosition {
    /// Virtual devices live on bus 0, which no host controller uses: busid `0-<port>`.
    pub fn virtual_port(port: u32) -> BusPosition {
        BusPosition {
            busid: format!("0-{port}"),
            busnum: 0,
            devnum: port,
        }
    }
}

/// A [`Function`] made into an exportable [`Device`].
pub struct VirtualDevice<F: Function> {
    function: Arc<F>,
    position: BusPosition,
}

impl<F: Function> VirtualDevice<F> {
    pub fn new(function: F, position: BusPosition) -> VirtualDevice<F> {
        VirtualDevice {
            function: Arc::new(function),
            position,
        }
    }

    pub fn function(&self) -> &Arc<F> {
        &self.function
    }
}

impl<F: Function> Device for VirtualDevice<F> {
    fn describe(&self) -> ExportedDevice {
        let d = self.function.descriptors();
        let dev = &d.device;
        let le16 = |i: usize| u16::from_le_bytes([dev[i], dev[i + 1]]);
        let first = d.configurations.first().map(|c| &c[..]).unwrap_or(&[]);
        let (interfaces, _) = parse_configuration(first);
        let interfaces: Vec<InterfaceRecord> = interfaces
            .iter()
            .filter(|i| i.alt == 0)
            .map(|i| InterfaceRecord {
                class: i.class,
                subclass: i.subclass,
                protocol: i.protocol,
            })
            .collect();
        ExportedDevice {
            record: DeviceRecord {
                path: format!("/sys/devices/virtual/usbipd/{}", self.position.busid),
                busid: self.position.busid.clone(),
                busnum: self.position.busnum,
                devnum: self.position.devnum,
                speed: d.speed,
                id_vendor: le16(8),
                id_product: le16(10),
                bcd_device: le16(12),
                device_class: dev[4],
                device_subclass: dev[5],
                device_protocol: dev[6],
                configuration_value: first.get(5).copied().unwrap_or(0),
                num_configurations: d.configurations.len() as u8,
                num_interfaces: interfaces.len() as u8,
            },
            interfaces,
        }
    }

    fn names(&self) -> DeviceNames {
        let d = self.function.descriptors();
        // iManufacturer, iProduct and iSerialNumber are bytes 14..17 of the device descriptor.
        let string = |at: usize| {
            let index = usize::from(*d.device.get(at)?);
            index.checked_sub(1).and_then(|i| d.strings.get(i)).cloned()
        };
        DeviceNames {
            manufacturer: string(14),
            product: string(15),
            serial: string(16),
        }
    }

    fn open(&self, completer: Completer) -> Result<Box<dyn DeviceSession>, OpenError> {
        let session = self.function.open(completer.clone());
        Ok(Box::new(VirtualSession {
            function: self.function.clone(),
            session,
            completer,
            configuration: 0,
            alt_settings: Vec::new(),
        }))
    }
}

struct VirtualSession<F: Function> {
    function: Arc<F>,
    session: Box<dyn FunctionSession>,
    completer: Completer,
    configuration: u8,
    /// (interface, alt) pairs selected with SET_INTERFACE.
    alt_settings: Vec<(u8, u8)>,
}

impl<F: Function> VirtualSession<F> {
    fn control(&mut self, setup: &SetupPacket, data: &[u8]) -> ControlResult {
        if setup.kind() != RequestKind::Standard {
            return self.session.control(setup, data);
        }
        match (setup.recipient(), setup.request) {
            // Port requests belong to hubs; a function never sees them.
            (Recipient::Other, _) => Err(errno::EPIPE),
            (Recipient::Device, request::GET_DESCRIPTOR) => self.get_descriptor(setup, data),
            (Recipient::Device, request::SET_CONFIGURATION) => {
                let value = (setup.value & 0xff) as u8;
                let known = value == 0
                    || self
                        .function
                        .descriptors()
                        .configurations
                        .iter()
                        .any(|c| c.get(5) == Some(&value));
                if !known {
                    return Err(errno::EPIPE);
                }
                self.configuration = value;
                self.alt_settings.clear();
                self.session.set_configuration(value);
                Ok(Bytes::new())
            }
            (Recipient::Device, request::GET_CONFIGURATION) => {
                Ok(Bytes::copy_from_slice(&[self.configuration]))
            }
            (Recipient::Device, request::SET_ADDRESS) => Ok(Bytes::new()),
            (_, request::GET_STATUS) => {
                let halted = setup.recipient() == Recipient::Endpoint
                    && self.session.is_halted((setup.index & 0xff) as u8);
                Ok(Bytes::copy_from_slice(&[halted as u8, 0]))
            }
            (Recipient::Device, request::SET_FEATURE | request::CLEAR_FEATURE) => Ok(Bytes::new()),
            (Recipient::Interface, request::SET_INTERFACE) => {
                let (interface, alt) = ((setup.index & 0xff) as u8, (setup.value & 0xff) as u8);
                if !self.declares(interface, alt) {
                    return Err(errno::EPIPE);
                }
                self.session.set_interface(interface, alt)?;
                self.alt_settings.retain(|(i, _)| *i != interface);
                self.alt_settings.push((interface, alt));
                Ok(Bytes::new())
            }
            (Recipient::Interface, request::GET_INTERFACE) => {
                let interface = (setup.index & 0xff) as u8;
                let alt = self
                    .alt_settings
                    .iter()
                    .find(|(i, _)| *i == interface)
                    .map_or(0, |(_, a)| *a);
                Ok(Bytes::copy_from_slice(&[alt]))
            }
            (Recipient::Endpoint, request::CLEAR_FEATURE) if setup.value == ENDPOINT_HALT => {
                self.session.clear_halt((setup.index & 0xff) as u8);
                Ok(Bytes::new())
            }
            _ => self.session.control(setup, data),
        }
    }

    /// Whether the active configuration has alternate setting `alt` of interface `interface`
    /// (none has while unconfigured): the function is asked about declared ones only.
    fn declares(&self, interface: u8, alt: u8) -> bool {
        let configurations = &self.function.descriptors().configurations;
        let Some(active) = configurations
            .iter()
            .find(|c| self.configuration != 0 && c.get(5) == Some(&self.configuration))
        else {
            return false;
        };
        let (interfaces, _) = parse_configuration(active);
        interfaces
            .iter()
            .any(|i| i.number == interface && i.alt == alt)
    }

    fn get_descriptor(&mut self, setup: &SetupPacket, data: &[u8]) -> ControlResult {
        let d = self.function.descriptors();
        let index = (setup.value & 0xff) as usize;
        match (setup.value >> 8) as u8 {
            descriptor_type::DEVICE => Ok(d.device.clone()),
            descriptor_type::CONFIGURATION => {
                d.configurations.get(index).cloned().ok_or(errno::EPIPE)
            }
            descriptor_type::STRING if index == 0 => Ok(Bytes::from_static(&[4, 3, 0x09, 0x04])),
            descriptor_type::STRING => d
                .strings
                .get(index - 1)
                .map(|s| Bytes::from(descriptors::string_descriptor(s)))
                .ok_or(errno::EPIPE),
            // Device qualifier, other-speed configurations, BOS and the rest belong to the
            // function; the default answer is a stall, which tells the host there is none.
            _ => self.session.control(setup, data),
        }
    }
}

impl<F: Function> DeviceSession for VirtualSession<F> {
    fn submit(&mut self, urb: Urb) {
        if urb.endpoint != 0 {
            return self.session.submit(urb);
        }
        let setup = SetupPacket::parse(&urb.setup);
        let completion = match self.control(&setup, &urb.data) {
            Ok(mut data) => {
                if urb.direction == Direction::In {
                    let max = usize::from(setup.length).min(urb.transfer_length as usize);
                    data.truncate(max);
                    UrbCompletion::data_in(urb.seqnum, data)
                } else {
                    UrbCompletion::done_out(urb.seqnum, urb.data.len() as u32)
                }
            }
            Err(status) => UrbCompletion::error(urb.seqnum, status),
        };
        self.completer.complete(completion);
    }

    fn cancel(&mut self, seqnum: u32) {
        // Control requests complete at once; only function endpoints can have URBs pending.
        self.session.cancel(seqnum);
    }
}
