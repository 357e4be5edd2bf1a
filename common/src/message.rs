//! The messages of the client ↔ tracker protocol: one typed enum per direction.
//!
//! Every connection is a secure channel (`connection`) on which the client proved its static
//! key and the tracker the key `tracker_info.txt` lists for it. It then opens with
//! `ClientMessage::Hello` answered by `TrackerMessage::Welcome`
//! (or `TrackerMessage::Refused` on a version mismatch); after that the client sends
//! `Request`s and the tracker answers each with the `Response` of the same `RequestId`.
//! Encoding lives in `codec`, framing in `frame`.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::bitfield::Bitfield;
use crate::folder::Tree;
use crate::hash::Sha1Digest;
use crate::id::{FileName, GroupId, Password, UserId};
use crate::identity::PublicKey;

/// The protocol version this build speaks. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 10;

/// Identifies one request of one client instance, so that a request retried after a lost
/// connection is recognised and applied once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// Random per client process.
    pub client: u64,
    /// Increases with every request of that client.
    pub seq: u64,
}

/// A logged-in session's secret: chosen at random by the client at `login` and sent with
/// every later request of the session. The tracker keeps only its hash (`SessionId`), and
/// accepts it only over a channel on which the client proved the key the session was
/// opened with.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionToken(pub [u8; 32]);

impl SessionToken {
    /// What the tracker stores and logs in place of the token: its SHA-256.
    pub fn id(&self) -> SessionId {
        use sha2::Digest;
        SessionId(sha2::Sha256::digest(self.0).into())
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Nothing of the secret itself: the id is enough to correlate logs.
        write!(f, "Token({:?})", self.id())
    }
}

/// A session as the tracker knows it: the SHA-256 of its token. Knowing it does not let
/// anyone act in the session.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub [u8; 32]);

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Session({:02x}{:02x}{:02x}..)", self.0[0], self.0[1], self.0[2])
    }
}

/// Client → tracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// The first message on a connection.
    Hello {
        /// `PROTOCOL_VERSION` of the client.
        version: u16,
    },
    /// A command, with the session it runs in (none for `CreateUser` and `Login`).
    Request { id: RequestId, session: Option<SessionToken>, request: Request },
    /// Instead of `Hello`: another tracker (`from`) opens a replication connection; the
    /// messages that follow are `replica_message`s. Accepted only on a channel whose peer
    /// proved the key `tracker_info.txt` lists for tracker `from`.
    ReplicaHello { version: u16, from: u32 },
    /// After `Welcome`, from a client that is logged in: the session it resumes on this
    /// connection (no answer). Until a connection has a valid session (or logs in), the
    /// tracker takes only frames up to `PRE_LOGIN_FRAME_LEN`.
    Resume { session: SessionToken },
    /// Instead of `Hello` (issue 19, protocol 8): this connection is one end of the relay
    /// `nonce`, which the leader had this tracker expect, in `session` (of the key proven on
    /// this channel). Answered `RelayReady` once the other end is there (or
    /// `RelayRefused`); after `RelayReady` (and, from the seeder's end, its `RelayGo`) the
    /// connection carries the two peers' bytes, which the tracker copies unread.
    Relay { version: u16, session: SessionToken, nonce: u64 },
    /// The seeder's end of a relay acknowledges `RelayReady`: after it, it reads nothing
    /// more from the tracker's channel.
    RelayGo,
}

/// The most items one page of a list reply holds (a page of the largest items, file
/// summaries, stays far below the frame limit): longer lists take several requests, each
/// naming the last item it got.
pub const MAX_PAGE_ITEMS: usize = 1000;

/// The largest frame a tracker takes from a connection that has no session yet (a
/// `create_user` or `login` is far smaller; an `upload_file` needs a session anyway).
pub const PRE_LOGIN_FRAME_LEN: usize = 64 * 1024;

