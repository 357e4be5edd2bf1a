//! Where a download's verified pieces live (issue 23): `Store::Part`, a file's pieces at
//! their offsets in its `.part` file, or `Store::Tree`, a folder's pieces written straight
//! into their files in a staging directory beside the destination (`.<name>.part/`, or the
//! first free `.<name>.N.part/`; a single file chosen of a folder is staged as one file,
//! `.<f>.part`). The staging tree is renamed into place once every chosen file is verified
//! and on disk, so no byte is written twice.
//!
//! Only the directories are made before the first piece (a few, where files may be
//! thousands): a file is created when its first piece is written, and the empty files, which
//! have no piece, just before the final sync (`make_durable`). Each large piece written is
//! handed to the kernel's write-back at once (`fadvise(DONTNEED)`, which starts writing the
//! range's dirty pages without waiting for them), so that the final sync finds little of
//! them left to write; small pieces (`WRITE_BACK_AT_ONCE`) are left to that sync, which
//! writes them back together.
//!
//! Invariant: a tree store writes only beneath the staging path it created (or, on resume,
//! the one its record names, still this user's, with the identity it recorded): every path
//! is a checked `RelPath` of the tree placed by `Selection::local_path`, opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the staging directory's own
//! descriptor, so neither `..` nor a link can lead outside it.
//! Invariant: at most `MAX_OPEN_FILES` files of a tree are open at once (least recently
//! used closed first), not one handle per file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rustix::fs::{Mode, OFlags, ResolveFlags};

use common::folder::{EntryKind, Selection, Tree};
use common::PieceIndex;

use super::StartError;
use crate::piece_buf::BUF_ALIGN;
use crate::swarm::{ItemLayout, PartId, Swarm};

/// The `.part` file of a download: a buffered handle, and where the file system allows it
/// an `O_DIRECT` one for whole pieces. Writing a piece straight from its aligned buffer to
/// disk costs no copy into the page cache and leaves little for the final fsync.
pub struct DownloadFile {
    pub buffered: File,
    pub direct: Option<File>,
}

impl DownloadFile {
    /// Wraps `buffered`, the open `.part` file at `path`, and opens `path` again for direct
    /// writes. The second handle is kept only if it is the same file: a path replaced in
    /// between (by a link or another file) is never written through.
    pub fn open(path: &std::path::Path, buffered: File) -> DownloadFile {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
            .open(path)
            .and_then(|direct| {
                let (a, b) = (direct.metadata()?, buffered.metadata()?);
                if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
                    Ok(direct)
                } else {
                    Err(std::io::Error::other("the path now names another file"))
                }
            });
        if let Err(e) = &direct {
            log::debug!("no O_DIRECT for {}: {e}; using buffered writes", path.display());
        }
        DownloadFile { buffered, direct: direct.ok() }
    }

    /// Writes `data` at `offset`: directly when offset and length are block-aligned,
    /// buffered otherwise (the short last piece) or when a direct write is refused.
    pub(super) fn write_at(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
        let aligned = offset.is_multiple_of(BUF_ALIGN as u64)
            && data.len().is_multiple_of(BUF_ALIGN)
            && (data.as_ptr() as usize).is_multiple_of(BUF_ALIGN);
        if let (true, Some(direct)) = (aligned, &self.direct) {
            match direct.write_all_at(data, offset) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    log::debug!("direct write refused ({e}); writing through the page cache");
                }
                Err(e) => return Err(e),
            }
        }
        self.buffered.write_all_at(data, offset)
    }
}

/// The shortest piece whose write-back a tree store starts as soon as it is written. A
/// shorter one (a small file, or a file's short last piece) is left to the final `syncfs`,
/// which writes thousands of them back in a few large requests: started one by one, each
/// small file cost a request of its own to the disk, and a fifth of the leech's time
/// fetching 10,000 small files (issue 23).
const WRITE_BACK_AT_ONCE: usize = common::PIECE_SIZE / 2;

/// The most files of one tree store open at once.
pub const MAX_OPEN_FILES: usize = 128;

/// The most staging names a folder's download tries (`.<name>.part`, then
/// `.<name>.1.part`, ...) when the ones before are taken: left by an earlier attempt that
/// a kill or a failed rename interrupted, or made by someone else; never reused, never
/// removed.
const MAX_STAGING_NAMES: u32 = 16;

