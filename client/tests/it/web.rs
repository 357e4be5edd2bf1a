//! The dashboard (issue 11) over HTTP on the real client binary: who may use it (token in a
//! header only, `Host`, `Origin`, POST for changes, bounded bodies), that its token reaches
//! no other local server (issue 21), and one user's path through its
//! JSON API: log in, create a group, accept a member, list files, download from the other
//! client and watch the progress reach done on the event stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use serde_json::{json, Value};

use crate::support::{assert_same_file, write_random, ClientProc, Cluster, TIMEOUT};

/// The dashboard of a client, as its `web` command prints it.
struct Web {
    addr: SocketAddr,
    token: String,
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

impl Web {
    fn of(c: &mut ClientProc) -> Web {
        let out = c.run("web");
        let url = out.last().unwrap().clone();
        let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("{out:?}"));
        let (addr, token) = rest.split_once("/#token=").unwrap_or_else(|| panic!("{out:?}"));
        Web { addr: addr.parse().unwrap(), token: token.to_string() }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Sends `raw` as it is and reads the whole answer (the server closes after one).
    fn raw(&self, raw: &[u8]) -> Answer {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.write_all(raw).unwrap();
        let mut bytes = Vec::new();
        // The server may close before it read a body it refused: what it sent still counts.
        let _ = stream.read_to_end(&mut bytes);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{text:?}"));
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Answer { status, head: head.to_string(), body: body.to_string() }
    }

    /// A request with the usual headers plus `extra` lines.
    fn request(&self, method: &str, path: &str, extra: &[&str], body: &str) -> Answer {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host());
        for line in extra {
            raw.push_str(line);
            raw.push_str("\r\n");
        }
        raw.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.raw(raw.as_bytes())
    }

    fn bearer(&self) -> String {
        format!("Authorization: Bearer {}", self.token)
    }

    fn get(&self, path: &str) -> Answer {
        self.request("GET", path, &[&self.bearer()], "")
    }

    fn post(&self, path: &str, body: Value) -> Answer {
        let ct = "Content-Type: application/json";
        self.request("POST", path, &[&self.bearer(), ct], &body.to_string())
    }

    /// A GET that must succeed; its JSON.
    #[track_caller]
    fn ok_get(&self, path: &str) -> Value {
        let answer = self.get(path);
        assert_eq!(answer.status, 200, "GET {path}: {answer:?}");
        answer.json()
    }

    /// A POST that must succeed; its JSON.
    #[track_caller]
    fn ok_post(&self, path: &str, body: Value) -> Value {
        let answer = self.post(path, body);
        assert_eq!(answer.status, 200, "POST {path}: {answer:?}");
        answer.json()
    }
}

