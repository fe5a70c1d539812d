//! Stable busids for host devices, in the Linux style `<bus>-<port>[.<port>...]` (e.g. `1-2.3`).
//!
//! A busid names a physical port, so it survives replugging and reboots. Pure functions only:
//! the macOS scheme is tested here on Linux.

/// The Linux busid: the bus number, then the port numbers from the root hub down.
/// `None` for a root hub (no ports), which is never exported.
pub fn linux_busid(busnum: u32, ports: &[u8]) -> Option<String> {
    let (first, rest) = ports.split_first()?;
    let mut id = format!("{busnum}-{first}");
    for p in rest {
        id.push('.');
        id.push_str(&p.to_string());
    }
    Some(id)
}

/// The busid of a macOS device from its IOKit location id, written so that a user can read
/// it off the location id that System Information and `ioreg` show: the top byte is the
/// controller (in hex), then one port per hex nibble, ending at the first zero nibble.
/// Location 0x14213000 is busid `14-2.1.3`. `None` for a root hub (no ports).
pub fn macos_busid(location_id: u32) -> Option<String> {
    let ports = macos_ports(location_id);
    let (first, rest) = ports.split_first()?;
    let mut id = format!("{:x}-{first:x}", location_id >> 24);
    for p in rest {
        id.push_str(&format!(".{p:x}"));
    }
    Some(id)
}

/// The port chain encoded in a macOS location id (nibbles after the bus byte, up to a zero).
pub fn macos_ports(location_id: u32) -> Vec<u8> {
    (0..6)
        .map(|i| ((location_id >> (20 - 4 * i)) & 0xf) as u8)
        .take_while(|&p| p != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_busids_follow_sysfs_names() {
        assert_eq!(linux_busid(1, &[2]).as_deref(), Some("1-2"));
        assert_eq!(linux_busid(3, &[1, 4, 2]).as_deref(), Some("3-1.4.2"));
        assert_eq!(linux_busid(12, &[10]).as_deref(), Some("12-10"));
        assert_eq!(linux_busid(1, &[]), None);
    }

    #[test]
    fn macos_busids_read_like_the_location_id() {
        assert_eq!(macos_busid(0x1420_0000).as_deref(), Some("14-2"));
        assert_eq!(macos_busid(0x1421_3000).as_deref(), Some("14-2.1.3"));
        assert_eq!(macos_busid(0x0010_0000).as_deref(), Some("0-1"));
        assert_eq!(macos_busid(0xfd12_3456).as_deref(), Some("fd-1.2.3.4.5.6"));
        // A hub port above 9 is one hex digit, as in the location id.
        assert_eq!(macos_busid(0x14b2_0000).as_deref(), Some("14-b.2"));
        assert_eq!(macos_busid(0x1400_0000), None);
        assert_eq!(macos_ports(0x1421_3000), vec![2, 1, 3]);
    }
}
