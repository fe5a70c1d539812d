//! Shared test fixtures: an in-process server and a scripted test-double device.
#![allow(dead_code)]

pub mod bot;
pub mod extension_rig;
pub mod process;
pub mod raw;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use usbip_proto::{errno, DeviceRecord, ExportedDevice, InterfaceRecord, Speed};
use usbipd::device::registry::Registry;
use usbipd::device::{Completer, Device, DeviceSession, OpenError, Urb, UrbCompletion};
use usbipd::server::{Server, ServerConfig};

/// Starts a server on an ephemeral loopback port with the given devices.
pub async fn start_server(devices: Vec<Arc<dyn Device>>, config: ServerConfig) -> SocketAddr {
    let registry = Registry::new();
    for d in devices {
        registry.add(d);
    }
    start_server_with(registry, config).await
}

/// Starts a server on an ephemeral loopback port with a prepared registry.
pub async fn start_server_with(registry: Arc<Registry>, config: ServerConfig) -> SocketAddr {
    let listeners = Server::bind(&["127.0.0.1:0".parse().unwrap()])
        .await
        .unwrap();
    let addr = listeners[0].local_addr().unwrap();
    let server = Server::new(registry, config);
    tokio::spawn(async move { server.serve(listeners).await });
    addr
}

/// What the scripted device has seen, for assertions.
#[derive(Default)]
pub struct Script {
    /// Parked endpoint-1 IN URBs, oldest first.
    pub parked: VecDeque<(u32, Completer, u32)>,
    pub cancelled: Vec<u32>,
    pub opened: usize,
    pub closed: usize,
}

/// A test double: ep0 answers GET_DESCRIPTOR(device); ep1 IN parks until `release`; ep2 OUT
/// completes at once; ep3 IN completes at once with `length` bytes of `i as u8`; ep4 fails
/// with -EPIPE.
pub struct ScriptedDevice {
    pub busid: String,
    pub script: Arc<Mutex<Script>>,
}

impl ScriptedDevice {
    pub fn new(busid: &str) -> Arc<ScriptedDevice> {
        Arc::new(ScriptedDevice {
            busid: busid.into(),
            script: Arc::default(),
        })
    }

    /// Completes the oldest parked ep1 URB with `data`. Returns its seqnum.
    pub fn release(&self, data: &[u8]) -> Option<u32> {
        let (seqnum, completer, _) = self.script.lock().unwrap().parked.pop_front()?;
        completer.complete(UrbCompletion::data_in(seqnum, Bytes::copy_from_slice(data)));
        Some(seqnum)
    }

    pub fn parked(&self) -> usize {
        self.script.lock().unwrap().parked.len()
    }

    pub fn cancelled(&self) -> Vec<u32> {
        self.script.lock().unwrap().cancelled.clone()
    }
}

pub const DEVICE_DESCRIPTOR: [u8; 18] = [
    18, 1, 0x00, 0x02, 0, 0, 0, 64, 0x09, 0x12, 0x34, 0x12, 0x00, 0x01, 0, 0, 0, 1,
];

impl Device for ScriptedDevice {
    fn describe(&self) -> ExportedDevice {
        ExportedDevice {
            record: DeviceRecord {
                path: format!("/test/{}", self.busid),
                busid: self.busid.clone(),
                busnum: 9,
                devnum: 4,
                speed: Speed::High,
                id_vendor: 0x1209,
                id_product: 0x1234,
                bcd_device: 0x0100,
                device_class: 0,
                device_subclass: 0,
                device_protocol: 0,
                configuration_value: 1,
                num_configurations: 1,
                num_interfaces: 2,
            },
            interfaces: vec![
                InterfaceRecord {
                    class: 3,
                    subclass: 1,
                    protocol: 1,
                },
                InterfaceRecord {
                    class: 0xff,
                    subclass: 0,
                    protocol: 0,
                },
            ],
        }
    }

    fn open(&self, completer: Completer) -> Result<Box<dyn DeviceSession>, OpenError> {
        self.script.lock().unwrap().opened += 1;
        Ok(Box::new(ScriptedSession {
            script: self.script.clone(),
            completer,
        }))
    }
}

struct ScriptedSession {
    script: Arc<Mutex<Script>>,
    completer: Completer,
}

impl DeviceSession for ScriptedSession {
    fn submit(&mut self, urb: Urb) {
        let c = match urb.endpoint {
            0 => UrbCompletion::data_in(
                urb.seqnum,
                Bytes::copy_from_slice(
                    &DEVICE_DESCRIPTOR[..(urb.transfer_length as usize).min(18)],
                ),
            ),
            1 => {
                self.script.lock().unwrap().parked.push_back((
                    urb.seqnum,
                    self.completer.clone(),
                    urb.transfer_length,
                ));
                return;
            }
            2 => UrbCompletion::done_out(urb.seqnum, urb.data.len() as u32),
            3 => UrbCompletion::data_in(
                urb.seqnum,
                (0..urb.transfer_length)
                    .map(|i| i as u8)
                    .collect::<Vec<u8>>()
                    .into(),
            ),
            _ => UrbCompletion::error(urb.seqnum, errno::EPIPE),
        };
        self.completer.complete(c);
    }

    fn cancel(&mut self, seqnum: u32) {
        let mut s = self.script.lock().unwrap();
        if let Some(i) = s.parked.iter().position(|(q, _, _)| *q == seqnum) {
            s.parked.remove(i);
            s.cancelled.push(seqnum);
        }
    }
}

impl Drop for ScriptedSession {
    fn drop(&mut self) {
        let mut s = self.script.lock().unwrap();
        let parked: Vec<u32> = s.parked.drain(..).map(|(q, _, _)| q).collect();
        s.cancelled.extend(parked);
        s.closed += 1;
    }
}

/// Polls `cond` for up to 30 s (a deadline for a slow machine: a passing test waits as long as
/// the server needs, a failing one fails).
pub async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    cond()
}
