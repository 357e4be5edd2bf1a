//! Where this peer may be reached, and in which order to dial another peer's addresses
//! (issue 19). Pure: the observed address, the router mapping and the peer lists are passed
//! in; `dial` does the connecting and `advertiser` the registering.
//!
//! Invariant: what is registered or dialed is at most `MAX_PEER_ADDRS` distinct dialable
//! addresses (`common::peer_addr::sanitize`), so a tracker's list cannot make a downloader
//! dial more than that per peer.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::peer_addr::sanitize;

/// How a download's source peer was reached (SPEC: `show_downloads --json` gives each
/// source's `path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourcePath {
    /// This peer dialed one of the source's addresses.
    Direct,
    /// The source, behind a NAT, dialed this peer on its call through a tracker
    /// (connection reversal).
    Reversed,
    /// Both ends connected to each other at once, from their listening ports, through
    /// both routers (TCP hole punching).
    Punched,
    /// Both ends joined a tracker's relay, which copies their (end-to-end encrypted)
    /// bytes.
    Relayed,
}

impl SourcePath {
    /// The name scripts and the dashboard read.
    pub fn as_str(self) -> &'static str {
        match self {
            SourcePath::Direct => "direct",
            SourcePath::Reversed => "reversed",
            SourcePath::Punched => "punched",
            SourcePath::Relayed => "relayed",
        }
    }
}

/// The addresses to register for this peer: a router mapping (`mapped`) first, then the
/// public IP a tracker sees it from (`observed`) with its listen port (port-preserving NATs
/// forward it, and a public host's observed address is its own), then the listen address.
pub fn own_addresses(
    listen: SocketAddr,
    observed: Option<IpAddr>,
    mapped: Option<SocketAddr>,
) -> Vec<SocketAddr> {
    let observed = observed.map(|ip| SocketAddr::new(ip, listen.port()));
    sanitize(mapped.into_iter().chain(observed).chain([listen]))
}

/// Whether a peer elsewhere may connect to this one (listening at `listen`, seen by a
/// tracker from `observed`, with the router mapping `mapped`), so that asking an unreachable
/// source to connect back (connection reversal) is worth its wait: yes with a mapping, on a
/// host whose listen address is the one the tracker sees, or when it cannot tell (nothing
/// observed yet, a wildcard listen address); no behind a router that maps nothing, where a
/// hole punch and the relay are tried at once (issue 19).
pub fn reversal_may_work(
    listen: SocketAddr,
    observed: Option<IpAddr>,
    mapped: Option<SocketAddr>,
) -> bool {
    match observed {
        _ if mapped.is_some() => true,
        None => true,
        Some(_) if listen.ip().is_unspecified() => true,
        Some(seen) => seen == listen.ip(),
    }
}

pub use common::peer_addr::is_local;

/// The order in which to dial a peer listed at `primary` (its login address) and
/// `registered` (what it registered), given this peer's own public IP (`own_public`, as a
/// tracker sees it): a peer behind the same public IP is a neighbour, dialed at its local
/// addresses first; any other at its public ones first (its local ones are someone else's
/// network). Otherwise the order of the list stays, the login address first, so peers on
/// one host or LAN dial as before.
pub fn dial_order(
    primary: SocketAddr,
    registered: &[SocketAddr],
    own_public: Option<IpAddr>,
) -> Vec<SocketAddr> {
    let mut addrs = sanitize(std::iter::once(primary).chain(registered.iter().copied()));
    let neighbour = own_public.is_some_and(|own| {
        !is_local(own) && registered.iter().chain([&primary]).any(|a| a.ip() == own)
    });
    // Stable: ties keep the list's order.
    addrs.sort_by_key(|a| is_local(a.ip()) != neighbour);
    addrs
}

/// How long a dial of another network's private address waits (`connect_timeout`): a host
/// on this peer's own network answers within milliseconds, and a router on the way mostly
/// drops such a SYN without a word.
pub const FOREIGN_LOCAL_TIMEOUT: Duration = Duration::from_millis(250);

