//! The rows of `usbipd list` for a running daemon: its own devices (virtual ones, and host
//! devices shared in fallback mode), the host devices nobody shares, and, when the extension
//! answers, the devices it has claimed with their state and client.
//!
//! Pure: the daemon's control socket gathers the inputs; nothing here does I/O.

use serde::{Deserialize, Serialize};

use crate::device::registry::Registry;
use crate::extension::link::ExtensionView;
use crate::host_exports::HostListing;
use crate::ipc::ClaimInfo;

/// One row of `usbipd list`, as the control socket answers it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceEntry {
    pub busid: String,
    pub vid: u16,
    pub pid: u16,
    pub speed: String,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub interfaces: Vec<[u8; 3]>,
    /// `not shared`, `shared` or `attached`.
    pub state: String,
    /// `host` or `virtual`.
    #[serde(default)]
    pub kind: String,
    pub client: Option<String>,
}

impl DeviceEntry {
    pub fn unshared_host(info: &crate::device::host::HostDeviceInfo) -> DeviceEntry {
        DeviceEntry {
            busid: info.busid.clone(),
            vid: info.vendor_id,
            pid: info.product_id,
            speed: info.speed.as_mbps().to_string(),
            manufacturer: info.manufacturer.clone(),
            product: info.product.clone(),
            interfaces: info
                .interfaces
                .iter()
                .map(|i| [i.class, i.subclass, i.protocol])
                .collect(),
            state: "not shared".into(),
            kind: "host".into(),
            client: None,
        }
    }
}

/// The daemon's own devices (from its registry) and the host devices nobody bound in fallback
/// mode, sorted by busid.
pub fn own_rows(registry: &Registry, host: &[HostListing]) -> Vec<DeviceEntry> {
    let host_busids: Vec<&str> = host.iter().map(|l| l.info.busid.as_str()).collect();
    let mut rows: Vec<DeviceEntry> = registry
        .states()
        .into_iter()
        .map(|s| {
            let r = &s.device.record;
            DeviceEntry {
                busid: r.busid.clone(),
                vid: r.id_vendor,
                pid: r.id_product,
                speed: r.speed.as_mbps().to_string(),
                manufacturer: s.names.manufacturer.clone(),
                product: s.names.product.clone(),
                interfaces: s
                    .device
                    .interfaces
                    .iter()
                    .map(|i| [i.class, i.subclass, i.protocol])
                    .collect(),
                state: if s.user.is_some() {
                    "attached"
                } else {
                    "shared"
                }
                .into(),
                kind: if host_busids.contains(&r.busid.as_str()) {
                    "host"
                } else {
                    "virtual"
                }
                .into(),
                client: s.user.map(|a| a.to_string()),
            }
        })
        .collect();
    // Host devices that are not shared are listed too, so a user sees what to bind.
    for listing in host {
        if !listing.bound {
            rows.push(DeviceEntry::unshared_host(&listing.info));
        }
    }
    rows.sort_by(|a, b| a.busid.cmp(&b.busid));
    rows
}

/// The state a claim shows in the list, and its client.
fn claim_state(claim: &ClaimInfo) -> (String, Option<String>) {
    match (claim.state.as_str(), &claim.client) {
        (_, Some(client)) => ("attached".into(), Some(client.clone())),
        ("claimed" | "in use", None) => ("shared".into(), None),
        ("absent", None) => ("shared (unplugged; waiting for it to return)".into(), None),
        (other, None) => (format!("shared ({other})"), None),
    }
}