/// What a client asks of the tracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `create_user`.
    CreateUser { user: UserId, password: Password },
    /// `login`; `peer_addr` is where this client serves pieces (under the key it proved on
    /// this channel); `session` is the fresh random token the client will use.
    Login { user: UserId, password: Password, peer_addr: SocketAddr, session: SessionToken },
    /// `logout`: ends the session and every share of it.
    Logout,
    /// `create_group`.
    CreateGroup { group: GroupId },
    /// `join_group`.
    JoinGroup { group: GroupId },
    /// `leave_group`.
    LeaveGroup { group: GroupId },
    /// `list_requests`: the pending requests of a group, by user id, from the first after
    /// `after` (one page: see `MAX_PAGE_ITEMS`).
    ListRequests { group: GroupId, after: Option<UserId> },
    /// `accept_request`.
    AcceptRequest { group: GroupId, user: UserId },
    /// `reject_request`.
    RejectRequest { group: GroupId, user: UserId },
    /// `list_groups`: every group, by id, from the first after `after` (one page).
    ListGroups { after: Option<GroupId> },
    /// `list_my_groups`: the caller's groups, by id, from the first after `after` (one
    /// page).
    ListMyGroups { after: Option<GroupId> },
    /// `list_files`: a group's files, by name, from the first after `after` (one page).
    ListFiles { group: GroupId, after: Option<FileName> },
    /// `upload_file`: announce a file and share it from this session.
    UploadFile { group: GroupId, file: FileMeta },
    /// `stop_share`.
    StopShare { group: GroupId, name: FileName },
    /// A file's metadata, the live peers that have pieces of it, and a ticket that proves
    /// to them that the caller is a member of the group (members only).
    GetFile { group: GroupId, name: FileName },
    /// This session has (only) these pieces of a file it is downloading, and serves them.
    AnnouncePieces { group: GroupId, digest: Sha1Digest, have: Bitfield },
    /// A seeder asks whether a downloader's ticket is genuine and still valid.
    CheckTicket { ticket: Ticket },
    /// A digest of the tracker's durable state, to compare trackers (operators, tests).
    StateDigest,
    /// This session is alive (sent every few seconds; any request counts too). `known` is
    /// the `Memberships::version` the client last got (`None` at first): the reply carries
    /// the caller's memberships only when they differ from it.
    Heartbeat { known: Option<u64> },
    /// `logout --all`: ends every session of this user, wherever it was opened (a lost
    /// or stolen device's included).
    LogoutEverywhere,
    /// This tracker's place in the cluster, as its `status` line shows it (members only):
    /// any tracker answers for itself at once, without its leader or a read barrier, as
    /// it matters most when there is no majority. The dashboard's trackers panel.
    Status,
    /// Every address this session's peer may be reached at besides the one it logged in
    /// with (issue 19: its observed public address with its listen port, a router mapping),
    /// at most `peer_addr::MAX_PEER_ADDRS`; replaces what it registered before. Soft state,
    /// kept by the leader like piece announcements, and sent again every so often. Appended
    /// last: the encoding of the others must not move.
    Reachable { addrs: Vec<SocketAddr> },
    /// This session's peer now serves pieces at `peer_addr` (protocol 6): a restarted
    /// client that could not have its port again keeps its session (issue 20).
    MoveSession { peer_addr: SocketAddr },
    /// `remove_member` (owner only): `user` is no longer a member of `group`, and their
    /// shares in it end, as if they had left; their tickets for it stop working when they
    /// expire. (Appended last: requests are kept in the replicated state, and the
    /// encoding of the others must not move.)
    RemoveMember { group: GroupId, user: UserId },
    /// A long poll (issue 19, protocol 8): answered with the connection reversals other
    /// peers asked this session's peer for (`Reply::Calls`) as soon as there is one, or
    /// with none after `AWAIT_CALLS_FOR`. Answered by the tracker it reaches, whatever its
    /// role; a peer keeps one open, on a link of its own, while logged in.
    AwaitCalls,
    /// Connection reversal (issue 19, protocol 8): the caller cannot reach the peer that
    /// proved `seeder` and asks it to connect out to the caller's registered addresses,
    /// now, naming `nonce` in its first frame (`PeerRequest::Reversed`). `ticket` is the
    /// caller's own ticket for the file: the tracker checks it, that `seeder` is a live
    /// sharer of that file, and the caller's reversal budget, before it passes the call on.
    Reverse { ticket: Ticket, seeder: PublicKey, nonce: u64 },
    /// A relay (issue 19, protocol 8): checked as `Reverse`, then the tracker where the
    /// seeder waits expects both ends (`ClientMessage::Relay` with `nonce`) and the seeder
    /// gets a call naming it (`PeerCall::relay`). Answered `Reply::RelayAt`.
    Relay { ticket: Ticket, seeder: PublicKey, nonce: u64 },
    /// TCP hole punching (issue 19, protocol 9): checked as `Reverse` (and counted in the
    /// same budget), then the seeder gets a call with `PeerCall::punch`, and connects from
    /// its listening port to the caller's registered public addresses at once while the
    /// caller connects to the seeder's (a simultaneous open). Answered `Done`. The caller
    /// punches from `port` (protocol 10; 0: its listening port), which replaces the port
    /// of each of its public addresses in the call: two peers that fetch from each other
    /// need two connections, and two punched from both listening ports would be the same
    /// four-tuple.
    Punch { ticket: Ticket, seeder: PublicKey, nonce: u64, port: u16 },
}

