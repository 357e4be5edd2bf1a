//! What changed in the user's groups between two heartbeats (issue 10): a group passed to
//! the user, a join request was accepted or is gone (rejected, or its group removed), or a
//! membership ended elsewhere. The heartbeat reply carries the user's memberships only when
//! their version changed, so this costs the tracker O(the user's groups) and nothing more
//! while nothing happens.
//!
//! `diff` is pure; `Watch` holds what the last heartbeat said and what this client did
//! itself (its own `leave_group` is no news to its user).

use std::collections::{BTreeMap, BTreeSet};

use common::message::{GroupRole, Memberships, SessionToken};
use common::GroupId;

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
        let changes = match &self.known {
            Some(before) => diff(&before.groups, &memberships.groups, &self.left_here),
            None => Vec::new(),
        };
        // Forgotten once seen gone (a leave may come between a heartbeat and its reply).
        self.left_here.retain(|left| memberships.groups.iter().any(|(g, _)| g == left));
        self.requested_here.retain(|_, at| *at >= sent);
        self.known = Some(memberships);
        changes
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
        assert_eq!(watch.update(Memberships::new(vec![(g("a"), Member)]), sent), []);
        let (version, sent) = watch.begin(session);
        assert!(version.is_some());
        assert_eq!(
            watch.update(Memberships::new(vec![(g("a"), Owner)]), sent),
            [Change::NowOwner(g("a"))]
        );
        watch.left_here(g("a"));
        let (_, sent) = watch.begin(session);
        assert_eq!(watch.update(Memberships::new(vec![]), sent), []);
        let (_, sent) = watch.begin(Some(SessionToken([2; 32])));
        assert_eq!(watch.update(Memberships::new(vec![(g("b"), Member)]), sent), []);
    }

    #[test]
    fn a_request_is_news_once_a_heartbeat_sent_after_it_says_so() {
        let mut watch = Watch::default();
        let session = Some(SessionToken([1; 32]));
        let (_, sent) = watch.begin(session);
        watch.update(Memberships::new(vec![(g("b"), Member)]), sent);
        // A heartbeat leaves; then the client asks to join c; the reply predates it.
        let (_, sent) = watch.begin(session);
        watch.requested_here(g("c"));
        assert_eq!(watch.update(Memberships::new(vec![(g("b"), Member)]), sent), []);
        // Rejected before any heartbeat saw the request: still news.
        let (_, sent) = watch.begin(session);
        assert_eq!(
            watch.update(Memberships::new(vec![(g("b"), Member)]), sent),
            [Change::RequestGone(g("c"))]
        );
    }
}