/// How long a dial of `addr`, one of a peer's addresses `dial` (in `dial_order`), may wait,
/// this peer's public IP being `own_public` (as a tracker sees it): `FOREIGN_LOCAL_TIMEOUT`
/// for a private address of a peer that also registered a public one other than ours (its
/// private addresses are on someone else's network, where they answer nothing here),
/// `default` for anything else (a public address; any address of a neighbour behind our
/// own public IP, or of a peer on one host or LAN with no public address).
pub fn connect_timeout(
    addr: SocketAddr,
    dial: &[SocketAddr],
    own_public: Option<IpAddr>,
    default: Duration,
) -> Duration {
    let Some(own) = own_public.filter(|own| !is_local(*own)) else { return default };
    let elsewhere = dial.iter().any(|a| !is_local(a.ip())) && dial.iter().all(|a| a.ip() != own);
    if is_local(addr.ip()) && elsewhere {
        default.min(FOREIGN_LOCAL_TIMEOUT)
    } else {
        default
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::peer_addr::{is_dialable, MAX_PEER_ADDRS};
    use proptest::prelude::*;

    #[test]
    fn reversal_is_tried_unless_behind_a_router_that_maps_nothing() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // A public host, a mapped one, an unknown one, a wildcard listener: tried.
        assert!(reversal_may_work(addr("5.0.0.1:7"), ip("5.0.0.1"), None));
        assert!(reversal_may_work(addr("192.168.1.2:7"), ip("5.0.0.2"), Some(addr("5.0.0.2:7"))));
        assert!(reversal_may_work(addr("192.168.1.2:7"), None, None));
        assert!(reversal_may_work(addr("0.0.0.0:7"), ip("5.0.0.2"), None));
        // Behind a masquerading router without a mapping: straight to a punch and the relay.
        assert!(!reversal_may_work(addr("192.168.1.2:7"), ip("5.0.0.2"), None));
        // Loopback peers see each other as they are.
        assert!(reversal_may_work(addr("127.0.0.1:7"), ip("127.0.0.1"), None));
    }

    #[test]
    fn another_networks_private_addresses_get_a_short_dial() {
        let long = Duration::from_secs(5);
        let stranger = [addr("5.0.0.9:7000"), addr("192.168.9.2:7000")];
        let own = Some("5.0.0.2".parse().unwrap());
        assert_eq!(connect_timeout(stranger[0], &stranger, own, long), long);
        assert_eq!(connect_timeout(stranger[1], &stranger, own, long), FOREIGN_LOCAL_TIMEOUT);
        // A neighbour behind our public IP: its private address is on our network.
        let neighbour = [addr("5.0.0.2:7000"), addr("192.168.2.3:7000")];
        assert_eq!(connect_timeout(neighbour[1], &neighbour, own, long), long);
        // Only private addresses (one host, one LAN), or our own public IP unknown or
        // private: nothing is known to be elsewhere.
        let lan = [addr("192.168.2.3:7000")];
        assert_eq!(connect_timeout(lan[0], &lan, own, long), long);
        assert_eq!(connect_timeout(stranger[1], &stranger, None, long), long);
        let loopback = Some("127.0.0.1".parse().unwrap());
        assert_eq!(connect_timeout(stranger[1], &stranger, loopback, long), long);
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_addresses_put_the_mapping_first_and_keep_each_once() {
        let listen = addr("192.168.1.2:6201");
        let public: IpAddr = "5.0.0.2".parse().unwrap();
        assert_eq!(own_addresses(listen, None, None), vec![listen]);
        assert_eq!(
            own_addresses(listen, Some(public), Some(addr("5.0.0.2:40000"))),
            vec![addr("5.0.0.2:40000"), addr("5.0.0.2:6201"), listen]
        );
        // A port-preserving mapping is the observed address: once.
        assert_eq!(
            own_addresses(listen, Some(public), Some(addr("5.0.0.2:6201"))),
            vec![addr("5.0.0.2:6201"), listen]
        );
        // On one host (loopback) everything is the listen address.
        let local = addr("127.0.0.1:6201");
        assert_eq!(own_addresses(local, Some("127.0.0.1".parse().unwrap()), None), vec![local]);
        // A wildcard listen address is not registered.
        let any = addr("0.0.0.0:6201");
        assert_eq!(own_addresses(any, Some(public), None), vec![addr("5.0.0.2:6201")]);
    }

    #[test]
    fn dial_order_prefers_public_addresses_of_strangers_and_local_ones_of_neighbours() {
        let primary = addr("192.168.1.2:6201");
        let registered = [addr("5.0.0.2:40000"), addr("5.0.0.2:6201"), primary];
        let stranger = dial_order(primary, &registered, Some("5.0.0.9".parse().unwrap()));
        assert_eq!(stranger, vec![addr("5.0.0.2:40000"), addr("5.0.0.2:6201"), primary]);
        let neighbour = dial_order(primary, &registered, Some("5.0.0.2".parse().unwrap()));
        assert_eq!(neighbour, vec![primary, addr("5.0.0.2:40000"), addr("5.0.0.2:6201")]);
        // Nothing registered, on loopback: the login address alone, as before issue 19.
        let local = addr("127.0.0.1:6201");
        assert_eq!(dial_order(local, &[], Some("127.0.0.1".parse().unwrap())), vec![local]);
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (
                prop_oneof![Just([5, 0, 0, 2]), Just([192, 168, 1, 2]), Just([127, 0, 0, 1])],
                0u16..3
            )
                .prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ]
    }

    proptest! {
        #[test]
        fn dial_order_dials_few_distinct_listed_dialable_addresses(
            primary in any_addr(),
            registered in proptest::collection::vec(any_addr(), 0..10),
            own in proptest::option::of(any_addr()),
        ) {
            let order = dial_order(primary, &registered, own.map(|a| a.ip()));
            prop_assert!(order.len() <= MAX_PEER_ADDRS);
            prop_assert!(order.iter().all(is_dialable));
            for (i, a) in order.iter().enumerate() {
                prop_assert!(*a == primary || registered.contains(a));
                prop_assert!(!order[i + 1..].contains(a));
            }
            // The login address is always among them, when it can be dialed at all.
            prop_assert_eq!(order.contains(&primary), is_dialable(&primary));
            // Grouped: public before local for a stranger, local first for a neighbour.
            let locals: Vec<bool> = order.iter().map(|a| is_local(a.ip())).collect();
            let mut sorted = locals.clone();
            sorted.sort();
            if locals.first() == Some(&true) && locals.iter().any(|l| !l) {
                sorted.reverse();
            }
            prop_assert_eq!(locals, sorted);
        }

        #[test]
        fn own_addresses_are_few_distinct_and_dialable(
            listen in any_addr(),
            observed in proptest::option::of(any_addr()),
            mapped in proptest::option::of(any_addr()),
        ) {
            let own = own_addresses(listen, observed.map(|a| a.ip()), mapped);
            prop_assert!(own.len() <= MAX_PEER_ADDRS);
            prop_assert!(own.iter().all(is_dialable));
            prop_assert_eq!(own.contains(&listen), is_dialable(&listen));
            if let Some(mapped) = mapped.filter(is_dialable) {
                prop_assert_eq!(own.first(), Some(&mapped));
            }
        }
    }
}