/// How long a tracker holds an `AwaitCalls` without a call before it answers with none.
pub const AWAIT_CALLS_FOR: std::time::Duration = std::time::Duration::from_secs(20);

/// The most calls one `Reply::Calls` carries (a tracker queues no more per waiting peer).
pub const MAX_CALLS_PER_REPLY: usize = 8;

/// A downloader's request, passed on by a tracker, that this peer connect out to it (issue
/// 19: connection reversal): the downloader's key (which it must prove), its user, where
/// it listens (what it registered with the tracker, not what it claimed in the call), the
/// file it fetches, and the nonce to name in the first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCall {
    pub from: PublicKey,
    pub user: UserId,
    pub addrs: Vec<SocketAddr>,
    pub group: GroupId,
    pub digest: Sha1Digest,
    pub nonce: u64,
    /// Not a reversal but a relay: connect to this tracker (its line in
    /// `tracker_info.txt`) and join relay `nonce` there.
    pub relay: Option<u32>,
    /// Not a reversal but a hole punch (protocol 9): connect from the listening port to
    /// the public ones of `addrs` now, the caller doing the same towards this peer; the
    /// caller runs the handshake as initiator whoever's connect completed.
    pub punch: bool,
}

impl Request {
    /// What makes a retry of this request, sent by the client that proved `client`,
    /// recognisable: the SHA-256 of the key and of the request, passwords left out (the
    /// tracker keeps it in its replicated state).
    pub fn fingerprint(&self, client: &PublicKey) -> [u8; 32] {
        use sha2::Digest;
        let content = match self {
            Request::CreateUser { user, .. } => postcard::to_stdvec(&(0u8, user)),
            Request::Login { user, peer_addr, session, .. } => {
                postcard::to_stdvec(&(1u8, user, peer_addr, session.id()))
            }
            other => postcard::to_stdvec(&(2u8, other)),
        };
        let mut hash = sha2::Sha256::new();
        hash.update(client.0);
        // Encoding plain data into a Vec cannot fail.
        hash.update(content.unwrap_or_default());
        hash.finalize().into()
    }
}

/// What a file is: enough for a downloader to fetch and verify every byte of it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// The base name it is shared under.
    pub name: FileName,
    /// Length in bytes.
    pub size: u64,
    /// `hash::file_digest(size, &pieces)`.
    pub digest: Sha1Digest,
    /// The SHA1 of every 512 KiB piece, in order.
    pub pieces: Vec<Sha1Digest>,
    /// For a folder (issue 23; protocol 7): its tree. Then `size` is the bytes of all its
    /// files, `pieces` those of its `FolderLayout` and `digest` its `folder_digest`.
    /// (Appended last, so that the tracker's readers of older formats only miss it.)
    pub tree: Option<Tree>,
}

/// The longest life a tracker gives a ticket (`--ticket-lifetime`), in seconds; a seeder
/// refuses a ticket that claims a longer one as forged.
pub const MAX_TICKET_LIFETIME_SECS: u64 = 3600;