#[test]
fn the_dashboard_refuses_strangers_other_sites_state_changing_gets_and_big_bodies() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut plain = cluster.client("plain");
    plain.err("web", "no dashboard: start the client with --web 127.0.0.1:PORT");
    let mut c = cluster.client_with("a", &["--web", "127.0.0.1:0"]);
    let web = Web::of(&mut c);
    assert!(web.addr.ip().is_loopback() && web.token.len() == 64, "{}", web.token);
    let host = format!("Host: {}", web.host());

    // No token, or a wrong one: 401.
    let answer = web.raw(format!("GET /api/account HTTP/1.1\r\n{host}\r\n\r\n").as_bytes());
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(answer.json()["error"].as_str().unwrap().contains("token"), "{answer:?}");
    let wrong = "Authorization: Bearer 0000";
    assert_eq!(web.request("GET", "/api/account", &[wrong], "").status, 401);
    let events = web.request("GET", "/api/events", &[wrong], "");
    assert_eq!(events.status, 401, "{events:?}");

    // The page holds no secret, so it is served without the token (the browser does not
    // send the URL's fragment, where the token is); it sets no cookie.
    let page = web.request("GET", "/", &[], "");
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("p2p-groups") && page.head.contains("Content-Security-Policy"));
    assert!(!page.body.contains(&web.token) && !page.head.contains("Set-Cookie"), "{page:?}");

    // Another site's name (DNS rebinding) or origin: 403, even with the token.
    let answer = web.raw(
        format!(
            "GET /api/account HTTP/1.1\r\nHost: evil.example:{}\r\n{}\r\n\r\n",
            web.addr.port(),
            web.bearer()
        )
        .as_bytes(),
    );
    assert_eq!(answer.status, 403, "{answer:?}");
    let page = web.raw(
        format!("GET / HTTP/1.1\r\nHost: evil.example:{}\r\n\r\n", web.addr.port()).as_bytes(),
    );
    assert_eq!(page.status, 403, "{page:?}");
    let evil = "Origin: http://evil.example";
    assert_eq!(web.request("GET", "/api/account", &[&web.bearer(), evil], "").status, 403);
    let ct = "Content-Type: application/json";
    let body = r#"{"group":"evil"}"#;
    let answer = web.request("POST", "/api/create_group", &[&web.bearer(), evil, ct], body);
    assert_eq!(answer.status, 403, "{answer:?}");
    let cross = "Sec-Fetch-Site: cross-site";
    assert_eq!(web.request("GET", "/api/account", &[&web.bearer(), cross], "").status, 403);

    // A GET that would change state: 405, and nothing changed.
    let answer = web.get("/api/logout");
    assert_eq!(answer.status, 405, "{answer:?}");
    assert!(answer.head.contains("Allow: POST"), "{answer:?}");
    // A POST that is not JSON (a plain form): 415.
    let form = "Content-Type: application/x-www-form-urlencoded";
    assert_eq!(web.request("POST", "/api/login", &[&web.bearer(), form], "user=a").status, 415);

    // Oversized: a body announced over 64 KiB is refused before it is read, a head over
    // 16 KiB too; chunked bodies are not taken.
    let answer = web.raw(
        format!(
            "POST /api/login HTTP/1.1\r\n{host}\r\n{}\r\n{ct}\r\nContent-Length: 10000000\r\n\r\n",
            web.bearer()
        )
        .as_bytes(),
    );
    assert_eq!(answer.status, 413, "{answer:?}");
    let long =
        format!("GET /api/account HTTP/1.1\r\n{host}\r\nX-Long: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(web.raw(long.as_bytes()).status, 431);
    let chunked =
        format!("POST /api/login HTTP/1.1\r\n{host}\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(web.raw(chunked.as_bytes()).status, 411);

    // Bad input: a clear JSON error, never a crash.
    for (path, body) in [
        ("/api/login", "{not json"),
        ("/api/login", "[1, 2]"),
        ("/api/login", r#"{"user":"a b","password":"x"}"#),
        ("/api/create_group", r#"{"group":7}"#),
    ] {
        let answer = web.request("POST", path, &[&web.bearer(), ct], body);
        assert_eq!(answer.status, 400, "{path} {body}: {answer:?}");
        assert!(answer.json()["error"].is_string(), "{answer:?}");
    }
    // Issue 21: a name with an invisible or bidirectional character, as in the REPL.
    for (path, body, code) in [
        ("/api/create_group", json!({ "group": "g\u{200b}1" }), "U+200B"),
        ("/api/login", json!({ "user": "bob\u{202e}", "password": "pw" }), "U+202E"),
    ] {
        let answer = web.post(path, body);
        assert_eq!(answer.status, 400, "{path}: {answer:?}");
        let error = answer.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(code) && error.contains("invisible"), "{error}");
    }
    let answer = web.post("/api/create_group", json!({ "group": "g" }));
    assert_eq!(answer.status, 409, "{answer:?}");
    assert_eq!(answer.json()["error"], "not logged in");
    assert_eq!(web.get("/api/nothing").status, 404);
    assert_eq!(web.raw(b"\x16\x03\x01 not http\r\n\r\n").status, 400);

    // The client lived through all of it, and no state changed.
    assert_eq!(web.ok_get("/api/account")["user"], Value::Null);
    c.ok("create_user a pw-a", "created user a");
    c.ok("login a pw-a", "logged in as a");
    assert!(c.run("list_groups").is_empty());
}

/// What a browser keeps of a server's `Set-Cookie` headers: `name=value` pairs, which it
/// sends back to every server of the same host, whatever the port.
fn cookies_set(answer: &Answer) -> Vec<String> {
    let lines = answer.head.lines().filter_map(|l| l.strip_prefix("Set-Cookie: "));
    lines.map(|l| l.split(';').next().unwrap().to_string()).collect()
}

/// Issue 21: the dashboard's token leaked to every other server on 127.0.0.1 through its
/// cookie (cookies ignore ports), and a local attacker used it to make the client share its
/// own key. Here a client imitating a browser follows the printed URL and uses the page
/// as it does, then visits another local server: that server gets no token, and neither a
/// cookie nor a `?token=` (what a browser might send by itself, or log) opens the API.
#[test]
fn the_token_reaches_no_other_local_server_and_only_its_header_opens_the_api() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.client_with("a", &["--web", "127.0.0.1:0"]);
    let url = c.run("web").last().unwrap().clone();
    let web = Web::of(&mut c);
    let (before_fragment, fragment) = url.split_once('#').unwrap();
    assert_eq!(fragment, format!("token={}", web.token));
    assert_eq!(before_fragment, format!("http://{}/", web.addr));

    // The browser: the page (the URL without its fragment, which browsers never send),
    // its script, and the page's own calls with the token in a header; every cookie kept.
    let mut jar = Vec::new();
    for answer in [
        web.request("GET", "/", &[], ""),
        web.request("GET", "/app.js", &[], ""),
        web.get("/api/account"),
        web.get("/api/downloads"),
        web.post("/api/logout", json!({})),
    ] {
        assert!(!answer.body.contains(&web.token), "{answer:?}");
        jar.extend(cookies_set(&answer));
    }
    assert_eq!(jar, Vec::<String>::new(), "the dashboard sets no cookie");

    // Another server on 127.0.0.1, as the attacker ran it; the browser visits it, sending
    // what it keeps for that host.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_addr = other.local_addr().unwrap();
    let visit = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(other_addr).unwrap();
        let mut raw = format!("GET /steal HTTP/1.1\r\nHost: {other_addr}\r\n");
        if !jar.is_empty() {
            raw.push_str(&format!("Cookie: {}\r\n", jar.join("; ")));
        }
        raw.push_str("\r\n");
        stream.write_all(raw.as_bytes()).unwrap();
    });
    let (mut stream, _) = other.accept().unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut received = String::new();
    // The visitor closes once it sent its request.
    stream.read_to_string(&mut received).unwrap();
    visit.join().unwrap();
    assert!(received.starts_with("GET /steal HTTP/1.1\r\n"), "{received:?}");
    assert!(!received.contains(&web.token), "another local server got the token: {received}");

    // Neither a cookie nor the query counts: only the Authorization header.
    let port = web.addr.port();
    for cookie in
        [format!("Cookie: p2p_token_{port}={}", web.token), format!("Cookie: token={}", web.token)]
    {
        for (method, path, body) in
            [("GET", "/api/account", ""), ("POST", "/api/create_group", r#"{"group":"x"}"#)]
        {
            let ct = "Content-Type: application/json";
            let answer = web.request(method, path, &[&cookie, ct], body);
            assert_eq!(answer.status, 401, "{method} {path} with {cookie}: {answer:?}");
        }
        let events = web.request("GET", "/api/events", &[&cookie], "");
        assert_eq!(events.status, 401, "{events:?}");
    }
    // A token in the query is refused even when right, and even with the header too: it
    // must not be in a URL at all (history, logs).
    for path in ["/", "/api/account", "/api/events", "/app.js"] {
        for token in [web.token.as_str(), "nope"] {
            let answer = web.request("GET", &format!("{path}?token={token}"), &[], "");
            assert_eq!(answer.status, 400, "{path}: {answer:?}");
            assert!(answer.body.contains("never taken from a URL"), "{answer:?}");
        }
    }
    let answer =
        web.request("GET", &format!("/api/account?token={}", web.token), &[&web.bearer()], "");
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(web.ok_get("/api/account")["user"], Value::Null);
    c.ok("create_user a pw-a", "created user a");
}

/// Reads the event stream until a `downloads` event in which every download is done;
/// returns that event's data.
fn wait_downloads_done(web: &Web) -> Value {
    wait_event(web, "downloads", |data| {
        let downloads = data["downloads"].as_array().unwrap();
        !downloads.is_empty() && downloads.iter().all(|d| d["state"] != "downloading")
    })
}

/// Reads the event stream until an event named `name` whose data satisfies `wanted`;
/// returns that data.
fn wait_event(web: &Web, name: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let mut stream = TcpStream::connect(web.addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(stream, "GET /api/events HTTP/1.1\r\nHost: {}\r\n{}\r\n\r\n", web.host(), web.bearer())
        .unwrap();
    let mut reader = BufReader::new(stream);
    let deadline = Instant::now() + TIMEOUT;
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut line = String::new();
    let mut event = String::new();
    loop {
        assert!(Instant::now() < deadline, "no {name} event as wanted in time");
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "event stream closed");
        if let Some(named) = line.strip_prefix("event: ") {
            event = named.trim().to_string();
            continue;
        }
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if event != name {
            continue;
        }
        let data: Value = serde_json::from_str(data).unwrap();
        if wanted(&data) {
            return data;
        }
    }
}

#[test]
fn through_the_dashboard_a_user_logs_in_manages_a_group_and_downloads_from_a_peer() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut dash = cluster.client_with("dash", &["--web", "127.0.0.1:0"]);
    let web = Web::of(&mut dash);
    let mut seeder = cluster.client_with("seeder", &["--max-upload-rate", "4000000"]);

    web.ok_post("/api/create_user", json!({ "user": "alice", "password": "pw-alice" }));
    let answer = web.post("/api/login", json!({ "user": "alice", "password": "wrong" }));
    assert_eq!((answer.status, answer.json()["error"].as_str()), (409, Some("wrong password")));
    web.ok_post("/api/login", json!({ "user": "alice", "password": "pw-alice" }));
    let account = web.ok_get("/api/account");
    assert_eq!(account["user"], "alice");
    assert_eq!(account["tracker"], cluster_tracker(&cluster));
    assert_eq!(account["listen"], dash.listen.to_string());
    // The REPL and the dashboard are views of one client: the REPL sees the login.
    dash.err("login alice pw-alice", "already logged in as alice; logout first");

    web.ok_post("/api/create_group", json!({ "group": "g" }));
    assert_eq!(web.ok_get("/api/groups"), json!({ "all": ["g"], "mine": ["g"] }));
    seeder.sign_up("bob");
    seeder.ok("join_group g", "requested to join group g");
    assert_eq!(web.ok_get("/api/requests?group=g"), json!({ "users": ["bob"] }));
    // Issue 20: the owner is told, from the heartbeats, until the request is handled.
    let notice = json!([{ "group": "g", "user": "bob" }]);
    wait_event(&web, "account", |a| a["join_requests"] == notice);
    web.ok_post("/api/accept_request", json!({ "group": "g", "user": "bob" }));
    assert_eq!(web.ok_get("/api/account")["join_requests"], json!([]));
    assert_eq!(web.ok_get("/api/requests?group=g"), json!({ "users": [] }));
    assert_eq!(seeder.run("list_my_groups"), ["g"]);

    // A file of the seeder's, listed and downloaded through the dashboard.
    let original = cluster.path("film.bin");
    write_random(&original, 5 * 1024 * 1024 + 77, 11);
    seeder.run1(&format!("upload_file {} g", original.display()));
    let files = web.ok_get("/api/files?group=g");
    assert_eq!(files["files"][0]["name"], "film.bin", "{files}");
    assert_eq!(files["files"][0]["size"], 5 * 1024 * 1024 + 77);
    assert_eq!(files["files"][0]["sharers"], 1);
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    let started = web.ok_post(
        "/api/download_file",
        json!({ "group": "g", "file": "film.bin", "destination": out.display().to_string() }),
    );
    assert_eq!(started["destination"], out.join("film.bin").display().to_string());
    let answer = web.post(
        "/api/download_file",
        json!({ "group": "g", "file": "film.bin", "destination": out.display().to_string() }),
    );
    assert_eq!(answer.status, 409, "{answer:?}");

    let done = wait_downloads_done(&web);
    let d = &done["downloads"][0];
    assert_eq!(d["state"], "complete", "{done}");
    assert_eq!(
        (d["bytes_done"].as_u64(), d["size"].as_u64()),
        (Some(5 * 1024 * 1024 + 77), Some(5 * 1024 * 1024 + 77))
    );
    assert_eq!(d["pieces_have"], 11);
    let piece_map = d["piece_map"].as_array().unwrap();
    assert_eq!(piece_map.len(), 11);
    assert!(piece_map.iter().all(|p| p == 1), "{d}");
    assert_eq!(d["sources"], json!([seeder.listen.to_string()]));
    assert_same_file(&original, &out.join("film.bin"));
    assert_eq!(web.ok_get("/api/downloads")["downloads"][0]["state"], "complete");
    let chart = &d["chart"];
    let rates = chart["rates"][0].as_array().unwrap();
    assert!(chart["step_ms"].as_u64().unwrap() >= 250 && !rates.is_empty(), "{chart}");
    assert!(rates.iter().any(|r| r.as_u64().unwrap() > 0), "{chart}");

    // The peers and the trackers, as the page's panels show them.
    let peers = web.ok_get("/api/peers");
    assert_eq!(
        peers["peers"],
        json!([{ "group": "g", "file": "film.bin", "user": "bob",
                 "addr": seeder.listen.to_string(), "path": "direct", "has": 11, "pieces": 11,
                 "served_me": 11, "served_them": 0, "connected": false }]),
        "{peers}"
    );
    let trackers = web.ok_get("/api/trackers");
    let t = &trackers["trackers"][0];
    assert_eq!(
        (&t["id"], &t["serving"], &t["key_listed"]),
        (&json!(1), &json!(true), &json!(true))
    );
    assert_eq!(trackers["serving"], cluster_tracker(&cluster));
    let first = trackers["events"][0]["text"].as_str().unwrap();
    assert_eq!(first, format!("served by tracker 1 at {}", cluster_tracker(&cluster)));
    // The REPL shows the same download.
    let line = dash.run1("show_downloads");
    assert!(line.starts_with("[C] [g] film.bin -> "), "{line}");

    // Shares: the downloaded file, then an upload from a local path, then stop sharing.
    let mine = cluster.path("notes.txt");
    std::fs::write(&mine, b"hello").unwrap();
    let up = web
        .ok_post("/api/upload_file", json!({ "path": mine.display().to_string(), "group": "g" }));
    assert_eq!(
        up,
        json!({ "name": "notes.txt", "group": "g", "size": 5, "pieces": 1, "new_file": true })
    );
    let shares = web.ok_get("/api/shares");
    let names: Vec<&str> =
        shares["shares"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["film.bin", "notes.txt"], "{shares}");
    web.ok_post("/api/stop_share", json!({ "group": "g", "file": "notes.txt" }));
    assert_eq!(dash.run("list_shares").len(), 1);
    let answer = web.post("/api/upload_file", json!({ "path": "/no/such/file", "group": "g" }));
    assert_eq!(answer.status, 409, "{answer:?}");
    assert!(answer.json()["error"].as_str().unwrap().contains("no such file"), "{answer:?}");

    // The owner removes bob (issue 21); removing him again is refused, saying why.
    web.ok_post("/api/remove_member", json!({ "group": "g", "user": "bob" }));
    assert!(seeder.run("list_my_groups").is_empty());
    let answer = web.post("/api/remove_member", json!({ "group": "g", "user": "bob" }));
    assert_eq!(answer.status, 409, "{answer:?}");
    assert_eq!(answer.json()["error"], "bob is not a member of group g", "{answer:?}");

    web.ok_post("/api/logout", json!({}));
    assert_eq!(web.ok_get("/api/account")["user"], Value::Null);
    dash.err(
        "list_groups",
        "not logged in; login <user_id> <passwd> first (create_user makes an account)",
    );
}

