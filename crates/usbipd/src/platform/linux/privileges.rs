//! Linux: what the extension needs from the system to claim devices through usbfs, checked at
//! start-up and reported item by item.
//!
//! The rule (drivers/usb/core/devio.c): the ioctls that claim an interface or detach its kernel
//! driver (USBDEVFS_CLAIMINTERFACE, USBDEVFS_DISCONNECT_CLAIM, USBDEVFS_IOCTL/DISCONNECT) need
//! the device node open for writing, and no dropped usbfs privileges; no capability beyond the
//! file access itself. So: a usbfs tree, and write access to its nodes (root, CAP_DAC_OVERRIDE,
//! or a udev rule). It only reads; it never opens a device.

use std::path::Path;

use nix::unistd::{access, AccessFlags};

/// CAP_DAC_OVERRIDE: lets root-like processes open nodes whatever their mode.
const CAP_DAC_OVERRIDE: u32 = 1;

/// What is missing to claim devices under `usbfs` (normally /dev/bus/usb); empty if nothing.
pub fn missing_privileges(usbfs: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let dac_override = effective_caps(&status).is_some_and(|c| c & (1 << CAP_DAC_OVERRIDE) != 0);
    check_usbfs(usbfs, dac_override, &mut missing);
    missing
}

fn check_usbfs(usbfs: &Path, dac_override: bool, missing: &mut Vec<String>) {
    let Ok(buses) = std::fs::read_dir(usbfs) else {
        missing.push(format!(
            "no usbfs at {}: the kernel has no USB support loaded, or /dev is not populated",
            usbfs.display()
        ));
        return;
    };
    let mut nodes = 0;
    let mut denied = Vec::new();
    for bus in buses.flatten() {
        let Ok(devs) = std::fs::read_dir(bus.path()) else {
            continue;
        };
        for dev in devs.flatten() {
            nodes += 1;
            if !dac_override && access(&dev.path(), AccessFlags::R_OK | AccessFlags::W_OK).is_err()
            {
                denied.push(dev.path());
            }
        }
    }
    if let Some(first) = denied.first() {
        missing.push(format!(
            "no write access to {} of {nodes} usbfs nodes (e.g. {}): claiming and detaching kernel drivers needs the node open for writing; run the extension as root or grant access with a udev rule",
            denied.len(),
            first.display()
        ));
    }
}

/// The CapEff mask from the text of /proc/self/status.
pub fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn reads_the_effective_capability_mask() {
        let status = "Name:\tusbipd\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("Name: x\n"), None);
    }

    #[test]
    fn reports_a_missing_usbfs_and_unwritable_nodes_precisely() {
        let dir = tempfile::tempdir().unwrap();
        let mut missing = Vec::new();
        check_usbfs(&dir.path().join("nope"), false, &mut missing);
        assert_eq!(missing.len(), 1);
        assert!(missing[0].starts_with("no usbfs at"), "{missing:?}");

        let bus = dir.path().join("001");
        std::fs::create_dir(&bus).unwrap();
        let node = bus.join("002");
        std::fs::write(&node, b"").unwrap();
        missing.clear();
        check_usbfs(dir.path(), false, &mut missing);
        assert!(missing.is_empty(), "{missing:?}");

        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o444)).unwrap();
        check_usbfs(dir.path(), false, &mut missing);
        if nix::unistd::geteuid().is_root() {
            return; // root may write anything: nothing to report, rightly
        }
        assert_eq!(missing.len(), 1);
        assert!(
            missing[0].contains("no write access to 1 of 1"),
            "{missing:?}"
        );
        assert!(missing[0].contains("001/002"), "{missing:?}");
        missing.clear();
        check_usbfs(dir.path(), true, &mut missing);
        assert!(missing.is_empty());
    }
}