/// Where a download's verified pieces are written and read back.
pub enum Store {
    /// A file's pieces at their offsets in its `.part` file.
    Part(DownloadFile),
    /// A folder's (or a part of one's) pieces in their files under a staging path.
    Tree(TreeStore),
}

impl Store {
    /// Writes `data`, the verified bytes of `piece` of `swarm`, where it belongs (in a tree,
    /// creating its file if it is the file's first piece written), and starts its write-back.
    pub fn write_piece(
        &self,
        swarm: &Swarm,
        piece: PieceIndex,
        data: &[u8],
    ) -> std::io::Result<()> {
        match self {
            Store::Part(file) => file.write_at(data, swarm.layout.part_offset(piece)),
            Store::Tree(tree) => {
                let (file, offset) = tree.place(swarm, piece, Open::Create)?;
                file.write_all_at(data, offset)?;
                if data.len() >= WRITE_BACK_AT_ONCE {
                    start_write_back(&file, offset, data.len());
                }
                Ok(())
            }
        }
    }

    /// Whether `piece` of `swarm` is the only piece of a file of a staging tree (issue 23:
    /// a small file of a folder). No other piece is written into that file, so a worker may
    /// write it itself, at the same time as other pieces are written elsewhere.
    pub fn writes_alone(&self, swarm: &Swarm, piece: PieceIndex) -> bool {
        let (Store::Tree(_), ItemLayout::Folder(layout)) = (self, &swarm.layout) else {
            return false;
        };
        layout.locate(piece).is_some_and(|(span, _)| span.layout.n_pieces() == 1)
    }

    /// Reads `piece` of `swarm` into `data` (its length), as it is on disk now.
    pub fn read_piece(
        &self,
        swarm: &Swarm,
        piece: PieceIndex,
        data: &mut [u8],
    ) -> std::io::Result<()> {
        match self {
            Store::Part(file) => file.buffered.read_exact_at(data, swarm.layout.part_offset(piece)),
            Store::Tree(tree) => {
                let (file, offset) = tree.place(swarm, piece, Open::Existing)?;
                file.read_exact_at(data, offset)
            }
        }
    }

    /// Removes what the download wrote at `path` (its `.part` file or its staging tree),
    /// only if `path` still names what this store has open.
    pub fn remove(&self, path: &Path) {
        match self {
            Store::Part(file) => super::part_file::remove_own_part(path, &file.buffered),
            Store::Tree(tree) => tree.remove(),
        }
    }
}

/// A folder's staging path and its open files.
pub struct TreeStore {
    /// The staging path: a directory, or one file when one file of the folder is chosen.
    path: PathBuf,
    /// The staging directory (or file) itself, opened when it was created or adopted:
    /// every path is resolved beneath it.
    root: Arc<File>,
    /// Whether the root is a file (one file of the folder chosen).
    single: bool,
    /// Whether this store made the staging path (not a resume's): its files are then made
    /// exclusively, so a file found in their place is refused.
    fresh: bool,
    handles: Mutex<Handles>,
    /// Held while a file is made: two writers of one file (the disk writer and a worker,
    /// or two workers with one piece in the endgame) never both try to make it.
    making: Mutex<()>,
}

/// The open files of a tree by entry, with when each was last used, and the entries whose
/// files this store made or opened to write (at most the tree's files): those are opened
/// again only as they are, so a file removed during the download fails the next write to
/// it rather than be made again without its earlier pieces.
#[derive(Default)]
struct Handles {
    open: HashMap<usize, (Arc<File>, u64)>,
    clock: u64,
    made: std::collections::HashSet<usize>,
}

