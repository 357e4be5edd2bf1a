//! The dashboard in a real browser (issue 11): headless Chromium driven over WebDriver by
//! Debian's `chromedriver`, through a small blocking WebDriver client written here (plain
//! HTTP/1.1 and JSON on a `TcpStream`, no crate and no async runtime).
//!
//! One user's whole path through the page: create an account and log in, create a group,
//! accept two other clients' requests, upload a file, download a file of a few MiB that
//! both of them seed, watch the progress bar and the piece map fill, check the copy's SHA1,
//! and save a screenshot of the finished dashboard as a test artifact
//! (`$TEST_ARTIFACTS_DIR/dashboard.png`, by default under Cargo's `target/tmp`). The page
//! is opened with the printed URL, its token in the fragment; at the end the browser visits
//! another server on 127.0.0.1, which must get no token (issue 21).
//!
//! Every wait is on a condition in the page: a `MutationObserver` in an asynchronous
//! WebDriver script answers when the condition holds, and WebDriver's script timeout is
//! only the failure bound. The test skips, saying why, only when no browser can be started
//! (no `chromedriver` or `chromium` on `PATH`, or the session fails to open);
//! `REQUIRE_BROWSER=1` (CI sets it when it installed them) turns that skip into a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use common::Sha1Digest;

use crate::support::{write_random, ClientProc, Cluster, TIMEOUT};

/// How long one condition in the page may take before the test fails.
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest WebDriver answer taken (a screenshot of a large window is a few MiB).
const MAX_ANSWER: u64 = 64 * 1024 * 1024;
/// WebDriver's key for an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running `chromedriver` with one headless Chromium session; both end on drop.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session, or says why it cannot.
    fn start() -> Result<Browser, String> {
        let driver_bin = find_on_path(&["chromedriver"])
            .ok_or("no chromedriver on PATH (Debian: apt-get install chromium-driver)")?;
        let chromium = find_on_path(&["chromium", "chromium-browser", "google-chrome"])
            .ok_or("no chromium on PATH (Debian: apt-get install chromium)")?;
        // A process group of its own: Chromium is in it too, and nothing outlives the drop.
        let mut driver = Command::new(&driver_bin)
            .arg("--port=0")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", driver_bin.display()))?;
        let port = match driver_port(&mut driver) {
            Ok(port) => port,
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                return Err(e);
            }
        };
        let mut browser =
            Browser { driver, addr: SocketAddr::from(([127, 0, 0, 1], port)), session: "".into() };
        // Root (as in CI) needs --no-sandbox; /dev/shm may be small in containers.
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1400",
                         "--no-first-run", "--disable-extensions"],
            },
            "timeouts": { "script": PAGE_TIMEOUT.as_millis() as u64, "pageLoad": 30_000 },
        }}});
        let session = browser
            .call("POST", "/session", Some(&capabilities))
            .map_err(|e| format!("chromedriver cannot start {}: {e}", chromium.display()))?;
        browser.session = session["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {session}"))?
            .to_string();
        Ok(browser)
    }

    /// One WebDriver command; its `value`, or the error WebDriver gave.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(self.addr).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(PAGE_TIMEOUT + TIMEOUT)).map_err(|e| e.to_string())?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        // chromedriver keeps the connection open: read the head, then Content-Length bytes.
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).map_err(|e| e.to_string())?;
        let status = status_line.split(' ').nth(1).unwrap_or("?").to_string();
        let mut len = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err(format!("{method} {path}: connection closed in the head"));
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.trim().parse::<u64>().ok();
                }
            }
        }
        let len = len.filter(|&n| n <= MAX_ANSWER).ok_or("no or too large Content-Length")?;
        let mut json_text = Vec::new();
        reader.take(len).read_to_end(&mut json_text).map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_slice(&json_text).map_err(|e| {
            format!(
                "{e} in {}",
                String::from_utf8_lossy(&json_text).chars().take(300).collect::<String>()
            )
        })?;
        let value = value.get("value").cloned().unwrap_or(Value::Null);
        match status.as_str() {
            "200" => Ok(value),
            _ => Err(format!("{method} {path}: HTTP {status}: {}", value["message"])),
        }
    }

    /// A command in the session that must succeed.
    #[track_caller]
    fn session_call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).unwrap_or_else(|e| panic!("webdriver: {e}"))
    }

    fn navigate(&self, url: &str) {
        self.session_call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page; what it returns.
    #[track_caller]
    fn run(&self, script: &str) -> Value {
        self.session_call("POST", "/execute/sync", Some(&json!({ "script": script, "args": [] })))
    }

    /// Waits until the JavaScript expression `condition` is truthy in the page, checking it
    /// each time the page changes (a `MutationObserver`), and returns its value.
    #[track_caller]
    fn wait_for(&self, what: &str, condition: &str) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             const check = () => {{ try {{ return ({condition}); }} catch (e) {{ return null; }} }};
             const first = check();
             if (first) {{ done(first); return; }}
             const observer = new MutationObserver(() => {{
               const v = check();
               if (v) {{ observer.disconnect(); done(v); }}
             }});
             observer.observe(document.documentElement,
               {{ subtree: true, childList: true, attributes: true, characterData: true }});"
        );
        let path = format!("/session/{}/execute/async", self.session);
        match self.call("POST", &path, Some(&json!({ "script": script, "args": [] }))) {
            Ok(value) => value,
            Err(e) => {
                let banner = self.run("return document.querySelector('#error').textContent");
                panic!("waiting for {what} ({condition}): {e}; the page's error banner: {banner}")
            }
        }
    }

    /// The first element matching the CSS `selector`.
    #[track_caller]
    fn find(&self, selector: &str) -> String {
        let found = self.session_call(
            "POST",
            "/element",
            Some(&json!({ "using": "css selector", "value": selector })),
        );
        found[ELEMENT_KEY].as_str().unwrap_or_else(|| panic!("{selector}: {found}")).to_string()
    }

    /// Clicks the element at `selector`, as a user would.
    #[track_caller]
    fn click(&self, selector: &str) {
        let element = self.find(selector);
        self.session_call("POST", &format!("/element/{element}/click"), Some(&json!({})));
    }

    /// Types `text` into the (cleared) field at `selector`.
    #[track_caller]
    fn type_into(&self, selector: &str, text: &str) {
        let element = self.find(selector);
        self.session_call("POST", &format!("/element/{element}/clear"), Some(&json!({})));
        self.session_call(
            "POST",
            &format!("/element/{element}/value"),
            Some(&json!({ "text": text })),
        );
    }

    /// Sets the window's size.
    fn resize(&self, width: u32, height: u32) {
        self.session_call(
            "POST",
            "/window/rect",
            Some(&json!({ "width": width, "height": height })),
        );
    }

    /// A PNG of the window.
    fn screenshot(&self) -> Vec<u8> {
        let encoded = self.session_call("GET", "/screenshot", None);
        decode_base64(encoded.as_str().unwrap_or_default())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session quits Chromium (and waits for it); then the driver goes.
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        if let Some(group) = rustix::process::Pid::from_raw(self.driver.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.driver.wait();
    }
}

