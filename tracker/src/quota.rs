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
            Op::AcceptRequest { owner, .. } | Op::RejectRequest { owner, .. } => owner,
            Op::LeaveGroup { user, .. } => user,
            Op::InitSecret { .. }
            | Op::CreateUser { .. }
            | Op::OpenSession { .. }
            | Op::CloseSession { .. }
            | Op::CloseUserSessions { .. } => return Ok(()),
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
