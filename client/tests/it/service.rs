//! Issue 20: a peer that runs as a service (`--serve`): no REPL, standard input never read
//! (`</dev/null`), its session resumed at start, serving until SIGTERM or SIGINT, after
//! which it stops cleanly.

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use rustix::process::{kill_process, Pid, Signal};

use crate::support::{
    assert_same_file, client_bin, line_channel, wait_exit, write_random, Cluster, TIMEOUT,
};

/// A service under test, killed if the test ends before it stopped.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `--serve` client on `state` with standard input closed: the process, its stdout lines
/// up to and including the `logged in as ... (resumed)` one, and how long that took.
fn serve(cluster: &Cluster, state: &str) -> (Service, Vec<String>, std::time::Duration) {
    let log = std::fs::File::create(cluster.path(&format!("{state}-serve.log"))).unwrap();
    let started = Instant::now();
    let mut child = Command::new(client_bin())
        .arg("127.0.0.1:0")
        .arg(&cluster.info)
        .arg("--state-dir")
        .arg(cluster.path(state))
        .arg("--serve")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let lines = line_channel(child.stdout.take().unwrap());
    let service = Service(child);
    let mut seen = Vec::new();
    loop {
        let line = lines.recv_timeout(TIMEOUT).unwrap_or_else(|e| panic!("{e}: {seen:?}"));
        seen.push(line.clone());
        if line.ends_with("(resumed)") {
            return (service, seen, started.elapsed());
        }
    }
}

fn signal(service: &Service, signal: Signal) {
    kill_process(Pid::from_raw(service.0.id() as i32).unwrap(), signal).unwrap();
}

#[test]
fn a_service_resumes_its_session_serves_with_stdin_closed_and_stops_cleanly_on_signals() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &[]);
    let original = cluster.path("f.bin");
    write_random(&original, 3 * 1024 * 1024, 61);
    c[0].run1(&format!("upload_file {} g", original.display()));
    // Logged in at the REPL once; `exit` keeps the session for the service.
    c[0].send_line("exit");
    assert!(c[0].close_stdin().success());

    let (mut service, lines, took) = serve(&cluster, "seed");
    assert!(lines[0].starts_with("listening on 127.0.0.1:"), "{lines:?}");
    assert_eq!(lines.last().unwrap(), "logged in as seed (resumed)");
    eprintln!("figure: the service was back, logged in and sharing, {took:?} after its start");
    // The end of its (closed) standard input does not stop it: it serves.
    let out = cluster.path("out.bin");
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    let done = c[1].wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    assert_same_file(&original, &out);
    assert!(service.0.try_wait().unwrap().is_none(), "the service ended");

    signal(&service, Signal::TERM);
    assert!(wait_exit(&mut service.0).success(), "SIGTERM: not a clean stop");
    // Restarted: back again with the same session; SIGINT stops it as cleanly.
    let (mut service, lines, _) = serve(&cluster, "seed");
    assert_eq!(lines.last().unwrap(), "logged in as seed (resumed)");
    signal(&service, Signal::INT);
    assert!(wait_exit(&mut service.0).success(), "SIGINT: not a clean stop");
    let log = std::fs::read_to_string(cluster.path("seed-serve.log")).unwrap();
    assert!(log.contains("stopping on signal"), "{log}");
}

/// Issue 20: a restarted service whose port was taken meanwhile serves on another one,
/// and its session moves there: still resumed, and downloads from it work.
#[test]
fn a_service_whose_port_was_taken_keeps_its_session_on_another_port() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &[]);
    let original = cluster.path("f.bin");
    write_random(&original, 2 * 1024 * 1024, 62);
    c[0].run1(&format!("upload_file {} g", original.display()));
    c[0].send_line("exit");
    assert!(c[0].close_stdin().success());
    let (service, lines, _) = serve(&cluster, "seed");
    let first = lines[0].strip_prefix("listening on ").unwrap().to_string();
    signal(&service, Signal::TERM);
    let mut service = service;
    assert!(wait_exit(&mut service.0).success());
    // Another program takes the port meanwhile.
    let squatter = std::net::TcpListener::bind(&first).unwrap();
    let (service, lines, _) = serve(&cluster, "seed");
    let second = lines[0].strip_prefix("listening on ").unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(lines.last().unwrap(), "logged in as seed (resumed)", "{lines:?}");
    let out = cluster.path("out.bin");
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    let done = c[1].wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    assert_same_file(&original, &out);
    drop((service, squatter));
}
