//! The tracker's state as plain data, and the typed operations that change it.
//!
//! Pure: no I/O, no clock, no randomness. Every change goes through `TrackerState::apply` of
//! an `Op`, so the same ops applied in the same order give the same state; that is what makes
//! the Raft log sound: every tracker applies the same entries in the same order.
//! Invariants: every group has its owner among its members; a member is never also a
//! pending requester; a listed file has at least one sharer, and every sharer is a live
//! session of a member of the file's group.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;

use common::folder::{folder_digest, FolderLayout, Tree};
use common::hash::file_digest;
use common::message::{
    FileMeta, FileSummary, GroupRole, Memberships, Reply, Request, RequestId, SessionId, Ticket,
    TrackerError, MAX_LISTED_REQUESTS, MAX_PAGE_ITEMS,
};
use common::{FileName, GroupId, Layout, PublicKey, Sha1Digest, UserId};

use crate::credential::Credential;

/// How many clients' last replies are remembered.
const MAX_REMEMBERED_CLIENTS: usize = 65_536;

/// The encoding of a Raft entry's data: `ENTRY_FORMAT` then the postcard of a `LogEntry`.
/// Bumped on any change to `LogEntry`, `Op` or the types they hold that moves the encoding
/// of what was written before, so that an entry written by another build is refused, never
/// misread (a variant appended last, as `Op::RemoveMember`, moves nothing: an older build
/// refuses only that entry, as damaged). Format 1 (origins without a fingerprint) and
/// format 2 (`FileMeta` without a tree, before folders, issue 23) are still read.
pub const ENTRY_FORMAT: u8 = 3;
/// The encoding of a snapshot: `STATE_FORMAT` then the postcard of a `TrackerState`.
/// Formats 1 and 2 are still read (format 3: `FileMeta` has a tree, issue 23).
pub const STATE_FORMAT: u8 = 3;

/// One Raft entry's content: an operation and the client request it came from (so that a
/// request retried after a lost reply, on any tracker, is answered and not applied twice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub op: Op,
    pub origin: Option<Origin>,
}

/// The client request an entry came from: its id, and a fingerprint of the key that sent
/// it and of what it asked (`Request::fingerprint`), so that only the same request from
/// the same client is answered as a retry. `None` in entries written by format 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub id: RequestId,
    pub fingerprint: Option<[u8; 32]>,
}

impl Origin {
    /// Whether `self` (a recorded request) is `retry` sent again.
    fn answers(&self, retry: &Origin) -> bool {
        self.id == retry.id
            && match (self.fingerprint, retry.fingerprint) {
                (Some(mine), Some(theirs)) => mine == theirs,
                // Recorded by format 1: ids only.
                (None, _) => true,
                (Some(_), None) => false,
            }
    }
}

/// What formats 1 and 2 wrote, read to upgrade a data directory in place: a `FileMeta`
/// without its tree (there were no folders), and format 1's replies recorded by sequence
/// number alone. Only `Op::ShareFile` holds a `FileMeta`, so the other ops of those formats
/// read as this format's. (A stored `Reply` never holds one: `FileInfo` answers a read.)
mod format2 {
    use super::*;

    /// The variant index of `Op::ShareFile`, the first postcard byte of its encoding.
    const SHARE_FILE: u8 = 9;

    #[derive(Deserialize)]
    pub struct FileMeta {
        name: FileName,
        size: u64,
        digest: Sha1Digest,
        pieces: Vec<Sha1Digest>,
    }

    impl From<FileMeta> for common::message::FileMeta {
        fn from(old: FileMeta) -> Self {
            let FileMeta { name, size, digest, pieces } = old;
            common::message::FileMeta { name, size, digest, pieces, tree: None }
        }
    }

    #[derive(Deserialize)]
    struct ShareFile {
        session: SessionId,
        group: GroupId,
        meta: FileMeta,
    }

    #[derive(Deserialize)]
    pub struct FileRecord {
        meta: FileMeta,
        sharers: BTreeSet<SessionId>,
    }

    impl From<FileRecord> for crate::state::FileRecord {
        fn from(old: FileRecord) -> Self {
            crate::state::FileRecord { meta: old.meta.into(), sharers: old.sharers }
        }
    }

    #[derive(Deserialize)]
    pub struct LogEntry {
        pub origin: Option<Origin>,
    }

    /// A state as formats 1 and 2 wrote it: `R` is how a client's last reply was recorded
    /// (format 1: `(seq, Reply)`; format 2: `(Origin, Reply)`, as now).
    #[derive(Deserialize)]
    pub struct TrackerState<R> {
        secret: Option<TicketSecret>,
        last_replies: BTreeMap<u64, R>,
        users: BTreeMap<UserId, Credential>,
        groups: BTreeMap<GroupId, Group>,
        sessions: BTreeMap<SessionId, Session>,
        files: BTreeMap<GroupId, BTreeMap<FileName, FileRecord>>,
    }

