//! Per-user and per-group limits, checked by the leader before it proposes a write.
//!
//! Counts come from the replicated state; the policy (the limits, a tracker option) is
//! applied only at proposal, never when an entry is applied, so trackers started with
//! different limits still apply the same log the same way. Two writes proposed at the
//! same moment may both pass a count they together exceed, by at most the writes in
//! flight: a bound, not an exact line.
//!
//! The write rate of each user is a token bucket kept in memory by the leader.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

use common::message::TrackerError;
use common::UserId;

use crate::state::{Op, TrackerState};

/// Users whose write rate is tracked, at most; the fullest buckets are forgotten first.
const MAX_TRACKED_USERS: usize = 65_536;

/// The limits (tracker options).
#[derive(Debug, Clone, Copy)]
pub struct QuotaLimits {
    /// Groups one user may own.
    pub groups_per_user: usize,
    /// Join requests one user may have pending.
    pub requests_per_user: usize,
    /// Files one group may list.
    pub files_per_group: usize,
    /// Bytes of file metadata (mostly piece hashes: 20 bytes per 512 KiB) one user may
    /// share in all.
    pub metadata_per_user: u64,
    /// Sessions one user may have; at a new login, the longest silent one that is not
    /// live ends to make room, or the login is refused.
    pub sessions_per_user: usize,
    /// Writes per second one user may make, on average.
    pub writes_per_second: u32,
    /// Writes one user may make in a burst.
    pub write_burst: u32,
}

