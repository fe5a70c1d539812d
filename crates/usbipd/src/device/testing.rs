//! A small driver for exercising a [`Device`] in tests the way a host would, without a server.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedReceiver;
use usbip_proto::{transfer_flags, Direction};

use super::{Completer, Device, DeviceSession, OpenError, SetupPacket, Urb, UrbCompletion};

pub struct TestHost {
    pub session: Box<dyn DeviceSession>,
    pub completions: UnboundedReceiver<UrbCompletion>,
    next_seqnum: u32,
}

impl TestHost {
    pub fn open(device: &dyn Device) -> Result<TestHost, OpenError> {
        let (completer, completions) = Completer::channel();
        Ok(TestHost {
            session: device.open(completer)?,
            completions,
            next_seqnum: 1,
        })
    }

    pub fn seqnum(&mut self) -> u32 {
        let s = self.next_seqnum;
        self.next_seqnum += 1;
        s
    }

    /// Builds a URB with a fresh seqnum.
    pub fn urb(&mut self, endpoint_address: u8, length: u32, data: &[u8]) -> Urb {
        let direction = if endpoint_address & 0x80 != 0 {
            Direction::In
        } else {
            Direction::Out
        };
        Urb {
            seqnum: self.seqnum(),
            endpoint: endpoint_address & 0x0f,
            direction,
            transfer_flags: if direction == Direction::In {
                transfer_flags::URB_DIR_IN
            } else {
                0
            },
            transfer_length: if direction == Direction::Out {
                data.len() as u32
            } else {
                length
            },
            setup: [0; 8],
            data: Bytes::copy_from_slice(data),
            interval: 0,
            start_frame: 0,
            iso: Vec::new(),
        }
    }

    /// Submits a URB and returns its seqnum.
    pub fn submit(&mut self, urb: Urb) -> u32 {
        let seqnum = urb.seqnum;
        self.session.submit(urb);
        seqnum
    }

    /// Waits up to 5 s for the next completion.
    pub async fn next(&mut self) -> Option<UrbCompletion> {
        tokio::time::timeout(Duration::from_secs(5), self.completions.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits briefly and says whether any completion arrived (for "stays pending" checks).
    pub async fn idle_for(&mut self, ms: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(ms), self.completions.recv())
            .await
            .is_err()
    }

    /// A control transfer on endpoint 0; waits for its completion.
    pub async fn control(&mut self, setup: SetupPacket, data: &[u8]) -> Option<UrbCompletion> {
        let direction = if setup.is_in() {
            Direction::In
        } else {
            Direction::Out
        };
        let mut urb = self.urb(0, u32::from(setup.length), data);
        urb.direction = direction;
        urb.transfer_length = if setup.is_in() {
            u32::from(setup.length)
        } else {
            data.len() as u32
        };
        urb.setup = setup.to_bytes();
        let seqnum = self.submit(urb);
        self.next_for(seqnum).await
    }

    /// Waits up to 5 s for the completion of `seqnum`, dropping completions of other URBs.
    pub async fn next_for(&mut self, seqnum: u32) -> Option<UrbCompletion> {
        loop {
            let c = self.next().await?;
            if c.seqnum == seqnum {
                return Some(c);
            }
        }
    }

    /// Standard GET_DESCRIPTOR to the device.
    pub async fn get_descriptor(
        &mut self,
        kind: u8,
        index: u8,
        length: u16,
    ) -> Option<UrbCompletion> {
        self.control(
            SetupPacket {
                request_type: 0x80,
                request: 0x06,
                value: (u16::from(kind) << 8) | u16::from(index),
                index: 0,
                length,
            },
            &[],
        )
        .await
    }

    /// Standard SET_CONFIGURATION.
    pub async fn set_configuration(&mut self, value: u8) -> Option<UrbCompletion> {
        self.control(
            SetupPacket {
                request_type: 0x00,
                request: 0x09,
                value: u16::from(value),
                index: 0,
                length: 0,
            },
            &[],
        )
        .await
    }
}
