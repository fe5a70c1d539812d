//! The unmount-before-capture sequence against a double of macOS that behaves as
//! DiskArbitration and IOKit are documented to: a whole-disk unmount goes volume by volume and
//! stops at the first one a process keeps busy (kDAReturnBusy, the earlier ones stay
//! unmounted); a capture is refused while a volume is mounted; a captured device has no disks;
//! a device released from its capture comes back as a new disk whose volumes are mounted again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::*;
use crate::device::host::errors::ioreturn;
use crate::platform::volumes::{Holder, Volume, DA_BUSY};

#[derive(Default)]
struct World {
    /// busid → its whole disks.
    disks: HashMap<String, Vec<Disk>>,
    /// mount point → processes with files open there.
    holders: HashMap<PathBuf, Vec<Holder>>,
    captured: Vec<String>,
    /// IOKit refuses the capture for another reason.
    capture_fails: bool,
    /// Every call, in order.
    log: Vec<String>,
    next_disk: u32,
}

#[derive(Clone, Default)]
struct Mac(Arc<Mutex<World>>);

impl Mac {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }

    /// Plugs a stick with these volume names, all mounted under /Volumes.
    fn plug_stick(&self, busid: &str, volumes: &[&str]) -> String {
        let mut w = self.world();
        w.next_disk = w.next_disk.max(4);
        let disk = format!("disk{}", w.next_disk);
        w.next_disk += 1;
        let volumes = volumes
            .iter()
            .enumerate()
            .map(|(i, name)| Volume {
                bsd_name: format!("{disk}s{}", i + 1),
                name: Some(name.to_string()),
                mount_point: Some(PathBuf::from(format!("/Volumes/{name}"))),
            })
            .collect();
        w.disks.insert(
            busid.into(),
            vec![Disk {
                bsd_name: disk.clone(),
                volumes,
            }],
        );
        disk
    }

    fn hold(&self, mount_point: &str, pid: i32, name: &str) {
        self.world()
            .holders
            .entry(mount_point.into())
            .or_default()
            .push(Holder {
                pid,
                name: name.into(),
            });
    }

    fn mounted(&self, busid: &str) -> Vec<String> {
        self.world()
            .disks
            .get(busid)
            .into_iter()
            .flatten()
            .flat_map(|d| d.mounted())
            .filter_map(|v| v.name.clone())
            .collect()
    }

    fn log(&self) -> Vec<String> {
        self.world().log.clone()
    }

    fn find<'a>(w: &'a mut World, disk: &str) -> Option<(&'a String, &'a mut Disk)> {
        w.disks
            .iter_mut()
            .flat_map(|(busid, disks)| disks.iter_mut().map(move |d| (busid, d)))
            .find(|(_, d)| d.bsd_name == disk)
    }
}

fn not_found() -> Dissent {
    Dissent {
        status: 0xF8DA_0007_u32 as i32, // kDAReturnNotFound
        message: None,
    }
}

impl VolumeUnmounter for Mac {
    fn disks(&self, busid: &str) -> std::io::Result<Vec<Disk>> {
        let mut w = self.world();
        w.log.push(format!("disks {busid}"));
        Ok(w.disks.get(busid).cloned().unwrap_or_default())
    }

    fn unmount_whole(&self, disk: &str) -> Result<(), Dissent> {
        let mut w = self.world();
        w.log.push(format!("unmount {disk} whole"));
        let holders = w.holders.clone();
        let (_, d) = Mac::find(&mut w, disk).ok_or_else(not_found)?;
        for v in d.volumes.iter_mut() {
            let Some(at) = &v.mount_point else { continue };
            if holders.get(at).is_some_and(|h| !h.is_empty()) {
                return Err(Dissent {
                    status: DA_BUSY,
                    message: None,
                });
            }
            v.mount_point = None;
        }
        Ok(())
    }

    fn mount_whole(&self, disk: &str) -> Result<(), Dissent> {
        let mut w = self.world();
        w.log.push(format!("mount {disk} whole"));
        let (_, d) = Mac::find(&mut w, disk).ok_or_else(not_found)?;
        for v in d.volumes.iter_mut() {
            v.mount_point = v
                .name
                .as_ref()
                .map(|n| PathBuf::from(format!("/Volumes/{n}")));
        }
        Ok(())
    }

    fn holders(&self, mount_point: &Path) -> Vec<Holder> {
        self.world()
            .holders
            .get(mount_point)
            .cloned()
            .unwrap_or_default()
    }
}

impl Capturer for Mac {
    fn capture(&self, busid: &str) -> Result<(), HostError> {
        let mut w = self.world();
        w.log.push(format!("capture {busid}"));
        let mounted = w
            .disks
            .get(busid)
            .is_some_and(|ds| ds.iter().any(|d| d.mounted().next().is_some()));
        if mounted || w.capture_fails {
            return Err(HostError {
                kind: HostErrorKind::Busy,
                message: "USBDeviceReEnumerate failed".into(),
                os_code: Some(ioreturn::EXCLUSIVE_ACCESS),
            });
        }
        // Re-enumerated with no driver: the storage driver and its disks are gone.
        w.disks.remove(busid);
        w.captured.push(busid.into());
        Ok(())
    }

