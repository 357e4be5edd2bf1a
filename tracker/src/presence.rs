//! Soft state: which sessions are live, which pieces partial downloaders have, and where
//! each session's peer may be reached besides its login address (issue 19).
//!
//! Kept in memory only, by design: it changes with every heartbeat and every few verified
//! pieces, and clients rebuild it within seconds of a tracker restart (heartbeats and piece
//! announcements). No clock of its own: callers pass `now`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::message::SessionId;
use common::{Bitfield, GroupId, Sha1Digest};

/// By default, a session not heard from for this long is not listed as a peer (clients
/// send a heartbeat every 5 s).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(15);

/// Liveness and partial availability.
pub struct Presence {
    ttl: Duration,
    started: Instant,
    last_seen: HashMap<SessionId, Instant>,
    partial: HashMap<(GroupId, Sha1Digest), HashMap<SessionId, Bitfield>>,
    /// The addresses each session registered (`Request::Reachable`), at most
    /// `MAX_PEER_ADDRS` each, for sessions of the replicated state only.
    reachable: HashMap<SessionId, Vec<SocketAddr>>,
}

impl Presence {
    /// Empty soft state, as after a (re)start at `now`; sessions silent for `ttl` are not live.
    pub fn new(now: Instant, ttl: Duration) -> Presence {
        Presence {
            ttl,
            started: now,
            last_seen: HashMap::new(),
            partial: HashMap::new(),
            reachable: HashMap::new(),
        }
    }

    /// Records that `session` (a session of the replicated state: the maps hold no other,
    /// and `keep_only` prunes those that end) was heard from.
    pub fn touch(&mut self, session: SessionId, now: Instant) {
        self.last_seen.insert(session, now);
    }

    /// How long `session` has been silent: since it was last heard from, or since this
    /// tracker started keeping presence if it has not been heard from since.
    pub fn silent_for(&self, session: &SessionId, now: Instant) -> Duration {
        now.duration_since(self.last_seen.get(session).copied().unwrap_or(self.started))
    }

    /// Forgets every session `exists` denies (ended sessions), so that the maps hold at
    /// most the sessions of the replicated state.
    pub fn keep_only(&mut self, exists: impl Fn(&SessionId) -> bool) {
        self.last_seen.retain(|s, _| exists(s));
        self.reachable.retain(|s, _| exists(s));
        for holders in self.partial.values_mut() {
            holders.retain(|s, _| exists(s));
        }
        self.partial.retain(|_, holders| !holders.is_empty());
    }

    /// Whether `session` counts as live: heard from within the TTL, or, for a session not
    /// heard from since this tracker started, while the start is more recent than the TTL
    /// (its client has not had time to reconnect yet).
    pub fn is_live(&self, session: &SessionId, now: Instant) -> bool {
        match self.last_seen.get(session) {
            Some(seen) => now.duration_since(*seen) < self.ttl,
            None => now.duration_since(self.started) < self.ttl,
        }
    }

    /// Records which pieces of a file `session` has while it downloads it.
    pub fn announce(
        &mut self,
        group: GroupId,
        digest: Sha1Digest,
        session: SessionId,
        have: Bitfield,
    ) {
        self.partial.entry((group, digest)).or_default().insert(session, have);
    }

    /// Forgets everything about `session` (it logged out).
    pub fn forget(&mut self, session: &SessionId) {
        self.last_seen.remove(session);
        self.reachable.remove(session);
        for holders in self.partial.values_mut() {
            holders.remove(session);
        }
        self.partial.retain(|_, holders| !holders.is_empty());
    }

    /// Records where `session`'s peer may be reached (replacing what it registered before):
    /// the dialable ones, each once, `MAX_PEER_ADDRS` at most.
    pub fn set_reachable(&mut self, session: SessionId, addrs: Vec<SocketAddr>) {
        let addrs = common::peer_addr::sanitize(addrs);
        match addrs.is_empty() {
            true => self.reachable.remove(&session),
            false => self.reachable.insert(session, addrs),
        };
    }

    /// The addresses `session` registered (none if it did not).
    pub fn reachable(&self, session: &SessionId) -> Vec<SocketAddr> {
        self.reachable.get(session).cloned().unwrap_or_default()
    }

    /// The sessions that announced pieces of a file, with what they have.
    pub fn partial_holders(
        &self,
        group: &GroupId,
        digest: &Sha1Digest,
    ) -> Vec<(SessionId, Bitfield)> {
        let key = (group.clone(), *digest);
        self.partial
            .get(&key)
            .map(|holders| holders.iter().map(|(s, have)| (*s, have.clone())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_follows_the_ttl() {
        const SESSION_TTL: Duration = DEFAULT_SESSION_TTL;
        let t0 = Instant::now();
        let mut p = Presence::new(t0, SESSION_TTL);
        let s = SessionId([1; 32]);
        assert!(p.is_live(&s, t0 + SESSION_TTL / 2), "grace period after start");
        assert!(!p.is_live(&s, t0 + SESSION_TTL * 2));
        p.touch(s, t0 + SESSION_TTL * 2);
        assert!(p.is_live(&s, t0 + SESSION_TTL * 2 + Duration::from_secs(1)));
        assert!(!p.is_live(&s, t0 + SESSION_TTL * 4));
    }

    #[test]
    fn partial_holders_are_forgotten_on_logout() {
        let now = Instant::now();
        let mut p = Presence::new(now, DEFAULT_SESSION_TTL);
        let s = SessionId([1; 32]);
        let g = GroupId::new("g").unwrap();
        let d = Sha1Digest([3; 20]);
        p.announce(g.clone(), d, s, Bitfield::empty(4));
        assert_eq!(p.partial_holders(&g, &d).len(), 1);
        p.forget(&s);
        assert!(p.partial_holders(&g, &d).is_empty());
    }

    #[test]
    fn registered_addresses_are_bounded_checked_and_forgotten() {
        let now = Instant::now();
        let mut p = Presence::new(now, DEFAULT_SESSION_TTL);
        let s = SessionId([1; 32]);
        let addr = |a: &str| a.parse::<SocketAddr>().unwrap();
        let many: Vec<SocketAddr> =
            (1..=9).map(|i| addr(&format!("10.0.0.{i}:6201"))).chain([addr("0.0.0.0:1")]).collect();
        p.set_reachable(s, vec![addr("224.0.0.1:6201"), addr("10.0.0.1:0")]);
        assert!(p.reachable(&s).is_empty());
        p.set_reachable(s, many);
        assert_eq!(p.reachable(&s).len(), common::peer_addr::MAX_PEER_ADDRS);
        p.keep_only(|_| false);
        assert!(p.reachable(&s).is_empty());
        p.set_reachable(s, vec![addr("10.0.0.1:6201")]);
        p.forget(&s);
        assert!(p.reachable(&s).is_empty());
    }
}
