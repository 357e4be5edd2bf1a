//! What changed in the user's groups between two heartbeats (issue 10): a group passed to
//! the user, a join request was accepted or is gone (rejected, or its group removed), a
//! membership ended elsewhere, or someone asks to join a group the user owns (issue 20). The heartbeat reply carries the user's memberships only when
//! their version changed, so this costs the tracker O(the user's groups) and nothing more
//! while nothing happens.
//!
//! `diff` is pure; `Watch` holds what the last heartbeat said and what this client did
//! itself (its own `leave_group` is no news to its user).

use std::collections::{BTreeMap, BTreeSet};

use common::message::{GroupRole, Memberships, SessionToken, MAX_LISTED_REQUESTS};
use common::{GroupId, UserId};

/// One change worth a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The user now owns the group (its owner left, and the user was the longest-standing
    /// member).
    NowOwner(GroupId),
    /// The user's request to join was accepted.
    Accepted(GroupId),
    /// The user's request is gone without the user getting in: rejected, or the group was
    /// removed (the caller asks the tracker which).
    RequestGone(GroupId),
    /// The user is no longer a member, and not because this client left: another session
    /// of the same user left (and maybe the group was removed with it), or the owner
    /// removed the user.
    MembershipGone(GroupId),
    /// `user` asks to join `group`, which the user owns: a request the user had not been
    /// told of (every pending one, at the first heartbeat of a session).
    JoinRequest { group: GroupId, user: UserId },
}

/// The changes from `before` to `after`; `left_here` are the groups this client left
/// itself since `before` (no news).
pub fn diff(
    before: &[(GroupId, GroupRole)],
    after: &[(GroupId, GroupRole)],
    left_here: &BTreeSet<GroupId>,
) -> Vec<Change> {
    use GroupRole::*;
    let before: BTreeMap<&GroupId, GroupRole> = before.iter().map(|(g, r)| (g, *r)).collect();
    let after: BTreeMap<&GroupId, GroupRole> = after.iter().map(|(g, r)| (g, *r)).collect();
    let mut changes = Vec::new();
    for (&group, &now) in &after {
        let was = before.get(group).copied();
        match (was, now) {
            (Some(Requested), Member) | (None, Member) => {
                changes.push(Change::Accepted(group.clone()));
            }
            (Some(Requested), Owner) => {
                changes.push(Change::Accepted(group.clone()));
                changes.push(Change::NowOwner(group.clone()));
            }
            (Some(Member), Owner) => changes.push(Change::NowOwner(group.clone())),
            _ => {}
        }
    }
    for (&group, &was) in &before {
        if after.contains_key(group) || left_here.contains(group) {
            continue;
        }
        changes.push(match was {
            Requested => Change::RequestGone(group.clone()),
            Owner | Member => Change::MembershipGone(group.clone()),
        });
    }
    changes
}

/// The requests in `after` that are not in `before`, in `after`'s order.
pub fn new_requests(before: &[(GroupId, UserId)], after: &[(GroupId, UserId)]) -> Vec<Change> {
    let before: BTreeSet<&(GroupId, UserId)> = before.iter().collect();
    after
        .iter()
        .filter(|r| !before.contains(r))
        .map(|(group, user)| Change::JoinRequest { group: group.clone(), user: user.clone() })
        .collect()
}

/// What the client knows of its user's memberships, between heartbeats.
#[derive(Default)]
pub struct Watch {
    /// The session the memberships belong to (a new login starts afresh, with no notices).
    session: Option<SessionToken>,
    known: Option<Memberships>,
    left_here: BTreeSet<GroupId>,
    /// Counts heartbeats sent, so that a reply is not taken to undo a request made while
    /// it was on its way.
    sent: u64,
    /// Requests this client made, with the heartbeat count when it made them.
    requested_here: BTreeMap<GroupId, u64>,
    /// The requests to join the user's groups that the user was told of and that were
    /// still pending at the last heartbeat.
    told_requests: Vec<(GroupId, UserId)>,
}

impl Watch {
    /// Before a heartbeat of `session`: the memberships version to send, and the count to
    /// give `update` with its reply.
    pub fn begin(&mut self, session: Option<SessionToken>) -> (Option<u64>, u64) {
        if self.session != session {
            *self = Watch { session, sent: self.sent, ..Watch::default() };
        }
        self.sent += 1;
        (self.known.as_ref().map(|m| m.version), self.sent)
    }