impl TreeStore {
    /// Creates the staging path of the part `selection` of `tree` to be renamed to `dest`:
    /// the first free staging name beside it, a directory (0700) holding every chosen
    /// directory (its files are created as their first pieces are written, 0600, or 0700
    /// when executable, and the empty ones by `make_durable`), or the one chosen file. What
    /// a failure leaves half made is removed.
    pub fn create(
        tree: &Tree,
        selection: &Selection,
        dest: &Path,
    ) -> Result<TreeStore, StartError> {
        let single = match selection {
            Selection::Inside { path, dir: false } => {
                let kind = tree.find(path).and_then(|i| tree.entries().get(i));
                let kind = kind.map(|e| e.kind).ok_or_else(|| StartError::Unwritable {
                    path: dest.display().to_string(),
                    reason: format!("no {path} in the folder"),
                })?;
                Some(kind)
            }
            _ => None,
        };
        let (path, root) = create_staging(dest, |staging| match &single {
            Some(kind) => create_new(staging, kind),
            None => {
                std::fs::DirBuilder::new().mode(0o700).create(staging)?;
                open_root(staging, true)
            }
        })?;
        let root = Arc::new(root);
        let single = single.is_some();
        let store = TreeStore {
            path,
            root,
            single,
            fresh: true,
            handles: Mutex::default(),
            making: Mutex::default(),
        };
        let started = std::time::Instant::now();
        let populated = store.populate(tree, selection, true);
        log::info!(
            "staging {}: its directories made in {:.3} s",
            store.path.display(),
            started.elapsed().as_secs_f64()
        );
        if let Err(e) = populated {
            store.remove();
            return Err(StartError::Unwritable {
                path: store.path.display().to_string(),
                reason: e.to_string(),
            });
        }
        Ok(store)
    }

