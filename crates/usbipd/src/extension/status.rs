//! What the extension reports: its claims as the status shows them (the book's state plus who
//! uses each device), the host's devices with which of them are bound, and the exported
//! devices as an OP_REP_DEVLIST for the daemon's device list.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use usbip_proto::OpReply;

use super::claim_book::{Slot, SlotState};
use super::service::Extension;
use crate::ipc::{BusDeviceReport, ClaimInfo, StatusReport};

/// One claim as `usbipd status` shows it; `client` is who uses the device, if anyone.
fn claim_info<H, S>(slot: &Slot<H, S>, client: Option<SocketAddr>) -> ClaimInfo {
    let state = match slot.state {
        SlotState::Claiming => "claiming",
        SlotState::Claimed if client.is_some() => "in use",
        SlotState::Claimed => "claimed",
        SlotState::Absent => "absent",
        SlotState::Releasing => "releasing",
    };
    ClaimInfo {
        busid: slot.record.busid.clone(),
        vid: slot.record.vid,
        pid: slot.record.pid,
        serial: slot.record.serial.clone(),
        state: state.into(),
        client: client.map(|c| c.to_string()),
        detached_driver: slot.record.detached_driver.clone(),
    }
}

impl Extension {
    /// Who uses each exported device, by busid.
    fn users(&self) -> BTreeMap<String, Option<SocketAddr>> {
        self.exports
            .states()
            .into_iter()
            .map(|s| (s.device.record.busid, s.user))
            .collect()
    }

    pub(super) fn info(&self, busid: &str) -> Option<ClaimInfo> {
        let users = self.users();
        let book = self.book();
        let slot = book.get(busid)?;
        Some(claim_info(slot, users.get(busid).copied().flatten()))
    }

    pub fn status(&self) -> StatusReport {
        let users = self.users();
        StatusReport {
            health: self.health.health(),
            claims: self
                .book()
                .slots()
                .map(|s| claim_info(s, users.get(&s.record.busid).copied().flatten()))
                .collect(),
            errors: self.health.errors(),
        }
    }

    pub fn host_devices(&self) -> Vec<BusDeviceReport> {
        let bound = self.book().busids();
        self.bus
            .devices()
            .into_iter()
            .map(|d| BusDeviceReport {
                bound: bound.contains(&d.busid),
                busid: d.busid,
                vid: d.vid,
                pid: d.pid,
                serial: d.serial,
                driver: d.driver,
            })
            .collect()
    }

    /// The exported devices as an encoded OP_REP_DEVLIST.
    pub fn exported(&self) -> Vec<u8> {
        let devices = self
            .exports
            .states()
            .into_iter()
            .map(|s| s.device)
            .collect();
        let mut out = Vec::new();
        OpReply::DevList(devices).encode(&mut out);
        out
    }
}