    /// Takes the memberships the heartbeat `sent` (from `begin`) returned; returns what
    /// changed since the last ones (nothing for the first of a session).
    pub fn update(&mut self, mut memberships: Memberships, sent: u64) -> Vec<Change> {
        // A request made after this heartbeat left is still pending as far as it can tell.
        for (group, &at) in &self.requested_here {
            let listed = memberships.groups.iter().any(|(g, _)| g == group);
            if at >= sent && !listed {
                let at = memberships.groups.partition_point(|(g, _)| g < group);
                memberships.groups.insert(at, (group.clone(), GroupRole::Requested));
            }
        }
        // A tracker lists no more; one that did would not grow this client's memory.
        memberships.requests.truncate(MAX_LISTED_REQUESTS);
        let mut changes = match &self.known {
            Some(before) => diff(&before.groups, &memberships.groups, &self.left_here),
            None => Vec::new(),
        };
        // Pending requests are news at the first heartbeat too: the owner may have been
        // away when they came.
        changes.extend(new_requests(&self.told_requests, &memberships.requests));
        self.told_requests = memberships.requests.clone();
        // Forgotten once seen gone (a leave may come between a heartbeat and its reply).
        self.left_here.retain(|left| memberships.groups.iter().any(|(g, _)| g == left));
        self.requested_here.retain(|_, at| *at >= sent);
        self.known = Some(memberships);
        changes
    }

    /// Takes the first memberships of a session (`sent` from `begin`), fetched at login
    /// while the command runs: nothing in them is news, but the pending requests are left
    /// for the next heartbeat to tell (above the prompt, where a login's output has no
    /// place for them).
    pub fn start(&mut self, memberships: Memberships, sent: u64) {
        self.update(memberships, sent);
        self.told_requests.clear();
    }

    /// The requests to join the user's groups that wait for a decision, as the last
    /// heartbeat listed them, less those this client decided since.
    pub fn pending_requests(&self) -> Vec<(GroupId, UserId)> {
        self.known.as_ref().map_or_else(Vec::new, |k| k.requests.clone())
    }

    /// This client accepted or rejected `user`'s request to join `group`: it is no longer
    /// pending (the next heartbeat confirms it, the known version being out of date now).
    pub fn decided_here(&mut self, group: &GroupId, user: &UserId) {
        if let Some(known) = &mut self.known {
            known.requests.retain(|(g, u)| (g, u) != (group, user));
        }
        self.told_requests.retain(|(g, u)| (g, u) != (group, user));
    }

    /// This client left `group` itself: its disappearance is no news.
    pub fn left_here(&mut self, group: GroupId) {
        self.left_here.insert(group);
    }

