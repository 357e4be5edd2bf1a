//! The secure channel's ciphers on one core: seals and opens full 64 KiB Noise records
//! with each candidate cipher, as `secure_channel` does, and prints MB/s as key=value
//! lines (`scripts/bench.sh` shows them). Run with `cargo run --release -p common
//! --example cipher_speed`.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use common::secure_channel::{MAX_RECORD_PLAINTEXT, NOISE_PATTERN};

/// Bytes sealed and opened per cipher.
const TOTAL: usize = 1 << 30;

fn transports(pattern: &str) -> (snow::TransportState, snow::TransportState) {
    let params: snow::params::NoiseParams = pattern.parse().unwrap();
    let keys = snow::Builder::new(params.clone()).generate_keypair().unwrap();
    let theirs = snow::Builder::new(params.clone()).generate_keypair().unwrap();
    let mut i = snow::Builder::new(params.clone())
        .local_private_key(&keys.private)
        .unwrap()
        .remote_public_key(&theirs.public)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut r = snow::Builder::new(params)
        .local_private_key(&theirs.private)
        .unwrap()
        .build_responder()
        .unwrap();
    let (mut msg, mut payload) = (vec![0u8; 65_535], vec![0u8; 65_535]);
    let n = i.write_message(&[], &mut msg).unwrap();
    r.read_message(&msg[..n], &mut payload).unwrap();
    let n = r.write_message(&[], &mut msg).unwrap();
    i.read_message(&msg[..n], &mut payload).unwrap();
    (i.into_transport_mode().unwrap(), r.into_transport_mode().unwrap())
}

/// Seal and open throughput in MB/s (10^6 bytes).
fn measure(pattern: &str) -> (f64, f64) {
    let (mut sender, mut receiver) = transports(pattern);
    let plaintext = vec![0x5au8; MAX_RECORD_PLAINTEXT];
    let records = TOTAL / MAX_RECORD_PLAINTEXT;
    // Open a batch small enough to stay in memory, sealed in order first.
    let batch = 64;
    let mut sealed = vec![vec![0u8; 65_535]; batch];
    let mut opened = vec![0u8; 65_535];
    let (mut seal_s, mut open_s) = (0.0, 0.0);
    for _ in 0..records / batch {
        let t = Instant::now();
        let mut lens = [0usize; 64];
        for (record, len) in sealed.iter_mut().zip(lens.iter_mut()) {
            *len = sender.write_message(&plaintext, record).unwrap();
        }
        seal_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (record, len) in sealed.iter().zip(lens) {
            receiver.read_message(&record[..len], &mut opened).unwrap();
        }
        open_s += t.elapsed().as_secs_f64();
    }
    let bytes = (records / batch * batch * MAX_RECORD_PLAINTEXT) as f64;
    (bytes / seal_s / 1e6, bytes / open_s / 1e6)
}

fn main() {
    for (name, pattern) in [
        ("aesgcm", NOISE_PATTERN.to_string()),
        ("chachapoly", NOISE_PATTERN.replace("AESGCM", "ChaChaPoly")),
    ] {
        let (seal, open) = measure(&pattern);
        let chosen = if pattern == NOISE_PATTERN { " (in use)" } else { "" };
        println!("cipher_{name}_seal_mbps={seal:.0}");
        println!("cipher_{name}_open_mbps={open:.0}");
        eprintln!("{pattern}{chosen}: seal {seal:.0} MB/s, open {open:.0} MB/s on one core");
    }
}
