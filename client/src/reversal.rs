//! Connection reversal (issue 19): a downloader that cannot reach a seeder behind a NAT asks
//! a tracker to have the seeder connect out to it (`Request::Reverse`); the seeder, long
//! polling a tracker for calls (`Request::AwaitCalls`, the `calls` thread of `seeder`),
//! dials the downloader's registered addresses, runs the secure channel's handshake as
//! initiator and opens with `PeerRequest::Reversed`; the downloader's seeder accept loop
//! hands that connection to the download worker waiting for it, which then speaks as on a
//! connection it dialed (it sends `Hello` with its ticket, the seeder checks it).
//!
//! `Reversals` is the downloader's side: the reversed connections its workers wait for,
//! each named by a random nonce and the key the seeder must have proven (bounded,
//! `MAX_AWAITED`). `CallGate` (pure) is the seeder's side: the calls it follows, per
//! downloader key and in all, per minute, so that a tracker (or whoever fools one) cannot
//! turn this peer into a cannon.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use common::connection::Connection;
use common::peer_message::{PeerReply, PeerRequest};
use common::{PublicKey, Sha1Digest};

/// Reversed connections awaited at once, at most (workers beyond it go without).
pub const MAX_AWAITED: usize = 256;

/// A download worker's end of a reversed connection.
pub type Reversed = Connection<PeerReply, PeerRequest>;

/// The reversed connections this peer's download workers wait for.
#[derive(Default)]
pub struct Reversals {
    awaited: Mutex<HashMap<u64, Awaited>>,
}

struct Awaited {
    seeder: PublicKey,
    digest: Sha1Digest,
    tx: Sender<Reversed>,
}

/// One awaited reversed connection: its nonce, and where it arrives. Dropping it forgets it.
pub struct Awaiting {
    reversals: Arc<Reversals>,
    pub nonce: u64,
    pub arrived: Receiver<Reversed>,
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        self.reversals.awaited.lock().remove(&self.nonce);
    }
}

/// Why an incoming reversed connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAwaited {
    #[error("no reversed connection awaited with that nonce")]
    UnknownNonce,
    #[error("reversed connection from another key or for another file than awaited")]
    Mismatch,
}

impl Reversals {
    /// Awaits a connection from the seeder that proves `seeder`, for the file `digest`;
    /// `None` when `MAX_AWAITED` are awaited already.
    pub fn expect(self: &Arc<Self>, seeder: PublicKey, digest: Sha1Digest) -> Option<Awaiting> {
        let (tx, arrived) = crossbeam_channel::bounded(1);
        let mut awaited = self.awaited.lock();
        if awaited.len() >= MAX_AWAITED {
            return None;
        }
        let nonce = loop {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).ok()?;
            let nonce = u64::from_le_bytes(bytes);
            if !awaited.contains_key(&nonce) {
                break nonce;
            }
        };
        awaited.insert(nonce, Awaited { seeder, digest, tx });
        Some(Awaiting { reversals: Arc::clone(self), nonce, arrived })
    }

    /// Hands `conn` (accepted by this peer's seeder, whose first frame was
    /// `PeerRequest::Reversed { digest, nonce, .. }`) to the worker awaiting it, if its
    /// peer proved the key that worker expects. Each nonce is taken once.
    pub fn arrive(
        &self,
        conn: Connection<PeerRequest, PeerReply>,
        digest: Sha1Digest,
        nonce: u64,
    ) -> Result<(), NotAwaited> {
        let mut awaited = self.awaited.lock();
        let entry = awaited.get(&nonce).ok_or(NotAwaited::UnknownNonce)?;
        if entry.seeder != conn.remote_key() || entry.digest != digest {
            return Err(NotAwaited::Mismatch);
        }
        let entry = awaited.remove(&nonce).ok_or(NotAwaited::UnknownNonce)?;
        // The worker may have given up a moment ago: then the connection just closes.
        let _ = entry.tx.try_send(conn.retype());
        Ok(())
    }

    /// How many are awaited now.
    pub fn len(&self) -> usize {
        self.awaited.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Calls a seeder follows: `PER_KEY_PER_MINUTE` per downloader key (bursts of
/// `PER_KEY_BURST`) and `TOTAL_PER_MINUTE` in all (bursts of `TOTAL_BURST`); at most
/// `MAX_KEYS` keys remembered, the fullest forgotten first. Pure: the clock is passed in.
#[derive(Debug)]
pub struct CallGate {
    total: Bucket,
    per_key: HashMap<PublicKey, Bucket>,
}

pub const PER_KEY_PER_MINUTE: f64 = 30.0;
pub const PER_KEY_BURST: f64 = 10.0;
pub const TOTAL_PER_MINUTE: f64 = 240.0;
pub const TOTAL_BURST: f64 = 40.0;
pub const MAX_KEYS: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket { tokens: burst, at: now }
    }

    fn refill(&mut self, per_minute: f64, burst: f64, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + secs * per_minute / 60.0).min(burst);
        self.at = now.max(self.at);
    }
}

