//! Router port mapping (issue 19): the `port-map` thread asks the home router to forward a
//! public port to this peer's listen port, through UPnP-IGD (the `igd-next` crate's
//! blocking API) or else PCP and NAT-PMP (the `crab_nat` crate, on a single-threaded tokio
//! runtime owned by this thread), renews the lease before it ends, tells the advertiser the
//! public address (`Reachability::set_mapped`), and removes the mapping when stopped. Off
//! the start's path: a peer without a router that maps just stays reachable where it was.
//! A loopback listen address is never mapped (nothing outside the host could use it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::num::NonZeroU16;
use std::time::Duration;

use crab_nat::{InternetProtocol, PortMappingOptions, PortMappingType, TimeoutConfig};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use igd_next::{Gateway, PortMappingProtocol, SearchOptions};

use crate::advertiser::Reachability;

/// How long the search for a router (SSDP) may take.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(3);
/// The lease asked for; renewed at half of it.
const LEASE: Duration = Duration::from_secs(3600);
/// How long to wait before searching again when no router granted a mapping.
const RETRY_AFTER: Duration = Duration::from_secs(300);
/// How the mapping is named in the router's table.
const DESCRIPTION: &str = "p2p-groups peer";
/// PCP and NAT-PMP requests: the RFCs' first wait of 250 ms, doubling, three retries, at
/// most a second each (about 2.75 s for a router that does not answer).
const PCP_TIMEOUTS: TimeoutConfig = TimeoutConfig {
    initial_timeout: Duration::from_millis(250),
    max_retries: 3,
    max_retry_timeout: Some(Duration::from_secs(1)),
};

