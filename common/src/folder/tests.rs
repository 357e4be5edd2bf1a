use super::*;
use crate::piece::PIECE_SIZE;
use proptest::prelude::*;

fn p(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

fn dir(s: &str) -> Entry {
    Entry { path: p(s), kind: EntryKind::Dir }
}

fn file(s: &str, size: u64) -> Entry {
    Entry { path: p(s), kind: EntryKind::File { size, executable: false } }
}

const PIECE: u64 = PIECE_SIZE as u64;

/// An album: files at piece-boundary sizes, an empty file, an empty directory, nesting.
fn album() -> Tree {
    Tree::new(vec![
        file("b.txt", 0),
        dir("2019"),
        file("2019/a.jpg", PIECE + 1),
        file("2019/b.jpg", PIECE),
        dir("2019/empty"),
        dir("2020"),
        file("2020/c d é.jpg", 10),
        file("a.txt", 2 * PIECE - 1),
    ])
    .unwrap()
}

#[test]
fn hostile_paths_are_refused() {
    for bad in [
        "",
        "/etc/passwd",
        "a//b",
        "a/",
        "../x",
        "a/../../x",
        "a/./b",
        ".",
        "..",
        "a\0b",
        "a\nb",
        "a\\b",
        " a",
        "a\u{202e}txt",
    ] {
        assert!(RelPath::parse(bad).is_err(), "{bad:?} was taken");
    }
    let deep = vec!["d"; MAX_DEPTH + 1].join("/");
    assert_eq!(RelPath::parse(&deep), Err(TreeError::TooDeep(deep.clone())));
    let long = vec!["x".repeat(200); 21].join("/");
    assert_eq!(RelPath::parse(&long), Err(TreeError::PathTooLong));
    // Typed text is put in NFC; the wire is only checked.
    assert_eq!(p("cafe\u{301}").to_string(), "caf\u{e9}");
    let nfd: Result<Vec<FileName>, _> =
        postcard::from_bytes(&postcard::to_allocvec(&vec!["cafe\u{301}".to_string()]).unwrap());
    assert!(nfd.is_err());
}

#[test]
fn trees_are_canonical_and_every_parent_is_a_directory() {
    let tree = album();
    let order: Vec<String> = tree.entries().iter().map(|e| e.path.to_string()).collect();
    assert_eq!(
        order,
        [
            "2019",
            "2019/a.jpg",
            "2019/b.jpg",
            "2019/empty",
            "2020",
            "2020/c d é.jpg",
            "a.txt",
            "b.txt"
        ]
    );
    assert_eq!((tree.file_count(), tree.total_size()), (5, 4 * PIECE + 10));
    // From the wire: out of order, repeated, or an orphan is refused, never repaired.
    let mut swapped: Vec<Entry> = tree.entries().to_vec();
    swapped.swap(6, 7);
    assert!(matches!(Tree::try_from(swapped), Err(TreeError::NotCanonical(_))));
    let repeated = vec![dir("a"), dir("a")];
    assert!(matches!(Tree::try_from(repeated), Err(TreeError::NotCanonical(_))));
    let orphan = vec![file("x/y", 1)];
    assert_eq!(Tree::try_from(orphan), Err(TreeError::NoParent(p("x/y"), p("x"))));
    let inside_a_file = vec![file("x", 1), file("x/y", 1)];
    assert!(matches!(Tree::try_from(inside_a_file), Err(TreeError::NoParent(..))));
}

#[test]
fn absurd_trees_are_bounded() {
    let many: Vec<Entry> = (0..=MAX_ENTRIES).map(|i| file(&format!("f{i:06}"), 0)).collect();
    assert_eq!(Tree::new(many), Err(TreeError::TooManyEntries(MAX_ENTRIES + 1)));
    let huge = vec![file("a", crate::piece::MAX_FILE_LEN), file("b", 1)];
    assert_eq!(Tree::new(huge), Err(TreeError::TooManyPieces));
    let long_names: Vec<Entry> =
        (0..20_000).map(|i| file(&format!("{i:05}{}", "x".repeat(250)), 0)).collect();
    assert_eq!(Tree::new(long_names), Err(TreeError::TooManyPathBytes));
}

#[test]
fn each_file_starts_a_piece() {
    let tree = album();
    let layout = FolderLayout::new(&tree).unwrap();
    let spans: Vec<(String, Range<u32>)> = layout
        .files()
        .iter()
        .map(|f| (tree.entries()[f.entry].path.to_string(), f.pieces()))
        .collect();
    assert_eq!(
        spans,
        [
            ("2019/a.jpg".to_string(), 0..2),
            ("2019/b.jpg".to_string(), 2..3),
            ("2020/c d é.jpg".to_string(), 3..4),
            ("a.txt".to_string(), 4..6),
            ("b.txt".to_string(), 6..6),
        ]
    );
    assert_eq!(layout.n_pieces(), 6);
    assert_eq!(layout.piece_len(PieceIndex(1)), 1);
    assert_eq!(layout.piece_len(PieceIndex(3)), 10);
    assert_eq!(layout.piece_len(PieceIndex(6)), 0);
    let (span, inner) = layout.locate(PieceIndex(5)).unwrap();
    assert_eq!((span.entry, inner), (tree.find(&p("a.txt")).unwrap(), PieceIndex(1)));
}

#[test]
fn a_selection_takes_a_file_or_a_directory_with_all_inside() {
    let tree = album();
    let layout = FolderLayout::new(&tree).unwrap();
    let names = |sel: &Selection| -> Vec<String> {
        let picked = tree.select(sel).unwrap();
        picked.iter().map(|&i| tree.entries()[i].path.to_string()).collect()
    };
    assert_eq!(names(&Selection::Whole).len(), 8);
    let sub = Selection::Inside { path: p("2019"), dir: true };
    assert_eq!(names(&sub), ["2019", "2019/a.jpg", "2019/b.jpg", "2019/empty"]);
    assert_eq!(layout.pieces_of(&tree.select(&sub).unwrap()), [0..2, 2..3]);
    let one = Selection::Inside { path: p("a.txt"), dir: false };
    assert_eq!(layout.pieces_of(&tree.select(&one).unwrap()), vec![Range { start: 4, end: 6 }]);
    for missing in [
        Selection::Inside { path: p("2019"), dir: false },
        Selection::Inside { path: p("a.txt"), dir: true },
        Selection::Inside { path: p("nope"), dir: false },
    ] {
        assert!(matches!(tree.select(&missing), Err(TreeError::NotInFolder(_))), "{missing:?}");
    }
}

/// Where a selection's entries land: `album/2019/` at `/x/2019` puts `2019/a.jpg` at
/// `/x/2019/a.jpg`; `album/a.txt` at `/x/a.txt` is that file; nothing else has a place.
#[test]
fn a_selection_lands_under_its_own_name() {
    let root = Path::new("/x/2019");
    let sub = Selection::Inside { path: p("2019"), dir: true };
    assert_eq!(sub.local_path(&p("2019"), root), Some(root.to_path_buf()));
    assert_eq!(sub.local_path(&p("2019/a.jpg"), root), Some(root.join("a.jpg")));
    assert_eq!(sub.local_path(&p("a.txt"), root), None);
    assert_eq!(sub.local_path(&p("2019x"), root), None);
    assert_eq!(sub.shown(&FileName::new("album").unwrap()), "album/2019/");
    assert_eq!(sub.base_name(&FileName::new("album").unwrap()).as_str(), "2019");
    let one = Selection::Inside { path: p("2019/a.jpg"), dir: false };
    let file = Path::new("/x/a.jpg");
    assert_eq!(one.local_path(&p("2019/a.jpg"), file), Some(file.to_path_buf()));
    assert_eq!(one.local_path(&p("2019"), file), None);
    assert_eq!(one.shown(&FileName::new("album").unwrap()), "album/2019/a.jpg");
    assert_eq!(one.base_name(&FileName::new("album").unwrap()).as_str(), "a.jpg");
    let whole = Selection::Whole;
    assert_eq!(whole.local_path(&p("2019/a.jpg"), root), Some(root.join("2019/a.jpg")));
    assert_eq!(whole.shown(&FileName::new("album").unwrap()), "album/");
    assert_eq!(whole.base_name(&FileName::new("album").unwrap()).as_str(), "album");
}

#[test]
fn download_arguments_name_a_file_a_folder_or_a_part_of_one() {
    let name = |s: &str| FileName::new(s).unwrap();
    assert_eq!(ItemRef::parse("film.iso"), Ok(ItemRef::File(name("film.iso"))));
    assert_eq!(
        ItemRef::parse("album/"),
        Ok(ItemRef::Folder { name: name("album"), selection: Selection::Whole })
    );
    assert_eq!(
        ItemRef::parse("album/2019/"),
        Ok(ItemRef::Folder {
            name: name("album"),
            selection: Selection::Inside { path: p("2019"), dir: true }
        })
    );
    assert_eq!(
        ItemRef::parse("album/2019/a.jpg"),
        Ok(ItemRef::Folder {
            name: name("album"),
            selection: Selection::Inside { path: p("2019/a.jpg"), dir: false }
        })
    );
    for bad in ["/album/", "album//", "album/../x", "album/a//b", "../album/"] {
        assert!(ItemRef::parse(bad).is_err(), "{bad:?} was taken");
    }
}

#[test]
fn the_digest_covers_paths_kinds_and_pieces() {
    let tree = album();
    let pieces = vec![Sha1Digest([1; 20]); 6];
    let digest = folder_digest(&tree, &pieces);
    assert_eq!(digest, folder_digest(&tree, &pieces));
    let mut other = pieces.clone();
    other[5] = Sha1Digest([2; 20]);
    assert_ne!(digest, folder_digest(&tree, &other));
    let mut entries = tree.entries().to_vec();
    entries[1].kind = EntryKind::File { size: PIECE + 1, executable: true };
    assert_ne!(digest, folder_digest(&Tree::try_from(entries).unwrap(), &pieces));
    let renamed = Tree::new(
        tree.entries()
            .iter()
            .map(|e| match e.path.to_string().as_str() {
                "b.txt" => file("c.txt", 0),
                _ => e.clone(),
            })
            .collect(),
    )
    .unwrap();
    assert_ne!(digest, folder_digest(&renamed, &pieces));
}

/// A random tree: directories `d0`..`d3` nested at random, files with random sizes.
fn tree_strategy() -> impl Strategy<Value = Tree> {
    let entry = (0usize..4, 0usize..3, 0u64..(3 * PIECE), any::<bool>(), any::<bool>());
    proptest::collection::vec(entry, 0..40).prop_map(|raw| {
        let mut entries = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, (top, depth, size, is_dir, exec)) in raw.into_iter().enumerate() {
            let mut dirs = Vec::new();
            for level in 0..depth {
                dirs.push(format!("d{}", (top + level) % 4));
                let d = dirs.join("/");
                if seen.insert(d.clone()) {
                    entries.push(dir(&d));
                }
            }
            dirs.push(format!("e{i}"));
            let path = dirs.join("/");
            seen.insert(path.clone());
            entries.push(match is_dir {
                true => dir(&path),
                false => Entry { path: p(&path), kind: EntryKind::File { size, executable: exec } },
            });
        }
        Tree::new(entries).unwrap()
    })
}

