//! The backing file of a virtual disk: its size in blocks and positioned, blocking I/O on it.
//!
//! Every I/O method here blocks; the async side must call them from `spawn_blocking`, never
//! from a task. Errors are returned as they come, for the caller to turn into SCSI sense.
//!
//! An open image holds an exclusive `flock` on its file, so that no second virtual disk (in
//! this process or another) serves the same file, and remembers whether it was written since
//! its last sync: [`Image::flush`] (a client detached, the server stops) and dropping the image
//! make such writes durable.

use std::fs::{File, OpenOptions};
use std::hash::Hasher;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::scsi::BLOCK_SIZE;

/// An open disk image.
#[derive(Debug)]
pub struct Image {
    file: Flock<File>,
    blocks: u64,
    read_only: bool,
    serial: String,
    /// The path it was opened from, or a description of the file, for messages.
    name: String,
    /// Written since the last successful sync.
    dirty: AtomicBool,
    /// Successful syncs, for tests to see when the image was flushed.
    syncs: AtomicU64,
}

impl Image {
    /// Opens `path` read-write, or read-only. The capacity is the file size in whole blocks.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> io::Result<Image> {
        let path = path.as_ref();
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        let mut image = Image::from_file(file, read_only).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(
                    e.kind(),
                    format!(
                        "disk image {} is in use by another virtual disk (in this or another \
                         process); one file can back one disk only",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })?;
        image.name = path.display().to_string();
        // Named after the path, the serial number stays the same across restarts, so that
        // udev's /dev/disk/by-id links do too.
        let canonical = path.canonicalize()?;
        image.serial = serial_from(canonical.as_os_str().as_encoded_bytes());
        Ok(image)
    }

    /// Uses an already open file. `read_only` must not claim writability the file lacks (if it
    /// does, writes fail with an I/O error, reported to the host as a write error). Fails with
    /// `WouldBlock` when another open image holds the file's lock.
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
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => file,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "disk image is in use by another virtual disk (in this or another process)",
                ))
            }
            Err((_, e)) => return Err(io::Error::from(e)),
        };
        let mut id = meta.dev().to_le_bytes().to_vec();
        id.extend_from_slice(&meta.ino().to_le_bytes());
        Ok(Image {
            file,
            blocks,
            read_only,
            serial: serial_from(&id),
            name: format!("(open file, inode {})", meta.ino()),
            dirty: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
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
        // Dirty before the write: a sync running meanwhile cannot clear it for this one.
        self.dirty.store(true, Ordering::SeqCst);
        self.file.write_all_at(data, offset)
    }

    /// Makes written data durable (fdatasync). Blocks.
    pub fn sync(&self) -> io::Result<()> {
        // Cleared before the sync: a write that lands meanwhile sets it again.
        let was_dirty = self.dirty.swap(false, Ordering::SeqCst);
        if let Err(e) = self.file.sync_data() {
            self.dirty.fetch_or(was_dirty, Ordering::SeqCst);
            return Err(e);
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Syncs if anything was written since the last sync; says whether it did. Blocks.
    pub fn flush(&self) -> io::Result<bool> {
        if !self.dirty.load(Ordering::SeqCst) {
            return Ok(false);
        }
        self.sync().map(|()| true)
    }

    /// The path the image was opened from (or a description of its file), for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many syncs succeeded.
    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

impl Drop for Image {
    /// The last holder lets go (the device is gone, the server exits): no write stays unsynced.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(image = %self.name, error = %e, "disk image not flushed");
        }
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
        assert!(image.flush().unwrap(), "a write leaves the image to flush");
        assert!(!image.flush().unwrap(), "nothing left after a flush");
        assert_eq!(image.syncs(), 1);
        assert_eq!(image.read(510, 8).unwrap(), b"\0\0hello\0");
        let serial = image.serial().to_string();
        drop(image);
        assert_eq!(Image::open(tmp.path(), true).unwrap().serial(), serial);
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