    fn give_back(&self, busid: &str) -> Result<(), HostError> {
        self.world().log.push(format!("give back {busid}"));
        let was = {
            let mut w = self.world();
            let was = w.captured.iter().position(|b| b == busid);
            was.map(|i| w.captured.remove(i))
        };
        if was.is_some() {
            // The storage driver matches again: a new disk, mounted by disk arbitration.
            self.plug_stick(busid, &["USBSTICK"]);
        }
        Ok(())
    }

    fn reset(&self, busid: &str) -> Result<(), HostError> {
        self.world().log.push(format!("reset {busid}"));
        Ok(())
    }
}

fn capturer(mac: &Mac) -> UnmountingCapturer {
    UnmountingCapturer::new(Arc::new(mac.clone()), Arc::new(mac.clone()))
}

#[test]
fn a_mounted_stick_is_unmounted_whole_then_captured() {
    let mac = Mac::default();
    let disk = mac.plug_stick("20-1", &["USBSTICK"]);
    // Without the unmount, IOKit refuses: the double is faithful to that.
    assert!(mac.capture("20-1").is_err());
    mac.world().log.clear();
    capturer(&mac).capture("20-1").unwrap();
    assert_eq!(
        mac.log(),
        [
            "disks 20-1",
            format!("unmount {disk} whole").as_str(),
            "capture 20-1"
        ]
    );
    assert_eq!(mac.world().captured, ["20-1"]);
}

#[test]
fn a_busy_volume_is_named_with_its_holders_and_the_others_are_mounted_again() {
    let mac = Mac::default();
    let disk = mac.plug_stick("20-1", &["PHOTOS", "USBSTICK"]);
    mac.hold("/Volumes/USBSTICK", 412, "Finder");
    mac.hold("/Volumes/USBSTICK", 977, "Preview");
    let e = capturer(&mac).capture("20-1").unwrap_err();
    assert_eq!(e.kind, HostErrorKind::Busy);
    assert_eq!(
        e.message,
        format!(
            "volume \"USBSTICK\" ({disk}s2 at /Volumes/USBSTICK) is in use by Finder (pid 412), \
             Preview (pid 977): macOS refused to unmount {disk} (kDAReturnBusy); close the files \
             or eject the disk in Finder, then bind again"
        )
    );
    // PHOTOS went before USBSTICK dissented: it is back, and nothing was captured.
    assert_eq!(mac.mounted("20-1"), ["PHOTOS", "USBSTICK"]);
    assert_eq!(
        mac.log(),
        [
            "disks 20-1".to_string(),
            format!("unmount {disk} whole"),
            format!("mount {disk} whole"),
        ]
    );
    assert!(mac.world().captured.is_empty());
}

#[test]
fn a_dissent_with_no_process_names_the_volumes_and_the_status_string() {
    struct Refuses(Mac);
    impl VolumeUnmounter for Refuses {
        fn disks(&self, busid: &str) -> std::io::Result<Vec<Disk>> {
            self.0.disks(busid)
        }
        fn unmount_whole(&self, _: &str) -> Result<(), Dissent> {
            Err(Dissent {
                status: crate::platform::volumes::DA_NOT_PERMITTED,
                message: Some("Unmount refused by the administrator".into()),
            })
        }
        fn mount_whole(&self, disk: &str) -> Result<(), Dissent> {
            self.0.mount_whole(disk)
        }
        fn holders(&self, p: &Path) -> Vec<Holder> {
            self.0.holders(p)
        }
    }
    let mac = Mac::default();
    let disk = mac.plug_stick("20-1", &["USBSTICK"]);
    let c = UnmountingCapturer::new(Arc::new(mac.clone()), Arc::new(Refuses(mac.clone())));
    let e = c.capture("20-1").unwrap_err();
    assert!(
        e.message.starts_with(&format!(
            "volume \"USBSTICK\" ({disk}s1 at /Volumes/USBSTICK) could not be unmounted: macOS \
             refused to unmount {disk} (kDAReturnNotPermitted: Unmount refused by the administrator)"
        )),
        "{}",
        e.message
    );
}

#[test]
fn a_capture_that_fails_after_the_unmount_mounts_the_volumes_again() {
    let mac = Mac::default();
    let disk = mac.plug_stick("20-1", &["USBSTICK"]);
    mac.world().capture_fails = true;
    let e = capturer(&mac).capture("20-1").unwrap_err();
    assert_eq!(e.os_code, Some(ioreturn::EXCLUSIVE_ACCESS));
    assert_eq!(mac.mounted("20-1"), ["USBSTICK"]);
    assert_eq!(
        mac.log().last().cloned(),
        Some(format!("mount {disk} whole"))
    );
}

#[test]
fn giving_the_device_back_lets_macos_mount_it_again() {
    let mac = Mac::default();
    mac.plug_stick("20-1", &["USBSTICK"]);
    let c = capturer(&mac);
    c.capture("20-1").unwrap();
    assert!(mac.mounted("20-1").is_empty());
    c.give_back("20-1").unwrap();
    assert_eq!(mac.mounted("20-1"), ["USBSTICK"]);
    // A new disk (disk5), mounted by disk arbitration itself: no mount call of ours.
    assert!(!mac.log().iter().any(|l| l.starts_with("mount")));
}

#[test]
fn a_device_without_volumes_is_captured_without_unmounting() {
    let mac = Mac::default();
    capturer(&mac).capture("20-3").unwrap();
    capturer(&mac).reset("20-3").unwrap();
    assert_eq!(mac.log(), ["disks 20-3", "capture 20-3", "reset 20-3"]);
}
