//! The addresses a peer may be reached at (issue 19): which are worth dialing, and how many
//! one peer may register. Pure; the tracker applies it to what a client registers, and a
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(addr: &str, expected: bool) {
        assert_eq!(is_dialable(&addr.parse().unwrap()), expected, "{addr}");
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