/// Proof, issued by a tracker, that `user`, logged in with the static key `holder`, was a
/// member of `group` and may fetch the file with `digest` until `expires` (seconds since the
/// Unix epoch; a few minutes, renewed while the download runs). `mac` is an HMAC-SHA1 over
/// the other fields with a secret only the trackers know; seeders ask a tracker to check it,
/// and accept it only from a peer that proved `holder` in its handshake.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ticket {
    pub holder: PublicKey,
    pub user: UserId,
    pub group: GroupId,
    pub digest: Sha1Digest,
    pub expires: u64,
    pub mac: [u8; 20],
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the MAC: logs must not be a source of tickets.
        f.debug_struct("Ticket")
            .field("holder", &self.holder)
            .field("user", &self.user)
            .field("group", &self.group)
            .field("digest", &self.digest)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// A peer that has pieces of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The user logged in on it (for people: peers read as `user@addr`).
    pub user: UserId,
    /// Where it serves pieces.
    pub addr: SocketAddr,
    /// The static key it must prove when a downloader connects.
    pub key: PublicKey,
    /// The pieces it has; `None` when it has the whole file.
    pub have: Option<Bitfield>,
    /// Every address it registered (`Request::Reachable`), `addr` among them or not; a
    /// downloader tries them all (protocol 6).
    pub addrs: Vec<SocketAddr>,
}

impl FileMeta {
    /// About the bytes it takes to keep: its piece hashes, name and fixed fields.
    pub fn metadata_len(&self) -> u64 {
        let hashes = self.pieces.len() as u64 * 20;
        let tree = self.tree.as_ref().map_or(0, Tree::metadata_len);
        hashes + self.name.as_str().len() as u64 + 8 + 20 + tree
    }

    /// Whether it describes a folder.
    pub fn is_folder(&self) -> bool {
        self.tree.is_some()
    }
}

impl fmt::Debug for FileMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The piece hashes can run to megabytes; logs get their count.
        f.debug_struct("FileMeta")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("digest", &self.digest)
            .field("n_pieces", &self.pieces.len())
            .field("n_entries", &self.tree.as_ref().map(|t| t.entries().len()))
            .finish()
    }
}

/// One line of `list_files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSummary {
    pub name: FileName,
    pub size: u64,
    pub digest: Sha1Digest,
    /// How many peers currently share it.
    pub n_sharers: u32,
    /// For a folder (protocol 7): how many files it holds; `None` for a file.
    pub n_files: Option<u32>,
}

/// Tracker → client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrackerMessage {
    /// The answer to `Hello` when the versions match.
    Welcome {
        /// `PROTOCOL_VERSION` of the tracker.
        version: u16,
        /// This tracker's line number in `tracker_info.txt`.
        tracker_id: u32,
        /// The address the tracker sees the connection come from (issue 19): behind a NAT,
        /// the router's public address (protocol 6).
        observed: SocketAddr,
    },
    /// The answer to `Hello` when they do not; the tracker then closes the connection.
    Refused { version: u16 },
    /// The result of the request with this id.
    Response { id: RequestId, result: Result<Reply, TrackerError> },
    /// The answer to `ClientMessage::Relay` once both ends are there (protocol 8).
    RelayReady,
    /// The answer to `ClientMessage::Relay` when there is no relay for this end.
    RelayRefused { reason: TrackerError },
}

