use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// Runs both sides of a handshake; the initiator expects `expected` as the responder's key.
fn handshake(
    initiator: &Identity,
    responder: &Identity,
    expected: PublicKey,
) -> (Result<SecureStream, HandshakeError>, Result<SecureStream, HandshakeError>) {
    let (a, b) = pair();
    let responder = responder.clone();
    let server = thread::spawn(move || respond(b, &responder, soon()));
    // A failed initiator closes its end (it owns it), so the responder never waits for
    // the deadline.
    let client = initiate(a, initiator, &expected, soon());
    (client, server.join().unwrap())
}

#[test]
fn pattern_parses() {
    assert_eq!(params().name, NOISE_PATTERN);
}

#[test]
fn both_sides_learn_each_others_keys_and_bytes_round_trip() {
    let (alice, bob) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (client, server) = handshake(&alice, &bob, bob.public());
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    assert_eq!(client.remote_key(), &bob.public());
    assert_eq!(server.remote_key(), &alice.public());

    // Small writes, a write spanning many records, and a read into a small buffer.
    let big: Vec<u8> = (0..3 * MAX_RECORD_PLAINTEXT + 12_345).map(|i| (i % 251) as u8).collect();
    let sent = big.clone();
    let writer = thread::spawn(move || {
        client.write_all(b"hello").unwrap();
        client.flush().unwrap();
        client.write_all(&sent).unwrap();
        client.flush().unwrap();
        client
    });
    let mut hello = [0u8; 5];
    server.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"hello");
    let mut got = vec![0u8; big.len()];
    server.read_exact(&mut got[..7]).unwrap();
    server.read_exact(&mut got[7..]).unwrap();
    assert_eq!(got, big);
    drop(writer.join().unwrap());
    assert_eq!(server.read(&mut hello).unwrap(), 0, "clean end of stream");
}

#[test]
fn a_responder_without_the_expected_key_fails_the_handshake() {
    let (alice, impostor, real) = (
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
    );
    let (client, server) = handshake(&alice, &impostor, real.public());
    assert!(matches!(client, Err(HandshakeError::Crypto(_)) | Err(HandshakeError::Closed)));
    // The impostor cannot even decrypt who called it.
    assert!(matches!(server, Err(HandshakeError::Crypto(_))), "{:?}", server.err());
}

#[test]
fn plaintext_never_appears_on_the_wire() {
    let (alice, bob) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let bob_key = bob.public();
    let server = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut secure = respond(s, &bob, soon()).unwrap();
        let mut buf = Vec::new();
        secure.read_to_end(&mut buf).unwrap();
        buf
    });
    // A recording relay between the two.
    let relay = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let recorder = thread::spawn(move || {
        let (mut from, _) = relay.accept().unwrap();
        let mut to = TcpStream::connect(addr).unwrap();
        let mut back = to.try_clone().unwrap();
        let mut from_back = from.try_clone().unwrap();
        let answers = thread::spawn(move || std::io::copy(&mut back, &mut from_back));
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = from.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            to.write_all(&buf[..n]).unwrap();
        }
        to.shutdown(std::net::Shutdown::Write).unwrap();
        let _ = answers.join();
        seen
    });
    let secret = b"password=hunter2 token=0123456789abcdef".repeat(100);
    let s = TcpStream::connect(relay_addr).unwrap();
    let mut secure = initiate(s, &alice, &bob_key, soon()).unwrap();
    secure.write_all(&secret).unwrap();
    secure.flush().unwrap();
    drop(secure);
    assert_eq!(server.join().unwrap(), secret);
    let seen = recorder.join().unwrap();
    assert!(seen.len() > secret.len());
    assert!(!seen.windows(8).any(|w| w == b"hunter2 "), "plaintext seen on the wire");
}