/// The port chromedriver says it listens on ("... started successfully on port N.").
fn driver_port(driver: &mut Child) -> Result<u16, String> {
    let stdout = driver.stdout.take().ok_or("chromedriver has no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("on port ").nth(1) {
                let _ = tx.send(rest.trim_end_matches('.').trim().parse::<u16>().ok());
            }
        }
    });
    loop {
        match rx.recv_timeout(TIMEOUT) {
            Ok(Some(port)) if port != 0 => return Ok(port),
            Ok(_) => continue,
            Err(_) => return Err("chromedriver did not say which port it listens on".into()),
        }
    }
}

fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
    })
}

/// Standard base64 (WebDriver's screenshots), padding and line breaks ignored.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Where test artifacts go: `$TEST_ARTIFACTS_DIR`, or Cargo's temporary directory for
/// integration tests (`target/tmp`).
fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("TEST_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sha1_of(path: &Path) -> Sha1Digest {
    Sha1Digest::of(&std::fs::read(path).unwrap())
}

/// The dashboard's URL, as the client's `web` command prints it.
fn dashboard_url(c: &mut ClientProc) -> String {
    let out = c.run("web");
    let url = out.last().unwrap().clone();
    assert!(url.starts_with("http://127.0.0.1:") && url.contains("/#token="), "{out:?}");
    url
}

