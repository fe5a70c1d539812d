//! A USB mass-storage device (Bulk-Only Transport, SCSI transparent command set) backed by a
//! disk image file, for Linux's usb-storage and sd drivers to use like a USB stick.
//!
//! `bot` frames commands, `scsi` answers them, `image` does the file I/O.

#![allow(dead_code)] // wired into a Function in the next commit

mod bot;
mod image;
mod scsi;

/// High-speed bulk max packet size.
const MAX_PACKET: usize = 512;