/// The address of the cluster's only tracker, as the account shows it.
fn cluster_tracker(cluster: &Cluster) -> String {
    let info = common::tracker_info::TrackerInfo::load(&cluster.info).unwrap();
    info.addr(1).unwrap().to_string()
}

#[test]
fn the_trackers_panel_shows_the_client_failing_over_when_its_tracker_dies() {
    let cluster = Cluster::new(3);
    let mut trackers = cluster.start_all();
    let mut c = cluster.client_with("a", &["--web", "127.0.0.1:0"]);
    let web = Web::of(&mut c);
    c.sign_up("alice");
    let before = web.ok_get("/api/trackers");
    let listed = before["trackers"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{before}");
    let serving = before["serving"].as_str().unwrap().to_string();
    let i = listed.iter().position(|t| t["addr"] == serving.as_str()).unwrap();
    assert_eq!(listed[i]["state"], "connected", "{before}");
    assert_eq!(listed[i]["serving"], true, "{before}");

    // Roles, as the tracker that serves the client tells them (asked with each heartbeat).
    let told = wait_event(&web, "trackers", |t| !t["status"].is_null());
    let primaries: Vec<&Value> =
        told["trackers"].as_array().unwrap().iter().filter(|t| t["role"] == "primary").collect();
    assert_eq!(primaries.len(), 1, "{told}");
    let status = &told["status"];
    assert_eq!(status["voters"], json!([1, 2, 3]), "{told}");
    assert_eq!(listed[i]["id"], status["id"], "the serving tracker tells: {told}");

    // The client's tracker dies; its next call fails over, and the panel says so.
    trackers[i].kill();
    c.ok("create_group g", "created group g");
    let after = web.ok_get("/api/trackers");
    let now = after["serving"].as_str().unwrap();
    assert_ne!(now, serving, "{after}");
    let dead = &after["trackers"][i];
    assert!(["lost", "unusable"].contains(&dead["state"].as_str().unwrap()), "{after}");
    assert_eq!(dead["serving"], false, "{after}");
    let events: Vec<&str> =
        after["events"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap()).collect();
    // It moved off the dead tracker (maybe to one that could not serve yet, while the
    // others elected a leader: it may have moved on again), and the last move names the
    // tracker serving now.
    let moves: Vec<&&str> = events.iter().filter(|e| e.starts_with("now served by ")).collect();
    let off_the_dead = format!("(was tracker {} at {serving})", i + 1);
    assert!(moves.iter().any(|e| e.ends_with(&off_the_dead)), "{events:?}");
    let last = moves.last().expect("a move");
    assert!(last.contains(&format!(" at {now} (was ")), "{events:?}");
    // The next status comes from the tracker that serves now.
    let dead_id = i as u64 + 1;
    let told = wait_event(&web, "trackers", |t| {
        t["status"]["id"].as_u64().is_some_and(|id| id != dead_id)
    });
    assert!(told["events"].to_string().contains(" says: "), "{told}");
}

/// Issue 20: the dashboard pauses, resumes and cancels a download, and sets the caps, as the
/// REPL does (one `Peer` operation each).
#[test]
fn through_the_dashboard_a_download_is_paused_resumed_cancelled_and_the_caps_set() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "dash"], &[]);
    c[1].send_line("exit");
    c[1].close_stdin();
    let mut dash = cluster.client_with("dash", &["--web", "127.0.0.1:0"]);
    dash.resumed("dash");
    let web = Web::of(&mut dash);
    c[0].ok("limit_rate up 500K", "upload 500.0 kB/s, download unlimited");
    let original = cluster.path("f.bin");
    write_random(&original, 8 * 1024 * 1024, 41);
    c[0].run1(&format!("upload_file {} g", original.display()));

    let rates = web.ok_post("/api/limit_rate", json!({ "direction": "down", "rate": "2M" }));
    assert_eq!(rates, json!({ "up": null, "down": 2_000_000 }));
    assert_eq!(web.ok_get("/api/account")["rates"], rates);
    dash.ok("limit_rate", "upload unlimited, download 2.0 MB/s");
    let bad = web.post("/api/limit_rate", json!({ "direction": "down", "rate": "fast" }));
    assert_eq!(bad.status, 400, "{bad:?}");
    web.ok_post("/api/limit_rate", json!({ "direction": "down", "rate": "off" }));

    let out = cluster.path("out.bin");
    let dest = out.display().to_string();
    web.ok_post(
        "/api/download_file",
        json!({ "group": "g", "file": "f.bin", "destination": dest }),
    );
    web.ok_post("/api/pause", json!({ "group": "g", "file": "f.bin" }));
    let paused = web.ok_get("/api/downloads");
    assert_eq!(paused["downloads"][0]["state"], "paused", "{paused}");
    assert_eq!(paused["downloads"][0]["paused"], true, "{paused}");
    assert!(dash.run1("show_downloads").starts_with("[P] [g] f.bin "));
    web.ok_post("/api/resume", json!({ "group": "g", "file": "f.bin" }));
    assert_eq!(web.ok_get("/api/downloads")["downloads"][0]["state"], "downloading");
    web.ok_post("/api/cancel", json!({ "group": "g", "file": "f.bin" }));
    assert_eq!(web.ok_get("/api/downloads")["downloads"], json!([]));
    assert!(!cluster.path("out.bin.part").exists() && !out.exists());
    let gone = web.post("/api/cancel", json!({ "group": "g", "file": "f.bin" }));
    assert_eq!(gone.status, 409, "{gone:?}");
    assert_eq!(
        gone.json()["error"],
        "no download of f.bin in group g in this session; show_downloads lists them"
    );
}