    /// Reopens the staging path `path` a resumed download's record names: never through a
    /// link, only a directory (or, for one file, a regular file) owned by this OS user,
    /// writable by no one else and, when `recorded` says which one the download created,
    /// that very one (`StartError::NotOurs` says why not). Chosen directories missing in it
    /// are made again; a file missing in it is made again when a piece of it is written (its
    /// pieces, which the resume cannot read back, are fetched again).
    pub fn reopen(
        path: &Path,
        tree: &Tree,
        selection: &Selection,
        recorded: Option<PartId>,
    ) -> Result<(TreeStore, PartId), StartError> {
        let single = matches!(selection, Selection::Inside { dir: false, .. });
        let shown = || path.display().to_string();
        let unwritable =
            |e: std::io::Error| StartError::Unwritable { path: shown(), reason: e.to_string() };
        let root = open_root(path, !single).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EISDIR) => StartError::NotOurs {
                path: shown(),
                why: "it is not what this download staged".into(),
            },
            _ => unwritable(e),
        })?;
        let metadata = root.metadata().map_err(unwritable)?;
        let found = PartId::of(&root).map_err(unwritable)?;
        let me = rustix::process::geteuid().as_raw();
        let why = if metadata.is_dir() == single || !(metadata.is_dir() || metadata.is_file()) {
            Some("it is not what this download staged".to_string())
        } else if metadata.uid() != me {
            Some(format!("it is owned by uid {}, not by this user (uid {me})", metadata.uid()))
        } else if metadata.mode() & 0o022 != 0 {
            Some(format!("others may write to it (mode {:o})", metadata.mode() & 0o7777))
        } else if recorded.is_some_and(|id| id != found) {
            Some("it is another one than the one this download created".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            return Err(StartError::NotOurs { path: shown(), why });
        }
        let root = Arc::new(root);
        let path = path.to_path_buf();
        let store = TreeStore {
            path,
            root,
            single,
            fresh: false,
            handles: Mutex::default(),
            making: Mutex::default(),
        };
        store.populate(tree, selection, false).map_err(unwritable)?;
        Ok((store, found))
    }

    /// The staging path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity of the staging directory (or file), which the record keeps.
    pub fn id(&self) -> std::io::Result<PartId> {
        PartId::of(&self.root)
    }

    /// Makes the chosen files of `tree` that have no piece (the empty ones), then every
    /// byte written under the staging path durable, its directories included: one `syncfs`
    /// of its file system. Measured against an fsync of each file for 10,000 files of 1 to
    /// 64 KiB on this ext4: 0.45 s, against 3.9 s for fsyncs on 2 threads and 1.1 s on 16.
    /// It reports a write-back error on that file system since the root was opened (Linux
    /// 5.8 and later), so a file that did not reach the disk fails the download before its
    /// rename. Every other chosen file exists: each has a piece, written (or, on a resume,
    /// read back) before the download ends.
    pub fn make_durable(&self, tree: &Tree, selection: &Selection) -> std::io::Result<()> {
        // Positional writes leave no bytes in user space; the handles can go.
        self.handles.lock().open.clear();
        if !self.single {
            for (index, entry) in tree.entries().iter().enumerate() {
                let kind @ EntryKind::File { size: 0, .. } = &entry.kind else { continue };
                let Some(rel) = selection.local_path(&entry.path, Path::new("")) else {
                    continue;
                };
                if !rel.as_os_str().is_empty() {
                    self.open_entry(index, &rel, kind, Open::Create)?;
                }
            }
        }
        rustix::fs::syncfs(&*self.root)?;
        Ok(())
    }

    /// Whether the staging path still names the directory (or file) this store has open.
    pub fn is_in_place(&self) -> std::io::Result<bool> {
        let on_disk = std::fs::symlink_metadata(&self.path)?;
        let open = self.root.metadata()?;
        Ok(on_disk.dev() == open.dev() && on_disk.ino() == open.ino())
    }

    /// Removes the staging path, if it is still the one this store made or adopted.
    pub fn remove(&self) {
        self.handles.lock().open.clear();
        match self.is_in_place() {
            Ok(true) => {
                let removed = match self.single {
                    true => std::fs::remove_file(&self.path),
                    // It follows no link inside the tree.
                    false => std::fs::remove_dir_all(&self.path),
                };
                if let Err(e) = removed {
                    log::warn!("cannot remove {}: {e}", self.path.display());
                }
            }
            Ok(false) => log::warn!(
                "{} is no longer the staging path this download made; leaving it",
                self.path.display()
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => log::warn!("cannot check {} before removing it: {e}", self.path.display()),
        }
    }

    /// Makes the chosen directories under the root: all of them, exclusively, when `fresh`;
    /// only those missing otherwise (a resume). Files are made as they are written.
    fn populate(&self, tree: &Tree, selection: &Selection, fresh: bool) -> std::io::Result<()> {
        if self.single {
            return Ok(());
        }
        for entry in tree.entries() {
            if !matches!(entry.kind, EntryKind::Dir) {
                continue;
            }
            let Some(rel) = selection.local_path(&entry.path, Path::new("")) else { continue };
            if rel.as_os_str().is_empty() {
                continue;
            }
            match make_dir_beneath(&self.root, &rel) {
                Err(e) if !fresh && e.kind() == ErrorKind::AlreadyExists => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// The open file `piece` of `swarm` lies in (created first, with its entry's mode, if
    /// `open` says so and it is not there), and its offset there.
    fn place(
        &self,
        swarm: &Swarm,
        piece: PieceIndex,
        open: Open,
    ) -> std::io::Result<(Arc<File>, u64)> {
        let missing = || std::io::Error::new(ErrorKind::NotFound, format!("no piece {}", piece.0));
        let ItemLayout::Folder(layout) = &swarm.layout else { return Err(missing()) };
        let (span, inner) = layout.locate(piece).ok_or_else(missing)?;
        let offset = span.layout.piece_offset(inner);
        if self.single {
            return Ok((Arc::clone(&self.root), offset));
        }
        {
            let mut handles = self.handles.lock();
            handles.clock += 1;
            let now = handles.clock;
            if let Some((file, used)) = handles.open.get_mut(&span.entry) {
                *used = now;
                return Ok((Arc::clone(file), offset));
            }
        }
        // Opened outside the lock: system calls.
        let tree = swarm.meta.tree.as_ref().ok_or_else(missing)?;
        let entry = tree.entries().get(span.entry).ok_or_else(missing)?;
        let rel = swarm.chosen.selection.local_path(&entry.path, Path::new(""));
        let rel = rel.ok_or_else(missing)?;
        let file = Arc::new(self.open_entry(span.entry, &rel, &entry.kind, open)?);
        let mut handles = self.handles.lock();
        if handles.open.len() >= MAX_OPEN_FILES {
            let oldest = handles.open.iter().min_by_key(|(_, (_, used))| *used).map(|(&k, _)| k);
            if let Some(oldest) = oldest {
                handles.open.remove(&oldest);
            }
        }
        let now = handles.clock;
        handles.open.insert(span.entry, (Arc::clone(&file), now));
        Ok((file, offset))
    }

    /// Opens the file of entry `index` at `rel` (of kind `kind`): to write (`Open::Create`)
    /// made if this store has not made or opened it to write before (exclusively in a
    /// fresh staging tree; in a resumed one it may be there already), else only as it is.
    fn open_entry(
        &self,
        index: usize,
        rel: &Path,
        kind: &EntryKind,
        open: Open,
    ) -> std::io::Result<File> {
        let mut made = self.handles.lock().made.contains(&index);
        // Made by one writer at a time; another that waited opens it as it is.
        let _making = match (open, made) {
            (Open::Create, false) => {
                let making = self.making.lock();
                made = self.handles.lock().made.contains(&index);
                Some(making)
            }
            _ => None,
        };
        let make = match (open, made, self.fresh) {
            (Open::Existing, ..) | (Open::Create, true, _) => Make::No,
            (Open::Create, false, true) => Make::New,
            (Open::Create, false, false) => Make::IfMissing,
        };
        let file = open_file(&self.root, rel, kind, make)?;
        if open == Open::Create {
            self.handles.lock().made.insert(index);
        }
        Ok(file)
    }
}

/// Whether a tree's file is created when it is opened and not there.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Open {
    /// To write a piece into: created if missing.
    Create,
    /// To read a piece back (a resume's check): a missing file is an error.
    Existing,
}

/// Whether `open_file` makes the file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Make {
    /// Made here: it must not exist.
    New,
    /// Made if missing.
    IfMissing,
    /// Opened as it is.
    No,
}

/// Opens the file `rel` beneath `root` to read and write (`open_beneath`), made with the
/// mode of its entry `kind` as `make` says; only a regular file.
fn open_file(root: &File, rel: &Path, kind: &EntryKind, make: Make) -> std::io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CLOEXEC;
    // (`openat2` refuses a mode without `O_CREAT`.)
    let (flags, mode) = match make {
        Make::New => (flags | OFlags::CREATE | OFlags::EXCL, file_mode(kind)),
        Make::IfMissing => (flags | OFlags::CREATE, file_mode(kind)),
        Make::No => (flags, Mode::empty()),
    };
    let file = open_beneath(root, rel, flags, mode)?;
    // Made here (`O_CREAT | O_EXCL`, never through a link): a regular file for sure.
    if make != Make::New && !file.metadata()?.is_file() {
        let why = format!("{} is not a regular file", rel.display());
        return Err(std::io::Error::other(why));
    }
    Ok(file)
}

