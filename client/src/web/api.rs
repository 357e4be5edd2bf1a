//! The dashboard's JSON endpoints: each one calls one of `Peer`'s operations, as the REPL's
//! command of the same name does, and answers JSON. Endpoints that change state are POSTs
//! with a JSON object body; a GET to one of them is refused (405). Every failure is
//! `{"error": "<the REPL's text after error: >"}` with a 4xx or 5xx status. README's
//! "Dashboard" section lists them.

use std::str::FromStr;

use serde_json::{json, Map, Value};

use common::message::TrackerRole;
use common::{FileName, IdError};

use super::guard::Guard;
use super::http::{Request, Response};
use crate::download::record::DownloadState;
use crate::peer::{CommandError, Peer};
use crate::tracker_link::LinkError;
use crate::tracker_session::CallError;

/// Whether an endpoint reads (GET) or changes state (POST).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Change,
}

/// Every endpoint under `/api/`, with its kind.
const ENDPOINTS: &[(&str, Kind)] = &[
    ("account", Kind::Read),
    ("groups", Kind::Read),
    ("requests", Kind::Read),
    ("files", Kind::Read),
    ("shares", Kind::Read),
    ("downloads", Kind::Read),
    ("peers", Kind::Read),
    ("trackers", Kind::Read),
    ("create_user", Kind::Change),
    ("login", Kind::Change),
    ("logout", Kind::Change),
    ("create_group", Kind::Change),
    ("join_group", Kind::Change),
    ("leave_group", Kind::Change),
    ("accept_request", Kind::Change),
    ("reject_request", Kind::Change),
    ("remove_member", Kind::Change),
    ("upload_file", Kind::Change),
    ("download_file", Kind::Change),
    ("stop_share", Kind::Change),
    ("pause", Kind::Change),
    ("resume", Kind::Change),
    ("cancel", Kind::Change),
    ("limit_rate", Kind::Change),
];

/// A refusal: its status and message.
struct ApiError {
    status: u16,
    message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError { status: 400, message: message.into() }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> ApiError {
        let unreachable = matches!(
            e,
            CommandError::Link(LinkError::NoTracker { .. })
                | CommandError::Call(CallError::Link(LinkError::NoTracker { .. }))
        );
        ApiError { status: if unreachable { 502 } else { 409 }, message: e.to_string() }
    }
}

/// Answers one request under `/api/` (the site was checked already).
pub fn handle(peer: &Peer, guard: &Guard, request: &Request) -> Response {
    match route(peer, guard, request) {
        Ok(value) => Response::json(200, &value),
        Err(ApiError { status, message }) => {
            let response = Response::error(status, &message);
            match status {
                405 => response.with_header("Allow", allowed(request).into()),
                _ => response,
            }
        }
    }
}

fn allowed(request: &Request) -> &'static str {
    match kind(&request.path) {
        Some(Kind::Change) => "POST",
        _ => "GET",
    }
}

