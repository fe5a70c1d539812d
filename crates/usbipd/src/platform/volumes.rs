//! The volumes of a USB mass-storage device, as the OS's disk arbitration sees them, behind
//! [`VolumeUnmounter`]: which whole disks a device carries and which of their volumes are
//! mounted, unmount and mount a whole disk, and who keeps a volume busy. macOS implements it
//! with DiskArbitration (`platform::macos::disk_arbitration`); the sequence that uses it before
//! a capture is `device::host::unmount`, tested on Linux against a double.
//!
//! Platform-neutral: plain data, the trait, and the names of DiskArbitration's return codes.

use std::path::{Path, PathBuf};

/// One volume (a partition's file system), mounted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// `disk4s1`.
    pub bsd_name: String,
    /// The volume's name (`USBSTICK`), if it has one.
    pub name: Option<String>,
    /// Where it is mounted; `None` when it is not.
    pub mount_point: Option<PathBuf>,
}

/// A whole disk (one medium of the device) and its volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `disk4`.
    pub bsd_name: String,
    pub volumes: Vec<Volume>,
}

impl Disk {
    pub fn mounted(&self) -> impl Iterator<Item = &Volume> {
        self.volumes.iter().filter(|v| v.mount_point.is_some())
    }
}

/// A process with files open on a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    pub name: String,
}

/// Why disk arbitration refused (a `DADissenter`: its status and status string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dissent {
    /// A `DAReturn` (DADissenter.h), or the code of the call that failed before asking.
    pub status: i32,
    pub message: Option<String>,
}

impl std::fmt::Display for Dissent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", da_return_name(self.status))?;
        match &self.message {
            Some(m) => write!(f, ": {m}"),
            None => Ok(()),
        }
    }
}

/// The OS's disk arbitration, for the volumes of USB devices.
pub trait VolumeUnmounter: Send + Sync + 'static {
    /// The whole disks on the USB device with this busid (none for a device that is not mass
    /// storage), with their volumes.
    fn disks(&self, busid: &str) -> std::io::Result<Vec<Disk>>;
    /// Unmounts every volume of the whole disk (DADiskUnmount with kDADiskUnmountOptionWhole);
    /// returns once disk arbitration answered. Volumes may be unmounted before one dissents.
    fn unmount_whole(&self, disk: &str) -> Result<(), Dissent>;
    /// Mounts the whole disk's volumes again where they belong (DADiskMount with
    /// kDADiskMountOptionWhole).
    fn mount_whole(&self, disk: &str) -> Result<(), Dissent>;
    /// The processes with files open on the volume mounted at `mount_point`.
    fn holders(&self, mount_point: &Path) -> Vec<Holder>;
}

/// `kDAReturnSuccess` (DADissenter.h).
pub const DA_SUCCESS: i32 = 0;
/// `kDAReturnBusy`: a process has files open on the volume.
pub const DA_BUSY: i32 = 0xF8DA_0002_u32 as i32;
/// `kDAReturnNotPermitted`: an approval callback refused.
pub const DA_NOT_PERMITTED: i32 = 0xF8DA_0008_u32 as i32;
/// `kDAReturnNotPrivileged`.
pub const DA_NOT_PRIVILEGED: i32 = 0xF8DA_0009_u32 as i32;

/// The `kDAReturn*` name of a DiskArbitration status (DADissenter.h), or the number.
pub fn da_return_name(status: i32) -> String {
    const NAMES: [&str; 12] = [
        "kDAReturnError",
        "kDAReturnBusy",
        "kDAReturnBadArgument",
        "kDAReturnExclusiveAccess",
        "kDAReturnNoResources",
        "kDAReturnNotFound",
        "kDAReturnNotMounted",
        "kDAReturnNotPermitted",
        "kDAReturnNotPrivileged",
        "kDAReturnNotReady",
        "kDAReturnNotWritable",
        "kDAReturnUnsupported",
    ];
    let base = 0xF8DA_0001_u32 as i32;
    match status {
        DA_SUCCESS => "kDAReturnSuccess".to_string(),
        s if (base..base + 12).contains(&s) => NAMES[(s - base) as usize].to_string(),
        s => format!("DiskArbitration status {:#010x}", s as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dissenter_statuses_have_their_header_names() {
        assert_eq!(da_return_name(DA_BUSY), "kDAReturnBusy");
        assert_eq!(da_return_name(-119930879), "kDAReturnError");
        assert_eq!(da_return_name(-119930868), "kDAReturnUnsupported");
        assert_eq!(da_return_name(DA_NOT_PRIVILEGED), "kDAReturnNotPrivileged");
        assert_eq!(da_return_name(0), "kDAReturnSuccess");
        assert_eq!(da_return_name(-1), "DiskArbitration status 0xffffffff");
        let d = Dissent {
            status: DA_BUSY,
            message: Some("Resource busy".into()),
        };
        assert_eq!(d.to_string(), "kDAReturnBusy: Resource busy");
    }
}