/// Starts writing back the `len` bytes at `offset` of `file`, just written, without waiting
/// for them: `fadvise(DONTNEED)` on Linux starts the write-back of the range's dirty pages
/// (and drops those of its pages already clean). A hint only: the final `syncfs` is what
/// makes them durable, so a refusal is ignored.
fn start_write_back(file: &File, offset: u64, len: usize) {
    let len = std::num::NonZeroU64::new(len as u64);
    if len.is_some() {
        let _ = rustix::fs::fadvise(file, offset, len, rustix::fs::Advice::DontNeed);
    }
}

/// Opens `rel` (relative, placed from a checked `RelPath`) beneath the directory `root`
/// with `flags`, never leaving it and never through a symbolic link (`openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; where the kernel lacks `openat2`, `openat`
/// with `O_NOFOLLOW`, the path having no `..` to climb).
pub fn open_beneath(root: &File, rel: &Path, flags: OFlags, mode: Mode) -> std::io::Result<File> {
    let flags = flags | OFlags::NOFOLLOW;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
    let fd = match rustix::fs::openat2(root.as_fd(), rel, flags, mode, resolve) {
        Err(rustix::io::Errno::NOSYS) => rustix::fs::openat(root.as_fd(), rel, flags, mode)?,
        other => other?,
    };
    Ok(File::from(fd))
}

/// Reads `data.len()` bytes at `offset` of the file `rel` beneath `root` (a folder's root
/// or a download's staging directory; `rel` empty: `root` is that one file), opened never
/// through a link and never outside `root`.
pub fn read_beneath(root: &Path, rel: &Path, offset: u64, data: &mut [u8]) -> std::io::Result<()> {
    let file = open_to_read(root, rel, &mut None)?;
    file.read_exact_at(data, offset)
}