fn kind(path: &str) -> Option<Kind> {
    let name = path.strip_prefix("/api/")?;
    ENDPOINTS.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

fn route(peer: &Peer, guard: &Guard, request: &Request) -> Result<Value, ApiError> {
    let name = request.path.strip_prefix("/api/").unwrap_or_default();
    let kind = kind(&request.path)
        .ok_or_else(|| ApiError { status: 404, message: format!("no endpoint /api/{name}") })?;
    guard
        .check_token(request)
        .map_err(|refusal| ApiError { status: refusal.status(), message: refusal.to_string() })?;
    match (kind, request.method.as_str()) {
        (Kind::Read, "GET") => read(peer, name, request),
        (Kind::Change, "POST") => {
            let json_body = request.header("content-type").is_some_and(|t| {
                t.split(';').next().is_some_and(|t| t.trim() == "application/json")
            });
            if !json_body {
                return Err(ApiError {
                    status: 415,
                    message: "the body must be a JSON object (Content-Type: application/json)"
                        .into(),
                });
            }
            change(peer, name, &Body::parse(&request.body)?)
        }
        (Kind::Change, _) => {
            Err(ApiError { status: 405, message: format!("/api/{name} changes state: POST only") })
        }
        (Kind::Read, _) => Err(ApiError { status: 405, message: format!("/api/{name}: GET only") }),
    }
}

fn read(peer: &Peer, name: &str, request: &Request) -> Result<Value, ApiError> {
    let group = || -> Result<common::GroupId, ApiError> {
        let text = request.query_param("group").ok_or_else(|| ApiError::bad("missing ?group="))?;
        parse_id("group", &text)
    };
    Ok(match name {
        "account" => account_json(peer),
        "groups" => {
            let all = peer.list_groups(false, None)?;
            let mine = peer.list_groups(true, None)?;
            json!({
                "all": all.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
                "mine": mine.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
            })
        }
        "requests" => {
            let users = peer.list_requests(&group()?, None)?;
            json!({ "users": users.iter().map(|u| u.to_string()).collect::<Vec<_>>() })
        }
        "files" => {
            let files = peer.list_files(&group()?, None)?;
            let files: Vec<Value> = files
                .iter()
                .map(|f| {
                    let mut row = json!({
                        "name": f.name.to_string(),
                        "size": f.size,
                        "sharers": f.n_sharers,
                        "digest": f.digest.to_string(),
                    });
                    // A folder (issue 23): its file count; a file's object is as before.
                    if let (Some(n), Some(object)) = (f.n_files, row.as_object_mut()) {
                        object.insert("files".into(), json!(n));
                    }
                    row
                })
                .collect();
            json!({ "files": files })
        }
        "shares" => shares_json(&peer.list_shares()?),
        "downloads" => {
            peer.require_login()?;
            downloads_json(peer)
        }
        "peers" => {
            peer.require_login()?;
            peers_json(peer)
        }
        "trackers" => trackers_json(peer),
        _ => return Err(ApiError { status: 404, message: format!("no endpoint /api/{name}") }),
    })
}

fn change(peer: &Peer, name: &str, body: &Body) -> Result<Value, ApiError> {
    Ok(match name {
        "create_user" => {
            peer.create_user(&body.id("user")?, body.id("password")?, None)?;
            json!({ "ok": true })
        }
        "login" => {
            peer.login(&body.id("user")?, body.id("password")?, None)?;
            json!({ "ok": true })
        }
        "logout" => {
            peer.logout(body.flag("everywhere")?, None)?;
            json!({ "ok": true })
        }
        "create_group" => {
            peer.create_group(&body.id("group")?, None)?;
            json!({ "ok": true })
        }
        "join_group" => {
            peer.join_group(&body.id("group")?, None)?;
            json!({ "ok": true })
        }
        "leave_group" => {
            peer.leave_group(&body.id("group")?, None)?;
            json!({ "ok": true })
        }
        "accept_request" => {
            peer.accept_request(&body.id("group")?, &body.id("user")?, None)?;
            json!({ "ok": true })
        }
        "reject_request" => {
            peer.reject_request(&body.id("group")?, &body.id("user")?, None)?;
            json!({ "ok": true })
        }
        "remove_member" => {
            peer.remove_member(&body.id("group")?, &body.id("user")?, None)?;
            json!({ "ok": true })
        }
        "upload_file" => {
            let path = std::path::PathBuf::from(body.text("path")?);
            let up = peer.upload_file(&path, &body.id("group")?, None)?;
            let mut answer = json!({
                "name": up.name.to_string(),
                "group": up.group.to_string(),
                "size": up.size,
                "pieces": up.n_pieces,
                "new_file": up.new_file,
            });
            // A folder (issue 23): its file count and what was left out.
            if let (Some(n), Some(object)) = (up.n_files, answer.as_object_mut()) {
                object.insert("files".into(), json!(n));
                object.insert("skipped".into(), json!(up.skipped));
            }
            answer
        }
        "download_file" => {
            // Without a destination (or an empty one): the download directory.
            let destination = match body.0.get("destination") {
                None | Some(Value::Null) => None,
                Some(_) => Some(body.text("destination")?).filter(|d| !d.is_empty()),
            };
            let destination = destination.map(std::path::Path::new);
            // A folder, or part of one, as the REPL takes it (issue 23): `name/`,
            // `name/path`, `name/sub/`.
            let file = body.text("file")?;
            let (name, folder) = match common::folder::ItemRef::parse(file) {
                Ok(common::folder::ItemRef::Folder { name, selection }) => (name, Some(selection)),
                _ => (parse_id("file", file)?, None),
            };
            let dest =
                peer.download_file(&body.id("group")?, &name, folder.as_ref(), destination)?;
            json!({ "destination": dest.display().to_string() })
        }
        "stop_share" => {
            peer.stop_share(&body.id("group")?, &body.id("file")?, None)?;
            json!({ "ok": true })
        }
        "pause" => {
            peer.pause(&body.id("group")?, &body.item("file")?)?;
            json!({ "ok": true })
        }
        "resume" => {
            peer.resume(&body.id("group")?, &body.item("file")?)?;
            json!({ "ok": true })
        }
        "cancel" => {
            peer.cancel(&body.id("group")?, &body.item("file")?)?;
            json!({ "ok": true })
        }
        "limit_rate" => {
            let direction = match body.text("direction")? {
                "up" => crate::command::Direction::Up,
                "down" => crate::command::Direction::Down,
                other => {
                    return Err(ApiError::bad(format!("direction is up or down, not {other:?}")))
                }
            };
            let rate = crate::rate::parse_rate(body.text("rate")?)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            peer.limit_rate(direction, rate)?;
            rates_json(peer)
        }
        _ => return Err(ApiError { status: 404, message: format!("no endpoint /api/{name}") }),
    })
}

/// The events of `/api/events`, by name, as they are now: each is sent when it changed
/// (README, "Dashboard"). They cost no tracker call, so a stream may look every tick.
pub fn events(peer: &Peer) -> [(&'static str, Value); 5] {
    let shares = match peer.list_shares() {
        Ok(shares) => shares_json(&shares),
        Err(_) => json!({ "shares": [] }),
    };
    [
        ("account", account_json(peer)),
        ("shares", shares),
        ("downloads", downloads_json(peer)),
        ("peers", peers_json(peer)),
        ("trackers", trackers_json(peer)),
    ]
}

/// `/api/peers` (and each `peers` event): every peer of this session's downloads' swarms
/// and every downloader this peer served, one row per peer and file: `user`, `addr` (where
/// it serves pieces; for a downloader only seen by the seeder, the IP it came from), `path`
/// (how a download of this session reached it: `direct`, `reversed`, `punched` or
/// `relayed`, issue 19; null for a downloader), `has` (pieces of the file it has, as last heard; null if not
/// known), `pieces` (of the file), `served_me`, `served_them` (pieces), `connected` (to a
/// download of this session).
pub fn peers_json(peer: &Peer) -> Value {
    let Ok(records) = peer.show_downloads() else { return json!({ "peers": [] }) };
    let mut rows: Vec<Map<String, Value>> = Vec::new();
    for r in &records {
        let mut addrs: Vec<std::net::SocketAddr> = r.peer_have.keys().copied().collect();
        addrs.extend(r.from_peer.keys().copied());
        addrs.extend(r.connected.iter().copied());
        addrs.sort();
        addrs.dedup();
        for addr in addrs {
            let row = json!({
                "group": r.group.to_string(),
                "file": r.name.to_string(),
                "user": r.peer_users.get(&addr).map(|u| u.to_string()),
                "addr": addr.to_string(),
                "path": r.paths.get(&addr).map(|p| p.as_str()),
                "has": r.peer_have.get(&addr),
                "pieces": r.n_pieces,
                "served_me": r.from_peer.get(&addr).copied().unwrap_or(0),
                "served_them": 0,
                // A finished download's record keeps the peers it last had.
                "connected": r.state == DownloadState::Running && r.connected.contains(&addr),
            });
            if let Value::Object(row) = row {
                rows.push(row);
            }
        }
    }
    for served in peer.served() {
        let (group, file, user) =
            (served.group.to_string(), served.name.to_string(), served.user.to_string());
        let same = |row: &&mut Map<String, Value>| {
            row["group"] == group.as_str()
                && row["file"] == file.as_str()
                && row["user"] == user.as_str()
        };
        match rows.iter_mut().find(same) {
            Some(row) => {
                row.insert("served_them".into(), json!(served.to.pieces));
            }
            None => {
                let row = json!({
                    "group": group,
                    "file": file,
                    "user": user,
                    "addr": served.to.from.to_string(),
                    "path": null,
                    "has": null,
                    "pieces": null,
                    "served_me": 0,
                    "served_them": served.to.pieces,
                    "connected": false,
                });
                if let Value::Object(row) = row {
                    rows.push(row);
                }
            }
        }
    }
    let key = |row: &Map<String, Value>| {
        ["group", "file", "user", "addr"].map(|k| row[k].as_str().unwrap_or_default().to_string())
    };
    rows.sort_by_key(key);
    json!({ "peers": rows })
}

/// `/api/trackers` (and each `trackers` event): the trackers `tracker_info.txt` lists, as
/// this client's links last found them, and the failover events (README, "Dashboard").
pub fn trackers_json(peer: &Peer) -> Value {
    let seen = peer.trackers();
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    };
    let mut trackers: Vec<Value> = Vec::new();
    // Roles as the last tracker that told its status sees them: its own, and its leader's.
    let role_of = |id: Option<u32>| -> Option<String> {
        let (_, status) = seen.status.as_ref()?;
        let id = id?;
        if id == status.id {
            return Some(status.role.to_string());
        }
        match status.role {
            TrackerRole::Backup { leader } if leader == id => Some("primary".into()),
            _ if status.voters.contains(&id) => Some("voter".into()),
            _ => None,
        }
    };
    let row = |id: Option<u32>, shown: String, at: Option<std::net::SocketAddr>, key| {
        let found = at.and_then(|addr| seen.seen.iter().find(|(a, _)| *a == addr)).map(|(_, s)| s);
        let id = id.or_else(|| found.and_then(|s| s.id));
        json!({
            "role": role_of(id),
            "id": id,
            "addr": shown,
            "key_listed": key,
            "state": found.map_or("not tried yet", |s| s.state.word()),
            "reason": found.and_then(|s| s.state.reason()),
            "since_ms": found.map(|s| unix(s.since)),
            "serving": at.is_some() && seen.serving == at,
        })
    };
    // A listed address is one row; a host name is a row for each address of it that a
    // link tried (`name:port (addr)`), or one row while none was.
    let mut shown_addrs = Vec::new();
    for (id, listed, key) in &seen.listed {
        match listed.ip() {
            Some(addr) => {
                trackers.push(row(Some(*id), addr.to_string(), Some(addr), Some(*key)));
                shown_addrs.push(addr);
            }
            None => {
                let tried: Vec<std::net::SocketAddr> =
                    seen.seen.iter().filter(|(_, s)| s.id == Some(*id)).map(|(a, _)| *a).collect();
                if tried.is_empty() {
                    trackers.push(row(Some(*id), listed.to_string(), None, Some(*key)));
                }
                for addr in tried {
                    let shown = format!("{listed} ({addr})");
                    trackers.push(row(Some(*id), shown, Some(addr), Some(*key)));
                    shown_addrs.push(addr);
                }
            }
        }
    }
    for (addr, _) in seen.seen.iter().filter(|(a, _)| !shown_addrs.contains(a)) {
        trackers.push(row(None, addr.to_string(), Some(*addr), None));
    }
    let events: Vec<Value> =
        seen.events.iter().map(|e| json!({ "at_ms": unix(e.at), "text": e.text })).collect();
    let status = seen.status.as_ref().map(|(at, s)| {
        json!({
            "id": s.id,
            "role": s.role.to_string(),
            "term": s.term,
            "voters": s.voters,
            "reach": s.reach,
            "commit": s.commit,
            "applied": s.applied,
            "at_ms": unix(*at),
        })
    });
    json!({
        "status": status,
        "serving": seen.serving.map(|a| a.to_string()),
        "last": seen.last.map(|a| a.to_string()),
        "trackers": trackers,
        "events": events,
    })
}

/// `/api/account` (and each `account` event): who is logged in, the tracker that answered
/// last, and where this peer serves pieces.
pub fn account_json(peer: &Peer) -> Value {
    let account = peer.account();
    json!({
        "user": account.user.map(|u| u.to_string()),
        "tracker": account.tracker.map(|t| t.to_string()),
        "listen": account.listen.to_string(),
        "rates": rates_json(peer),
        "join_requests": peer
            .pending_requests()
            .into_iter()
            .map(|(group, user)| json!({ "group": group.to_string(), "user": user.to_string() }))
            .collect::<Vec<_>>(),
    })
}

/// This peer's caps, in bytes per second (`null`: unlimited), as `limit_rate` shows them.
fn rates_json(peer: &Peer) -> Value {
    let (up, down) = peer.rate_limits();
    json!({ "up": up, "down": down })
}

/// `/api/shares` (and each `shares` event): what `list_shares` lists.
fn shares_json(shares: &[std::sync::Arc<crate::swarm::Swarm>]) -> Value {
    let shares: Vec<Value> = shares
        .iter()
        .map(|swarm| {
            swarm.inspect(|s| {
                json!({
                    "group": swarm.group.to_string(),
                    "name": swarm.meta.name.to_string(),
                    "item": swarm.shown_name(),
                    "size": swarm.chosen.size,
                    "pieces": swarm.chosen.wanted.count(),
                    "pieces_have": swarm.chosen.count_in(s.have()),
                    "path": s.path().display().to_string(),
                    "downloading_to": s.downloading_to().map(|d| d.display().to_string()),
                })
            })
        })
        .collect();
    json!({ "shares": shares })
}

/// `/api/downloads` (and each `downloads` event): every download of this session as
/// `show_downloads --json` shows it, plus `id`, `bytes_done`, `bytes_per_sec` (since the
/// start), `sources` (peer addresses) and `piece_map` (one number a piece: 0 missing, 255
/// resumed from disk, k from `sources[k - 1]`).
pub fn downloads_json(peer: &Peer) -> Value {
    let records = match peer.show_downloads() {
        Ok(records) => records,
        Err(e) => return json!({ "downloads": [], "error": e.to_string() }),
    };
    let downloads: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut v = r.json_value();
            let bytes_done = (u64::from(r.n_have) * common::PIECE_SIZE as u64).min(r.size);
            let seconds = r.seconds();
            let rate = if seconds > 0.0 { r.bytes_fetched as f64 / seconds } else { 0.0 };
            if let Some(map) = v.as_object_mut() {
                map.insert("id".into(), json!(r.id));
                map.insert("bytes_done".into(), json!(bytes_done));
                map.insert("bytes_per_sec".into(), json!(rate.round()));
                // The rate of the last few seconds, and the time left at it (null: nothing
                // arrived lately, or not running).
                map.insert("recent_bytes_per_sec".into(), json!(r.recent_rate().round()));
                map.insert("eta_seconds".into(), json!(r.eta().map(|d| d.as_secs())));
                map.insert("running".into(), json!(r.state == DownloadState::Running));
                map.insert("paused".into(), json!(r.state == DownloadState::Paused));
                map.insert(
                    "sources".into(),
                    json!(r.sources.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
                );
                map.insert("piece_map".into(), json!(r.piece_source));
                // A folder's download (issue 23): its files, for the file tree.
                let files: Vec<Value> = r
                    .files
                    .iter()
                    .map(|f| {
                        json!({
                            "path": f.path,
                            "size": f.size,
                            "pieces": f.n_pieces,
                            "pieces_have": f.n_have,
                        })
                    })
                    .collect();
                map.insert("files".into(), json!(files));
                map.insert("files_total".into(), json!(r.n_files));
                map.insert(
                    "source_names".into(),
                    json!(r.sources.iter().map(|a| r.peer_name(a)).collect::<Vec<_>>()),
                );
                map.insert("chart".into(), chart_json(r));
            }
            v
        })
        .collect();
    json!({ "downloads": downloads })
}