proptest! {
    /// Any string a hostile peer or user sends either is refused or is a path that, joined
    /// to a destination, stays inside it, one level per component.
    #[test]
    fn no_path_leaves_its_destination(text in "[a-z./\\\\ \\x00-\\x1f\u{202e}]{0,24}") {
        if let Ok(path) = RelPath::parse(&text) {
            let root = Path::new("/dest");
            let joined = path.under(root);
            prop_assert!(joined.starts_with(root));
            prop_assert_eq!(joined.components().count(), 2 + path.depth());
            prop_assert!(path.components().iter().all(|c| c.as_str() != ".." && c.as_str() != "."));
        }
    }

    /// A tree goes through the wire unchanged, and its pieces cover each file exactly once,
    /// one file after another.
    #[test]
    fn trees_round_trip_and_pieces_partition_the_files(tree in tree_strategy()) {
        let bytes = postcard::to_allocvec(&tree).unwrap();
        let back: Tree = postcard::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &tree);
        let layout = FolderLayout::new(&tree).unwrap();
        let mut next = 0;
        for span in layout.files() {
            prop_assert_eq!(span.first_piece, next);
            let size = tree.entries()[span.entry].file_size().unwrap();
            let covered: u64 = span.pieces().map(|i| layout.piece_len(PieceIndex(i)) as u64).sum();
            prop_assert_eq!(covered, size);
            for i in span.pieces() {
                let (owner, inner) = layout.locate(PieceIndex(i)).unwrap();
                prop_assert_eq!(owner.entry, span.entry);
                prop_assert_eq!(inner.0, i - span.first_piece);
            }
            next = span.pieces().end;
        }
        prop_assert_eq!(next, layout.n_pieces());
        prop_assert!(layout.locate(PieceIndex(next)).is_none());
    }

    /// A selection places exactly the entries it selects, each at its root or inside it,
    /// no two at one place.
    #[test]
    fn a_selection_places_exactly_its_entries_inside_its_root(tree in tree_strategy()) {
        let root = Path::new("/dest/part");
        for entry in tree.entries() {
            let dir = entry.kind == EntryKind::Dir;
            let selection = Selection::Inside { path: entry.path.clone(), dir };
            let picked = tree.select(&selection).unwrap();
            let mut places = BTreeSet::new();
            for (j, e) in tree.entries().iter().enumerate() {
                let local = selection.local_path(&e.path, root);
                prop_assert_eq!(local.is_some(), picked.contains(&j));
                prop_assert_eq!(selection.takes(&e.path), picked.contains(&j));
                if let Some(local) = local {
                    prop_assert!(local.starts_with(root));
                    prop_assert!(places.insert(local));
                }
            }
        }
    }

    /// Selecting a directory takes exactly the entries within it.
    #[test]
    fn a_directory_selection_is_exactly_what_is_within(tree in tree_strategy()) {
        for (i, entry) in tree.entries().iter().enumerate() {
            if entry.kind != EntryKind::Dir {
                continue;
            }
            let picked = tree.select(&Selection::Inside { path: entry.path.clone(), dir: true }).unwrap();
            let expected: Vec<usize> = (0..tree.entries().len())
                .filter(|&j| tree.entries()[j].path.is_within(&entry.path))
                .collect();
            prop_assert_eq!(&picked, &expected);
            prop_assert_eq!(picked[0], i);
        }
    }
}
