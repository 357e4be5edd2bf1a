//! This tracker's place in the cluster, as `Request::Status` answers it and as the
//! operator's `status` line prints it.

use common::message::{TrackerRole, TrackerStatus};
use common::Sha1Digest;
use raft::StateRole;

use crate::cluster::{Cluster, Role};

/// This tracker's place in the cluster, for `Request::Status`.
pub fn status(id: u32, cluster: &Cluster) -> TrackerStatus {
    let status = cluster.status();
    let (up, _) = cluster.voters_up();
    TrackerStatus {
        id,
        role: role(cluster),
        term: status.term,
        voters: status.voters().iter().filter_map(|v| u32::try_from(*v).ok()).collect(),
        reach: u32::try_from(up).unwrap_or(u32::MAX),
        commit: status.commit,
        applied: status.applied,
    }
}

/// One line describing this tracker's place in the cluster (for `status` on stdin), with
/// the state's digest as of `applied`:
/// `tracker N: ROLE view=TERM:[MEMBERS] last=TERM:INDEX ... digest=HEX`.
pub fn status_line(id: u32, cluster: &Cluster, applied: u64, digest: Sha1Digest) -> String {
    let status = cluster.status();
    let reach = cluster.voters_up();
    format!(
        "tracker {id}: {} view={}:{:?} last={}:{} commit={} applied={applied} \
         reach={}/{} generation={} digest={digest}",
        role(cluster),
        status.term,
        status.voters(),
        status.last_term,
        status.last_index,
        status.commit,
        reach.0,
        reach.1,
        cluster.generation(),
    )
}

/// This tracker's role, as `status` names it.
fn role(cluster: &Cluster) -> TrackerRole {
    match (cluster.role(), cluster.status().role) {
        (Role::Primary, _) => TrackerRole::Primary,
        (Role::Backup { .. }, _) if cluster.witness => TrackerRole::Witness,
        (Role::Backup { leader }, _) => TrackerRole::Backup { leader },
        (Role::Leaderless, StateRole::Candidate | StateRole::PreCandidate) => {
            TrackerRole::Candidate
        }
        (Role::Leaderless, _) => TrackerRole::Leaderless,
    }
}