/// Points of a throughput chart at most.
const MAX_CHART_POINTS: u64 = 60;
/// The narrowest time step of a chart.
const MIN_CHART_STEP_MS: u64 = 250;

/// A download's per-peer throughput over time, from when each piece arrived: `step_ms`
/// and, for each peer of `sources` (in that order), `rates`, the bytes per second received
/// from it in each step since the start (at most `MAX_CHART_POINTS` steps).
fn chart_json(r: &crate::download::record::DownloadRecord) -> Value {
    use crate::download::record::{PIECE_MISSING, PIECE_NOT_TIMED, PIECE_RESUMED};
    let end = r.finished.unwrap_or_else(std::time::Instant::now).duration_since(r.started);
    let end_ms = (end.as_millis() as u64).max(1);
    let step_ms = end_ms.div_ceil(MAX_CHART_POINTS).max(MIN_CHART_STEP_MS);
    let n_steps = end_ms.div_ceil(step_ms).clamp(1, MAX_CHART_POINTS) as usize;
    // One series per source, plus one for the peers beyond the map's 253 sources.
    let mut bytes = vec![vec![0u64; n_steps]; r.sources.len() + 1];
    let layout = common::Layout::new(r.size).ok();
    for (i, (&source, &ms)) in r.piece_source.iter().zip(&r.piece_ms).enumerate() {
        if source == PIECE_MISSING || source == PIECE_RESUMED || ms == PIECE_NOT_TIMED {
            continue;
        }
        let series = usize::from(source).min(r.sources.len() + 1) - 1;
        let step = ((u64::from(ms) / step_ms) as usize).min(n_steps - 1);
        let len = layout.as_ref().map_or(0, |l| l.piece_len(common::PieceIndex(i as u32)) as u64);
        if let Some(slot) = bytes.get_mut(series).and_then(|s| s.get_mut(step)) {
            *slot += len;
        }
    }
    let rates: Vec<Vec<u64>> =
        bytes.iter().map(|s| s.iter().map(|b| b * 1000 / step_ms).collect()).collect();
    json!({ "step_ms": step_ms, "rates": rates })
}