    impl<R> TrackerState<R> {
        /// This state in today's form, each client's last reply recorded by `reply`
        /// (the derived indexes are left for `decode` to build).
        pub fn upgrade(
            self,
            reply: impl Fn(u64, R) -> (Origin, Reply),
        ) -> crate::state::TrackerState {
            crate::state::TrackerState {
                secret: self.secret,
                last_replies: self
                    .last_replies
                    .into_iter()
                    .map(|(c, r)| (c, reply(c, r)))
                    .collect(),
                users: self.users,
                groups: self.groups,
                sessions: self.sessions,
                files: files(self.files),
                ..Default::default()
            }
        }
    }

    /// Reads an op of format 1 or 2 from the start of `bytes`, and what follows it.
    pub fn take_op(bytes: &[u8]) -> Result<(Op, &[u8]), DecodeError> {
        let damaged = |e: postcard::Error| DecodeError::Damaged(e.to_string());
        match bytes.split_first() {
            Some((&SHARE_FILE, fields)) => {
                let (old, rest): (ShareFile, _) =
                    postcard::take_from_bytes(fields).map_err(damaged)?;
                let op =
                    Op::ShareFile { session: old.session, group: old.group, meta: old.meta.into() };
                Ok((op, rest))
            }
            _ => postcard::take_from_bytes(bytes).map_err(damaged),
        }
    }

    /// The files of a state of format 1 or 2.
    pub fn files(
        old: BTreeMap<GroupId, BTreeMap<FileName, FileRecord>>,
    ) -> BTreeMap<GroupId, BTreeMap<FileName, crate::state::FileRecord>> {
        old.into_iter()
            .map(|(group, files)| (group, files.into_iter().map(|(n, f)| (n, f.into())).collect()))
            .collect()
    }
}

/// Why stored or received bytes are not an entry or a state of this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("written in format {found}, this build reads format {expected}")]
    Format { found: u8, expected: u8 },
    #[error("empty")]
    Empty,
    #[error("damaged: {0}")]
    Damaged(String),
}

impl LogEntry {
    pub fn encode(&self) -> Vec<u8> {
        versioned(ENTRY_FORMAT, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<LogEntry, DecodeError> {
        match bytes.split_first() {
            Some((1, rest)) => {
                let (op, rest) = format2::take_op(rest)?;
                let id: Option<RequestId> = unversioned_rest(rest)?;
                let origin = id.map(|id| Origin { id, fingerprint: None });
                Ok(LogEntry { op, origin })
            }
            Some((2, rest)) => {
                let (op, rest) = format2::take_op(rest)?;
                let old: format2::LogEntry = unversioned_rest(rest)?;
                Ok(LogEntry { op, origin: old.origin })
            }
            _ => unversioned(ENTRY_FORMAT, bytes),
        }
    }
}

fn versioned<T: Serialize>(format: u8, value: &T) -> Vec<u8> {
    let mut bytes = vec![format];
    // Encoding plain data into a Vec cannot fail.
    bytes.extend(postcard::to_stdvec(value).unwrap_or_default());
    bytes
}

/// The rest of an entry of an older format, after its op.
fn unversioned_rest<T: serde::de::DeserializeOwned>(rest: &[u8]) -> Result<T, DecodeError> {
    common::codec::decode(rest).map_err(|e| DecodeError::Damaged(e.to_string()))
}

fn unversioned<T: serde::de::DeserializeOwned>(
    expected: u8,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    let (&found, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if found != expected {
        return Err(DecodeError::Format { found, expected });
    }
    common::codec::decode(rest).map_err(|e| DecodeError::Damaged(e.to_string()))
}

/// A change to the tracker's state. Built by the service from a request (with whatever
/// randomness or hashing it needs already done), validated, made durable, then applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Sets the secret that authenticates tickets; committed once, when a tracker first
    /// starts with an empty store.
    InitSecret {
        secret: TicketSecret,
    },
    CreateUser {
        user: UserId,
        credential: Credential,
    },
    /// A login: the session is known by the hash of the client's token, and bound to the
    /// static key the client proved.
    OpenSession {
        session: SessionId,
        user: UserId,
        peer_addr: SocketAddr,
        key: PublicKey,
    },
    CloseSession {
        session: SessionId,
    },
    CreateGroup {
        group: GroupId,
        owner: UserId,
    },
    RequestJoin {
        group: GroupId,
        user: UserId,
    },
    AcceptRequest {
        owner: UserId,
        group: GroupId,
        user: UserId,
    },
    RejectRequest {
        owner: UserId,
        group: GroupId,
        user: UserId,
    },
    LeaveGroup {
        group: GroupId,
        user: UserId,
    },
    ShareFile {
        session: SessionId,
        group: GroupId,
        meta: FileMeta,
    },
    StopShare {
        session: SessionId,
        group: GroupId,
        name: FileName,
    },
    /// `logout --all`: every session of `user` ends, wherever it was opened.
    CloseUserSessions {
        user: UserId,
    },
    /// The session's peer serves pieces at a new address (a restart on another port).
    MoveSession {
        session: SessionId,
        peer_addr: SocketAddr,
    },
    /// `remove_member`: the owner removes `user` from `group`; their shares in it end, as
    /// with `LeaveGroup`. (Appended last: the entries and states written before it read
    /// the same, so the format stays; a build without it refuses such an entry as damaged
    /// rather than misread it.)
    RemoveMember {
        owner: UserId,
        group: GroupId,
        user: UserId,
    },
}

/// The trackers' secret that authenticates tickets. Its `Debug` hides it: ops and states
/// are logged at debug level.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketSecret(pub [u8; 32]);

impl std::fmt::Debug for TicketSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketSecret(..)")
    }
}

