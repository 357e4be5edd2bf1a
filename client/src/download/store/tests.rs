//! Tests of `download::store`'s staging trees (issue 23).

use super::*;
use common::folder::{folder_digest, Entry, FolderLayout, RelPath};
use common::message::FileMeta;
use common::{Bitfield, GroupId, Sha1Digest, PIECE_SIZE};
use std::os::unix::fs::PermissionsExt;

use crate::swarm::{Chosen, Phase};

/// A folder of a file of a piece and 2 bytes, an empty directory, and a subdirectory with
/// an empty executable and a 3-byte executable.
fn tree() -> Tree {
    let entry = |p: &str, kind| Entry { path: RelPath::parse(p).unwrap(), kind };
    Tree::new(vec![
        entry("a", EntryKind::File { size: PIECE_SIZE as u64 + 2, executable: false }),
        entry("e", EntryKind::Dir),
        entry("s", EntryKind::Dir),
        entry("s/x", EntryKind::File { size: 0, executable: true }),
        entry("s/y", EntryKind::File { size: 3, executable: true }),
    ])
    .unwrap()
}

/// A download of `tree` (the part `selection` of it) to `dest`, its pieces' hashes made up
/// (a store does not check them).
fn swarm(tree: Tree, selection: Selection, dest: &Path) -> Swarm {
    let n = FolderLayout::new(&tree).unwrap().n_pieces();
    let pieces = vec![Sha1Digest([3; 20]); n as usize];
    let meta = FileMeta {
        name: "f".parse().unwrap(),
        size: tree.total_size(),
        digest: folder_digest(&tree, &pieces),
        pieces,
        tree: Some(tree),
    };
    let layout = ItemLayout::of(&meta).unwrap();
    let chosen = Chosen::of(&meta, &layout, selection).unwrap();
    let group = GroupId::new("g").unwrap();
    let (path, dest) = (staging_path(dest), dest.to_path_buf());
    let have = Bitfield::empty(n);
    Swarm::download(group, meta, layout, chosen, path, dest, have, Phase::Fetching, Arc::default())
}

/// Writes every chosen piece of `swarm` into `store`: piece `i` is bytes `i + 1`.
fn write_all(store: &Store, swarm: &Swarm) {
    for piece in swarm.chosen.wanted.iter() {
        let data = vec![piece.0 as u8 + 1; swarm.layout.piece_len(piece)];
        store.write_piece(swarm, piece, &data).unwrap();
    }
}

/// The names in the directory `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_folders_pieces_go_straight_into_its_files_in_the_staging_directory() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let swarm = swarm(tree(), Selection::Whole, &dest);
    let staged = TreeStore::create(&tree(), &Selection::Whole, &dest).unwrap();
    let staging = staged.path().to_path_buf();
    assert_eq!(staging, dir.path().join(".f.part"));
    // Every chosen directory is there from the start; no file before its first piece.
    assert_eq!(mode(&staging), 0o700);
    assert!(staging.join("e").is_dir() && staging.join("s").is_dir());
    assert_eq!(names_in(&staging), ["e", "s"]);
    assert!(names_in(&staging.join("s")).is_empty());
    let store = Store::Tree(staged);
    write_all(&store, &swarm);
    // Each file made by its first piece, with its mode; the empty one not yet.
    assert_eq!((mode(&staging.join("a")), mode(&staging.join("s/y"))), (0o600, 0o700));
    assert!(!staging.join("s/x").exists());
    let a = std::fs::read(staging.join("a")).unwrap();
    assert_eq!((a.len(), a[PIECE_SIZE - 1], a[PIECE_SIZE]), (PIECE_SIZE + 2, 1, 2));
    assert_eq!(std::fs::read(staging.join("s/y")).unwrap(), [3, 3, 3]);
    // Read back as a resume re-hashes them.
    let mut back = vec![0; 3];
    store.read_piece(&swarm, PieceIndex(2), &mut back).unwrap();
    assert_eq!(back, [3, 3, 3]);
    // No single `.part` file, nothing else beside the destination.
    let names: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [".f.part"]);
    // Durable, then removed (a cancel) only while it is still the one made.
    let Store::Tree(staged) = &store else { unreachable!() };
    staged.make_durable(&tree(), &Selection::Whole).unwrap();
    assert!(staged.is_in_place().unwrap());
    // The empty file made before the sync, with its mode.
    assert_eq!(std::fs::read(staging.join("s/x")).unwrap(), b"");
    assert_eq!(mode(&staging.join("s/x")), 0o700);
    assert_eq!(names_in(&staging), ["a", "e", "s"]);
    assert_eq!(names_in(&staging.join("s")), ["x", "y"]);
    store.remove(&staging);
    assert!(!staging.exists());
}