/// A successful result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The change was made (and is durable).
    Done,
    /// `Login` succeeded: the client's token now opens the session.
    LoggedIn,
    /// A page of groups; `more` when the list goes on after the last one.
    Groups { groups: Vec<GroupId>, more: bool },
    /// A page of users; `more` when the list goes on after the last one.
    Users { users: Vec<UserId>, more: bool },
    /// A page of files; `more` when the list goes on after the last one.
    Files { files: Vec<FileSummary>, more: bool },
    /// `UploadFile` succeeded; `new_file` is false when the group already had that content
    /// under that name and this peer became one more sharer.
    Uploaded { new_file: bool },
    /// The answer to `GetFile`.
    FileInfo { meta: FileMeta, peers: Vec<PeerInfo>, ticket: Box<Ticket> },
    /// The answer to `CheckTicket` when the ticket is valid.
    TicketOk,
    /// The answer to `StateDigest`: the last applied entry's sequence number and the SHA1
    /// of the state.
    StateDigest { seq: u64, digest: Sha1Digest },
    /// The answer to `Heartbeat`: the caller's memberships, or `None` when their version is
    /// the one the heartbeat said it knows. (Appended last: replies are kept in the
    /// replicated state, and the encoding of the others must not move.)
    Alive { memberships: Option<Memberships> },
    /// The answer to `Status` (appended last, as `Alive`).
    Status { status: TrackerStatus },
    /// The answer to `AwaitCalls` (protocol 8): at most `MAX_CALLS_PER_REPLY` calls, none
    /// when the wait ran out.
    Calls { calls: Vec<PeerCall> },
    /// The answer to `Relay` (protocol 8): join it at this tracker.
    RelayAt { tracker: u32 },
}

/// A tracker's place in the cluster (`Request::Status`), as its `status` line shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerStatus {
    /// Its line in `tracker_info.txt`.
    pub id: u32,
    pub role: TrackerRole,
    /// The Raft term it is in.
    pub term: u64,
    /// The voters of its configuration.
    pub voters: Vec<u32>,
    /// How many voters it heard from in the last second, itself included.
    pub reach: u32,
    /// Its commit and applied indexes.
    pub commit: u64,
    pub applied: u64,
}

/// A tracker's role, as `status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrackerRole {
    /// The leader: it commits writes.
    Primary,
    /// A follower of tracker `leader`.
    Backup { leader: u32 },
    /// Campaigning in an election.
    Candidate,
    /// It knows no leader (and is not campaigning).
    Leaderless,
    /// It votes and keeps the log but serves no client.
    Witness,
}

impl fmt::Display for TrackerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackerRole::Primary => write!(f, "primary"),
            TrackerRole::Backup { leader } => write!(f, "backup of {leader}"),
            TrackerRole::Candidate => write!(f, "candidate"),
            TrackerRole::Leaderless => write!(f, "leaderless"),
            TrackerRole::Witness => write!(f, "witness"),
        }
    }
}

/// The most join requests a heartbeat reply lists (`Memberships::requests`): an owner
/// with more pending sees the rest as the first ones are handled (`list_requests` lists
/// them all).
pub const MAX_LISTED_REQUESTS: usize = 100;

/// The groups a user is in or asked to join, and how, and the join requests waiting for
/// the user's decision: what a client compares between heartbeats to tell its user that a
/// group passed to them, a request was accepted or rejected, a group is gone, or someone
/// asks to join a group they own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memberships {
    /// Derived from `groups` and `requests` alone (the same on every tracker), so a client
    /// that sends it back gets `None` while nothing changed.
    pub version: u64,
    /// Sorted by group id.
    pub groups: Vec<(GroupId, GroupRole)>,
    /// Pending requests to join the groups the user owns, by group id and then in the
    /// order they were made; at most `MAX_LISTED_REQUESTS`.
    pub requests: Vec<(GroupId, UserId)>,
}

impl Memberships {
    /// The memberships `groups` (sorted by group id) with the pending `requests` of the
    /// user's own groups, and their version.
    pub fn new(groups: Vec<(GroupId, GroupRole)>, requests: Vec<(GroupId, UserId)>) -> Memberships {
        let mut bytes = Vec::new();
        for (group, role) in &groups {
            bytes.extend_from_slice(group.as_str().as_bytes());
            bytes.push(0);
            bytes.push(*role as u8);
        }
        // A separator no id holds, so that no list of groups reads as one with requests.
        bytes.push(0xff);
        for (group, user) in &requests {
            bytes.extend_from_slice(group.as_str().as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(user.as_str().as_bytes());
            bytes.push(0);
        }
        let digest = Sha1Digest::of(&bytes).0;
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Memberships { version: u64::from_be_bytes(first), groups, requests }
    }
}

/// A user's place in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GroupRole {
    /// Owner (and member).
    Owner,
    /// Member, not owner.
    Member,
    /// Asked to join; not yet accepted or rejected.
    Requested,
}

