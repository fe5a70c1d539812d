//! Who may connect: allowlists of client networks (CIDR), for the whole server and per device,
//! and the per-address connection count. An empty allowlist allows everyone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    nets: Vec<IpNet>,
}

impl Allowlist {
    pub fn new(nets: Vec<IpNet>) -> Allowlist {
        Allowlist { nets }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        self.nets.is_empty() || self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// Counts open connections per client address.
#[derive(Debug, Default)]
pub struct PerAddress {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    /// Takes a slot for `ip` if it has fewer than `max` connections open.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            owner: self.clone(),
            ip,
        })
    }
}

/// One open connection's slot; released on drop.
pub struct AddressSlot {
    owner: Arc<PerAddress>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_v4_v6_and_mapped_addresses() {
        let list = Allowlist::new(vec![
            "10.0.2.0/24".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        assert!(list.permits("10.0.2.15".parse().unwrap()));
        assert!(list.permits("::ffff:10.0.2.15".parse().unwrap()));
        assert!(list.permits("fd12::1".parse().unwrap()));
        assert!(!list.permits("10.0.3.1".parse().unwrap()));
        assert!(!list.permits("::1".parse().unwrap()));
        assert!(Allowlist::default().permits("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn per_address_slots_are_counted_and_released() {
        let pa = Arc::new(PerAddress::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = pa.acquire(ip, 2).unwrap();
        let _b = pa.acquire(ip, 2).unwrap();
        assert!(pa.acquire(ip, 2).is_none());
        assert!(pa.acquire("127.0.0.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert!(pa.acquire(ip, 2).is_some());
    }
}
