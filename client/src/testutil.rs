//! Helpers for the unit tests of the client's modules (`cfg(test)` only).

use std::path::PathBuf;
use std::sync::Arc;

use common::hash::file_digest;
use common::message::FileMeta;
use common::{Bitfield, GroupId, Sha1Digest};

use crate::swarm::{Changes, Phase, Stamped, Swarm};

/// The metadata of a file `name` of `n` whole pieces (every piece hash the same).
pub fn meta(name: &str, n: u32) -> FileMeta {
    let pieces = vec![Sha1Digest([1; 20]); n as usize];
    let size = u64::from(n) * common::PIECE_SIZE as u64;
    FileMeta {
        name: name.parse().unwrap(),
        size,
        digest: file_digest(size, &pieces),
        pieces,
        tree: None,
    }
}

/// A complete file `name` of `n` pieces in group `g`, shared from `./name`.
pub fn seeding(name: &str, n: u32) -> Swarm {
    let meta = meta(name, n);
    let layout = crate::swarm::ItemLayout::of(&meta).unwrap();
    Swarm::seeding(GroupId::new("g").unwrap(), meta, layout, PathBuf::from(name), Stamped::Nothing)
}

/// A download of `name` (`n` pieces, none had yet) in group `g` into `name.part`, fetching.
pub fn download(name: &str, n: u32, changes: Arc<Changes>) -> Swarm {
    let meta = meta(name, n);
    let layout = crate::swarm::ItemLayout::of(&meta).unwrap();
    let chosen = crate::swarm::Chosen::all(&meta, &layout);
    Swarm::download(
        GroupId::new("g").unwrap(),
        meta,
        layout,
        chosen,
        PathBuf::from(format!("{name}.part")),
        PathBuf::from(name),
        Bitfield::empty(n),
        Phase::Fetching,
        changes,
    )
}
