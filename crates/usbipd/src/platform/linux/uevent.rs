//! Linux: the kernel's own device events (uevents) on a NETLINK_KOBJECT_UEVENT socket, multicast
//! group 1, which the kernel sends whether or not udevd runs (containers, mdev systems). udevd
//! re-broadcasts what it processed on group 2, which is what nusb's watcher hears; without udevd
//! group 2 is silent.
//!
//! [`parse`] is pure (a message's `KEY=value` lines to a USB device event); [`KernelUevents`]
//! owns the socket and only accepts messages from the kernel (port id 0). Nothing here looks at a
//! device.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The kernel's multicast group (udevd's is 2).
const KERNEL_GROUP: u32 = 1;
/// A uevent is at most 2048 bytes of environment plus its header; room to spare.
const MAX_MESSAGE: usize = 8192;
/// Bursts (a hub with many devices) must not overflow the socket's queue.
const RECEIVE_BUFFER: usize = 1 << 20;

/// What happened to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UeventAction {
    Add,
    Remove,
    /// A driver bound to the device (for a USB device: it is configured, its interfaces exist).
    Bind,
    Unbind,
    /// `change`, `move`, `online`, `offline`.
    Other,
}

/// A uevent of a USB device (not of an interface or a USB endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDeviceUevent {
    pub action: UeventAction,
    pub busnum: u8,
    pub devnum: u8,
    /// e.g. `/devices/pci0000:00/0000:00:04.0/usb1/1-1`.
    pub devpath: String,
}

impl UsbDeviceUevent {
    /// The busid (`1-1`, `1-2.3`): the last component of the device path. `None` for a root hub
    /// (`usb1`), which no one shares.
    pub fn busid(&self) -> Option<&str> {
        let last = self.devpath.rsplit('/').next()?;
        let (bus, ports) = last.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        (digits(bus) && digits(ports)).then_some(last)
    }
}

/// A kernel uevent message (`ACTION@DEVPATH`, then NUL-separated `KEY=value` lines) to the
/// event of a USB device; `None` for anything else (another subsystem, an interface, udevd's
/// re-broadcast, a malformed message).
pub fn parse(message: &[u8]) -> Option<UsbDeviceUevent> {
    // udevd's messages start with "libudev\0"; the kernel's with "ACTION@DEVPATH\0".
    let mut lines = message.split(|b| *b == 0);
    let header = std::str::from_utf8(lines.next()?).ok()?;
    if !header.contains('@') {
        return None;
    }
    let (mut action, mut subsystem, mut devtype) = (None, None, None);
    let (mut busnum, mut devnum, mut devpath) = (None, None, None);
    for line in lines {
        let Some((key, value)) = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.split_once('='))
        else {
            continue;
        };
        match key {
            "ACTION" => {
                action = Some(match value {
                    "add" => UeventAction::Add,
                    "remove" => UeventAction::Remove,
                    "bind" => UeventAction::Bind,
                    "unbind" => UeventAction::Unbind,
                    _ => UeventAction::Other,
                })
            }
            "SUBSYSTEM" => subsystem = Some(value),
            "DEVTYPE" => devtype = Some(value),
            "BUSNUM" => busnum = value.parse::<u8>().ok(),
            "DEVNUM" => devnum = value.parse::<u8>().ok(),
            "DEVPATH" => devpath = Some(value),
            _ => {}
        }
    }
    if subsystem? != "usb" || devtype? != "usb_device" {
        return None;
    }
    Some(UsbDeviceUevent {
        action: action?,
        busnum: busnum?,
        devnum: devnum?,
        devpath: devpath?.to_string(),
    })
}

/// The kernel's uevent socket.
pub struct KernelUevents {
    fd: AsyncFd<OwnedFd>,
}