#[test]
fn a_staging_name_in_the_way_is_left_alone_and_the_next_one_taken() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    std::fs::create_dir(staging_path(&dest)).unwrap();
    std::fs::write(staging_path(&dest).join("a"), b"theirs").unwrap();
    let staged = TreeStore::create(&tree(), &Selection::Whole, &dest).unwrap();
    assert_eq!(staged.path(), dir.path().join(".f.1.part"));
    assert_eq!(std::fs::read(staging_path(&dest).join("a")).unwrap(), b"theirs");
    // With every name taken, it fails and says so.
    for n in 2..MAX_STAGING_NAMES {
        std::fs::write(staging_path_n(&dest, n), b"").unwrap();
    }
    let taken = TreeStore::create(&tree(), &Selection::Whole, &dir.path().join("f"));
    let err = taken.err().unwrap().to_string();
    assert!(err.contains("and the next 15 staging names beside it already exist"), "{err}");
}

/// Paths from the network are untrusted: a link planted in the staging tree is never
/// followed, so nothing is written outside it.
#[test]
fn a_link_in_the_staging_tree_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let dest = dir.path().join("f");
    let swarm = swarm(tree(), Selection::Whole, &dest);
    let staged = TreeStore::create(&tree(), &Selection::Whole, &dest).unwrap();
    let staging = staged.path().to_path_buf();
    // The subdirectory becomes a link to a directory outside, holding a `y` of its own.
    std::fs::remove_dir_all(staging.join("s")).unwrap();
    std::fs::write(outside.join("y"), b"mine").unwrap();
    std::os::unix::fs::symlink(&outside, staging.join("s")).unwrap();
    // And `a`, not made yet, a link to a file outside.
    std::os::unix::fs::symlink(outside.join("y"), staging.join("a")).unwrap();
    let store = Store::Tree(staged);
    // (A link at a file's own name: the exclusive create finds it there.)
    for (piece, errno) in [(PieceIndex(0), libc::EEXIST), (PieceIndex(2), libc::ELOOP)] {
        let data = vec![9; swarm.layout.piece_len(piece)];
        let err = store.write_piece(&swarm, piece, &data).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(errno), "{err}");
    }
    assert_eq!(std::fs::read(outside.join("y")).unwrap(), b"mine");
    // Nor when the empty file `s/x` is made at the end: the sync is not reached.
    let Store::Tree(staged) = &store else { unreachable!() };
    let err = staged.make_durable(&tree(), &Selection::Whole).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
    assert_eq!(names_in(&outside), ["y"]);
    // A link to a missing file in the place of a file is not created through either.
    std::fs::remove_file(staging.join("a")).unwrap();
    std::os::unix::fs::symlink(outside.join("new"), staging.join("a")).unwrap();
    let data = vec![9; swarm.layout.piece_len(PieceIndex(0))];
    let err = store.write_piece(&swarm, PieceIndex(0), &data).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
    assert_eq!(names_in(&outside), ["y"]);
    // The seeder's reads do not follow them either.
    let mut data = [0; 3];
    assert!(read_beneath(&staging, Path::new("s/y"), 0, &mut data).is_err());
    assert!(read_beneath(&staging, Path::new("../outside/y"), 0, &mut data).is_err());
}

