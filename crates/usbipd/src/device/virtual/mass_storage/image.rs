//! The backing file of a virtual disk: its size in blocks and positioned, blocking I/O on it.
//!
//! Every I/O method here blocks; the async side must call them from `spawn_blocking`, never
//! from a task. Errors are returned as they come, for the caller to turn into SCSI sense.

use std::fs::{File, OpenOptions};
use std::hash::Hasher;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::scsi::BLOCK_SIZE;

/// An open disk image.
#[derive(Debug)]
pub struct Image {
    file: File,
    blocks: u64,
    read_only: bool,
    serial: String,
}

impl Image {
    /// Opens `path` read-write, or read-only. The capacity is the file size in whole blocks.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> io::Result<Image> {
        let path = path.as_ref();
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        let mut image = Image::from_file(file, read_only)?;
        // Named after the path, the serial number stays the same across restarts, so that
        // udev's /dev/disk/by-id links do too.
        let canonical = path.canonicalize()?;
        image.serial = serial_from(canonical.as_os_str().as_encoded_bytes());
        Ok(image)
    }

    /// Uses an already open file. `read_only` must not claim writability the file lacks (if it
    /// does, writes fail with an I/O error, reported to the host as a write error).
    pub fn from_file(file: File, read_only: bool) -> io::Result<Image> {
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "disk image must be a regular file",
            ));
        }
        let blocks = meta.len() / u64::from(BLOCK_SIZE);
        if blocks == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("disk image is smaller than one {BLOCK_SIZE}-byte block"),
            ));
        }
        let mut id = meta.dev().to_le_bytes().to_vec();
        id.extend_from_slice(&meta.ino().to_le_bytes());
        Ok(Image {
            file,
            blocks,
            read_only,
            serial: serial_from(&id),
        })
    }

    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// 16 upper-case hex digits, stable for a given image.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Reads exactly `len` bytes at `offset`. Blocks.
    pub fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Writes all of `data` at `offset`. Blocks.
    pub fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "image is read-only",
            ));
        }
        self.file.write_all_at(data, offset)
    }

    /// Makes written data durable (fdatasync). Blocks.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// A sparse temporary image of `size` bytes, deleted when the returned file is dropped.
pub fn temporary(size: u64) -> io::Result<tempfile::NamedTempFile> {
    let file = tempfile::Builder::new()
        .prefix("usbipd-disk-")
        .suffix(".img")
        .tempfile()?;
    file.as_file().set_len(size)?;
    Ok(file)
}

/// FNV-1a, enough to spread an identifier over 64 bits; not for security.
fn serial_from(id: &[u8]) -> String {
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.write(id);
    format!("{:016X}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_whole_blocks_and_io_round_trips() {
        let tmp = temporary(4096 + 100).unwrap();
        let image = Image::open(tmp.path(), false).unwrap();
        assert_eq!(image.blocks(), 8);
        assert_eq!(image.serial().len(), 16);
        assert!(image.serial().chars().all(|c| c.is_ascii_hexdigit()));
        image.write(512, b"hello").unwrap();
        image.sync().unwrap();
        assert_eq!(image.read(510, 8).unwrap(), b"\0\0hello\0");
        assert_eq!(
            Image::open(tmp.path(), true).unwrap().serial(),
            image.serial()
        );
    }

    #[test]
    fn refuses_tiny_images_and_reports_short_reads() {
        let tmp = temporary(100).unwrap();
        assert!(Image::open(tmp.path(), false).is_err());
        let tmp = temporary(1024).unwrap();
        let image = Image::open(tmp.path(), true).unwrap();
        assert!(image.write(0, b"x").is_err());
        tmp.as_file().set_len(512).unwrap();
        assert!(image.read(512, 512).is_err(), "reading past a shrunk file");
    }
}