impl KernelUevents {
    /// Opens and binds the socket. Needs a tokio runtime with I/O enabled.
    pub fn open() -> std::io::Result<KernelUevents> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkKObjectUEvent,
        )?;
        // A smaller buffer still works; events are only more likely to be lost in a burst.
        let _ = socket::setsockopt(&fd, socket::sockopt::RcvBuf, &RECEIVE_BUFFER);
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP))?;
        // SAFETY: the AsyncFd owns the descriptor; it is deregistered before it is closed (the
        // AsyncFd drops its registration first, then the OwnedFd), and nothing else closes it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(KernelUevents { fd })
    }

    /// The next USB device event; `Err` when the socket fails (an overrun, ENOBUFS, is
    /// reported so the caller can re-read the device list).
    pub async fn next(&mut self) -> std::io::Result<UsbDeviceUevent> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let mut ready = self.fd.readable().await?;
            let received = ready.try_io(|fd| {
                socket::recvfrom::<NetlinkAddr>(fd.as_raw_fd(), &mut buf)
                    .map_err(std::io::Error::from)
            });
            let (len, from) = match received {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            };
            // Only the kernel (port id 0) speaks on this group; anything else is forged.
            if from.map(|a| a.pid()) != Some(0) {
                continue;
            }
            if let Some(event) = buf.get(..len).and_then(parse) {
                return Ok(event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(header: &str, lines: &[&str]) -> Vec<u8> {
        let mut m = header.as_bytes().to_vec();
        for l in lines {
            m.push(0);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m
    }

    const PATH: &str = "/devices/pci0000:00/0000:00:04.0/usb2/2-1";

    fn device(action: &str) -> Vec<u8> {
        message(
            &format!("{action}@{PATH}"),
            &[
                &format!("ACTION={action}"),
                &format!("DEVPATH={PATH}"),
                "SUBSYSTEM=usb",
                "DEVNAME=bus/usb/002/003",
                "DEVTYPE=usb_device",
                "PRODUCT=46f4/1/0",
                "TYPE=0/0/0",
                "BUSNUM=002",
                "DEVNUM=003",
                "SEQNUM=1234",
                "MAJOR=189",
                "MINOR=130",
            ],
        )
    }

    #[test]
    fn usb_device_events_are_parsed() {
        for (word, action) in [
            ("add", UeventAction::Add),
            ("remove", UeventAction::Remove),
            ("bind", UeventAction::Bind),
            ("unbind", UeventAction::Unbind),
            ("change", UeventAction::Other),
        ] {
            let e = parse(&device(word)).unwrap();
            assert_eq!(
                e,
                UsbDeviceUevent {
                    action,
                    busnum: 2,
                    devnum: 3,
                    devpath: PATH.into()
                }
            );
            assert_eq!(e.busid(), Some("2-1"));
        }
    }

    #[test]
    fn interfaces_other_subsystems_udev_and_junk_are_not_device_events() {
        let interface = message(
            &format!("add@{PATH}/2-1:1.0"),
            &[
                "ACTION=add",
                &format!("DEVPATH={PATH}/2-1:1.0"),
                "SUBSYSTEM=usb",
                "DEVTYPE=usb_interface",
            ],
        );
        assert_eq!(parse(&interface), None);
        let block = message(
            "add@/devices/virtual/block/loop0",
            &["ACTION=add", "SUBSYSTEM=block", "DEVTYPE=disk"],
        );
        assert_eq!(parse(&block), None);
        // udevd's re-broadcast (group 2) has a binary header.
        let mut udev = b"libudev\0\xfe\xed\xca\xfe".to_vec();
        udev.extend_from_slice(&device("add")[PATH.len() + 4..]);
        assert_eq!(parse(&udev), None);
        for junk in [&b""[..], b"\0\0", b"add@", &[0xff, 0xfe, b'@', 0]] {
            assert_eq!(parse(junk), None, "{junk:?}");
        }
        // A field missing or malformed: no event rather than a wrong one.
        let no_devnum = message(
            &format!("add@{PATH}"),
            &[
                "ACTION=add",
                &format!("DEVPATH={PATH}"),
                "SUBSYSTEM=usb",
                "DEVTYPE=usb_device",
                "BUSNUM=002",
            ],
        );
        assert_eq!(parse(&no_devnum), None);
        let big_devnum = String::from_utf8(device("add"))
            .unwrap()
            .replace("DEVNUM=003", "DEVNUM=999");
        assert_eq!(parse(big_devnum.as_bytes()), None);
    }

    #[test]
    fn busids_come_from_the_device_path_and_root_hubs_have_none() {
        let at = |devpath: &str| UsbDeviceUevent {
            action: UeventAction::Add,
            busnum: 1,
            devnum: 1,
            devpath: devpath.into(),
        };
        assert_eq!(
            at("/devices/pci0000:00/usb1/1-2/1-2.3").busid(),
            Some("1-2.3")
        );
        assert_eq!(at("/devices/pci0000:00/usb1").busid(), None);
        assert_eq!(at("").busid(), None);
        assert_eq!(at("/devices/x/1-").busid(), None);
    }

    /// The socket opens and binds to the kernel's group without udevd (no privilege needed).
    #[tokio::test]
    async fn the_kernel_socket_opens() {
        KernelUevents::open().unwrap();
    }
}