/// Opens the file `rel` beneath `root` (a folder's root or a download's staging directory;
/// `rel` empty: `root` is that one file) to read, never through a link and never outside
/// `root`: how the seeder reads a folder's pieces. `dir` holds the directory last opened
/// (its path and descriptor), reused while `root` names the same path, so that a
/// connection serving many small files opens their directory once, not once per piece.
pub fn open_to_read(
    root: &Path,
    rel: &Path,
    dir: &mut Option<(PathBuf, File)>,
) -> std::io::Result<File> {
    if rel.as_os_str().is_empty() {
        return open_readable(root, false);
    }
    let held = match dir.take() {
        Some((path, held)) if path == root => held,
        _ => open_readable(root, true)?,
    };
    let file = open_beneath(&held, rel, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty());
    *dir = Some((root.to_path_buf(), held));
    file
}

/// Opens `path` itself (never a link's target) to read: a directory when `dir`.
fn open_readable(path: &Path, dir: bool) -> std::io::Result<File> {
    let mut flags = libc::O_NOFOLLOW | libc::O_CLOEXEC;
    if dir {
        flags |= libc::O_DIRECTORY;
    }
    OpenOptions::new().read(true).custom_flags(flags).open(path)
}

/// Opens `path` itself (never a link's target) to write under or into: a directory when
/// `dir`, else a file (read and write).
fn open_root(path: &Path, dir: bool) -> std::io::Result<File> {
    match dir {
        true => open_readable(path, true),
        false => OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path),
    }
}

/// Makes the directory `rel` beneath `root` (0700): its parent opened beneath `root`
/// without following links, then the last component made there.
fn make_dir_beneath(root: &File, rel: &Path) -> std::io::Result<()> {
    let name = rel.file_name().ok_or_else(|| std::io::Error::other("an empty path"))?;
    let mode = Mode::from_raw_mode(0o700);
    match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let parent = open_beneath(root, parent, flags, Mode::empty())?;
            rustix::fs::mkdirat(&parent, name, mode)?
        }
        None => rustix::fs::mkdirat(root, name, mode)?,
    }
    Ok(())
}

/// The mode of a staged file: 0700 when executable, else 0600.
fn file_mode(kind: &EntryKind) -> Mode {
    match kind {
        EntryKind::File { executable: true, .. } => Mode::from_raw_mode(0o700),
        _ => Mode::from_raw_mode(0o600),
    }
}

/// Creates the file `path` exclusively, never through a link, with its entry's mode.
fn create_new(path: &Path, kind: &EntryKind) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(file_mode(kind).as_raw_mode())
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// The staging path of a folder, or part of one, downloaded to `dest`: `.<name>.part`
/// beside it (or `.<name>.<n>.part` when that was taken).
pub fn staging_path(dest: &Path) -> PathBuf {
    staging_path_n(dest, 0)
}

/// The `n`th staging name for `dest`: `.<name>.part`, then `.<name>.<n>.part`.
fn staging_path_n(dest: &Path, n: u32) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(dest.file_name().unwrap_or_default());
    if n > 0 {
        name.push(format!(".{n}"));
    }
    name.push(".part");
    dest.with_file_name(name)
}

/// Makes the staging path for `dest` with `create` (which fails if the path exists): the
/// first of its names that is free. Those taken are left as they are (an earlier attempt
/// cut short by a kill may leave one), and the log says so.
fn create_staging<T>(
    dest: &Path,
    create: impl Fn(&Path) -> std::io::Result<T>,
) -> Result<(PathBuf, T), StartError> {
    for n in 0..MAX_STAGING_NAMES {
        let staging = staging_path_n(dest, n);
        match create(&staging) {
            Ok(made) => return Ok((staging, made)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                log::warn!("{} already exists; leaving it as it is", staging.display())
            }
            Err(e) => {
                let path = staging.display().to_string();
                return Err(StartError::Unwritable { path, reason: e.to_string() });
            }
        }
    }
    Err(StartError::Unwritable {
        path: staging_path(dest).display().to_string(),
        reason: format!(
            "it and the next {} staging names beside it already exist; remove them and download again",
            MAX_STAGING_NAMES - 1
        ),
    })
}

#[cfg(test)]
mod tests;
