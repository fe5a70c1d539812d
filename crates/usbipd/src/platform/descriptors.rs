//! A device's descriptors as the OS caches them, readable without opening the device (Linux's
//! sysfs `descriptors` file; macOS gives them only once a device is open).

/// A device's descriptors as the OS caches them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RawDescriptors {
    pub active: u8,
    pub device: Vec<u8>,
    pub configurations: Vec<Vec<u8>>,
}

impl RawDescriptors {
    /// Splits a device descriptor followed by configuration descriptors (sysfs `descriptors`).
    pub fn split(active: u8, raw: &[u8]) -> RawDescriptors {
        let mut out = RawDescriptors {
            active,
            ..Default::default()
        };
        if raw.len() < 18 || raw[0] != 18 || raw[1] != 1 {
            return out;
        }
        out.device = raw[..18].to_vec();
        let mut pos = 18;
        while pos + 4 <= raw.len() {
            let total = usize::from(u16::from_le_bytes([raw[pos + 2], raw[pos + 3]]));
            if raw[pos + 1] != 2 || total < 9 {
                break;
            }
            let end = (pos + total).min(raw.len());
            out.configurations.push(raw[pos..end].to_vec());
            pos = end;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_sysfs_descriptors_into_configurations() {
        let mut raw = vec![
            18, 1, 0, 2, 0, 0, 0, 64, 0x34, 0x12, 0x78, 0x56, 0, 1, 1, 2, 3, 2,
        ];
        let c1 = [9, 2, 18, 0, 1, 1, 0, 0x80, 50, 9, 4, 0, 0, 0, 3, 0, 0, 0];
        let c2 = [9, 2, 9, 0, 0, 2, 0, 0x80, 50];
        raw.extend_from_slice(&c1);
        raw.extend_from_slice(&c2);
        let d = RawDescriptors::split(1, &raw);
        assert_eq!(d.device.len(), 18);
        assert_eq!(d.configurations, vec![c1.to_vec(), c2.to_vec()]);
        assert_eq!(d.active, 1);
        assert_eq!(
            RawDescriptors::split(0, &raw[..10]),
            RawDescriptors::default()
        );
    }
}
