//! The tracker survives hostile connections and keeps serving everyone else.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::frame::{read_message, write_frame};
use common::message::{ClientMessage, TrackerMessage, PROTOCOL_VERSION};

use crate::support::{Cluster, TIMEOUT};

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Reads until the tracker closes the connection; returns what it sent.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("tracker did not close the connection: {e}"),
    }
    buf
}

#[test]
fn garbage_oversized_and_malformed_frames_close_only_that_connection() {
    let (cluster, mut tracker) = Cluster::with_one_tracker();
    let mut c = cluster.client("c");
    c.sign_up("alice");

    let mut http = connect(tracker.addr);
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(read_until_closed(&mut http).is_empty());

    let mut huge = connect(tracker.addr);
    huge.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert!(read_until_closed(&mut huge).is_empty());

    let mut malformed = connect(tracker.addr);
    malformed.write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]).unwrap();
    assert!(read_until_closed(&mut malformed).is_empty());

    // A frame cut short, then the writer goes away.
    let mut cut = connect(tracker.addr);
    cut.write_all(&[0, 0, 0, 100, 1, 2, 3]).unwrap();
    cut.shutdown(Shutdown::Write).unwrap();
    assert!(read_until_closed(&mut cut).is_empty());

    // A request before the handshake.
    let mut early = connect(tracker.addr);
    write_frame(&mut early, &ClientMessage::Hello { version: PROTOCOL_VERSION }).unwrap();
    let welcome: Option<TrackerMessage> = read_message(&mut early).unwrap();
    assert!(matches!(
        welcome,
        Some(TrackerMessage::Welcome { version: PROTOCOL_VERSION, tracker_id: 1 })
    ));
    write_frame(&mut early, &ClientMessage::Hello { version: PROTOCOL_VERSION }).unwrap();
    assert!(read_until_closed(&mut early).is_empty());

    assert!(tracker.is_running());
    c.ok("create_group g", "created group g");
    let log = cluster.tracker_log(1);
    assert!(log.contains("exceeds the"), "oversized frame not logged:\n{log}");
}

#[test]
fn a_wrong_protocol_version_is_refused() {
    let (_cluster, tracker) = Cluster::with_one_tracker();
    let mut s = connect(tracker.addr);
    write_frame(&mut s, &ClientMessage::Hello { version: PROTOCOL_VERSION + 100 }).unwrap();
    let reply: Option<TrackerMessage> = read_message(&mut s).unwrap();
    assert_eq!(reply, Some(TrackerMessage::Refused { version: PROTOCOL_VERSION }));
    assert!(read_until_closed(&mut s).is_empty());
}

#[test]
fn hundreds_of_idle_connections_do_not_stop_service() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let idle: Vec<TcpStream> = (0..300).map(|_| connect(cluster.addrs[0])).collect();
    let mut c = cluster.client("c");
    c.sign_up("alice");
    c.ok("create_group g", "created group g");
    drop(idle);
}

#[test]
fn silent_connections_are_dropped_after_the_handshake_timeout_and_the_cap_holds() {
    let cluster = Cluster::new(1);
    let tracker =
        cluster.try_start_tracker(1, &["--max-connections", "3"]).expect("tracker did not start");
    let mut silent: Vec<TcpStream> = (0..3).map(|_| connect(tracker.addr)).collect();
    // Over the cap: closed at once, without a reply.
    let mut extra = connect(tracker.addr);
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(read_until_closed(&mut extra).is_empty());
    // The silent ones are closed when their handshake time runs out; then there is room.
    for s in &mut silent {
        assert!(read_until_closed(s).is_empty());
    }
    let mut c = cluster.client("c");
    c.sign_up("alice");
}