/// A group: its owner, its members in the order they joined, and pending join requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Group {
    owner: UserId,
    members: Vec<UserId>,
    requests: Vec<UserId>,
}

/// A logged-in session, where its peer serves pieces, and the key it proved at login (its
/// requests and its tickets are accepted only from that key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    user: UserId,
    peer_addr: SocketAddr,
    key: PublicKey,
}

/// A file announced in a group and the sessions that share it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileRecord {
    meta: FileMeta,
    sharers: BTreeSet<SessionId>,
}

/// Users, groups, sessions and files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerState {
    secret: Option<TicketSecret>,
    /// The last request of each client that changed state, with its reply, so that a
    /// request retried after a lost reply (on any tracker) is answered, not applied again.
    last_replies: BTreeMap<u64, (Origin, Reply)>,
    users: BTreeMap<UserId, Credential>,
    groups: BTreeMap<GroupId, Group>,
    sessions: BTreeMap<SessionId, Session>,
    files: BTreeMap<GroupId, BTreeMap<FileName, FileRecord>>,
    /// The groups each user is a member of or asked to join: derived from `groups`, kept
    /// by `apply` and rebuilt by `decode`, never encoded (so not in snapshots or the
    /// digest). It makes a heartbeat's `memberships` cost the caller's groups, not all.
    #[serde(skip)]
    groups_of: BTreeMap<UserId, BTreeSet<GroupId>>,
    /// How many sessions each key holds: derived from `sessions` like `groups_of`, for
    /// admission (a key with a session may use the client slots kept for sessions).
    #[serde(skip)]
    keys: BTreeMap<PublicKey, u32>,
    /// Each user's sessions: derived from `sessions` like `groups_of`, so that a login
    /// costs the user's sessions, not every session (20,000 of them in the capacity run).
    #[serde(skip)]
    sessions_by_user: BTreeMap<UserId, BTreeSet<SessionId>>,
}

impl TrackerState {
    /// The credential of `user`, to check a password against outside any lock.
    pub fn credential(&self, user: &UserId) -> Result<Credential, TrackerError> {
        self.users.get(user).cloned().ok_or_else(|| TrackerError::UnknownUser(user.clone()))
    }

    /// Whether `user` exists.
    pub fn has_user(&self, user: &UserId) -> bool {
        self.users.contains_key(user)
    }

    /// The user a session belongs to.
    pub fn session_user(&self, session: Option<SessionId>) -> Result<UserId, TrackerError> {
        session
            .and_then(|s| self.sessions.get(&s))
            .map(|s| s.user.clone())
            .ok_or(TrackerError::NotLoggedIn)
    }

    /// Answers a read-only request. Returns `None` for requests that change state or need
    /// more than the state (a clock, soft state). `is_live` tells which sessions are
    /// currently connected; files only they share are not listed.
    pub fn read(
        &self,
        session: Option<SessionId>,
        request: &Request,
        is_live: &dyn Fn(&SessionId) -> bool,
    ) -> Option<Result<Reply, TrackerError>> {
        let result = match request {
            Request::ListGroups { after } => self.session_user(session).map(|_| {
                let (groups, more) = page(self.groups.keys().filter(|g| Some(*g) > after.as_ref()));
                Reply::Groups { groups, more }
            }),
            Request::ListMyGroups { after } => self.session_user(session).map(|user| {
                // From the user's index (in group order, as `groups`), not a scan of every
                // group (issue 22).
                let ids = self.groups_of.get(&user).into_iter().flatten();
                let mine = ids
                    .filter(|id| Some(*id) > after.as_ref())
                    .filter(|id| self.groups.get(*id).is_some_and(|g| g.members.contains(&user)));
                let (groups, more) = page(mine);
                Reply::Groups { groups, more }
            }),
            Request::ListRequests { group, after } => self
                .session_user(session)
                .and_then(|user| self.owned_group(group, &user))
                .map(|g| {
                    let mut pending: Vec<&UserId> =
                        g.requests.iter().filter(|u| Some(*u) > after.as_ref()).collect();
                    pending.sort_unstable();
                    let (users, more) = page(pending.into_iter());
                    Reply::Users { users, more }
                }),
            Request::ListFiles { group, after } => self
                .session_user(session)
                .and_then(|user| self.member_group(group, &user))
                .map(|_| {
                    let (files, more) = self.file_summaries(group, after.as_ref(), is_live);
                    Reply::Files { files, more }
                }),
            _ => return None,
        };
        Some(result)
    }

