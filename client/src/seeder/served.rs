//! What this peer served, to whom: pieces per downloader user and file, for the
//! dashboard's peers ("pieces I served them"). Pure bookkeeping behind a lock, bounded.
//!
//! Invariant: at most `MAX_ENTRIES` entries; when full, the one served longest ago goes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use parking_lot::Mutex;

use common::{FileName, GroupId, UserId};

/// Entries kept at most (user, group and file each): a few hundred KiB at worst.
pub const MAX_ENTRIES: usize = 4096;

/// Pieces served, by downloader and file.
#[derive(Default)]
pub struct Served {
    entries: Mutex<HashMap<(UserId, GroupId, FileName), ServedTo>>,
}

/// What one downloader got of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedTo {
    /// Pieces sent whole.
    pub pieces: u64,
    /// Bytes of those pieces.
    pub bytes: u64,
    /// The address its last connection came from (its own port for serving is not known
    /// here: the ticket names the user, not where it serves).
    pub from: IpAddr,
    /// When the last piece went.
    pub last: Instant,
}

/// One row of `Served::snapshot`.
#[derive(Debug, Clone)]
pub struct ServedRow {
    pub user: UserId,
    pub group: GroupId,
    pub name: FileName,
    pub to: ServedTo,
}

impl Served {
    /// Counts a piece of `len` bytes of `name` in `group` sent to `user` at `from`.
    pub fn note(&self, user: &UserId, group: &GroupId, name: &FileName, from: IpAddr, len: u64) {
        let mut entries = self.entries.lock();
        let key = (user.clone(), group.clone(), name.clone());
        if !entries.contains_key(&key) && entries.len() >= MAX_ENTRIES {
            let oldest = entries.iter().min_by_key(|(_, to)| to.last).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        let now = Instant::now();
        let to = entries.entry(key).or_insert(ServedTo { pieces: 0, bytes: 0, from, last: now });
        to.pieces += 1;
        to.bytes += len;
        to.from = from;
        to.last = now;
    }

    /// Every entry, by user, group and file.
    pub fn snapshot(&self) -> Vec<ServedRow> {
        let mut rows: Vec<ServedRow> = self
            .entries
            .lock()
            .iter()
            .map(|((user, group, name), to)| ServedRow {
                user: user.clone(),
                group: group.clone(),
                name: name.clone(),
                to: to.clone(),
            })
            .collect();
        rows.sort_by(|a, b| (&a.user, &a.group, &a.name).cmp(&(&b.user, &b.group, &b.name)));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_user_and_file_and_forgets_the_oldest_when_full() {
        let served = Served::default();
        let (g, f): (GroupId, FileName) = ("g".parse().unwrap(), "f".parse().unwrap());
        let ip: IpAddr = [127, 0, 0, 1].into();
        let bob: UserId = "bob".parse().unwrap();
        served.note(&bob, &g, &f, ip, 10);
        served.note(&bob, &g, &f, ip, 5);
        let rows = served.snapshot();
        assert_eq!((rows.len(), rows[0].to.pieces, rows[0].to.bytes), (1, 2, 15));
        for i in 0..MAX_ENTRIES {
            let user: UserId = format!("u{i}").parse().unwrap();
            served.note(&user, &g, &f, ip, 1);
        }
        let rows = served.snapshot();
        assert_eq!(rows.len(), MAX_ENTRIES);
        assert!(rows.iter().all(|r| r.user != bob), "bob was served longest ago");
    }
}
