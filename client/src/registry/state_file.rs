//! The bytes of `<state-dir>/shares.bin`: what each user of this client shares and
//! downloads, so that a restarted client shares again and resumes. Pure: encoding and
//! decoding only (the registry's writer thread does the I/O).
//!
//! Format: postcard of `(format: u32, users: map of user -> [share])`, the format first so
//! that a file of another format is recognised before the rest is read. Golden-byte tests
//! pin every format: a change to the encoding must come with a new format number, older
//! formats are still read, and a file of an unknown format is refused with the way out,
//! never misread or overwritten.
//!
//! - Format 1: group, metadata, path, pieces had, destination of a download.
//! - Format 2 (issue 20): and whether the download is paused.
//! - Format 3 (issue 21): and the identity (device, inode, birth time) of a download's
//!   `.part` file.
//! - Format 4 (issue 23): the metadata may be a folder's (`FileMeta::tree`); then `path`
//!   is the folder's root directory.
//! - Format 5 (issue 23): and the part of a folder a selective download chose
//!   (`Selection`: all of it, or a file or a directory inside it); then `path` and the
//!   destination are that file's or directory's, and the pieces had are only its own.
//! - Format 6 (issue 23): and how a download keeps its pieces (`Stored`): `Part`, end to
//!   end in the `.part` file at `path`, or `Tree`, a folder's in their files under its
//!   staging directory at `path`. A format-5 record is `Part`: a folder's download saved so
//!   moves its pieces into a staging tree when it resumes (`download::restage`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use common::folder::Selection;
use common::message::FileMeta;
use common::{Bitfield, GroupId, UserId};

use crate::swarm::{PartId, Stored};

/// The format this build writes (it reads this one and every older one).
pub const FORMAT: u32 = 6;

/// One share as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedShare {
    pub group: GroupId,
    pub meta: FileMeta,
    /// Where the bytes are (the `.part` file of a download).
    pub path: PathBuf,
    /// The pieces had (claimed: a resume re-hashes them).
    pub have: Bitfield,
    /// The final path of a download under way; `None` for a complete file.
    pub destination: Option<PathBuf>,
    /// A download the user paused (format 2).
    pub paused: bool,
    /// The identity of a download's `.part` file, recorded when it was created (format 3;
    /// `None` for a complete file, and for a download saved by an older format).
    pub part_id: Option<PartId>,
    /// What of a folder this peer fetches and keeps (format 5; `Whole` for a file, and
    /// for a share saved by an older format).
    pub selection: Selection,
    /// How a download under way keeps its pieces at `path` (format 6; `Part` for a share
    /// saved by an older format).
    pub stored: Stored,
}

/// A share as format 5 saved it (before staging trees).
#[derive(Deserialize)]
struct SavedShareV5 {
    group: GroupId,
    meta: FileMeta,
    path: PathBuf,
    have: Bitfield,
    destination: Option<PathBuf>,
    paused: bool,
    part_id: Option<PartId>,
    selection: Selection,
}

impl From<SavedShareV5> for SavedShare {
    fn from(v5: SavedShareV5) -> SavedShare {
        let SavedShareV5 { group, meta, path, have, destination, paused, part_id, selection } = v5;
        let stored = Stored::Part;
        SavedShare { group, meta, path, have, destination, paused, part_id, selection, stored }
    }
}

/// A share as format 4 saved it (before selective downloads).
#[derive(Deserialize)]
struct SavedShareV4 {
    group: GroupId,
    meta: FileMeta,
    path: PathBuf,
    have: Bitfield,
    destination: Option<PathBuf>,
    paused: bool,
    part_id: Option<PartId>,
}

impl From<SavedShareV4> for SavedShare {
    fn from(v4: SavedShareV4) -> SavedShare {
        let SavedShareV4 { group, meta, path, have, destination, paused, part_id } = v4;
        let selection = Selection::Whole;
        let v5 = SavedShareV5 { group, meta, path, have, destination, paused, part_id, selection };
        v5.into()
    }
}