impl Default for QuotaLimits {
    fn default() -> QuotaLimits {
        QuotaLimits {
            groups_per_user: 100,
            requests_per_user: 100,
            files_per_group: 10_000,
            metadata_per_user: 64 * 1024 * 1024,
            sessions_per_user: 16,
            writes_per_second: 100,
            write_burst: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The leader's quota checks.
pub struct Quotas {
    limits: QuotaLimits,
    buckets: Mutex<HashMap<UserId, Bucket>>,
}

impl Quotas {
    pub fn new(limits: QuotaLimits) -> Quotas {
        Quotas { limits, buckets: Mutex::new(HashMap::new()) }
    }

    pub fn limits(&self) -> &QuotaLimits {
        &self.limits
    }

    /// Checks `op`, by `user`, against the counts in `state` and the user's write rate.
    /// Logins and logouts are not rate-limited here (password hashing is, elsewhere).
    pub fn check(&self, state: &TrackerState, op: &Op, now: Instant) -> Result<(), TrackerError> {
        let limits = &self.limits;
        let exceeded = |what: String| Err(TrackerError::QuotaExceeded(what));
        let user = match op {
            Op::CreateGroup { owner, .. } => {
                if state.groups_owned(owner) >= limits.groups_per_user {
                    return exceeded(format!(
                        "{owner} already owns {} groups (tracker option --max-groups-per-user)",
                        limits.groups_per_user
                    ));
                }
                owner
            }
            Op::RequestJoin { user, .. } => {
                if state.requests_pending(user) >= limits.requests_per_user {
                    return exceeded(format!(
                        "{user} already has {} join requests pending \
                         (tracker option --max-requests-per-user)",
                        limits.requests_per_user
                    ));
                }
                user
            }
            Op::ShareFile { session, group, meta } => {
                let Some(user) = state.session_user(Some(*session)).ok() else {
                    return Ok(()); // refused by `check` anyway
                };
                let is_new = !state.has_file(group, &meta.name);
                if is_new && state.files_in(group) >= limits.files_per_group {
                    return exceeded(format!(
                        "group {group} already lists {} files (tracker option \
                         --max-files-per-group)",
                        limits.files_per_group
                    ));
                }
                let shared = state.metadata_shared_by(&user);
                if shared + meta.metadata_len() > limits.metadata_per_user {
                    return exceeded(format!(
                        "{user} already shares files whose metadata takes {} KiB of the {} KiB \
                         allowed (tracker option --max-metadata-per-user)",
                        shared / 1024,
                        limits.metadata_per_user / 1024
                    ));
                }
                return self.take_token(&user, now);
            }
            Op::StopShare { session, .. } => {
                let Some(user) = state.session_user(Some(*session)).ok() else { return Ok(()) };
                return self.take_token(&user, now);
            }
            Op::AcceptRequest { owner, .. }
            | Op::RejectRequest { owner, .. }
            | Op::RemoveMember { owner, .. } => owner,
            Op::LeaveGroup { user, .. } => user,
            Op::InitSecret { .. }
            | Op::CreateUser { .. }
            | Op::OpenSession { .. }
            | Op::CloseSession { .. }
            | Op::CloseUserSessions { .. }
            | Op::MoveSession { .. } => return Ok(()),
        };
        self.take_token(user, now)
    }

    /// Takes one write from `user`'s bucket, or says how long to wait.
    fn take_token(&self, user: &UserId, now: Instant) -> Result<(), TrackerError> {
        let rate = f64::from(self.limits.writes_per_second.max(1));
        let burst = f64::from(self.limits.write_burst.max(1));
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_TRACKED_USERS && !buckets.contains_key(user) {
            // A full bucket is the same as no bucket: forget those.
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_TRACKED_USERS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(user.clone()).or_insert(Bucket { tokens: burst, at: now });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(TrackerError::QuotaExceeded(format!(
                "{user} makes more than {} changes a second; slow down \
                 (tracker option --max-writes-per-second)",
                self.limits.writes_per_second
            )));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::Credential;
    use common::hash::file_digest;
    use common::message::{FileMeta, SessionId};
    use common::{FileName, GroupId, Password, PublicKey, Sha1Digest};
    use proptest::prelude::*;
    use std::time::Duration;

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    fn group(i: usize) -> GroupId {
        GroupId::new(format!("g{i}")).unwrap()
    }

    fn limits() -> QuotaLimits {
        QuotaLimits {
            groups_per_user: 2,
            requests_per_user: 2,
            files_per_group: 2,
            metadata_per_user: 100,
            sessions_per_user: 4,
            writes_per_second: 10,
            write_burst: 20,
        }
    }

    /// alice (session 1) owning g0, and bob (session 2).
    fn state() -> TrackerState {
        let mut st = TrackerState::default();
        let cred = Credential::derive(&Password::new("pw").unwrap(), 1).unwrap();
        for (n, name) in [(1u8, "alice"), (2, "bob")] {
            st.apply(&Op::CreateUser { user: user(name), credential: cred.clone() }).unwrap();
            let op = Op::OpenSession {
                session: SessionId([n; 32]),
                user: user(name),
                peer_addr: format!("127.0.0.1:{}", 7000 + u16::from(n)).parse().unwrap(),
                key: PublicKey([n; 32]),
            };
            st.apply(&op).unwrap();
        }
        st.apply(&Op::CreateGroup { group: group(0), owner: user("alice") }).unwrap();
        st
    }

    fn share(name: &str, n_pieces: usize) -> Op {
        let pieces = vec![Sha1Digest([7; 20]); n_pieces];
        let size = n_pieces as u64 * common::PIECE_SIZE as u64;
        let meta = FileMeta {
            name: FileName::new(name).unwrap(),
            size,
            digest: file_digest(size, &pieces),
            pieces,
            tree: None,
        };
        Op::ShareFile { session: SessionId([1; 32]), group: group(0), meta }
    }

    #[track_caller]
    fn refused(result: Result<(), TrackerError>, option: &str) {
        match result {
            Err(TrackerError::QuotaExceeded(what)) => assert!(what.contains(option), "{what}"),
            other => panic!("expected a quota naming {option}, got {other:?}"),
        }
    }

    #[test]
    fn each_count_is_refused_at_its_limit_naming_the_option() {
        let quotas = Quotas::new(limits());
        let mut st = state();
        let now = Instant::now();
        // Groups owned: alice owns one of two.
        let create = |i| Op::CreateGroup { group: group(i), owner: user("alice") };
        quotas.check(&st, &create(1), now).unwrap();
        st.apply(&create(1)).unwrap();
        refused(quotas.check(&st, &create(2), now), "--max-groups-per-user");
        // Join requests pending: bob asks two groups.
        for i in 0..2 {
            let ask = Op::RequestJoin { group: group(i), user: user("bob") };
            quotas.check(&st, &ask, now).unwrap();
            st.apply(&ask).unwrap();
        }
        st.apply(&create(5)).ok();
        let third = Op::RequestJoin { group: group(5), user: user("bob") };
        refused(quotas.check(&st, &third, now), "--max-requests-per-user");
        // Files per group, and metadata per user (20 bytes a piece and the name).
        for name in ["a", "b"] {
            quotas.check(&st, &share(name, 1), now).unwrap();
            st.apply(&share(name, 1)).unwrap();
        }
        refused(quotas.check(&st, &share("c", 1), now), "--max-files-per-group");
        // The same name again is not a new file: only the metadata counts.
        refused(quotas.check(&st, &share("a", 4), now), "--max-metadata-per-user");
    }

    #[test]
    fn the_write_rate_is_a_bucket_per_user() {
        let quotas = Quotas::new(limits());
        let st = state();
        let now = Instant::now();
        let leave = |name: &str| Op::LeaveGroup { group: group(0), user: user(name) };
        for _ in 0..20 {
            quotas.check(&st, &leave("alice"), now).unwrap();
        }
        refused(quotas.check(&st, &leave("alice"), now), "--max-writes-per-second");
        // Another user has a bucket of its own; logins are not counted here.
        quotas.check(&st, &leave("bob"), now).unwrap();
        let login = Op::OpenSession {
            session: SessionId([9; 32]),
            user: user("alice"),
            peer_addr: "127.0.0.1:7009".parse().unwrap(),
            key: PublicKey([9; 32]),
        };
        quotas.check(&st, &login, now).unwrap();
        // A tenth of a second later, one more write.
        let later = now + Duration::from_millis(100);
        quotas.check(&st, &leave("alice"), later).unwrap();
        refused(quotas.check(&st, &leave("alice"), later), "--max-writes-per-second");
    }

    proptest! {
        /// Over any run, a user's writes never exceed the burst plus the rate times the
        /// time elapsed, and the table of buckets stays bounded.
        #[test]
        fn writes_never_beat_burst_plus_rate(steps in proptest::collection::vec((0u64..300, 0u8..3), 1..300)) {
            let quotas = Quotas::new(limits());
            let st = state();
            let start = Instant::now();
            let mut now = start;
            let mut allowed_writes = [0u32; 3];
            let names = ["alice", "bob", "carol"];
            for (ms, who) in steps {
                now += Duration::from_millis(ms);
                let op = Op::LeaveGroup { group: group(0), user: user(names[who as usize]) };
                if quotas.check(&st, &op, now).is_ok() {
                    allowed_writes[who as usize] += 1;
                }
                let cap = 20.0 + 10.0 * (now - start).as_secs_f64();
                prop_assert!(f64::from(allowed_writes[who as usize]) <= cap + 1e-9);
            }
            prop_assert!(quotas.buckets.lock().len() <= 3);
        }
    }
}