#[test]
fn a_part_chosen_is_staged_alone() {
    let dir = tempfile::tempdir().unwrap();
    // A subfolder: its own files only, under its own name.
    let sub = Selection::Inside { path: RelPath::parse("s").unwrap(), dir: true };
    let dest = dir.path().join("s");
    let swarm_s = swarm(tree(), sub.clone(), &dest);
    let store = Store::Tree(TreeStore::create(&tree(), &sub, &dest).unwrap());
    write_all(&store, &swarm_s);
    let staging = dir.path().join(".s.part");
    assert_eq!(names_in(&staging), ["y"]);
    let Store::Tree(staged) = &store else { unreachable!() };
    staged.make_durable(&tree(), &sub).unwrap();
    assert_eq!(names_in(&staging), ["x", "y"]);
    assert_eq!(std::fs::read(staging.join("y")).unwrap(), [3, 3, 3]);
    // One file: staged as that file.
    let one = Selection::Inside { path: RelPath::parse("a").unwrap(), dir: false };
    let dest = dir.path().join("a");
    let swarm_a = swarm(tree(), one.clone(), &dest);
    let store = Store::Tree(TreeStore::create(&tree(), &one, &dest).unwrap());
    write_all(&store, &swarm_a);
    let a = std::fs::read(dir.path().join(".a.part")).unwrap();
    assert_eq!((a.len(), a[0], a[PIECE_SIZE]), (PIECE_SIZE + 2, 1, 2));
    let mut back = [0; 2];
    assert!(read_beneath(&dir.path().join(".a.part"), Path::new(""), PIECE_SIZE as u64, &mut back)
        .is_ok());
    assert_eq!(back, [2, 2]);
}

#[test]
fn a_resume_adopts_only_its_own_staging_directory_and_makes_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let swarm = swarm(tree(), Selection::Whole, &dest);
    let staged = TreeStore::create(&tree(), &Selection::Whole, &dest).unwrap();
    let (staging, id) = (staged.path().to_path_buf(), staged.id().unwrap());
    let store = Store::Tree(staged);
    write_all(&store, &swarm);
    drop(store);
    std::fs::remove_file(staging.join("s/y")).unwrap();
    std::fs::remove_dir(staging.join("e")).unwrap();
    let (staged, found) =
        TreeStore::reopen(&staging, &tree(), &Selection::Whole, Some(id)).unwrap();
    assert_eq!(found, id);
    // The directory made again; the file's piece cannot be read back (so it is fetched
    // again), and its file is made again when it is written.
    assert!(staging.join("e").is_dir() && !staging.join("s/y").exists());
    let store = Store::Tree(staged);
    let mut back = [0; 3];
    let err = store.read_piece(&swarm, PieceIndex(2), &mut back).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(!staging.join("s/y").exists());
    store.write_piece(&swarm, PieceIndex(2), &[3, 3, 3]).unwrap();
    store.read_piece(&swarm, PieceIndex(0), &mut vec![0; PIECE_SIZE]).unwrap();
    assert_eq!(std::fs::read(staging.join("s/y")).unwrap(), [3, 3, 3]);
    drop(store);
    // Another directory made at that path since is not adopted.
    std::fs::remove_dir_all(&staging).unwrap();
    std::fs::create_dir(&staging).unwrap();
    let other = TreeStore::reopen(&staging, &tree(), &Selection::Whole, Some(id));
    assert!(matches!(other, Err(StartError::NotOurs { .. })));
    // Nor one others may write to, nor a link.
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o777)).unwrap();
    let open = TreeStore::reopen(&staging, &tree(), &Selection::Whole, None);
    assert!(matches!(open, Err(StartError::NotOurs { .. })));
    std::fs::remove_dir(&staging).unwrap();
    std::os::unix::fs::symlink(dir.path(), &staging).unwrap();
    let link = TreeStore::reopen(&staging, &tree(), &Selection::Whole, None);
    assert!(matches!(link, Err(StartError::NotOurs { .. })), "{:?}", link.err());
}