#[cfg(not(feature = "bench-plaintext"))]
#[test]
fn a_tampered_record_is_refused() {
    let (alice, bob) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (a, b) = pair();
    let bob_key = bob.public();
    let server = thread::spawn(move || {
        let mut secure = respond(b, &bob, soon()).unwrap();
        let mut buf = [0u8; 64];
        secure.read(&mut buf).map(|_| ())
    });
    let mut a2 = a.try_clone().unwrap();
    let _secure = initiate(a, &alice, &bob_key, soon()).unwrap();
    // A record with a valid length but forged contents.
    let mut forged = vec![0u8, 40];
    forged.extend_from_slice(&[0x55; 40]);
    a2.write_all(&forged).unwrap();
    let err = server.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn a_truncated_handshake_times_out() {
    let bob = Identity::generate().unwrap();
    let (mut a, b) = pair();
    a.write_all(&[0, 96, 1, 2, 3]).unwrap();
    let started = Instant::now();
    let result = respond(b, &bob, Instant::now() + Duration::from_millis(300));
    assert!(result.as_ref().err().is_some_and(HandshakeError::is_timeout), "{:?}", result.err());
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(a);
}

#[test]
fn a_slow_handshake_is_bounded_by_its_deadline_not_per_read() {
    let bob = Identity::generate().unwrap();
    let (mut a, b) = pair();
    let dribble = thread::spawn(move || {
        // One byte every 100 ms: each read succeeds, the whole never finishes in time.
        for _ in 0..30 {
            if a.write_all(&[0]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let started = Instant::now();
    let result = respond(b, &bob, Instant::now() + Duration::from_millis(500));
    assert!(result.is_err());
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    dribble.join().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the sizes of the writes, flushes and reads (small messages, whole records,
    /// bulk), the bytes arrive intact and in order, as buffers grow from small to a batch.
    #[test]
    fn any_mix_of_write_and_read_sizes_round_trips(
        writes in proptest::collection::vec((1usize..200_000, any::<bool>()), 1..12),
        reads in proptest::collection::vec(1usize..150_000, 1..8),
    ) {
        let (alice, bob) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let (a, b) = pair();
        let bob_key = bob.public();
        let total: usize = writes.iter().map(|(n, _)| n).sum();
        let sent: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
        let expected = sent.clone();
        let reader = thread::spawn(move || {
            let mut secure = respond(b, &bob, soon()).unwrap();
            let mut got = Vec::with_capacity(total);
            let mut buf = vec![0u8; 150_000];
            for size in reads.iter().cycle() {
                if got.len() == total {
                    break;
                }
                let n = secure.read(&mut buf[..*size]).unwrap();
                assert!(n > 0, "end of stream after {} of {total} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        let mut secure = initiate(a, &alice, &bob_key, soon()).unwrap();
        let mut at = 0;
        for (n, flush) in &writes {
            secure.write_all(&sent[at..at + n]).unwrap();
            at += n;
            if *flush {
                secure.flush().unwrap();
            }
        }
        secure.flush().unwrap();
        prop_assert!(reader.join().unwrap() == expected);
    }

    #[test]
    fn random_bytes_never_complete_a_handshake(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let bob = Identity::generate().unwrap();
        let (mut a, b) = pair();
        a.write_all(&bytes).unwrap();
        drop(a);
        prop_assert!(respond(b, &bob, soon()).is_err());
    }

    #[test]
    fn random_answers_never_complete_a_handshake(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (alice, bob) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let (a, mut b) = pair();
        let answer = thread::spawn(move || {
            let mut first = [0u8; 98];
            let _ = b.read_exact(&mut first);
            let _ = b.write_all(&bytes);
        });
        prop_assert!(initiate(a, &alice, &bob.public(), soon()).is_err());
        answer.join().unwrap();
    }
}

/// Issue 21: a record without data no longer keeps a reader waiting: it ends the read, into
/// a caller's large buffer or a small one alike.
#[cfg(not(feature = "bench-plaintext"))]
#[test]
fn an_empty_record_is_a_protocol_error() {
    for read_len in [64, 8] {
        let (alice, bob) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let (client, server) = handshake(&alice, &bob, bob.public());
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        // What no sender here does: seal a record with no plaintext.
        let mut record = [0u8; 2 + TAG_LEN];
        let n = client.transport.write_message(&[], &mut record[2..]).unwrap();
        assert_eq!(n, TAG_LEN);
        record[..2].copy_from_slice(&(n as u16).to_be_bytes());
        client.stream.write_all(&record).unwrap();
        let started = Instant::now();
        let err = server.read(&mut vec![0u8; read_len]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("empty record"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

/// Issue 21: a deadline holds however the bytes trickle in (one byte a record, each well
/// within the read timeout), and lifting it restores the socket's read timeout.
#[test]
fn a_deadline_holds_while_bytes_trickle_in() {
    let (alice, bob) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (client, server) = handshake(&alice, &bob, bob.public());
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    server.socket().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickle = {
        let stop = std::sync::Arc::clone(&stop);
        thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if client.write_all(b"x").and_then(|()| client.flush()).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    server.set_deadline(Some(started + Duration::from_millis(300))).unwrap();
    let err = server.read_exact(&mut [0u8; 1000]).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "{took:?}");
    server.set_deadline(None).unwrap();
    assert_eq!(server.socket().read_timeout().unwrap(), Some(Duration::from_secs(5)));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    trickle.join().unwrap();
}