    /// One page of a group's files listed after `after` that a live session shares.
    fn file_summaries(
        &self,
        group: &GroupId,
        after: Option<&FileName>,
        is_live: &dyn Fn(&SessionId) -> bool,
    ) -> (Vec<FileSummary>, bool) {
        let Some(files) = self.files.get(group) else { return (Vec::new(), false) };
        let listed = files.values().filter(|f| Some(&f.meta.name) > after).filter_map(|f| {
            let n_live = f.sharers.iter().filter(|s| is_live(s)).count();
            (n_live > 0).then(|| FileSummary {
                name: f.meta.name.clone(),
                size: f.meta.size,
                digest: f.meta.digest,
                n_sharers: u32::try_from(n_live).unwrap_or(u32::MAX),
                n_files: f
                    .meta
                    .tree
                    .as_ref()
                    .map(|t| u32::try_from(t.file_count()).unwrap_or(u32::MAX)),
            })
        });
        page(listed)
    }

    /// How many groups `user` owns.
    pub fn groups_owned(&self, user: &UserId) -> usize {
        self.groups_with(user).filter(|g| &g.owner == user).count()
    }

    /// How many join requests `user` has pending.
    pub fn requests_pending(&self, user: &UserId) -> usize {
        self.groups_with(user).filter(|g| g.requests.contains(user)).count()
    }