#[test]
fn at_most_max_open_files_are_held_open() {
    let dir = tempfile::tempdir().unwrap();
    let n = MAX_OPEN_FILES + 10;
    let entries = (0..n)
        .map(|i| Entry {
            path: RelPath::parse(&format!("f{i:04}")).unwrap(),
            kind: EntryKind::File { size: 1, executable: false },
        })
        .collect();
    let tree = Tree::new(entries).unwrap();
    let dest = dir.path().join("many");
    let swarm = swarm(tree.clone(), Selection::Whole, &dest);
    let store = TreeStore::create(&tree, &Selection::Whole, &dest).unwrap();
    for piece in 0..n as u32 {
        let (file, _) = store.place(&swarm, PieceIndex(piece), Open::Create).unwrap();
        file.write_all_at(&[7], 0).unwrap();
    }
    assert_eq!(store.handles.lock().open.len(), MAX_OPEN_FILES);
    assert_eq!(std::fs::read(store.path().join(format!("f{:04}", n - 1))).unwrap(), [7]);
}

/// A file removed from the staging tree during the download is not made again by its next
/// piece (it would lack the pieces written before): the write fails, and so does the
/// download, as it did when every file was made at the start.
#[test]
fn a_staged_file_removed_during_the_download_is_not_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let swarm = swarm(tree(), Selection::Whole, &dest);
    let staged = TreeStore::create(&tree(), &Selection::Whole, &dest).unwrap();
    let staging = staged.path().to_path_buf();
    let store = Store::Tree(staged);
    store.write_piece(&swarm, PieceIndex(0), &vec![1; PIECE_SIZE]).unwrap();
    std::fs::remove_file(staging.join("a")).unwrap();
    // Its handle closed (as the cache closes the least recently used), then the next piece.
    let Store::Tree(staged) = &store else { unreachable!() };
    staged.handles.lock().open.clear();
    let err = store.write_piece(&swarm, PieceIndex(1), &[2, 2]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(!staging.join("a").exists());
    // A file someone else put at a name not made yet is refused, not written into.
    std::fs::write(staging.join("s/y"), b"theirs").unwrap();
    let err = store.write_piece(&swarm, PieceIndex(2), &[3, 3, 3]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(std::fs::read(staging.join("s/y")).unwrap(), b"theirs");
}

/// Issue 23: a small file's only piece is written by the worker that verified it, while
/// other workers write theirs; a piece fetched from two peers in the endgame and written by
/// both at once makes its file once, and neither write fails.
#[test]
fn a_small_files_one_piece_may_be_written_by_several_threads_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let swarm = swarm(tree(), Selection::Whole, &dest);
    let store = Store::Tree(TreeStore::create(&tree(), &Selection::Whole, &dest).unwrap());
    // `a` has two pieces: the disk writer writes them; `s/y` one.
    assert!(!store.writes_alone(&swarm, PieceIndex(0)));
    assert!(!store.writes_alone(&swarm, PieceIndex(1)));
    assert!(store.writes_alone(&swarm, PieceIndex(2)));
    assert!(!store.writes_alone(&swarm, PieceIndex(3)));
    std::thread::scope(|threads| {
        for _ in 0..4 {
            threads.spawn(|| store.write_piece(&swarm, PieceIndex(2), b"xyz").unwrap());
        }
    });
    assert_eq!(std::fs::read(staging_path(&dest).join("s/y")).unwrap(), b"xyz");
    assert_eq!(mode(&staging_path(&dest).join("s/y")), 0o700);
}