/// Puts the extension's view into `rows`: a claimed device shows as shared (or attached, with
/// its client) instead of "not shared"; a bound device that is unplugged shows as waiting; a
/// host device the extension sees and nobody shares is listed as not shared.
pub fn merge(rows: &mut Vec<DeviceEntry>, view: &ExtensionView) {
    for claim in &view.claims {
        let (state, client) = claim_state(claim);
        let record = view.exported.iter().find(|d| d.record.busid == claim.busid);
        let existing = rows.iter_mut().find(|r| {
            r.kind == "host" && r.busid == claim.busid && (r.vid, r.pid) == (claim.vid, claim.pid)
        });
        match existing {
            Some(row) => {
                row.state = state;
                row.client = client;
            }
            None => rows.push(DeviceEntry {
                busid: claim.busid.clone(),
                vid: claim.vid,
                pid: claim.pid,
                speed: record
                    .map(|d| d.record.speed.as_mbps().to_string())
                    .unwrap_or_else(|| "-".into()),
                manufacturer: None,
                product: None,
                interfaces: record
                    .map(|d| {
                        d.interfaces
                            .iter()
                            .map(|i| [i.class, i.subclass, i.protocol])
                            .collect()
                    })
                    .unwrap_or_default(),
                state,
                kind: "host".into(),
                client,
            }),
        }
    }
    for host in &view.host {
        if !host.bound && !rows.iter().any(|r| r.busid == host.busid) {
            rows.push(DeviceEntry {
                busid: host.busid.clone(),
                vid: host.vid,
                pid: host.pid,
                speed: "-".into(),
                manufacturer: None,
                product: None,
                interfaces: Vec::new(),
                state: "not shared".into(),
                kind: "host".into(),
                client: None,
            });
        }
    }
    rows.sort_by(|a, b| a.busid.cmp(&b.busid));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::BusDeviceReport;
    use usbip_proto::{DeviceRecord, ExportedDevice, Speed};

    fn claim(busid: &str, state: &str, client: Option<&str>) -> ClaimInfo {
        ClaimInfo {
            busid: busid.into(),
            vid: 0x0525,
            pid: 0xa4a0,
            serial: None,
            state: state.into(),
            client: client.map(str::to_string),
            detached_driver: None,
        }
    }

    fn not_shared(busid: &str) -> DeviceEntry {
        DeviceEntry {
            busid: busid.into(),
            vid: 0x0525,
            pid: 0xa4a0,
            speed: "480".into(),
            manufacturer: Some("Acme".into()),
            product: None,
            interfaces: vec![],
            state: "not shared".into(),
            kind: "host".into(),
            client: None,
        }
    }

    fn exported(busid: &str) -> ExportedDevice {
        ExportedDevice {
            record: DeviceRecord {
                path: String::new(),
                busid: busid.into(),
                busnum: 1,
                devnum: 2,
                speed: Speed::Super,
                id_vendor: 0x0525,
                id_product: 0xa4a0,
                bcd_device: 0,
                device_class: 0,
                device_subclass: 0,
                device_protocol: 0,
                configuration_value: 1,
                num_configurations: 1,
                num_interfaces: 0,
            },
            interfaces: vec![],
        }
    }

    fn host(busid: &str, bound: bool) -> BusDeviceReport {
        BusDeviceReport {
            busid: busid.into(),
            vid: 0x0525,
            pid: 0xa4a0,
            serial: None,
            driver: None,
            bound,
        }
    }

    fn states(rows: &[DeviceEntry]) -> Vec<(String, String, Option<String>)> {
        rows.iter()
            .map(|r| (r.busid.clone(), r.state.clone(), r.client.clone()))
            .collect()
    }

    #[test]
    fn a_claimed_device_listed_as_not_shared_becomes_shared_then_attached() {
        let mut rows = vec![not_shared("1-2")];
        let mut view = ExtensionView {
            exported: vec![exported("1-2")],
            claims: vec![claim("1-2", "claimed", None)],
            host: vec![host("1-2", true)],
        };
        merge(&mut rows, &view);
        assert_eq!(states(&rows), vec![("1-2".into(), "shared".into(), None)]);
        assert_eq!(rows[0].manufacturer.as_deref(), Some("Acme"), "row kept");

        let mut rows = vec![not_shared("1-2")];
        view.claims = vec![claim("1-2", "in use", Some("127.0.0.1:4000"))];
        merge(&mut rows, &view);
        assert_eq!(
            states(&rows),
            vec![(
                "1-2".into(),
                "attached".into(),
                Some("127.0.0.1:4000".into())
            )]
        );
    }

    #[test]
    fn claims_and_host_devices_only_the_extension_sees_are_added() {
        let mut rows = Vec::new();
        let view = ExtensionView {
            exported: vec![exported("1-2")],
            claims: vec![claim("1-2", "claimed", None), claim("1-5", "absent", None)],
            host: vec![host("1-2", true), host("1-3", false)],
        };
        merge(&mut rows, &view);
        assert_eq!(
            states(&rows),
            vec![
                ("1-2".into(), "shared".into(), None),
                ("1-3".into(), "not shared".into(), None),
                (
                    "1-5".into(),
                    "shared (unplugged; waiting for it to return)".into(),
                    None
                ),
            ]
        );
        assert_eq!(rows[0].speed, "5000", "from the exported record");
        assert_eq!(rows[2].speed, "-", "an absent device has no record");
    }

    #[test]
    fn without_claims_the_rows_stay_as_they_are() {
        let mut rows = vec![not_shared("1-2")];
        merge(&mut rows, &ExtensionView::default());
        assert_eq!(
            states(&rows),
            vec![("1-2".into(), "not shared".into(), None)]
        );
    }
}
