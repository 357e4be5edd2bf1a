//! The dashboard: a web page served by the client itself, one more view over `Peer`'s
//! operations beside the REPL (issue 11).
//!
//! The `web` thread accepts connections on the `--web` address; each gets a `web-N` thread
//! (at most `MAX_CONNECTIONS` at once, the rest closed at once) with read and write
//! timeouts, which reads one bounded request (`http`), checks it (`guard`), answers it
//! (`api`, or the page) and closes. `/api/events` keeps its connection as a stream of
//! events in the Server-Sent Events format (read by the page with `fetch`, which can send
//! the token's header, unlike `EventSource`) until the browser goes away or the client stops.
//!
//! Invariant: every request passes `Guard::check_site`, every `/api/` request carries the
//! access token in its `Authorization` header, and a request that changes state is a POST.
//! Invariant: the token is never in a response (no cookie, not in the page): the page and
//! its script hold no secret, and the page takes the token from its URL's fragment.

pub mod api;
pub mod guard;
pub mod http;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::peer::Peer;
use guard::Guard;
use http::Response;

/// Connections served at once; more are closed as they arrive.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a connection may take to send its request, or to take a response.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many download events a second on one stream (a fast download changes its
/// record hundreds of times a second).
const MIN_EVENT_GAP: Duration = Duration::from_millis(250);
/// An event stream looks at the downloads at least this often (speed and ETA move on).
const EVENT_TICK: Duration = Duration::from_secs(1);
/// A comment is sent on a quiet event stream this often, so a closed browser is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/app.css");

/// A running dashboard.
pub struct Dashboard {
    url: String,
    bound: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

/// What every connection thread needs.
struct Shared {
    peer: Arc<Peer>,
    /// The page as served, its style inline (`page_text`).
    page: String,
    guard: Guard,
    stop: AtomicBool,
    live: AtomicUsize,
}

impl Dashboard {
    /// Binds `addr` and serves the dashboard of `peer` from a `web` thread.
    pub fn start(addr: SocketAddr, peer: Arc<Peer>) -> io::Result<Dashboard> {
        let listener = TcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        if !bound.ip().is_loopback() {
            log::warn!(
                "dashboard on {bound}, which is not loopback: anyone with the token can use it"
            );
        }
        let guard = Guard::new(bound, guard::new_token()?);
        // The fragment: browsers never send it, to this server or any other (issue 21).
        let url = format!("http://{bound}/#token={}", guard.token());
        let page = page_text();
        let shared = Arc::new(Shared {
            peer,
            page,
            guard,
            stop: AtomicBool::new(false),
            live: AtomicUsize::new(0),
        });
        let accept = std::thread::Builder::new().name("web".into()).spawn({
            let shared = Arc::clone(&shared);
            move || accept_loop(&listener, &shared)
        })?;
        log::info!("dashboard listening on {bound}");
        Ok(Dashboard { url, bound, shared, accept })
    }

    /// The URL to open, with the access token in its fragment.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Stops accepting, ends the event streams (within `EVENT_TICK`) and joins the `web`
    /// thread. Connection threads end on their own within their timeouts.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut wake = self.bound;
        if wake.ip().is_unspecified() {
            wake.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        // Wakes `accept`, which then sees the flag.
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let _ = self.accept.join();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut n = 0u64;
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                log::warn!("dashboard: accept failed: {e}");
                continue;
            }
        };
        if shared.live.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.live.fetch_sub(1, Ordering::SeqCst);
            log::warn!("dashboard: {MAX_CONNECTIONS} connections already; closing one more");
            continue;
        }
        n += 1;
        let spawned = std::thread::Builder::new().name(format!("web-{n}")).spawn({
            let shared = Arc::clone(shared);
            move || {
                if let Err(e) = serve(stream, &shared) {
                    log::debug!("dashboard connection: {e}");
                }
                shared.live.fetch_sub(1, Ordering::SeqCst);
            }
        });
        if let Err(e) = spawned {
            shared.live.fetch_sub(1, Ordering::SeqCst);
            log::warn!("dashboard: cannot start a connection thread: {e}");
        }
    }
}

/// Serves one connection: one request, one response (or one event stream).
fn serve(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let request = match http::read_request(&mut stream) {
        Ok(request) => request,
        Err(e) => {
            return match e.status() {
                Some(status) => Response::error(status, &e.to_string()).write_to(&mut stream),
                None => Ok(()),
            }
        }
    };
    log::debug!("dashboard < {} {}", request.method, request.path);
    if let Err(refusal) = shared.guard.check_site(&request) {
        log::warn!("dashboard: refused {} {}: {refusal}", request.method, request.path);
        return Response::error(refusal.status(), &refusal.to_string()).write_to(&mut stream);
    }
    let response = match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/app.js") => asset("text/javascript; charset=utf-8", SCRIPT),
        // No icon, and no error in the browser's console for the lack of one.
        ("GET", "/favicon.ico") => {
            Response { status: 204, content_type: "text/plain", headers: vec![], body: vec![] }
        }
        // The page holds no secret: it takes the token from its URL's fragment.
        ("GET", "/") => asset("text/html; charset=utf-8", &shared.page),
        (_, "/") => Response::error(405, "only GET here").with_header("Allow", "GET".into()),
        (_, "/api/events") if request.method == "GET" => {
            if let Err(refusal) = shared.guard.check_token(&request) {
                return Response::error(refusal.status(), &refusal.to_string())
                    .write_to(&mut stream);
            }
            return stream_events(&mut stream, shared);
        }
        (_, path) if path.starts_with("/api/") => {
            api::handle(&shared.peer, &shared.guard, &request)
        }
        _ => Response::error(404, "no such page"),
    };
    response.write_to(&mut stream)
}

fn asset(content_type: &'static str, text: &str) -> Response {
    Response { status: 200, content_type, headers: Vec::new(), body: text.as_bytes().to_vec() }
}

/// The page with its style inline: the first paint waits for no other request (issue 11:
/// under 100 ms on loopback), and the script, deferred, loads meanwhile.
fn page_text() -> String {
    PAGE.replace("{{STYLE}}", STYLE)
}

/// `/api/events`: the account, the shares and the downloads (`api::events`), each as an
/// event of that name whenever it changed, at most every `MIN_EVENT_GAP`, until the
/// browser goes away or the dashboard stops. A page that opens, or a login or upload made
/// in the REPL, shows at once (the page reloads its groups when the user changes).
fn stream_events(stream: &mut TcpStream, shared: &Shared) -> io::Result<()> {
    http::start_sse(stream)?;
    let mut last: Vec<String> = Vec::new();
    let mut last_sent = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        let events = api::events(&shared.peer);
        last.resize(events.len(), String::new());
        for ((name, value), last) in events.iter().zip(last.iter_mut()) {
            let now = value.to_string();
            if now != *last {
                http::sse_event(stream, name, &now)?;
                *last = now;
                last_sent = Instant::now();
            }
        }
        if last_sent.elapsed() >= KEEPALIVE {
            io::Write::write_all(stream, b": keepalive\n\n")?;
            last_sent = Instant::now();
        }
        // Paces the stream; the wait below catches what changes after it.
        std::thread::sleep(MIN_EVENT_GAP);
        shared.peer.downloads().wait_change(EVENT_TICK);
    }
    Ok(())
}
