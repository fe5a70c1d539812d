//! The bench's own gadget-zero style source/sink device (0525:a4a0, configuration 3): bulk IN
//! 0x81 completes at once with zeros, bulk OUT 0x01 completes at once and drops the data.
//!
//! It exists so the engine can be measured without any device cost; it must never copy or
//! allocate per URB (IN data is a slice of one shared zero buffer).

use bytes::Bytes;
use usbip_proto::{errno, Direction, Speed};
use usbipd::device::r#virtual::descriptors::transfer_type;
use usbipd::device::r#virtual::{
    BusPosition, ConfigBuilder, Descriptors, DeviceDescriptor, Function, FunctionSession,
    VirtualDevice,
};
use usbipd::device::{Completer, Urb, UrbCompletion};

/// The configuration value gadget zero gives its source/sink configuration.
pub const SOURCE_SINK_CONFIG: u8 = 3;
pub const BULK_IN: u8 = 1;
pub const BULK_OUT: u8 = 1;
/// IN data for every device: in .bss, so it costs no memory, and `Bytes::from_static` clones
/// it without even a reference count. Longer requests complete short.
static ZEROS: [u8; 4 << 20] = [0; 4 << 20];

pub struct SourceSink {
    descriptors: Descriptors,
    zeros: Bytes,
}

pub fn new(position: BusPosition) -> VirtualDevice<SourceSink> {
    let device = DeviceDescriptor {
        usb_version: 0x0200,
        class: 0xff,
        subclass: 0,
        protocol: 0,
        max_packet_size0: 64,
        vendor: 0x0525,
        product: 0xa4a0,
        device_version: 0x0100,
        manufacturer_string: 1,
        product_string: 2,
        serial_string: 0,
        num_configurations: 1,
    };
    let config = ConfigBuilder::new(SOURCE_SINK_CONFIG, 0, 0xc0, 2)
        .interface(0, 0, (0xff, 0, 0), 2, 0)
        .endpoint(0x80 | BULK_IN, transfer_type::BULK, 512, 0)
        .endpoint(BULK_OUT, transfer_type::BULK, 512, 0)
        .build();
    let function = SourceSink {
        descriptors: Descriptors {
            speed: Speed::High,
            device: device.to_bytes(),
            configurations: vec![config],
            strings: vec!["usbipd-bench".into(), "Gadget Zero (bench)".into()],
        },
        zeros: Bytes::from_static(&ZEROS),
    };
    VirtualDevice::new(function, position)
}

impl Function for SourceSink {
    fn descriptors(&self) -> &Descriptors {
        &self.descriptors
    }

    fn open(&self, completer: Completer) -> Box<dyn FunctionSession> {
        Box::new(Session {
            completer,
            zeros: self.zeros.clone(),
        })
    }
}

struct Session {
    completer: Completer,
    zeros: Bytes,
}

impl FunctionSession for Session {
    fn submit(&mut self, urb: Urb) {
        let done = match (urb.endpoint, urb.direction) {
            (BULK_IN, Direction::In) => {
                let n = (urb.transfer_length as usize).min(self.zeros.len());
                UrbCompletion::data_in(urb.seqnum, self.zeros.slice(..n))
            }
            (BULK_OUT, Direction::Out) => {
                UrbCompletion::done_out(urb.seqnum, urb.data.len() as u32)
            }
            _ => UrbCompletion::error(urb.seqnum, errno::EPIPE),
        };
        self.completer.complete(done);
    }

    fn cancel(&mut self, _seqnum: u32) {
        // Everything completes in submit(): nothing is ever pending.
    }
}
