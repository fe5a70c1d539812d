//! Which clients may import: an allowlist of client networks (CIDR), for the whole server and
//! per device. An empty allowlist allows everyone.

use std::net::IpAddr;

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
}
