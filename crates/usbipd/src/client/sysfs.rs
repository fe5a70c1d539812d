//! The thin I/O layer over vhci-hcd's sysfs directory: find it (loading the module when it is
//! missing), read every controller's `status`, write `attach` and `detach`. What the files
//! mean is in `status.rs`.

use std::io;
use std::path::{Path, PathBuf};

use super::status::{parse_status, Port};

const PLATFORM: &str = "/sys/devices/platform";

/// The first vhci controller (`vhci_hcd.0`), which carries `attach`, `detach` and the `status`
/// files of all controllers.
#[derive(Debug, Clone)]
pub struct Vhci {
    dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum VhciError {
    #[error(
        "vhci-hcd is not loaded and `modprobe vhci-hcd` failed ({0}); this kernel needs \
         CONFIG_USBIP_VHCI_HCD (Debian/Ubuntu: the linux-modules-extra or linux-image package; \
         in a container: load the module on the host, or run privileged with /lib/modules)"
    )]
    CannotLoad(String),
    #[error("the client side needs Linux's vhci-hcd; run it in the Linux VM or container")]
    NotLinux,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Status(#[from] super::status::StatusError),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> VhciError + '_ {
    move |source| VhciError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Vhci {
    /// Finds vhci-hcd's sysfs directory, loading the module with `modprobe` if it is missing.
    pub fn open() -> Result<Vhci, VhciError> {
        if crate::platform::OS != crate::platform::Os::Linux {
            return Err(VhciError::NotLinux);
        }
        if let Some(vhci) = Vhci::find(Path::new(PLATFORM)) {
            return Ok(vhci);
        }
        let why = match std::process::Command::new("modprobe")
            .arg("vhci-hcd")
            .output()
        {
            Ok(out) if out.status.success() => String::new(),
            Ok(out) => format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => format!("cannot run modprobe: {e}"),
        };
        // The platform device appears when the module's init has returned.
        Vhci::find(Path::new(PLATFORM)).ok_or_else(|| {
            VhciError::CannotLoad(if why.is_empty() {
                format!("it succeeded, but no {PLATFORM}/vhci_hcd.* appeared")
            } else {
                why
            })
        })
    }

    /// The `vhci_hcd.*` directory under `platform` that has an `attach` file.
    fn find(platform: &Path) -> Option<Vhci> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(platform)
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("vhci_hcd."))
            .map(|e| e.path())
            .filter(|d| d.join("attach").exists())
            .collect();
        dirs.sort();
        dirs.into_iter().next().map(|dir| Vhci { dir })
    }

    /// Every port of every controller: `status`, then `status.1`, `status.2`, ...
    pub fn ports(&self) -> Result<Vec<Port>, VhciError> {
        let mut ports = Vec::new();
        for n in 0.. {
            let path = match n {
                0 => self.dir.join("status"),
                n => self.dir.join(format!("status.{n}")),
            };
            match std::fs::read_to_string(&path) {
                Ok(text) => ports.extend(parse_status(&text)?),
                Err(e) if n > 0 && e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(io_error(&path)(e)),
            }
        }
        Ok(ports)
    }

    /// Writes one line to `attach`.
    pub fn write_attach(&self, line: &str) -> Result<(), VhciError> {
        let path = self.dir.join("attach");
        std::fs::write(&path, line).map_err(io_error(&path))
    }

    /// Writes one line to `detach`.
    pub fn write_detach(&self, line: &str) -> Result<(), VhciError> {
        let path = self.dir.join("detach");
        std::fs::write(&path, line).map_err(io_error(&path))
    }
}
