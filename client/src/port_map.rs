//! Router port mapping (issue 19): the `port-map` thread asks the home router, through
//! UPnP-IGD (the `igd-next` crate's blocking API), to forward a public port to this peer's
//! listen port, renews the lease before it ends, tells the advertiser the public address
//! (`Reachability::set_mapped`), and removes the mapping when stopped. Off the start's path:
//! the search for a router takes up to `SEARCH_TIMEOUT`, and a peer without one just stays
//! reachable where it was. A loopback listen address is never mapped (nothing outside the
//! host could use it).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

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

/// Why no mapping was made.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("no UPnP router found: {0}")]
    Search(#[from] igd_next::SearchError),
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
    gateway: Gateway,
    local: SocketAddr,
    external: SocketAddr,
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
    let mut current: Option<Mapping> = None;
    loop {
        let wait = match map(listen, current.as_ref()) {
            Ok(mapping) => {
                if current.as_ref().map(|m| m.external) != Some(mapping.external) {
                    log::info!(
                        "port mapping: router {} forwards {} to {}",
                        mapping.gateway.addr,
                        mapping.external,
                        mapping.local
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
        match mapping.gateway.remove_port(PortMappingProtocol::TCP, mapping.external.port()) {
            Ok(()) => log::info!("port mapping: removed {}", mapping.external),
            Err(e) => log::warn!("port mapping: cannot remove {}: {e}", mapping.external),
        }
    }
}

/// Asks for a mapping of `listen`, renewing `current` if there is one (the same external
/// port, on the same router), else searching for a router and asking for the listen port
/// itself, then any port.
fn map(listen: SocketAddr, current: Option<&Mapping>) -> Result<Mapping, MapError> {
    let secs = LEASE.as_secs() as u32;
    if let Some(m) = current {
        let renewed = m.gateway.add_port(
            PortMappingProtocol::TCP,
            m.external.port(),
            m.local,
            secs,
            DESCRIPTION,
        );
        match renewed {
            Ok(()) => return Ok(m.clone()),
            Err(e) => log::info!("port mapping: renewal of {} refused: {e}", m.external),
        }
    }
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
    Ok(Mapping { gateway, local, external })
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
