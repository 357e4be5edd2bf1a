//! The addresses a peer may be reached at (issue 19): which are worth dialing, and how many
//! one peer may register; and the `source` a connection counts under for per-address
//! limits. Pure; the tracker applies it to what a client registers, and a
//! downloader again to what a tracker lists, so neither trusts the other to have done so.

use std::net::{IpAddr, SocketAddr};

/// The most addresses one peer registers (its listen address, its observed public address
/// with its listen port, a router mapping, and one to spare): a liar cannot make a
/// downloader dial more than this per peer.
pub const MAX_PEER_ADDRS: usize = 4;

/// Whether `addr` can be dialed at all: a port, and an IP that names one host (not
/// unspecified, multicast, broadcast, or in 0.0.0.0/8, which no host holds).
pub fn is_dialable(addr: &SocketAddr) -> bool {
    if addr.port() == 0 {
        return false;
    }
    match addr.ip() {
        IpAddr::V4(ip) => {
            !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.octets()[0] == 0)
        }
        IpAddr::V6(ip) => !(ip.is_unspecified() || ip.is_multicast()),
    }
}

/// The address a connection counts under, for every per-address limit (admission,
/// throttles, seeders' budgets): IPv4 as it is, IPv6 by its /64 (which one host
/// usually holds in full).
pub fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// `addrs` as a peer may register them: the dialable ones, each once, in their order, at
/// most `MAX_PEER_ADDRS`.
pub fn sanitize(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut kept: Vec<SocketAddr> = Vec::with_capacity(MAX_PEER_ADDRS);
    for addr in addrs {
        if kept.len() == MAX_PEER_ADDRS {
            break;
        }
        if is_dialable(&addr) && !kept.contains(&addr) {
            kept.push(addr);
        }
    }
    kept
}

/// Where a seeder punches to (issue 19) for a caller registered at `addrs`, punching from
/// `port` (0: its listening port): the public ones of `addrs`, or with a `port`, each of
/// their IPs once with that port. Only the caller's own public IPs, whatever it asks.
pub fn punch_targets(addrs: &[SocketAddr], port: u16) -> Vec<SocketAddr> {
    let public = addrs.iter().filter(|a| !is_local(a.ip()));
    let moved = public.map(|a| if port == 0 { *a } else { SocketAddr::new(a.ip(), port) });
    sanitize(moved)
}

/// Whether `ip` is reachable only within a site or host: private, loopback, link-local,
/// carrier-grade NAT space, IPv6 unique-local.
pub fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            ip.is_private()
                || ip.is_loopback()
                || ip.is_link_local()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            ip.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(addr: &str, expected: bool) {
        assert_eq!(is_dialable(&addr.parse().unwrap()), expected, "{addr}");
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64_and_a_mapped_ipv4_as_itself() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(source(ip("2001:db8::1")), source(ip("2001:db8::ffff:1")));
        assert_ne!(source(ip("2001:db8::1")), source(ip("2001:db8:0:1::1")));
        assert_eq!(source(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(source(ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn a_punch_from_another_port_targets_each_public_ip_at_that_port() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let registered = [a("5.0.0.2:40000"), a("5.0.0.2:6201"), a("192.168.1.2:6201")];
        assert_eq!(punch_targets(&registered, 0), vec![a("5.0.0.2:40000"), a("5.0.0.2:6201")]);
        assert_eq!(punch_targets(&registered, 51000), vec![a("5.0.0.2:51000")]);
        assert!(punch_targets(&[a("192.168.1.2:6201")], 51000).is_empty());
    }

    #[test]
    fn dialable_addresses() {
        check("192.168.1.2:6201", true);
        check("127.0.0.1:6201", true);
        check("[2001:db8::1]:6201", true);
        check("192.168.1.2:0", false);
        check("0.0.0.0:6201", false);
        check("0.1.2.3:6201", false);
        check("224.0.0.1:6201", false);
        check("255.255.255.255:6201", false);
        check("[::]:6201", false);
        check("[ff02::1]:6201", false);
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            // Few distinct values, so that duplicates occur.
            (0u8..4, 0u16..3).prop_map(|(last, port)| SocketAddr::from(([10, 0, 0, last], port))),
            (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ]
    }

    proptest! {
        #[test]
        fn a_punch_targets_only_the_callers_public_ips(
            addrs in proptest::collection::vec(any_addr(), 0..12),
            port in any::<u16>(),
        ) {
            let targets = punch_targets(&addrs, port);
            prop_assert!(targets.len() <= MAX_PEER_ADDRS);
            for t in &targets {
                prop_assert!(!is_local(t.ip()) && is_dialable(t));
                prop_assert!(addrs.iter().any(|a| a.ip() == t.ip()));
                if port != 0 {
                    prop_assert_eq!(t.port(), port);
                } else {
                    prop_assert!(addrs.contains(t));
                }
            }
        }

        #[test]
        fn sanitize_keeps_few_distinct_dialable_addresses_in_order(
            addrs in proptest::collection::vec(any_addr(), 0..12)
        ) {
            let kept = sanitize(addrs.clone());
            prop_assert!(kept.len() <= MAX_PEER_ADDRS);
            prop_assert!(kept.iter().all(is_dialable));
            for (i, a) in kept.iter().enumerate() {
                prop_assert!(!kept[i + 1..].contains(a));
            }
            // In their order: the kept ones are the first dialable distinct ones.
            let mut expected: Vec<SocketAddr> = Vec::new();
            for a in addrs.iter().filter(|a| is_dialable(a)) {
                if !expected.contains(a) {
                    expected.push(*a);
                }
            }
            expected.truncate(MAX_PEER_ADDRS);
            prop_assert_eq!(kept, expected);
        }
    }
}