    /// This client asked to join `group`: a decision on it is news even when it comes
    /// before a heartbeat saw the request.
    pub fn requested_here(&mut self, group: GroupId) {
        if let Some(known) = &mut self.known {
            if let Err(at) = known.groups.binary_search_by(|(g, _)| g.cmp(&group)) {
                known.groups.insert(at, (group.clone(), GroupRole::Requested));
            }
        }
        self.requested_here.insert(group, self.sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GroupRole::*;

    fn g(s: &str) -> GroupId {
        GroupId::new(s).unwrap()
    }

    #[track_caller]
    fn check(before: &[(&str, GroupRole)], after: &[(&str, GroupRole)], expected: &[Change]) {
        let list = |l: &[(&str, GroupRole)]| l.iter().map(|(n, r)| (g(n), *r)).collect::<Vec<_>>();
        assert_eq!(diff(&list(before), &list(after), &BTreeSet::new()), expected);
    }

    #[test]
    fn changes_worth_a_notice() {
        check(&[("a", Member)], &[("a", Owner)], &[Change::NowOwner(g("a"))]);
        check(&[("a", Requested)], &[("a", Member)], &[Change::Accepted(g("a"))]);
        check(&[], &[("a", Member)], &[Change::Accepted(g("a"))]);
        check(&[("a", Requested)], &[], &[Change::RequestGone(g("a"))]);
        check(&[("a", Owner)], &[], &[Change::MembershipGone(g("a"))]);
        check(
            &[("a", Requested)],
            &[("a", Owner)],
            &[Change::Accepted(g("a")), Change::NowOwner(g("a"))],
        );
    }

    #[test]
    fn what_the_user_did_is_no_news() {
        // Created a group, asked to join one.
        check(&[], &[("a", Owner), ("b", Requested)], &[]);
        check(&[("a", Owner)], &[("a", Owner)], &[]);
        let left = BTreeSet::from([g("a")]);
        assert_eq!(diff(&[(g("a"), Member)], &[], &left), []);
    }

    #[test]
    fn a_new_session_starts_without_notices() {
        let mut watch = Watch::default();
        let session = Some(SessionToken([1; 32]));
        let (version, sent) = watch.begin(session);
        assert_eq!(version, None);
        assert_eq!(watch.update(Memberships::new(vec![(g("a"), Member)], vec![]), sent), []);
        let (version, sent) = watch.begin(session);
        assert!(version.is_some());
        assert_eq!(
            watch.update(Memberships::new(vec![(g("a"), Owner)], vec![]), sent),
            [Change::NowOwner(g("a"))]
        );
        watch.left_here(g("a"));
        let (_, sent) = watch.begin(session);
        assert_eq!(watch.update(Memberships::new(vec![], vec![]), sent), []);
        let (_, sent) = watch.begin(Some(SessionToken([2; 32])));
        assert_eq!(watch.update(Memberships::new(vec![(g("b"), Member)], vec![]), sent), []);
    }

    fn u(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    #[test]
    fn join_requests_are_news_once_each_and_pending_ones_at_the_start() {
        let mut watch = Watch::default();
        let session = Some(SessionToken([1; 32]));
        let owned = || vec![(g("a"), Owner)];
        let (_, sent) = watch.begin(session);
        let first = Memberships::new(owned(), vec![(g("a"), u("bob"))]);
        let bob = Change::JoinRequest { group: g("a"), user: u("bob") };
        let carol = Change::JoinRequest { group: g("a"), user: u("carol") };
        assert_eq!(watch.update(first.clone(), sent), std::slice::from_ref(&bob));
        let (_, sent) = watch.begin(session);
        assert_eq!(watch.update(first, sent), []);
        let (_, sent) = watch.begin(session);
        let both = Memberships::new(owned(), vec![(g("a"), u("bob")), (g("a"), u("carol"))]);
        assert_eq!(watch.update(both, sent), [carol]);
        assert_eq!(watch.pending_requests(), [(g("a"), u("bob")), (g("a"), u("carol"))]);
        // Decided here: gone at once; a request made again later is news again.
        watch.decided_here(&g("a"), &u("bob"));
        assert_eq!(watch.pending_requests(), [(g("a"), u("carol"))]);
        let (version, sent) = watch.begin(session);
        assert_ne!(version, None);
        assert_eq!(watch.update(Memberships::new(owned(), vec![]), sent), []);
        let (_, sent) = watch.begin(session);
        let again = Memberships::new(owned(), vec![(g("a"), u("bob"))]);
        assert_eq!(watch.update(again.clone(), sent), std::slice::from_ref(&bob));
        // A login takes the first memberships quietly; the next heartbeat tells.
        let (_, sent) = watch.begin(Some(SessionToken([2; 32])));
        watch.start(again.clone(), sent);
        let (_, sent) = watch.begin(Some(SessionToken([2; 32])));
        assert_eq!(watch.update(again, sent), [bob]);
    }

    #[test]
    fn a_request_is_news_once_a_heartbeat_sent_after_it_says_so() {
        let mut watch = Watch::default();
        let session = Some(SessionToken([1; 32]));
        let (_, sent) = watch.begin(session);
        watch.update(Memberships::new(vec![(g("b"), Member)], vec![]), sent);
        // A heartbeat leaves; then the client asks to join c; the reply predates it.
        let (_, sent) = watch.begin(session);
        watch.requested_here(g("c"));
        assert_eq!(watch.update(Memberships::new(vec![(g("b"), Member)], vec![]), sent), []);
        // Rejected before any heartbeat saw the request: still news.
        let (_, sent) = watch.begin(session);
        assert_eq!(
            watch.update(Memberships::new(vec![(g("b"), Member)], vec![]), sent),
            [Change::RequestGone(g("c"))]
        );
    }
}
