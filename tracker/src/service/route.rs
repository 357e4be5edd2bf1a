//! Where a client's request is answered (pure): by this tracker, by the leader it is
//! forwarded to, or nowhere (a witness, no leader). Also which requests read replicated
//! state (and so wait for a read barrier) and at which level requests are logged.

use common::message::Request;

use crate::cluster::Role;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// This tracker is a witness: it serves no client.
    Witness,
    /// `Status`: answered here whatever the role, at once.
    Status,
    /// `AwaitCalls`: held here whatever the role (issue 19): the leader passes each call
    /// to the tracker where its peer waits.
    AwaitCalls,
    /// Answered here (the leader, or a follower for a pure read).
    Here,
    /// A heartbeat on a follower: answered here if the session is known here, else
    /// forwarded to `leader`.
    FollowerHeartbeat { leader: u32 },
    /// A login or new account on a follower: the password is hashed here and the entry
    /// committed by the leader.
    PrepareHere,
    /// Forwarded to `leader`.
    Forward { leader: u32 },
    /// No leader is known: refused.
    NoLeader,
}

/// Where `request` goes on a tracker in `role` (a `witness` or not).
pub fn route(witness: bool, role: Role, request: &Request) -> Route {
    if witness {
        return Route::Witness;
    }
    if let Request::Status = request {
        return Route::Status;
    }
    if let Request::AwaitCalls = request {
        return Route::AwaitCalls;
    }
    match role {
        Role::Primary => Route::Here,
        Role::Backup { .. } if answers_locally(request) => Route::Here,
        // Answered here (memberships from this replica: a change shows at most a heartbeat
        // later) and reported to the leader in bulk every second: tens of thousands of
        // idle clients cost the leader a message a second per follower, not one per
        // heartbeat.
        Role::Backup { leader } if matches!(request, Request::Heartbeat { .. }) => {
            Route::FollowerHeartbeat { leader }
        }
        // The password is hashed here, where the client's address is known (for the
        // throttle), and the hashing of a flood of logins is spread over every tracker;
        // the leader gets the entry to commit.
        Role::Backup { .. } if hashes_a_password(request) => Route::PrepareHere,
        Role::Backup { leader } => Route::Forward { leader },
        Role::Leaderless => Route::NoLeader,
    }
}

/// The level at which requests are logged: trace for what every client sends every few
/// seconds (heartbeats, a downloader's piece announcements and ticket checks), so that
/// debug stays readable; debug for the rest (a peer's long poll for calls, every 20 s,
/// included).
pub fn log_level(request: &Request) -> log::Level {
    match request {
        Request::Heartbeat { .. }
        | Request::AnnouncePieces { .. }
        | Request::Reachable { .. }
        | Request::CheckTicket { .. }
        | Request::Status => log::Level::Trace,
        _ => log::Level::Debug,
    }
}

/// Whether a follower answers `request` itself (pure reads of replicated state; the rest
/// needs the leader's soft state or is a write).
pub fn answers_locally(request: &Request) -> bool {
    matches!(
        request,
        Request::ListGroups { .. }
            | Request::ListMyGroups { .. }
            | Request::ListRequests { .. }
            | Request::CheckTicket { .. }
            | Request::StateDigest
    )
}

/// Whether `request` hashes a password (and so is prepared by the tracker the client is
/// connected to, not forwarded).
pub fn hashes_a_password(request: &Request) -> bool {
    matches!(request, Request::CreateUser { .. } | Request::Login { .. })
}

/// Whether answering `request` reads replicated state, and so waits for a read barrier
/// (heartbeats and piece announcements only touch soft state; writes go through the log).
pub fn reads_replicated_state(request: &Request) -> bool {
    answers_locally(request)
        || matches!(
            request,
            Request::ListFiles { .. }
                | Request::GetFile { .. }
                | Request::Reverse { .. }
                | Request::Punch { .. }
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{GroupId, Password, UserId};

    fn login() -> Request {
        Request::Login {
            user: UserId::new("alice").unwrap(),
            password: Password::new("pw").unwrap(),
            peer_addr: "127.0.0.1:9".parse().unwrap(),
            session: common::message::SessionToken([7; 32]),
        }
    }

    #[track_caller]
    fn check(witness: bool, role: Role, request: Request, expected: Route) {
        assert_eq!(route(witness, role, &request), expected, "{request:?} as {role:?}");
    }

    #[test]
    fn routes() {
        let backup = Role::Backup { leader: 2 };
        let list = || Request::ListMyGroups { after: None };
        let write = || Request::CreateGroup { group: GroupId::new("g").unwrap() };
        check(true, Role::Primary, Request::Status, Route::Witness);
        check(false, Role::Leaderless, Request::Status, Route::Status);
        check(false, Role::Primary, write(), Route::Here);
        check(false, Role::Primary, login(), Route::Here);
        check(false, backup, list(), Route::Here);
        check(false, backup, Request::StateDigest, Route::Here);
        check(
            false,
            backup,
            Request::Heartbeat { known: None },
            Route::FollowerHeartbeat { leader: 2 },
        );
        check(false, backup, login(), Route::PrepareHere);
        check(false, backup, Request::AwaitCalls, Route::AwaitCalls);
        check(false, Role::Leaderless, Request::AwaitCalls, Route::AwaitCalls);
        check(true, Role::Primary, Request::AwaitCalls, Route::Witness);
        check(false, backup, write(), Route::Forward { leader: 2 });
        check(
            false,
            backup,
            Request::ListFiles { group: GroupId::new("g").unwrap(), after: None },
            Route::Forward { leader: 2 },
        );
        check(false, Role::Leaderless, list(), Route::NoLeader);
    }

    #[test]
    fn what_waits_for_a_barrier() {
        assert!(reads_replicated_state(&Request::ListMyGroups { after: None }));
        assert!(reads_replicated_state(&Request::ListFiles {
            group: GroupId::new("g").unwrap(),
            after: None
        }));
        assert!(!reads_replicated_state(&Request::Heartbeat { known: None }));
        assert!(!reads_replicated_state(&login()));
        assert_eq!(log_level(&Request::Heartbeat { known: None }), log::Level::Trace);
        assert_eq!(log_level(&login()), log::Level::Debug);
    }
}