    /// The groups `user` owns, is a member of or asked to join, from the `groups_of`
    /// index: O(the user's groups), not O(every group), as the leader counts them before
    /// each of the user's writes (issue 22: a scan of 30,000 groups per `CreateGroup` took
    /// most of the leader's CPU).
    fn groups_with<'a>(&'a self, user: &UserId) -> impl Iterator<Item = &'a Group> + 'a {
        let ids = self.groups_of.get(user).into_iter().flatten();
        ids.filter_map(|id| self.groups.get(id))
    }

    /// Whether `group` lists a file called `name`.
    pub fn has_file(&self, group: &GroupId, name: &FileName) -> bool {
        self.files.get(group).is_some_and(|files| files.contains_key(name))
    }

    /// How many files `group` lists.
    pub fn files_in(&self, group: &GroupId) -> usize {
        self.files.get(group).map_or(0, BTreeMap::len)
    }

    /// The bytes of metadata of the files `user` shares (from any session).
    pub fn metadata_shared_by(&self, user: &UserId) -> u64 {
        let mine = |s: &SessionId| self.sessions.get(s).is_some_and(|s| &s.user == user);
        self.files
            .values()
            .flat_map(BTreeMap::values)
            .filter(|f| f.sharers.iter().any(mine))
            .map(|f| f.meta.metadata_len())
            .sum()
    }

    /// The sessions of `user`.
    pub fn sessions_of<'a>(&'a self, user: &'a UserId) -> impl Iterator<Item = SessionId> + 'a {
        self.sessions_by_user.get(user).into_iter().flatten().copied()
    }

    /// Every session, for the leader's sweep of idle ones.
    pub fn session_ids(&self) -> impl Iterator<Item = &SessionId> {
        self.sessions.keys()
    }

    /// Whether the ticket secret has been set.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// A file of a group the caller is a member of, with the sessions sharing all of it.
    pub fn file_for_member(
        &self,
        user: &UserId,
        group: &GroupId,
        name: &FileName,
    ) -> Result<(&FileMeta, impl Iterator<Item = &SessionId>), TrackerError> {
        self.member_group(group, user)?;
        let record =
            self.files.get(group).and_then(|files| files.get(name)).ok_or_else(|| {
                TrackerError::NoSuchFile { group: group.clone(), name: name.clone() }
            })?;
        Ok((&record.meta, record.sharers.iter()))
    }

    /// The sessions sharing all of the file with `digest` in `group` (none if it has none).
    pub fn sharers_of<'a>(
        &'a self,
        group: &GroupId,
        digest: &'a Sha1Digest,
    ) -> impl Iterator<Item = &'a SessionId> + 'a {
        self.files
            .get(group)
            .into_iter()
            .flat_map(BTreeMap::values)
            .filter(move |f| &f.meta.digest == digest)
            .flat_map(|f| f.sharers.iter())
    }

    /// Checks that `user` is a member of `group` and the group has a file with `digest`,
    /// and returns how many pieces that file has.
    pub fn member_file_pieces(
        &self,
        user: &UserId,
        group: &GroupId,
        digest: &Sha1Digest,
    ) -> Result<u32, TrackerError> {
        self.member_group(group, user)?;
        self.files
            .get(group)
            .and_then(|files| files.values().find(|f| &f.meta.digest == digest))
            .map(|f| u32::try_from(f.meta.pieces.len()).unwrap_or(u32::MAX))
            .ok_or_else(|| {
                TrackerError::BadFileMeta(format!("group {group} has no file with digest {digest}"))
            })
    }

    /// Where a session's peer serves pieces, under which key, and its user.
    pub fn session_peer(&self, session: &SessionId) -> Option<(&UserId, SocketAddr, PublicKey)> {
        self.sessions.get(session).map(|s| (&s.user, s.peer_addr, s.key))
    }

    /// The key a session is bound to.
    pub fn session_key(&self, session: &SessionId) -> Option<PublicKey> {
        self.sessions.get(session).map(|s| s.key)
    }

    /// A ticket for `user`, logged in with `holder`, to fetch the file `digest` of `group`
    /// until `expires`.
    pub fn mint_ticket(
        &self,
        holder: PublicKey,
        user: UserId,
        group: GroupId,
        digest: Sha1Digest,
        expires: u64,
    ) -> Option<Ticket> {
        let mut ticket = Ticket { holder, user, group, digest, expires, mac: [0; 20] };
        ticket.mac = self.ticket_mac(&ticket)?;
        Some(ticket)
    }

    /// Checks a ticket's MAC, its expiry against `now` (Unix seconds), that its user is
    /// still a member of its group, and that the user still has a session with the key the
    /// ticket was issued to (a logout ends the tickets of that login).
    pub fn verify_ticket(&self, ticket: &Ticket, now: u64) -> Result<(), TrackerError> {
        let bad = |why: &str| TrackerError::BadTicket(why.to_string());
        let expected =
            self.ticket_mac(ticket).ok_or_else(|| bad("tracker has no ticket secret"))?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &ticket.mac[..])) {
            return Err(bad("forged or altered"));
        }
        if ticket.expires < now {
            return Err(bad("expired"));
        }
        self.member_group(&ticket.group, &ticket.user)
            .map_err(|_| bad("holder is no longer a member"))?;
        if !self.sessions.values().any(|s| s.user == ticket.user && s.key == ticket.holder) {
            return Err(bad("holder is no longer logged in"));
        }
        Ok(())
    }

    fn ticket_mac(&self, ticket: &Ticket) -> Option<[u8; 20]> {
        let secret = self.secret.as_ref()?;
        // The key is any length for HMAC, so this cannot fail.
        let mut mac = Hmac::<Sha1>::new_from_slice(&secret.0).ok()?;
        let fields = (&ticket.holder, &ticket.user, &ticket.group, &ticket.digest, ticket.expires);
        mac.update(&postcard::to_stdvec(&fields).ok()?);
        Some(mac.finalize().into_bytes().into())
    }

    fn group(&self, group: &GroupId) -> Result<&Group, TrackerError> {
        self.groups.get(group).ok_or_else(|| TrackerError::UnknownGroup(group.clone()))
    }

    fn member_group(&self, group: &GroupId, user: &UserId) -> Result<&Group, TrackerError> {
        let g = self.group(group)?;
        if !g.members.contains(user) {
            return Err(TrackerError::NotMember(group.clone()));
        }
        Ok(g)
    }

    fn owned_group(&self, group: &GroupId, user: &UserId) -> Result<&Group, TrackerError> {
        let g = self.group(group)?;
        if &g.owner != user {
            return Err(TrackerError::NotOwner(group.clone()));
        }
        Ok(g)
    }

    fn live_session(&self, session: &SessionId) -> Result<&Session, TrackerError> {
        self.sessions.get(session).ok_or(TrackerError::NotLoggedIn)
    }

    /// Checks whether `op` can be applied now and what it would answer, without changing
    /// anything.
    pub fn check(&self, op: &Op) -> Result<Reply, TrackerError> {
        match op {
            Op::InitSecret { .. } => Ok(Reply::Done),
            Op::CreateUser { user, .. } => {
                if self.users.contains_key(user) {
                    return Err(TrackerError::UserExists(user.clone()));
                }
                Ok(Reply::Done)
            }
            Op::OpenSession { session, user, .. } => {
                if !self.users.contains_key(user) {
                    return Err(TrackerError::UnknownUser(user.clone()));
                }
                if self.sessions.contains_key(session) {
                    return Err(TrackerError::Unavailable("session token already in use".into()));
                }
                Ok(Reply::LoggedIn)
            }
            Op::CloseSession { session } | Op::MoveSession { session, .. } => {
                self.live_session(session).map(|_| Reply::Done)
            }
            Op::CloseUserSessions { user } => {
                if !self.users.contains_key(user) {
                    return Err(TrackerError::UnknownUser(user.clone()));
                }
                Ok(Reply::Done)
            }
            Op::CreateGroup { group, owner } => {
                if !self.users.contains_key(owner) {
                    return Err(TrackerError::UnknownUser(owner.clone()));
                }
                if self.groups.contains_key(group) {
                    return Err(TrackerError::GroupExists(group.clone()));
                }
                Ok(Reply::Done)
            }
            Op::RequestJoin { group, user } => {
                let g = self.group(group)?;
                if g.members.contains(user) {
                    return Err(TrackerError::AlreadyMember(group.clone()));
                }
                if g.requests.contains(user) {
                    return Err(TrackerError::AlreadyRequested(group.clone()));
                }
                Ok(Reply::Done)
            }
            Op::AcceptRequest { owner, group, user } | Op::RejectRequest { owner, group, user } => {
                let g = self.owned_group(group, owner)?;
                if !g.requests.contains(user) {
                    return Err(TrackerError::NoSuchRequest {
                        group: group.clone(),
                        user: user.clone(),
                    });
                }
                Ok(Reply::Done)
            }
            Op::LeaveGroup { group, user } => self.member_group(group, user).map(|_| Reply::Done),
            Op::RemoveMember { owner, group, user } => {
                let g = self.owned_group(group, owner)?;
                if user == owner {
                    return Err(TrackerError::OwnerCannotRemoveSelf(group.clone()));
                }
                if !g.members.contains(user) {
                    return Err(TrackerError::NoSuchMember {
                        group: group.clone(),
                        user: user.clone(),
                    });
                }
                Ok(Reply::Done)
            }
            Op::ShareFile { session, group, meta } => {
                let user = &self.live_session(session)?.user;
                self.member_group(group, user)?;
                check_meta(meta)?;
                match self.files.get(group).and_then(|files| files.get(&meta.name)) {
                    Some(existing) if existing.meta.digest != meta.digest => {
                        Err(TrackerError::NameTaken {
                            group: group.clone(),
                            name: meta.name.clone(),
                        })
                    }
                    Some(_) => Ok(Reply::Uploaded { new_file: false }),
                    None => Ok(Reply::Uploaded { new_file: true }),
                }
            }
            Op::StopShare { session, group, name } => {
                let user = &self.live_session(session)?.user;
                self.member_group(group, user)?;
                let file =
                    self.files.get(group).and_then(|files| files.get(name)).ok_or_else(|| {
                        TrackerError::NoSuchFile { group: group.clone(), name: name.clone() }
                    })?;
                if !file.sharers.contains(session) {
                    return Err(TrackerError::NotSharing {
                        group: group.clone(),
                        name: name.clone(),
                    });
                }
                Ok(Reply::Done)
            }
        }
    }

    /// The reply already given to the request `origin`, if it was applied.
    pub fn replied(&self, origin: &Origin) -> Option<Reply> {
        self.last_replies
            .get(&origin.id.client)
            .filter(|(recorded, _)| recorded.answers(origin))
            .map(|(_, reply)| reply.clone())
    }

    /// Applies a log entry: its op, and the record of the request it answered. An entry
    /// whose request was already applied (proposed again after a lost reply) answers what
    /// the first one did and changes nothing.
    pub fn apply_entry(&mut self, entry: &LogEntry) -> Result<Reply, TrackerError> {
        if let Some(reply) = entry.origin.and_then(|origin| self.replied(&origin)) {
            return Ok(reply);
        }
        let reply = self.apply(&entry.op)?;
        if let Some(origin) = entry.origin {
            if self.last_replies.len() >= MAX_REMEMBERED_CLIENTS
                && !self.last_replies.contains_key(&origin.id.client)
            {
                // Deterministic on every replica: forget the lowest client id.
                self.last_replies.pop_first();
            }
            self.last_replies.insert(origin.id.client, (origin, reply.clone()));
        }
        Ok(reply)
    }

    /// The state as a snapshot's bytes (`STATE_FORMAT`).
    pub fn encode(&self) -> Vec<u8> {
        versioned(STATE_FORMAT, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<TrackerState, DecodeError> {
        let mut state: TrackerState = match bytes.first() {
            Some(1) => unversioned::<format2::TrackerState<(u64, Reply)>>(1, bytes)?.upgrade(
                |client, (seq, reply)| {
                    let id = RequestId { client, seq };
                    (Origin { id, fingerprint: None }, reply)
                },
            ),
            Some(2) => unversioned::<format2::TrackerState<(Origin, Reply)>>(2, bytes)?
                .upgrade(|_, record| record),
            _ => unversioned(STATE_FORMAT, bytes)?,
        };
        state.groups_of = index_groups(&state.groups);
        state.reindex_sessions();
        Ok(state)
    }

    /// The groups `user` is a member of or asked to join, with how, and the first
    /// `MAX_LISTED_REQUESTS` pending requests to join the groups `user` owns (for
    /// heartbeats). O(the user's groups and the requests listed).
    pub fn memberships(&self, user: &UserId) -> Memberships {
        let groups = self.groups_of.get(user).into_iter().flatten();
        let requests = groups
            .clone()
            .filter_map(|id| Some((id, self.groups.get(id)?)))
            .filter(|(_, g)| &g.owner == user)
            .flat_map(|(id, g)| g.requests.iter().map(move |u| (id.clone(), u.clone())))
            .take(MAX_LISTED_REQUESTS)
            .collect();
        let roles = groups.filter_map(|id| {
            let g = self.groups.get(id)?;
            let role = if &g.owner == user {
                GroupRole::Owner
            } else if g.members.contains(user) {
                GroupRole::Member
            } else {
                GroupRole::Requested
            };
            Some((id.clone(), role))
        });
        Memberships::new(roles.collect(), requests)
    }

    /// Whether `key` holds a session (for admission).
    pub fn key_has_session(&self, key: &PublicKey) -> bool {
        self.keys.contains_key(key)
    }

    /// Whether `key` holds a session of `user`.
    pub fn key_has_session_of(&self, key: &PublicKey, user: &UserId) -> bool {
        self.key_has_session(key)
            && self
                .sessions_of(user)
                .any(|id| self.sessions.get(&id).is_some_and(|s| &s.key == key))
    }

    /// Rebuilds the indexes derived from `sessions`: `keys` and `sessions_by_user`.
    fn reindex_sessions(&mut self) {
        self.keys.clear();
        self.sessions_by_user.clear();
        for (id, session) in &self.sessions {
            *self.keys.entry(session.key).or_default() += 1;
            self.sessions_by_user.entry(session.user.clone()).or_default().insert(*id);
        }
    }

    /// Session `id` of `old` is gone: the indexes follow.
    fn session_removed(&mut self, id: &SessionId, old: &Session) {
        self.key_removed(old.key);
        if let Some(sessions) = self.sessions_by_user.get_mut(&old.user) {
            sessions.remove(id);
            if sessions.is_empty() {
                self.sessions_by_user.remove(&old.user);
            }
        }
    }

    fn index_add(&mut self, user: &UserId, group: &GroupId) {
        self.groups_of.entry(user.clone()).or_default().insert(group.clone());
    }

    fn key_removed(&mut self, key: PublicKey) {
        if let Some(n) = self.keys.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.keys.remove(&key);
            }
        }
    }

    fn index_remove(&mut self, user: &UserId, group: &GroupId) {
        if let Some(groups) = self.groups_of.get_mut(user) {
            groups.remove(group);
            if groups.is_empty() {
                self.groups_of.remove(user);
            }
        }
    }

    /// Applies `op` if `check` allows it, and returns its reply; on an error nothing changes.
    pub fn apply(&mut self, op: &Op) -> Result<Reply, TrackerError> {
        let reply = self.check(op)?;
        match op {
            Op::InitSecret { secret } => {
                self.secret.get_or_insert(*secret);
            }
            Op::CreateUser { user, credential } => {
                self.users.insert(user.clone(), credential.clone());
            }
            Op::OpenSession { session, user, peer_addr, key } => {
                let record = Session { user: user.clone(), peer_addr: *peer_addr, key: *key };
                if let Some(old) = self.sessions.insert(*session, record) {
                    self.session_removed(session, &old);
                }
                *self.keys.entry(*key).or_default() += 1;
                self.sessions_by_user.entry(user.clone()).or_default().insert(*session);
            }
            Op::CloseSession { session } => {
                if let Some(old) = self.sessions.remove(session) {
                    self.session_removed(session, &old);
                }
                self.remove_sharers(|s| s == session);
            }
            Op::MoveSession { session, peer_addr } => {
                if let Some(record) = self.sessions.get_mut(session) {
                    record.peer_addr = *peer_addr;
                }
            }
            Op::CloseUserSessions { user } => {
                let gone: BTreeSet<SessionId> = self.sessions_of(user).collect();
                for id in &gone {
                    if let Some(old) = self.sessions.remove(id) {
                        self.session_removed(id, &old);
                    }
                }
                self.remove_sharers(|s| gone.contains(s));
            }
            Op::CreateGroup { group, owner } => {
                let g = Group {
                    owner: owner.clone(),
                    members: vec![owner.clone()],
                    requests: Vec::new(),
                };
                self.groups.insert(group.clone(), g);
                self.index_add(owner, group);
            }
            Op::RequestJoin { group, user } => {
                if let Some(g) = self.groups.get_mut(group) {
                    g.requests.push(user.clone());
                    self.index_add(user, group);
                }
            }
            Op::AcceptRequest { group, user, .. } => {
                if let Some(g) = self.groups.get_mut(group) {
                    g.requests.retain(|u| u != user);
                    g.members.push(user.clone());
                }
            }
            Op::RejectRequest { group, user, .. } => {
                if let Some(g) = self.groups.get_mut(group) {
                    g.requests.retain(|u| u != user);
                    self.index_remove(user, group);
                }
            }
            // The owner stays, so the group does too: this is a member leaving.
            Op::LeaveGroup { group, user } | Op::RemoveMember { group, user, .. } => {
                self.leave_group(group, user)
            }
            Op::ShareFile { session, group, meta } => {
                let files = self.files.entry(group.clone()).or_default();
                let record = files
                    .entry(meta.name.clone())
                    .or_insert_with(|| FileRecord { meta: meta.clone(), sharers: BTreeSet::new() });
                record.sharers.insert(*session);
            }
            Op::StopShare { session, group, name } => {
                if let Some(files) = self.files.get_mut(group) {
                    if let Some(record) = files.get_mut(name) {
                        record.sharers.remove(session);
                    }
                }
                self.drop_unshared_files();
            }
        }
        Ok(reply)
    }

    fn leave_group(&mut self, group: &GroupId, user: &UserId) {
        let Some(g) = self.groups.get_mut(group) else { return };
        g.members.retain(|u| u != user);
        if g.members.is_empty() {
            // Those who asked to join a removed group are no longer waiting on it.
            let requesters = std::mem::take(&mut g.requests);
            self.groups.remove(group);
            self.files.remove(group);
            for requester in requesters.iter().chain([user]) {
                self.index_remove(requester, group);
            }
            return;
        }
        self.index_remove(user, group);
        let Some(g) = self.groups.get_mut(group) else { return };
        if &g.owner == user {
            // Members are kept in join order, so the first is the longest-standing.
            g.owner = g.members[0].clone();
        }
        // The member's shares in that group end.
        let sessions = &self.sessions;
        if let Some(files) = self.files.get_mut(group) {
            for record in files.values_mut() {
                record.sharers.retain(|s| sessions.get(s).is_none_or(|s| &s.user != user));
            }
        }
        self.drop_unshared_files();
    }

    fn remove_sharers(&mut self, mut gone: impl FnMut(&SessionId) -> bool) {
        for files in self.files.values_mut() {
            for record in files.values_mut() {
                record.sharers.retain(|s| !gone(s));
            }
        }
        self.drop_unshared_files();
    }

    fn drop_unshared_files(&mut self) {
        for files in self.files.values_mut() {
            files.retain(|_, record| !record.sharers.is_empty());
        }
        self.files.retain(|_, files| !files.is_empty());
    }
}