#[test]
fn in_a_browser_a_user_runs_a_group_and_watches_a_download_from_two_seeders_fill_the_piece_map() {
    let browser = match Browser::start() {
        Ok(browser) => browser,
        Err(why) if std::env::var_os("REQUIRE_BROWSER").is_some_and(|v| v == "1") => {
            panic!("REQUIRE_BROWSER=1 but no browser: {why}")
        }
        Err(why) => {
            eprintln!("skipped: the browser test needs headless Chromium: {why}");
            return;
        }
    };
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut dash = cluster.client_with("dash", &["--web", "127.0.0.1:0"]);
    // Capped seeders, so the download takes a second or two and both serve pieces.
    let seeding = ["--max-upload-rate", "3000000"];
    let mut bob = cluster.client_with("bob", &seeding);
    let mut carol = cluster.client_with("carol", &seeding);

    // The printed URL carries the token in its fragment, which the page takes, keeps in
    // this tab's sessionStorage and removes from the address bar; no cookie is set.
    let url = dashboard_url(&mut dash);
    let token = url.split_once("#token=").unwrap().1.to_string();
    let dash_origin = url.split_once('#').unwrap().0.to_string();
    browser.navigate(&url);
    browser.wait_for(
        "the page, logged out",
        r##"document.querySelector("#account-line").textContent.startsWith("not logged in")"##,
    );
    let kept =
        browser.run("return [location.href, document.cookie, sessionStorage.getItem('token')]");
    assert_eq!(kept[0], dash_origin.as_str(), "the token left the address bar: {kept}");
    assert_eq!(kept[1], "", "no cookie: {kept}");
    assert_eq!(kept[2], token.as_str(), "{kept}");

    // An account, made and logged in from the page.
    browser.type_into("#login-form input[name=user]", "alice");
    browser.type_into("#login-form input[name=password]", "pw-alice");
    browser.click("#login-form button[data-action=create_user]");
    browser.wait_for(
        "the login",
        r##"document.querySelector("#account-line").textContent.startsWith("alice · tracker ")"##,
    );
    dash.err("login alice pw-alice", "already logged in as alice; logout first");

    // A group, created from the page, which then opens it.
    browser.type_into("#create-group-form input[name=group]", "g");
    browser.click("#create-group-form button");
    browser.wait_for("the group in the table", r##"document.querySelector('#group-rows tr[data-group="g"]')?.textContent.includes("yes")"##);
    browser.wait_for("the group opened", r##"!document.querySelector("#group-detail").hidden && document.querySelector("#current-group").textContent === "g""##);

    // Two requests to join, accepted from the page.
    for (c, name) in [(&mut bob, "bob"), (&mut carol, "carol")] {
        c.sign_up(name);
        c.ok("join_group g", "requested to join group g");
    }
    // Issue 20: the banner tells the owner, from the heartbeats, until they are handled.
    browser.wait_for("both requests in the banner", r##"document.querySelectorAll("#join-notices [data-request]").length === 2 && !document.querySelector("#join-notices").hidden"##);
    browser.click(r##"#join-notices [data-request="g/bob"] button"##);
    browser.wait_for(
        "bob's request gone from the banner",
        r##"!document.querySelector('#join-notices [data-request="g/bob"]')"##,
    );
    browser.click(r##"#group-rows tr[data-group="g"] button"##);
    browser.wait_for("carol's request", r##"document.querySelectorAll("#request-rows li").length === 1 && !document.querySelector("#requests-box").hidden"##);
    browser.click(r##"#request-rows li[data-user="carol"] button"##);
    browser.wait_for(
        "the request gone",
        r##"!document.querySelector('#request-rows li[data-user="carol"]')"##,
    );
    browser.wait_for("the banner gone", r##"document.querySelector("#join-notices").hidden"##);
    assert_eq!(bob.run("list_my_groups"), ["g"]);
    assert_eq!(carol.run("list_my_groups"), ["g"]);

    // An upload from the page: a local path of the dashboard's client.
    let notes = cluster.path("notes.txt");
    write_random(&notes, 100_000, 3);
    browser.type_into("#upload-form input[name=path]", &notes.display().to_string());
    browser.click("#upload-form button");
    browser.wait_for("the upload in My shares", r##"document.querySelector('#share-rows tr[data-share="g/notes.txt"]')?.textContent.includes("1/1")"##);
    browser.wait_for(
        "the upload in the files",
        r##"!!document.querySelector('#file-rows tr[data-file="notes.txt"]')"##,
    );

    // A file of 13 pieces that both bob and carol seed.
    let film = cluster.path("film.bin");
    write_random(&film, 6 * 1024 * 1024 + 77, 11);
    bob.run1(&format!("upload_file {} g", film.display()));
    carol.ok(
        &format!("upload_file {} g", film.display()),
        "sharing film.bin in group g (same content already there)",
    );
    browser.click(r##"#group-rows tr[data-group="g"] button"##);
    browser.wait_for("film.bin with two sharers", r##"document.querySelector('#file-rows tr[data-file="film.bin"]')?.children[2].textContent === "2""##);

    // Records every state of the progress bar and the piece map the page shows, from
    // before the download starts to its end.
    browser.run(
        "window.seen = [];
         const record = () => {
           const d = document.querySelector('.dl');
           if (!d) return;
           const bar = d.querySelector('.bar > div').style.width;
           const cells = [...d.querySelectorAll('.pieces span')];
           const filled = cells.filter((c) => c.style.background !== '').length;
           const last = window.seen[window.seen.length - 1];
           if (!last || last.bar !== bar || last.filled !== filled || last.state !== d.dataset.state)
             window.seen.push({ bar, filled, cells: cells.length, state: d.dataset.state });
         };
         new MutationObserver(record).observe(document.querySelector('#download-rows'),
           { subtree: true, childList: true, attributes: true });",
    );
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    browser.type_into(r##"#file-rows tr[data-file="film.bin"] input"##, &out.display().to_string());
    browser.click(r##"#file-rows tr[data-file="film.bin"] button"##);
    browser.wait_for(
        "the download complete",
        r##"document.querySelector('.dl')?.dataset.state === "complete""##,
    );

    // The bar and the map went only forward, and ended full: 13 cells, each coloured by
    // one of the two seeders.
    let seen = browser.run("return window.seen");
    let seen = seen.as_array().unwrap();
    eprintln!("progress seen by the page: {seen:?}");
    let last = seen.last().unwrap();
    assert_eq!(
        (last["bar"].as_str(), last["filled"].as_u64()),
        (Some("100%"), Some(13)),
        "{seen:?}"
    );
    assert!(seen.iter().all(|s| s["cells"] == 13), "{seen:?}");
    let filled: Vec<u64> = seen.iter().map(|s| s["filled"].as_u64().unwrap()).collect();
    assert!(filled.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    let colours = browser.run(
        "return [...new Set([...document.querySelectorAll('.dl .pieces span')].map((c) => c.style.background))]",
    );
    assert_eq!(colours.as_array().unwrap().len(), 2, "one colour per seeder: {colours}");
    let legend = browser.run("return document.querySelector('.dl .legend').textContent");
    for seeder in [&bob, &carol] {
        assert!(legend.as_str().unwrap().contains(&seeder.listen.to_string()), "{legend}");
    }
    let status = browser.run("return document.querySelector('.dl .status').textContent");
    assert!(status.as_str().unwrap().starts_with("done in "), "{status}");
    browser.wait_for("the copy in My shares", r##"document.querySelector('#share-rows tr[data-share="g/film.bin"]')?.textContent.includes("13/13")"##);
    assert!(browser.run("return document.querySelector('#error').hidden") == Value::Bool(true));
    // Issue 20: an error stays through the page's own refreshes until it is dismissed.
    browser.run(
        "const f = document.querySelector('#create-group-form'); f.group.value = 'g'; f.requestSubmit();",
    );
    browser.wait_for(
        "the error of creating a group that exists",
        r##"!document.querySelector('#error').hidden && document.querySelector('#error').textContent.includes("already exists")"##,
    );
    browser.run("window.refreshed = false; quietly(refreshGroups).then(() => { window.refreshed = true; });");
    browser.wait_for("a refresh", "window.refreshed === true");
    assert!(browser.run("return document.querySelector('#error').hidden") == Value::Bool(false));
    browser.click("#error button");
    browser.wait_for("the error dismissed", "document.querySelector('#error').hidden");

    // The chart has a band per seeder; the peers panel shows each with the pieces it
    // has and sent; the trackers panel names the tracker that serves this client.
    let peers = browser.run(
        "return new Set([...document.querySelectorAll('.dl svg.chart rect')].map((r) => r.dataset.peer)).size",
    );
    assert_eq!(peers, 2, "a colour per seeder in the chart");
    for seeder in [&bob, &carol] {
        let row = format!(r##"#peer-rows tr[data-peer$="@{}"]"##, seeder.listen);
        let cells = browser.wait_for(
            "the seeder in the peers panel",
            &format!("(() => {{ const r = document.querySelector('{row}'); return r && [...r.children].map((c) => c.textContent); }})()"),
        );
        let cells: Vec<&str> =
            cells.as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        // Reached directly (issue 19), said under the address.
        assert_eq!(cells[1], format!("{}direct", seeder.listen), "{cells:?}");
        assert_eq!(cells[2..4], ["[g] film.bin", "13/13"], "{cells:?}");
        assert_ne!(cells[4], "0", "each seeder served some pieces: {cells:?}");
    }
    let served: u64 = browser
        .run("return [...document.querySelectorAll('#peer-rows tr')].map((r) => +r.children[4].textContent).reduce((a, b) => a + b, 0)")
        .as_u64()
        .unwrap();
    assert_eq!(served, 13);
    browser.wait_for(
        "the tracker serving this client",
        r##"document.querySelector("#tracker-rows tr.serving")?.textContent.includes("tracker 1")"##,
    );
    browser.wait_for(
        "the first event",
        r##"document.querySelector("#tracker-events").textContent.includes("served by tracker 1 at ")"##,
    );

    // bob fetches the page's upload: the peers panel counts what this peer served him.
    let bob_out = cluster.path("bob-out");
    std::fs::create_dir(&bob_out).unwrap();
    bob.run1(&format!("download_file g notes.txt {}", bob_out.display()));
    let done = bob.run1("wait_downloads");
    assert!(done.starts_with("[C] [g] notes.txt"), "{done}");
    browser.wait_for(
        "bob in the peers panel, served by this peer",
        r##"[...document.querySelectorAll('#peer-rows tr[data-peer^="bob@"]')].some((r) => r.children[2].textContent === "[g] notes.txt" && r.children[5].textContent === "1")"##,
    );

    // The copy is the file.
    let copy = out.join("film.bin");
    assert_eq!(sha1_of(&copy), sha1_of(&film));

    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG: {} bytes", png.len());
    let artifact = artifacts_dir().join("dashboard.png");
    std::fs::write(&artifact, &png).unwrap();
    eprintln!("screenshot of the finished dashboard: {}", artifact.display());

    // Issue 20: the layout fits from 600 to 1920 px: nothing wider than the window, and
    // no card's content wider than the card (tables once cut off "stop sharing").
    for width in [600, 1400, 1920] {
        browser.resize(width, 1200);
        let overflow = browser.run(
            "return [document.documentElement.scrollWidth > window.innerWidth + 1 ? 'page ' + document.documentElement.scrollWidth + ' > ' + window.innerWidth : null,
                     ...[...document.querySelectorAll('section')].filter((s) => !s.hidden && s.scrollWidth > s.clientWidth + 1)
                        .map((s) => s.id + ' ' + s.scrollWidth + ' > ' + s.clientWidth)].filter((x) => x)",
        );
        assert_eq!(overflow, json!([]), "at {width} px");
    }
    browser.resize(1280, 1400);

    // Issue 21: another server on 127.0.0.1, as a local attacker runs it. The browser that
    // holds the dashboard visits it, sending what it keeps for that host (cookies ignore
    // ports): the token is not in what it gets.
    let other = OtherServer::start();
    browser.navigate(&format!("http://{}/visit", other.addr));
    browser
        .wait_for("the other server's page", r##"document.body.textContent === "another server""##);
    let heads = other.stop();
    assert!(heads.iter().any(|h| h.starts_with("GET /visit ")), "{heads:?}");
    for head in &heads {
        assert!(!head.contains(&token), "another local server got the token: {head}");
        assert!(!head.to_ascii_lowercase().contains("\r\ncookie:"), "{head}");
    }
    // Back on the dashboard, without the fragment: this tab still has its token.
    browser.navigate(&dash_origin);
    browser.wait_for(
        "the page again, logged in",
        r##"document.querySelector("#account-line").textContent.startsWith("alice · tracker ")"##,
    );
    // A tab without the token says where to find it.
    browser.run("sessionStorage.clear()");
    browser.navigate(&dash_origin);
    browser.wait_for(
        "the page asking for its token",
        r##"document.querySelector("#error").textContent.includes("needs the client's access token")"##,
    );
}

/// A plain HTTP server on another port of 127.0.0.1 that answers every request with a small
/// page and records each request's head.
struct OtherServer {
    addr: SocketAddr,
    heads: mpsc::Receiver<String>,
    thread: std::thread::JoinHandle<()>,
}

impl OtherServer {
    fn start() -> OtherServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, heads) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                // A connection the browser opened ahead and never used sends nothing.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                if head.starts_with("GET /stop ") {
                    return;
                }
                let body = "<!doctype html><title>other</title><body>another server</body>";
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                if !head.is_empty() && tx.send(head).is_err() {
                    return;
                }
            }
        });
        OtherServer { addr, heads, thread }
    }

    /// Stops the server; every request head it received.
    fn stop(self) -> Vec<String> {
        let mut stop = TcpStream::connect(self.addr).unwrap();
        stop.write_all(b"GET /stop HTTP/1.1\r\n\r\n").unwrap();
        self.thread.join().unwrap();
        self.heads.try_iter().collect()
    }
}