/// A request's JSON object body.
struct Body(Map<String, Value>);

impl Body {
    fn parse(bytes: &[u8]) -> Result<Body, ApiError> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Body(map)),
            Ok(_) => Err(ApiError::bad("the body must be a JSON object")),
            Err(e) => Err(ApiError::bad(format!("the body is not JSON: {e}"))),
        }
    }

    fn text(&self, key: &str) -> Result<&str, ApiError> {
        match self.0.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(ApiError::bad(format!("'{key}' must be a string"))),
            None => Err(ApiError::bad(format!("missing '{key}'"))),
        }
    }

    fn id<T: FromStr<Err = IdError>>(&self, key: &str) -> Result<T, ApiError> {
        parse_id(key, self.text(key)?)
    }

    /// The shared item a download is named by: `name`, or a folder's (`name/`,
    /// `name/path`, `name/sub/`; issue 23), whose download is the folder's.
    fn item(&self, key: &str) -> Result<FileName, ApiError> {
        let text = self.text(key)?;
        match common::folder::ItemRef::parse(text) {
            Ok(common::folder::ItemRef::Folder { name, .. }) => Ok(name),
            _ => parse_id(key, text),
        }
    }

    /// An optional boolean, `false` when absent.
    fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::bad(format!("'{key}' must be true or false"))),
        }
    }
}

/// An id, validated as the REPL validates it.
fn parse_id<T: FromStr<Err = IdError>>(key: &str, text: &str) -> Result<T, ApiError> {
    text.parse().map_err(|e: IdError| {
        ApiError::bad(format!("invalid {key} '{}': {e}", text.escape_debug()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_has_one_kind_and_bodies_are_checked() {
        assert_eq!(kind("/api/login"), Some(Kind::Change));
        assert_eq!(kind("/api/files"), Some(Kind::Read));
        assert_eq!(kind("/api/nope"), None);
        assert!(Body::parse(b"[1]").is_err());
        assert!(Body::parse(b"{").is_err());
        let body = Body::parse(br#"{"group":"g 1","everywhere":1,"user":"bob"}"#).ok().unwrap();
        assert!(body.id::<common::GroupId>("group").is_err());
        assert!(body.flag("everywhere").is_err());
        assert!(body.text("missing").is_err());
        assert_eq!(
            body.id::<common::UserId>("user").ok().map(|u| u.to_string()),
            Some("bob".into())
        );
    }
}