/// Metadata as formats 1 to 3 saved it: a file's, before folders.
#[derive(Deserialize)]
struct FileMetaV3 {
    name: common::FileName,
    size: u64,
    digest: common::Sha1Digest,
    pieces: Vec<common::Sha1Digest>,
}

impl From<FileMetaV3> for FileMeta {
    fn from(v3: FileMetaV3) -> FileMeta {
        let FileMetaV3 { name, size, digest, pieces } = v3;
        FileMeta { name, size, digest, pieces, tree: None }
    }
}

/// A share as format 3 saved it.
#[derive(Deserialize)]
struct SavedShareV3 {
    group: GroupId,
    meta: FileMetaV3,
    path: PathBuf,
    have: Bitfield,
    destination: Option<PathBuf>,
    paused: bool,
    part_id: Option<PartId>,
}

impl From<SavedShareV3> for SavedShare {
    fn from(v3: SavedShareV3) -> SavedShare {
        let SavedShareV3 { group, meta, path, have, destination, paused, part_id } = v3;
        let v4 =
            SavedShareV4 { group, meta: meta.into(), path, have, destination, paused, part_id };
        v4.into()
    }
}

/// A share as format 2 saved it.
#[derive(Deserialize)]
struct SavedShareV2 {
    group: GroupId,
    meta: FileMetaV3,
    path: PathBuf,
    have: Bitfield,
    destination: Option<PathBuf>,
    paused: bool,
}

impl From<SavedShareV2> for SavedShare {
    fn from(v2: SavedShareV2) -> SavedShare {
        let SavedShareV2 { group, meta, path, have, destination, paused } = v2;
        let meta = meta.into();
        let v4 = SavedShareV4 { group, meta, path, have, destination, paused, part_id: None };
        v4.into()
    }
}

/// A share as format 1 saved it.
#[derive(Deserialize)]
struct SavedShareV1 {
    group: GroupId,
    meta: FileMetaV3,
    path: PathBuf,
    have: Bitfield,
    destination: Option<PathBuf>,
}

impl From<SavedShareV1> for SavedShare {
    fn from(v1: SavedShareV1) -> SavedShare {
        let SavedShareV1 { group, meta, path, have, destination } = v1;
        let meta = meta.into();
        let paused = false;
        let v4 = SavedShareV4 { group, meta, path, have, destination, paused, part_id: None };
        v4.into()
    }
}

/// Every user's saved shares.
pub type SavedUsers = BTreeMap<UserId, Vec<SavedShare>>;

/// Why the state file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("it has format {found}; this client reads formats 1 to {FORMAT}")]
    UnknownFormat { found: u32 },
    #[error("it is corrupt: {0}")]
    Corrupt(#[from] postcard::Error),
}

#[derive(Serialize)]
struct StateRef<'a> {
    format: u32,
    users: BTreeMap<&'a UserId, &'a [SavedShare]>,
}

#[derive(Deserialize)]
struct State<S> {
    _format: u32,
    users: BTreeMap<UserId, Vec<S>>,
}

/// The file's bytes for `users`.
pub fn encode<'a>(
    users: impl IntoIterator<Item = (&'a UserId, &'a [SavedShare])>,
) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(&StateRef { format: FORMAT, users: users.into_iter().collect() })
}

/// The users' shares in `bytes`.
pub fn decode(bytes: &[u8]) -> Result<SavedUsers, DecodeError> {
    let (format, _) = postcard::take_from_bytes::<u32>(bytes)?;
    match format {
        1 => Ok(upgrade(postcard::from_bytes::<State<SavedShareV1>>(bytes)?.users)),
        2 => Ok(upgrade(postcard::from_bytes::<State<SavedShareV2>>(bytes)?.users)),
        3 => Ok(upgrade(postcard::from_bytes::<State<SavedShareV3>>(bytes)?.users)),
        4 => Ok(upgrade(postcard::from_bytes::<State<SavedShareV4>>(bytes)?.users)),
        5 => Ok(upgrade(postcard::from_bytes::<State<SavedShareV5>>(bytes)?.users)),
        FORMAT => Ok(postcard::from_bytes::<State<SavedShare>>(bytes)?.users),
        found => Err(DecodeError::UnknownFormat { found }),
    }
}