/// Why the tracker refused a request. `Display` is the text the REPL prints after `error: `.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TrackerError {
    #[error("user {0} already exists")]
    UserExists(UserId),
    #[error("unknown user {0}")]
    UnknownUser(UserId),
    #[error("wrong password")]
    WrongPassword,
    #[error("not logged in")]
    NotLoggedIn,
    #[error("group {0} already exists")]
    GroupExists(GroupId),
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    #[error("not a member of group {0}")]
    NotMember(GroupId),
    #[error("only the owner of group {0} can do that")]
    NotOwner(GroupId),
    #[error("already a member of group {0}")]
    AlreadyMember(GroupId),
    #[error("a request to join group {0} is already pending")]
    AlreadyRequested(GroupId),
    #[error("{user} has not asked to join group {group}")]
    NoSuchRequest { group: GroupId, user: UserId },
    #[error("group {group} already has a different file named {name}")]
    NameTaken { group: GroupId, name: FileName },
    #[error("no file {name} in group {group}")]
    NoSuchFile { group: GroupId, name: FileName },
    #[error("you are not sharing {name} in group {group}")]
    NotSharing { group: GroupId, name: FileName },
    #[error("invalid ticket: {0}")]
    BadTicket(String),
    #[error("invalid file metadata: {0}")]
    BadFileMeta(String),
    #[error("tracker cannot serve requests now: {0}")]
    Unavailable(String),
    /// The tracker has more of this kind of work queued than it takes (password hashing):
    /// retry after a short pause.
    #[error("tracker busy: {0}")]
    Busy(String),
    /// Too many failed logins or account creations: nothing is tried before the wait.
    #[error("too many {what}; retry in {retry_after_secs} s")]
    TooManyAttempts { what: String, retry_after_secs: u64 },
    /// A per-user or per-group limit of this deployment (tracker options).
    #[error("limit reached: {0}")]
    QuotaExceeded(String),
    /// The tracker reaches too few trackers to read or change anything (protocol 6; a
    /// client waits a few seconds for a majority to come back, telling its user so).
    #[error(
        "no majority: tracker {tracker} reaches {reached} of {voters} trackers and {} are needed; nothing can be read or changed until enough trackers are back",
        .voters / 2 + 1
    )]
    NoMajority { tracker: u32, reached: u32, voters: u32 },
    /// `remove_member` of a user who is not a member (appended last, as the variants
    /// above keep their encoding).
    #[error("{user} is not a member of group {group}")]
    NoSuchMember { group: GroupId, user: UserId },
    /// `remove_member` of the owner by the owner.
    #[error("you own group {0} and cannot remove yourself")]
    OwnerCannotRemoveSelf(GroupId),
    /// `Reverse` could not be passed on (protocol 8): the peer waits for no call on any
    /// tracker, shares no such file, or the caller used its reversal budget.
    #[error("cannot ask that peer to connect: {0}")]
    CannotReverse(String),
    /// A relay was asked for, and the tracker where the peer waits relays nothing
    /// (`--no-relay`; protocol 8).
    #[error("relaying is off")]
    RelayOff,
    /// `Reverse` or `Relay` for a peer that waits for calls on no tracker (protocol 8): it
    /// cannot be asked anything now.
    #[error("the peer waits for calls on no tracker")]
    NotWaiting,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_keys_and_contents_apart_but_not_passwords() {
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let join = |g: &str| Request::JoinGroup { group: GroupId::new(g).unwrap() };
        assert_eq!(join("g").fingerprint(&a), join("g").fingerprint(&a));
        assert_ne!(join("g").fingerprint(&a), join("g").fingerprint(&b));
        assert_ne!(join("g").fingerprint(&a), join("h").fingerprint(&a));
        let signup = |pw: &str| Request::CreateUser {
            user: UserId::new("alice").unwrap(),
            password: Password::new(pw).unwrap(),
        };
        assert_eq!(signup("one").fingerprint(&a), signup("two").fingerprint(&a));
    }
}