/// Issue 23: the dashboard downloads part of a folder (as `download_file` names it) and
/// shows it as a file tree, each file with its own progress.
#[test]
fn the_dashboard_shows_a_folders_download_as_a_file_tree() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut dash = cluster.client_with("dash", &["--web", "127.0.0.1:0"]);
    let web = Web::of(&mut dash);
    let mut seed = cluster.client("seed");
    seed.sign_up("seed");
    seed.ok("create_group g", "created group g");
    dash.sign_up("dash");
    dash.ok("join_group g", "requested to join group g");
    seed.ok("accept_request g dash", "accepted dash into group g");
    let root = cluster.path("album");
    crate::folders::awkward_tree(&root);
    seed.run(&format!("upload_file {} g", root.display()));
    let files = web.ok_get("/api/files?group=g");
    assert_eq!(
        (&files["files"][0]["name"], &files["files"][0]["files"]),
        (&json!("album"), &json!(5))
    );
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    let started = web.ok_post(
        "/api/download_file",
        json!({ "group": "g", "file": "album/sub/", "destination": out.display().to_string() }),
    );
    assert_eq!(started["destination"], out.join("sub").display().to_string());
    let done = wait_downloads_done(&web);
    let d = &done["downloads"][0];
    assert_eq!(
        (&d["state"], &d["item"], &d["file"]),
        (&json!("complete"), &json!("album/sub/"), &json!("album")),
        "{done}"
    );
    assert_eq!(
        d["files"],
        json!([
            { "path": "sub/deep/x.bin", "size": 3, "pieces": 1, "pieces_have": 1 },
            { "path": "sub/run.sh", "size": 21, "pieces": 1, "pieces_have": 1 },
        ])
    );
    assert_eq!(d["files_total"], 2);
    let shares = web.ok_get("/api/shares");
    assert_eq!(
        (&shares["shares"][0]["item"], &shares["shares"][0]["pieces"]),
        (&json!("album/sub/"), &json!(2))
    );
}