impl CallGate {
    pub fn new(now: Instant) -> CallGate {
        CallGate { total: Bucket::full(TOTAL_BURST, now), per_key: HashMap::new() }
    }

    /// Whether a call from the downloader that proved `from` is followed now (and if so,
    /// it is counted).
    pub fn allow(&mut self, from: PublicKey, now: Instant) -> bool {
        if !self.per_key.contains_key(&from) && self.per_key.len() >= MAX_KEYS {
            let fullest = self
                .per_key
                .iter_mut()
                .map(|(key, bucket)| {
                    bucket.refill(PER_KEY_PER_MINUTE, PER_KEY_BURST, now);
                    (*key, bucket.tokens)
                })
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(key, _)| key);
            if let Some(fullest) = fullest {
                self.per_key.remove(&fullest);
            }
        }
        let key = self.per_key.entry(from).or_insert_with(|| Bucket::full(PER_KEY_BURST, now));
        key.refill(PER_KEY_PER_MINUTE, PER_KEY_BURST, now);
        self.total.refill(TOTAL_PER_MINUTE, TOTAL_BURST, now);
        if key.tokens < 1.0 || self.total.tokens < 1.0 {
            return false;
        }
        key.tokens -= 1.0;
        self.total.tokens -= 1.0;
        true
    }

    /// Keys remembered.
    pub fn n_keys(&self) -> usize {
        self.per_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn a_downloader_beyond_its_share_is_refused_until_it_refills() {
        let t0 = Instant::now();
        let mut gate = CallGate::new(t0);
        let a = PublicKey([1; 32]);
        assert_eq!((0..30).filter(|_| gate.allow(a, t0)).count(), PER_KEY_BURST as usize);
        assert!(gate.allow(a, t0 + Duration::from_secs(2)));
        assert!(!gate.allow(a, t0 + Duration::from_secs(2)));
        assert!(gate.allow(PublicKey([2; 32]), t0));
    }

    #[test]
    fn many_downloaders_together_get_the_total_at_most() {
        let t0 = Instant::now();
        let mut gate = CallGate::new(t0);
        let granted = (0..200u8).filter(|k| gate.allow(PublicKey([*k; 32]), t0)).count();
        assert_eq!(granted, TOTAL_BURST as usize);
    }

    #[test]
    fn only_the_awaited_seeder_and_file_take_an_awaited_nonce_once() {
        // Pure parts only here: `arrive` needs a live connection, covered by the lab tests
        // (client/tests/it/nat.rs). The table's bound:
        let reversals = Arc::new(Reversals::default());
        let digest = Sha1Digest::of(b"f");
        let kept: Vec<Awaiting> = (0..MAX_AWAITED)
            .map(|_| reversals.expect(PublicKey([1; 32]), digest).unwrap())
            .collect();
        assert!(reversals.expect(PublicKey([1; 32]), digest).is_none());
        assert_eq!(reversals.len(), MAX_AWAITED);
        drop(kept);
        assert!(reversals.is_empty());
    }

    proptest! {
        #[test]
        fn no_key_and_no_total_beyond_burst_plus_rate(
            steps in proptest::collection::vec((0u8..20, 0u64..2000), 1..400),
        ) {
            let t0 = Instant::now();
            let mut gate = CallGate::new(t0);
            let mut now = t0;
            let mut per_key: HashMap<u8, f64> = HashMap::new();
            let mut total = 0.0;
            for (key, ms) in steps {
                now += Duration::from_millis(ms);
                if gate.allow(PublicKey([key; 32]), now) {
                    *per_key.entry(key).or_default() += 1.0;
                    total += 1.0;
                }
                prop_assert!(gate.n_keys() <= MAX_KEYS);
            }
            let minutes = (now - t0).as_secs_f64() / 60.0;
            prop_assert!(total <= TOTAL_BURST + TOTAL_PER_MINUTE * minutes + 1e-6);
            for (_, n) in per_key {
                prop_assert!(n <= PER_KEY_BURST + PER_KEY_PER_MINUTE * minutes + 1e-6);
            }
        }
    }
}