/// The first `MAX_PAGE_ITEMS` of `items`, and whether more follow.
fn page<'a, T: Clone + 'a>(
    items: impl Iterator<Item = impl std::borrow::Borrow<T>>,
) -> (Vec<T>, bool) {
    let mut items = items.peekable();
    let first: Vec<T> = items.by_ref().take(MAX_PAGE_ITEMS).map(|i| i.borrow().clone()).collect();
    (first, items.peek().is_some())
}

/// Which groups each user is a member of or asked to join (`TrackerState::groups_of`).
fn index_groups(groups: &BTreeMap<GroupId, Group>) -> BTreeMap<UserId, BTreeSet<GroupId>> {
    let mut index: BTreeMap<UserId, BTreeSet<GroupId>> = BTreeMap::new();
    for (id, g) in groups {
        for user in g.members.iter().chain(&g.requests) {
            index.entry(user.clone()).or_default().insert(id.clone());
        }
    }
    index
}

/// Checks that a file's metadata is self-consistent: the piece count fits the size and the
/// digest is the digest of that size and those pieces. For a folder (issue 23): the size
/// is its files' total, the piece count its `FolderLayout`'s and the digest its
/// `folder_digest` (the tree itself was checked, and bounded, when it was decoded).
fn check_meta(meta: &FileMeta) -> Result<(), TrackerError> {
    if let Some(tree) = &meta.tree {
        return check_folder_meta(meta, tree);
    }
    let layout = Layout::new(meta.size).map_err(|e| TrackerError::BadFileMeta(e.to_string()))?;
    if meta.pieces.len() != layout.n_pieces() as usize {
        return Err(TrackerError::BadFileMeta(format!(
            "{} piece hashes for {} pieces",
            meta.pieces.len(),
            layout.n_pieces()
        )));
    }
    if file_digest(meta.size, &meta.pieces) != meta.digest {
        return Err(TrackerError::BadFileMeta("digest does not match the pieces".to_string()));
    }
    Ok(())
}

fn check_folder_meta(meta: &FileMeta, tree: &Tree) -> Result<(), TrackerError> {
    let bad = |why: String| Err(TrackerError::BadFileMeta(why));
    let layout = FolderLayout::new(tree).map_err(|e| TrackerError::BadFileMeta(e.to_string()))?;
    if meta.size != tree.total_size() {
        return bad(format!("size {} for a folder of {} bytes", meta.size, tree.total_size()));
    }
    if meta.pieces.len() != layout.n_pieces() as usize {
        return bad(format!(
            "{} piece hashes for a folder of {} pieces",
            meta.pieces.len(),
            layout.n_pieces()
        ));
    }
    if folder_digest(tree, &meta.pieces) != meta.digest {
        return bad("digest does not match the folder's tree and pieces".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