/// The shares of an older format, as this one's.
fn upgrade<S: Into<SavedShare>>(users: BTreeMap<UserId, Vec<S>>) -> SavedUsers {
    users.into_iter().map(|(u, s)| (u, s.into_iter().map(Into::into).collect())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::hash::file_digest;
    use common::Sha1Digest;

    fn sample() -> SavedUsers {
        let pieces = vec![Sha1Digest([0xab; 20])];
        let meta = FileMeta {
            name: "a.txt".parse().unwrap(),
            size: 5,
            digest: file_digest(5, &pieces),
            pieces,
            tree: None,
        };
        let share = SavedShare {
            group: GroupId::new("g").unwrap(),
            meta,
            path: PathBuf::from("/d/a.txt.part"),
            have: Bitfield::empty(1),
            destination: Some(PathBuf::from("/d/a.txt")),
            paused: true,
            part_id: Some(PartId { dev: 0x801, ino: 12, born: Some((3, 500)) }),
            selection: Selection::Whole,
            stored: Stored::Part,
        };
        BTreeMap::from([(UserId::new("al").unwrap(), vec![share])])
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bytes of `sample()` in `format`, as pinned: format 1 has no `paused` byte,
    /// formats 1 and 2 no `.part` identity (`Some`, the device 0x801 and the inode 12, as
    /// varints, then `Some` birth time: 3 s (zigzag) and 500 ns), formats 1 to 3 no tree
    /// (`None` after the piece hashes), formats 1 to 4 no selection (`Whole`, variant 0),
    /// formats 1 to 5 no store (`Part`, variant 0, last).
    fn golden(format: u8) -> String {
        let users = sample();
        let digest = hex(&users[&UserId::new("al").unwrap()][0].meta.digest.0);
        let paused = if format >= 2 { "01" } else { "" };
        let part_id = if format >= 3 { "0181100c0106f403" } else { "" };
        let tree = if format >= 4 { "00" } else { "" };
        let selection = if format >= 5 { "00" } else { "" };
        let stored = if format >= 6 { "00" } else { "" };
        format!(
            "{format:02x}\
             01\
             02616c\
             01\
             0167\
             05612e747874\
             05\
             {digest}\
             01{}\
             {tree}\
             0d2f642f612e7478742e70617274\
             010100\
             01082f642f612e747874\
             {paused}\
             {part_id}\
             {selection}\
             {stored}",
            "ab".repeat(20)
        )
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Format 6, byte for byte: a change here is a change of format, and needs a new
    /// `FORMAT` (and a way to read the old one).
    #[test]
    fn format_6_golden_bytes() {
        let users = sample();
        let bytes = encode(users.iter().map(|(u, s)| (u, s.as_slice()))).unwrap();
        assert_eq!(hex(&bytes), golden(6));
        assert_eq!(decode(&bytes).unwrap(), users);
    }

    /// A folder's download staged in a tree (issue 23): `Tree` (variant 1) comes last.
    #[test]
    fn format_6_keeps_how_a_download_stores_its_pieces() {
        let mut users = sample();
        users.values_mut().next().unwrap()[0].stored = Stored::Tree;
        let bytes = encode(users.iter().map(|(u, s)| (u, s.as_slice()))).unwrap();
        let golden = golden(6);
        assert_eq!(hex(&bytes), format!("{}01", &golden[..golden.len() - 2]));
        assert_eq!(decode(&bytes).unwrap(), users);
    }

    /// Format 5 (before staging trees) is still read: every download keeps its pieces in
    /// its `.part` (a folder's is moved into a staging tree when it resumes).
    #[test]
    fn format_5_is_still_read() {
        assert_eq!(decode(&unhex(&golden(5))).unwrap(), sample());
    }

    /// A selective download of a folder (issue 23): the part chosen comes last, byte for
    /// byte: `Inside` (variant 1), its path (2 components: `d`, `x`), not a directory.
    #[test]
    fn format_6_keeps_the_part_of_a_folder_chosen() {
        use common::folder::RelPath;
        let mut users = sample();
        let share = &mut users.values_mut().next().unwrap()[0];
        share.selection = Selection::Inside { path: RelPath::parse("d/x").unwrap(), dir: false };
        let bytes = encode(users.iter().map(|(u, s)| (u, s.as_slice()))).unwrap();
        let golden_whole = golden(6);
        let expected = format!("{}0102016401780000", &golden_whole[..golden_whole.len() - 4]);
        assert_eq!(hex(&bytes), expected);
        assert_eq!(decode(&bytes).unwrap(), users);
    }

    /// Format 4 (before selective downloads) is still read: every share is whole.
    #[test]
    fn format_4_is_still_read() {
        assert_eq!(decode(&unhex(&golden(4))).unwrap(), sample());
    }

    /// A folder's share (issue 23): its tree follows the piece hashes.
    #[test]
    fn format_6_keeps_a_folders_tree() {
        use common::folder::{folder_digest, Entry, EntryKind, RelPath, Tree};
        let mut users = sample();
        let share = &mut users.values_mut().next().unwrap()[0];
        let entry = |path: &str, kind| Entry { path: RelPath::parse(path).unwrap(), kind };
        let tree = Tree::new(vec![
            entry("d", EntryKind::Dir),
            entry("d/x", EntryKind::File { size: 5, executable: true }),
        ])
        .unwrap();
        share.meta.digest = folder_digest(&tree, &share.meta.pieces);
        share.meta.tree = Some(tree);
        share.path = PathBuf::from("/d/a");
        let bytes = encode(users.iter().map(|(u, s)| (u, s.as_slice()))).unwrap();
        // `Some`, 2 entries; `d`: 1 component (`d`), a directory; `d/x`: 2 components, a file of
        // 5 bytes, executable.
        let tree_hex = format!("{}01{}", "ab".repeat(20), "02010164000201640178010501");
        assert!(hex(&bytes).contains(&tree_hex), "{}", hex(&bytes));
        assert_eq!(decode(&bytes).unwrap(), users);
    }

    /// Format 3 (before folders) is still read: every share is a file.
    #[test]
    fn format_3_is_still_read() {
        assert_eq!(decode(&unhex(&golden(3))).unwrap(), sample());
    }

    /// Format 2 (before the `.part` identity) is still read: no identity is known.
    #[test]
    fn format_2_is_still_read() {
        let mut expected = sample();
        for shares in expected.values_mut() {
            shares.iter_mut().for_each(|s| s.part_id = None);
        }
        assert_eq!(decode(&unhex(&golden(2))).unwrap(), expected);
    }

    /// Format 1 (before pausing existed) is still read: nothing in it is paused.
    #[test]
    fn format_1_is_still_read() {
        let mut expected = sample();
        for shares in expected.values_mut() {
            shares.iter_mut().for_each(|s| {
                s.paused = false;
                s.part_id = None;
            });
        }
        assert_eq!(decode(&unhex(&golden(1))).unwrap(), expected);
    }

    #[test]
    fn another_format_is_refused_before_the_rest_is_read() {
        let mut bytes = encode(sample().iter().map(|(u, s)| (u, s.as_slice()))).unwrap();
        bytes[0] = 7;
        let err = decode(&bytes).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownFormat { found: 7 }));
        assert_eq!(err.to_string(), "it has format 7; this client reads formats 1 to 6");
        // Even when what follows is not format 1's at all.
        assert!(matches!(decode(&[8, 0xff, 0xff]), Err(DecodeError::UnknownFormat { found: 8 })));
    }

    #[test]
    fn damaged_bytes_are_corrupt_not_a_panic() {
        let bytes = encode(sample().iter().map(|(u, s)| (u, s.as_slice()))).unwrap();
        for end in 1..bytes.len() {
            assert!(matches!(decode(&bytes[..end]), Err(DecodeError::Corrupt(_))), "{end}");
        }
        assert!(matches!(decode(b""), Err(DecodeError::Corrupt(_))));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(0u8.., 0..256)) {
            let _ = decode(&bytes);
        }
    }
}