/// Why no mapping was made.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("no UPnP router found: {0}")]
    Search(#[from] igd_next::SearchError),
    #[error("{upnp}; and no PCP or NAT-PMP mapping: {pcp}")]
    Neither { upnp: Box<MapError>, pcp: Box<MapError> },
    #[error("no default route (no router to ask)")]
    NoGateway,
    #[error("no runtime for PCP and NAT-PMP: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Pcp(#[from] crab_nat::MappingFailure),
    #[error("the router did not say its public address: NAT-PMP({0})")]
    NatPmpAddress(#[from] crab_nat::natpmp::Failure),
    #[error("the router refused a mapping: {0}")]
    Add(#[from] igd_next::AddAnyPortError),
    #[error("the router did not say its public address: {0}")]
    ExternalIp(#[from] igd_next::GetExternalIpError),
    #[error("no local address towards the router: {0}")]
    LocalAddr(std::io::Error),
    #[error("the router's public address {0} cannot be dialed")]
    NotDialable(SocketAddr),
}

/// A mapping the router granted.
#[derive(Debug, Clone)]
struct Mapping {
    router: Router,
    external: SocketAddr,
}

/// The router that granted a mapping, and what renews or removes it.
#[derive(Debug, Clone)]
enum Router {
    Upnp { gateway: Box<Gateway>, local: SocketAddr },
    Pcp(Box<crab_nat::PortMapping>),
}

impl Router {
    /// `upnp 192.168.1.1:5000`, `pcp 192.168.1.1`, `nat-pmp 192.168.1.1`: for the log.
    fn name(&self) -> String {
        match self {
            Router::Upnp { gateway, .. } => format!("UPnP-IGD {}", gateway.addr),
            Router::Pcp(m) => {
                let kind = match m.mapping_type() {
                    PortMappingType::NatPmp => "NAT-PMP",
                    PortMappingType::Pcp { .. } => "PCP",
                };
                format!("{kind} {}", IpAddr::from(m.gateway()))
            }
        }
    }
}

/// The running `port-map` thread; `stop` removes the mapping and joins it.
pub struct PortMapper {
    stop: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl PortMapper {
    /// Starts mapping `listen` (`None` for a loopback address: nothing to map).
    pub fn start(listen: SocketAddr, reach: Reachability) -> std::io::Result<Option<PortMapper>> {
        if listen.ip().is_loopback() {
            log::debug!("port mapping: {listen} is a loopback address, nothing to map");
            return Ok(None);
        }
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("port-map".into())
            .spawn(move || run(listen, &reach, &stopped))?;
        Ok(Some(PortMapper { stop, thread }))
    }

    /// Removes the mapping (if one was granted) and waits for the thread: at most the
    /// router's request timeout when a call is in flight.
    pub fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

fn run(listen: SocketAddr, reach: &Reachability, stopped: &Receiver<()>) {
    // PCP and NAT-PMP only: crab_nat is async; its futures run here, one at a time.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let runtime = match runtime {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            log::warn!("port mapping: {}", MapError::Runtime(e));
            None
        }
    };
    let mut current: Option<Mapping> = None;
    loop {
        let wait = match map(listen, current.as_ref(), runtime.as_ref()) {
            Ok(mapping) => {
                if current.as_ref().map(|m| m.external) != Some(mapping.external) {
                    log::info!(
                        "port mapping: router {} forwards {} to port {}",
                        mapping.router.name(),
                        mapping.external,
                        listen.port()
                    );
                    reach.set_mapped(Some(mapping.external));
                }
                current = Some(mapping);
                LEASE / 2
            }
            Err(e) => {
                match current.take() {
                    Some(_) => {
                        log::warn!("port mapping: renewal failed ({e}); searching again");
                        reach.set_mapped(None);
                    }
                    None => log::info!("port mapping: none ({e})"),
                }
                RETRY_AFTER
            }
        };
        match stopped.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => continue,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(mapping) = current {
        let removed = match mapping.router {
            Router::Upnp { gateway, .. } => gateway
                .remove_port(PortMappingProtocol::TCP, mapping.external.port())
                .map_err(|e| e.to_string()),
            Router::Pcp(m) => match &runtime {
                Some(runtime) => runtime.block_on(m.try_drop()).map_err(|(e, _)| e.to_string()),
                None => Err("no runtime".to_string()),
            },
        };
        match removed {
            Ok(()) => log::info!("port mapping: removed {}", mapping.external),
            Err(e) => log::warn!("port mapping: cannot remove {}: {e}", mapping.external),
        }
    }
}

/// Asks for a mapping of `listen`: renews `current` if there is one (the same external
/// port, on the same router), else asks through UPnP-IGD (the listen port itself, then any
/// port), then through PCP or NAT-PMP from the default gateway.
fn map(
    listen: SocketAddr,
    current: Option<&Mapping>,
    runtime: Option<&tokio::runtime::Runtime>,
) -> Result<Mapping, MapError> {
    if let Some(m) = current {
        match renew(m, runtime) {
            Ok(renewed) => return Ok(renewed),
            Err(e) => log::info!("port mapping: renewal of {} refused: {e}", m.external),
        }
    }
    let upnp = match map_upnp(listen) {
        Ok(mapping) => return Ok(mapping),
        Err(e) => e,
    };
    let Some(runtime) = runtime else { return Err(upnp) };
    map_pcp(listen, runtime)
        .map_err(|pcp| MapError::Neither { upnp: Box::new(upnp), pcp: Box::new(pcp) })
}

/// `mapping` renewed for another `LEASE`.
fn renew(mapping: &Mapping, runtime: Option<&tokio::runtime::Runtime>) -> Result<Mapping, String> {
    let secs = LEASE.as_secs() as u32;
    match &mapping.router {
        Router::Upnp { gateway, local } => gateway
            .add_port(PortMappingProtocol::TCP, mapping.external.port(), *local, secs, DESCRIPTION)
            .map(|()| mapping.clone())
            .map_err(|e| e.to_string()),
        Router::Pcp(m) => {
            let Some(runtime) = runtime else { return Err("no runtime".to_string()) };
            let mut m = m.clone();
            runtime.block_on(m.renew()).map_err(|e| e.to_string())?;
            Ok(Mapping { router: Router::Pcp(m), external: mapping.external })
        }
    }
}

fn map_upnp(listen: SocketAddr) -> Result<Mapping, MapError> {
    let secs = LEASE.as_secs() as u32;
    let bind_ip = match listen.ip() {
        ip if ip.is_unspecified() => IpAddr::from([0, 0, 0, 0]),
        ip => ip,
    };
    let mut options = SearchOptions::default();
    options.bind_addr = SocketAddr::new(bind_ip, 0);
    options.timeout = Some(SEARCH_TIMEOUT);
    options.single_search_timeout = Some(SEARCH_TIMEOUT);
    let gateway = igd_next::search_gateway(options)?;
    let local = SocketAddr::new(local_ip(listen, gateway.addr)?, listen.port());
    let port =
        match gateway.add_port(PortMappingProtocol::TCP, listen.port(), local, secs, DESCRIPTION) {
            Ok(()) => listen.port(),
            Err(e) => {
                log::debug!("port mapping: port {} refused ({e}); asking for any", listen.port());
                gateway.add_any_port(PortMappingProtocol::TCP, local, secs, DESCRIPTION)?
            }
        };
    let external = SocketAddr::new(gateway.get_external_ip()?, port);
    if !common::peer_addr::is_dialable(&external) {
        let _ = gateway.remove_port(PortMappingProtocol::TCP, port);
        return Err(MapError::NotDialable(external));
    }
    Ok(Mapping { router: Router::Upnp { gateway: Box::new(gateway), local }, external })
}

/// A mapping through PCP, or NAT-PMP where the router answers only that (crab_nat tries
/// PCP first), from the default gateway of `/proc/net/route`.
fn map_pcp(listen: SocketAddr, runtime: &tokio::runtime::Runtime) -> Result<Mapping, MapError> {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let gateway = default_gateway(&routes).ok_or(MapError::NoGateway)?;
    let client = local_ip(listen, SocketAddr::from((gateway, crab_nat::GATEWAY_PORT)))?;
    let Some(internal) = NonZeroU16::new(listen.port()) else {
        return Err(MapError::NotDialable(listen));
    };
    let options = PortMappingOptions {
        external_port: Some(internal),
        lifetime_seconds: Some(LEASE.as_secs() as u32),
        timeout_config: Some(PCP_TIMEOUTS),
    };
    let mapping = runtime.block_on(crab_nat::PortMapping::new(
        gateway.into(),
        client,
        InternetProtocol::Tcp,
        internal,
        options,
    ))?;
    let external_ip = match mapping.mapping_type() {
        PortMappingType::Pcp { external_ip, .. } => external_ip,
        PortMappingType::NatPmp => IpAddr::V4(
            runtime
                .block_on(crab_nat::natpmp::external_address(gateway.into(), Some(PCP_TIMEOUTS)))?,
        ),
    };
    let external = SocketAddr::new(external_ip, mapping.external_port().get());
    if !common::peer_addr::is_dialable(&external) {
        let _ = runtime.block_on(mapping.try_drop());
        return Err(MapError::NotDialable(external));
    }
    Ok(Mapping { router: Router::Pcp(Box::new(mapping)), external })
}

/// The IPv4 default gateway in the text of `/proc/net/route` (`Iface Destination Gateway
/// Flags ...`, addresses as little-endian hex): the first up route to 0.0.0.0/0 with a
/// gateway.
pub fn default_gateway(routes: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u16 = 0x1;
    const RTF_GATEWAY: u16 = 0x2;
    routes.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (destination, gateway, flags, mask) =
            (fields.get(1)?, fields.get(2)?, fields.get(3)?, fields.get(7)?);
        let flags = u16::from_str_radix(flags, 16).ok()?;
        let up_via_gateway = flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY;
        if *destination != "00000000" || *mask != "00000000" || !up_via_gateway {
            return None;
        }
        let gateway = u32::from_str_radix(gateway, 16).ok()?;
        Some(Ipv4Addr::from(gateway.to_le_bytes())).filter(|ip| !ip.is_unspecified())
    })
}

/// The address the router should forward to: the listen address, or for a wildcard one,
/// the local address of the route to the router (a UDP "connection" sends nothing).
fn local_ip(listen: SocketAddr, router: SocketAddr) -> Result<IpAddr, MapError> {
    if !listen.ip().is_unspecified() {
        return Ok(listen.ip());
    }
    let socket = UdpSocket::bind(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0))
        .map_err(MapError::LocalAddr)?;
    socket.connect(router).map_err(MapError::LocalAddr)?;
    Ok(socket.local_addr().map_err(MapError::LocalAddr)?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_gateway_is_read_from_the_route_table() {
        let header =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        let table = format!(
            "{header}eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             eth0\t00000000\t014DA8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        );
        assert_eq!(default_gateway(&table), Some(Ipv4Addr::new(192, 168, 77, 1)));
        // A default route without a gateway (a point-to-point link), or one that is down.
        let direct =
            format!("{header}ppp0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n");
        assert_eq!(default_gateway(&direct), None);
        let down = format!("{header}eth0\t00000000\t014DA8C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n");
        assert_eq!(default_gateway(&down), None);
        assert_eq!(default_gateway(""), None);
        assert_eq!(default_gateway(&format!("{header}garbage\n")), None);
    }
}
