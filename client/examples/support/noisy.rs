//! The attacker's own Noise initiator against a seeder, shared by the seeder attacks of
//! `attack_figures` and the `starve` tests (each includes it with `#[path]`): the secure
//! channel's pattern and prologue, and records sealed however the attacker likes (empty
//! ones, a byte of a frame at a time), which no client sends.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::peer_message::{PeerReply, PeerRequest};
use common::PublicKey;

pub struct Noisy {
    pub stream: TcpStream,
    noise: snow::TransportState,
    plain: Vec<u8>,
}

impl Noisy {
    /// A channel over `stream` to the seeder whose key is `key`, as the key pair `private`;
    /// `None` if the seeder closed it or answered nonsense.
    pub fn over(mut stream: TcpStream, key: &PublicKey, private: &[u8]) -> Option<Noisy> {
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        stream.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
        let params = common::secure_channel::NOISE_PATTERN.parse().ok()?;
        let mut hs = snow::Builder::new(params)
            .prologue(b"p2p-groups secure channel v1")
            .ok()?
            .local_private_key(private)
            .ok()?
            .remote_public_key(&key.0)
            .ok()?
            .build_initiator()
            .ok()?;
        let mut msg = [0u8; 256];
        let n = hs.write_message(&[], &mut msg).ok()?;
        stream.write_all(&u16::try_from(n).ok()?.to_be_bytes()).ok()?;
        stream.write_all(msg.get(..n)?).ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).ok()?;
        let len = usize::from(u16::from_be_bytes(len));
        stream.read_exact(msg.get_mut(..len)?).ok()?;
        hs.read_message(msg.get(..len)?, &mut [0u8; 256]).ok()?;
        Some(Noisy { stream, noise: hs.into_transport_mode().ok()?, plain: Vec::new() })
    }

    /// Seals `plaintext` (empty, if it likes) into one record and sends it.
    pub fn record(&mut self, plaintext: &[u8]) -> Option<()> {
        let mut out = vec![0u8; 2 + plaintext.len() + 16];
        let n = self.noise.write_message(plaintext, out.get_mut(2..)?).ok()?;
        out.get_mut(..2)?.copy_from_slice(&u16::try_from(n).ok()?.to_be_bytes());
        self.stream.write_all(out.get(..2 + n)?).ok()
    }

    /// Sends `msg` as one frame in one record.
    pub fn send(&mut self, msg: &PeerRequest) -> Option<()> {
        self.record(&common::frame::encode_frame(msg).ok()?)
    }

    /// The next reply, `None` if the seeder closed the connection first.
    pub fn recv(&mut self) -> Option<PeerReply> {
        loop {
            if let Some(header) = self.plain.get(..4) {
                let len = u32::from_be_bytes(header.try_into().ok()?) as usize;
                if self.plain.len() >= 4 + len {
                    let frame: Vec<u8> = self.plain.drain(..4 + len).collect();
                    return common::codec::decode(frame.get(4..)?).ok();
                }
            }
            let mut len = [0u8; 2];
            self.stream.read_exact(&mut len).ok()?;
            let mut record = vec![0u8; usize::from(u16::from_be_bytes(len))];
            self.stream.read_exact(&mut record).ok()?;
            let mut plain = vec![0u8; record.len()];
            let n = self.noise.read_message(&record, &mut plain).ok()?;
            self.plain.extend_from_slice(plain.get(..n)?);
        }
    }
}
