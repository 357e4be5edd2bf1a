//! The `tracker_info.txt` format: one tracker per line as `IP:PORT` or `HOST:PORT`,
//! optionally followed by whitespace and the tracker's public key (64 hex digits); blank
//! lines and lines starting with `#` are ignored; tracker N is the N-th address line
//! (1-based). A host name is resolved at each connect (`TrackerAddr::resolve`), and every
//! address it resolves to, IPv4 and IPv6, is tried (issue 19).
//!
//! The keys are the deployment's trust anchor. A tracker whose line has no key writes its
//! own there at first start (`record_key`: under a lock, by atomic replace, every other line
//! left as it was); `TrackerInfoFile` re-reads the file when a key is still missing, so
//! trackers and clients started before that pick the key up.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::identity::PublicKey;

/// Why a `tracker_info.txt` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrackerInfoError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// The file could not be updated.
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    /// A line is not `IP:PORT [KEY]` or `HOST:PORT [KEY]`.
    #[error(
        "line {line}: expected IP:PORT or HOST:PORT optionally followed by a 64-hex-digit key, found {text:?}"
    )]
    BadLine { line: usize, text: String },
    /// Two lines name the same address.
    #[error("line {line}: {addr} is listed twice")]
    Duplicate { line: usize, addr: TrackerAddr },
    /// Two lines carry the same key.
    #[error("line {line}: the key of this tracker is also listed on line {first}")]
    DuplicateKey { line: usize, first: usize },
    /// No tracker is listed.
    #[error("no tracker listed")]
    Empty,
    /// Tracker `id` is not listed.
    #[error("tracker {id} is not listed ({count} trackers)")]
    NoSuchTracker { id: u32, count: usize },
}

/// Where a tracker is: an address, or a host name resolved at each connect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TrackerAddr {
    Ip(SocketAddr),
    Host { name: String, port: u16 },
}

/// The longest host name (RFC 1035).
const MAX_HOST_LEN: usize = 253;

impl TrackerAddr {
    /// Every address it stands for now: itself, or what its host name resolves to
    /// (IPv4 and IPv6, in the resolver's order, without repeats).
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        match self {
            TrackerAddr::Ip(addr) => Ok(vec![*addr]),
            TrackerAddr::Host { name, port } => {
                let mut addrs: Vec<SocketAddr> = Vec::new();
                for addr in (name.as_str(), *port).to_socket_addrs()? {
                    if !addrs.contains(&addr) {
                        addrs.push(addr);
                    }
                }
                Ok(addrs)
            }
        }
    }

    /// The address, when it is one (not a host name).
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            TrackerAddr::Ip(addr) => Some(*addr),
            TrackerAddr::Host { .. } => None,
        }
    }
}

impl std::str::FromStr for TrackerAddr {
    type Err = ();
    /// `IP:PORT` (`[V6]:PORT` for IPv6), or `HOST:PORT` with a host name of letters,
    /// digits, `-` and `.` (labels of 1 to 63, not starting or ending with `-`).
    fn from_str(text: &str) -> Result<TrackerAddr, ()> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(TrackerAddr::Ip(addr));
        }
        let (name, port) = text.rsplit_once(':').ok_or(())?;
        let port: u16 = port.parse().map_err(|_| ())?;
        let name = name.strip_suffix('.').unwrap_or(name);
        let label_ok = |label: &str| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        // All digits and dots would be a mistyped IPv4 address, not a name.
        let numeric = name.chars().all(|c| c.is_ascii_digit() || c == '.');
        if name.is_empty() || name.len() > MAX_HOST_LEN || numeric || !name.split('.').all(label_ok)
        {
            return Err(());
        }
        Ok(TrackerAddr::Host { name: name.to_ascii_lowercase(), port })
    }
}

impl std::fmt::Display for TrackerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrackerAddr::Ip(addr) => write!(f, "{addr}"),
            TrackerAddr::Host { name, port } => write!(f, "{name}:{port}"),
        }
    }
}

/// One tracker's line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    addr: TrackerAddr,
    key: Option<PublicKey>,
    /// Its line number in the file (1-based), for messages.
    line: usize,
}

/// The trackers of a deployment, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerInfo {
    entries: Vec<Entry>,
}

impl TrackerInfo {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<TrackerInfo, TrackerInfoError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrackerInfoError::Read {
            path: path.display().to_string(),
            source,
        })?;
        TrackerInfo::parse(&text)
    }

    /// Parses the text of a `tracker_info.txt`.
    pub fn parse(text: &str) -> Result<TrackerInfo, TrackerInfoError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let Some((addr, key)) = parse_line(raw, line)? else { continue };
            if entries.iter().any(|e| e.addr == addr) {
                return Err(TrackerInfoError::Duplicate { line, addr });
            }
            if let Some(first) = entries.iter().find(|e| key.is_some() && e.key == key) {
                return Err(TrackerInfoError::DuplicateKey { line, first: first.line });
            }
            entries.push(Entry { addr, key, line });
        }
        if entries.is_empty() {
            return Err(TrackerInfoError::Empty);
        }
        Ok(TrackerInfo { entries })
    }

    fn entry(&self, id: u32) -> Option<&Entry> {
        let idx = usize::try_from(id).ok()?.checked_sub(1)?;
        self.entries.get(idx)
    }

    /// Where tracker `id` (1-based) is, if listed.
    pub fn addr(&self, id: u32) -> Option<TrackerAddr> {
        self.entry(id).map(|e| e.addr.clone())
    }

    /// The addresses tracker `id` is at now (its host name resolved), or why there are
    /// none.
    pub fn resolve(&self, id: u32) -> Result<Vec<SocketAddr>, String> {
        let entry = self.entry(id).ok_or_else(|| format!("tracker {id} is not listed"))?;
        match entry.addr.resolve() {
            Ok(addrs) if addrs.is_empty() => Err(format!("{} resolves to no address", entry.addr)),
            Ok(addrs) => Ok(addrs),
            Err(e) => Err(format!("cannot resolve {}: {e}", entry.addr)),
        }
    }

    /// The key listed for tracker `id`, if there is one yet.
    pub fn key(&self, id: u32) -> Option<PublicKey> {
        self.entry(id).and_then(|e| e.key)
    }

    /// The file line that lists tracker `id`.
    pub fn line(&self, id: u32) -> Option<usize> {
        self.entry(id).map(|e| e.line)
    }

    /// The tracker whose listed key is `key`.
    pub fn tracker_with_key(&self, key: &PublicKey) -> Option<u32> {
        (1u32..).zip(&self.entries).find(|(_, e)| e.key.as_ref() == Some(key)).map(|(id, _)| id)
    }

    /// Whether some tracker is listed without a key.
    pub fn missing_keys(&self) -> bool {
        self.entries.iter().any(|e| e.key.is_none())
    }

    /// Every tracker as `(id, address)`, in file order.
    pub fn trackers(&self) -> impl Iterator<Item = (u32, &TrackerAddr)> + '_ {
        (1u32..).zip(self.entries.iter().map(|e| &e.addr))
    }

    /// How many trackers are listed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: an empty list does not parse.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes the keys `newer` lists for trackers that had none here; addresses and keys
    /// already known never change. Returns whether a key was learned.
    fn learn_keys(&mut self, newer: &TrackerInfo) -> bool {
        let mut learned = false;
        for (mine, theirs) in self.entries.iter_mut().zip(&newer.entries) {
            if mine.addr != theirs.addr {
                log::warn!(
                    "tracker_info line {} now lists {} instead of {}; restart to use it",
                    theirs.line,
                    theirs.addr,
                    mine.addr
                );
                continue;
            }
            match (mine.key, theirs.key) {
                (None, Some(key)) => {
                    mine.key = Some(key);
                    learned = true;
                }
                (Some(known), Some(key)) if known != key => log::warn!(
                    "tracker_info line {} lists a new key for {}; keeping the one read first \
                     (restart to use the new one)",
                    theirs.line,
                    theirs.addr
                ),
                _ => {}
            }
        }
        learned
    }
}

/// Splits one line into an address and an optional key; `None` for blanks and comments.
fn parse_line(
    raw: &str,
    line: usize,
) -> Result<Option<(TrackerAddr, Option<PublicKey>)>, TrackerInfoError> {
    let text = raw.trim();
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    let bad = || TrackerInfoError::BadLine { line, text: text.to_string() };
    let mut words = text.split_whitespace();
    let addr: TrackerAddr = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    let key = match words.next() {
        None => None,
        Some(word) => Some(word.parse::<PublicKey>().map_err(|_| bad())?),
    };
    if words.next().is_some() {
        return Err(bad());
    }
    Ok(Some((addr, key)))
}

/// Why a key could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordKeyError {
    #[error(transparent)]
    Info(#[from] TrackerInfoError),
    /// The line already lists another key.
    #[error(
        "{path} line {line} lists key {listed} for tracker {id}, but this tracker's key (in \
         {key_file}) is {ours}; put {ours} on line {line}, or start with the --data-dir that \
         holds the key listed there"
    )]
    Mismatch {
        path: String,
        line: usize,
        id: u32,
        listed: PublicKey,
        ours: PublicKey,
        key_file: String,
    },
}

/// Makes sure `tracker_info.txt` at `path` lists `key` for tracker `id`: writes it after the
/// address when the line has none (under an exclusive lock on the file, by atomic replace,
/// every other line unchanged), and fails, naming the line, when it lists another key.
/// Returns whether the file was changed.
pub fn record_key(
    path: &Path,
    id: u32,
    key: &PublicKey,
    key_file: &Path,
) -> Result<bool, RecordKeyError> {
    let shown = || path.display().to_string();
    let write_err = |source| TrackerInfoError::Write { path: shown(), source };
    let _lock = lock_current(path)?;
    let text = std::fs::read_to_string(path)
        .map_err(|source| TrackerInfoError::Read { path: shown(), source })?;
    let info = TrackerInfo::parse(&text)?;
    let entry =
        info.entry(id).ok_or(TrackerInfoError::NoSuchTracker { id, count: info.len() })?.clone();
    match entry.key {
        Some(listed) if listed == *key => return Ok(false),
        Some(listed) => {
            return Err(RecordKeyError::Mismatch {
                path: shown(),
                line: entry.line,
                id,
                listed,
                ours: *key,
                key_file: key_file.display().to_string(),
            })
        }
        None => {}
    }
    let mut out = String::with_capacity(text.len() + 80);
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        if i + 1 == entry.line {
            let (content, newline) = match raw.strip_suffix('\n') {
                Some(content) => (content.trim_end(), "\n"),
                None => (raw.trim_end(), ""),
            };
            out.push_str(&format!("{content} {key}{newline}"));
        } else {
            out.push_str(raw);
        }
    }
    let tmp = temp_path(path);
    let written = (|| {
        let mode = std::fs::metadata(path)?.permissions().mode();
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
        file.write_all(out.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(write_err)?;
    Ok(true)
}

/// Locks the file currently at `path`. The file is replaced by rename, so a lock taken on a
/// file that was replaced meanwhile is dropped and taken again on the new one.
fn lock_current(path: &Path) -> Result<File, TrackerInfoError> {
    let read_err = |source| TrackerInfoError::Read { path: path.display().to_string(), source };
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let file = File::open(path).map_err(read_err)?;
        // A bounded wait: another process holding the lock must not stall a start forever.
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(read_err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("locked by another process for {} s", LOCK_WAIT.as_secs()),
                    )))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(read_err(e)),
            }
        }
        let locked = file.metadata().map_err(read_err)?;
        let current = std::fs::metadata(path).map_err(read_err)?;
        if (locked.dev(), locked.ino()) == (current.dev(), current.ino()) {
            return Ok(file);
        }
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// How long `record_key` waits for another process's lock on the file.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// How often a missing key makes the file be read again.
const RELOAD_EVERY: Duration = Duration::from_millis(200);
/// The least time between two reads, whatever asks.
const MIN_RELOAD: Duration = Duration::from_millis(10);

/// `tracker_info.txt` as a process sees it over time: read at start, and read again (at most
/// every `RELOAD_EVERY`) while some tracker's key is missing, to learn keys that trackers
/// wrote after this process started.
#[derive(Debug)]
pub struct TrackerInfoFile {
    path: PathBuf,
    state: Mutex<(TrackerInfo, Instant)>,
}

impl TrackerInfoFile {
    /// Reads the file at `path`.
    pub fn load(path: &Path) -> Result<TrackerInfoFile, TrackerInfoError> {
        let info = TrackerInfo::load(path)?;
        let state = Mutex::new((info, Instant::now()));
        Ok(TrackerInfoFile { path: path.to_path_buf(), state })
    }

    /// The path it is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current contents, re-read first if a key is missing and the last read is old.
    pub fn current(&self) -> TrackerInfo {
        self.read(RELOAD_EVERY)
    }

    /// The current contents, re-read first if a key is missing (unless the last read was
    /// under `MIN_RELOAD` ago): for a peer that proved a key we do not know, which may have
    /// been written a moment ago.
    pub fn current_fresh(&self) -> TrackerInfo {
        self.read(MIN_RELOAD)
    }

    fn read(&self, max_age: Duration) -> TrackerInfo {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (info, read_at) = &mut *state;
        if info.missing_keys() && read_at.elapsed() >= max_age {
            *read_at = Instant::now();
            match TrackerInfo::load(&self.path) {
                Ok(newer) => {
                    if info.learn_keys(&newer) {
                        log::info!("learned tracker keys from {}", self.path.display());
                    }
                }
                Err(e) => log::warn!("cannot re-read {}: {e}", self.path.display()),
            }
        }
        info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const KEY_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn parses_with_comments_blanks_and_keys() {
        let text = format!("# trackers\n\n127.0.0.1:6000\n  127.0.0.1:6001 \t {KEY_A} \n");
        let info = TrackerInfo::parse(&text).unwrap();
        assert_eq!(info.len(), 2);
        assert_eq!(info.addr(1), Some(TrackerAddr::Ip("127.0.0.1:6000".parse().unwrap())));
        assert_eq!(info.addr(2), Some(TrackerAddr::Ip("127.0.0.1:6001".parse().unwrap())));
        assert_eq!(info.key(1), None);
        assert_eq!(info.key(2), Some(KEY_A.parse().unwrap()));
        assert_eq!(info.line(2), Some(4));
        assert_eq!(info.tracker_with_key(&KEY_A.parse().unwrap()), Some(2));
        assert!(info.missing_keys());
        assert_eq!(info.addr(0), None);
        assert_eq!(info.addr(3), None);
    }

    #[test]
    fn bad_line_names_its_number() {
        let err = TrackerInfo::parse("127.0.0.1:6000\n\nlocalhost\n").unwrap_err();
        assert!(err.to_string().starts_with("line 3: expected IP:PORT or HOST:PORT"), "{err}");
        let err = TrackerInfo::parse("127.0.0.1:6000 nothex\n").unwrap_err();
        assert!(matches!(err, TrackerInfoError::BadLine { line: 1, .. }));
        let err = TrackerInfo::parse(&format!("127.0.0.1:6000 {KEY_A} extra\n")).unwrap_err();
        assert!(matches!(err, TrackerInfoError::BadLine { line: 1, .. }));
    }

    #[test]
    fn host_names_are_kept_and_resolved_at_each_use() {
        let text = format!("localhost:6000 {KEY_A}\ntracker-2.example.org.:6001\n[::1]:6002\n");
        let info = TrackerInfo::parse(&text).unwrap();
        let host = |name: &str, port| TrackerAddr::Host { name: name.into(), port };
        assert_eq!(info.addr(1), Some(host("localhost", 6000)));
        assert_eq!(info.addr(2), Some(host("tracker-2.example.org", 6001)));
        assert_eq!(info.addr(3), Some(TrackerAddr::Ip("[::1]:6002".parse().unwrap())));
        assert_eq!(info.addr(2).unwrap().to_string(), "tracker-2.example.org:6001");
        let local = info.resolve(1).unwrap();
        assert!(
            !local.is_empty() && local.iter().all(|a| a.ip().is_loopback() && a.port() == 6000)
        );
        assert_eq!(info.resolve(3), Ok(vec!["[::1]:6002".parse().unwrap()]));
        assert!(info.resolve(4).is_err());
        for bad in [
            "-bad.example:1",
            "bad-.example:1",
            "a..b:1",
            "under_score:1",
            "host:99999",
            "host",
            "1.2.3:6000",
            "h\u{e9}te:1",
            ":6000",
        ] {
            assert!(bad.parse::<TrackerAddr>().is_err(), "{bad:?} was taken");
        }
        let long = format!("{}:1", vec!["a".repeat(63); 5].join("."));
        assert!(long.parse::<TrackerAddr>().is_err(), "over 253 bytes");
        assert!(matches!(
            TrackerInfo::parse("LocalHost:1\nlocalhost:1\n"),
            Err(TrackerInfoError::Duplicate { line: 2, .. })
        ));
    }

    #[test]
    fn rejects_empty_and_duplicates() {
        assert!(matches!(TrackerInfo::parse("# none\n"), Err(TrackerInfoError::Empty)));
        assert!(matches!(
            TrackerInfo::parse("127.0.0.1:1\n127.0.0.1:1\n"),
            Err(TrackerInfoError::Duplicate { line: 2, .. })
        ));
        assert!(matches!(
            TrackerInfo::parse(&format!("127.0.0.1:1 {KEY_A}\n127.0.0.1:2 {KEY_A}\n")),
            Err(TrackerInfoError::DuplicateKey { line: 2, first: 1 })
        ));
    }

    #[test]
    fn record_key_fills_only_its_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tracker_info.txt");
        let original = "# two trackers\n127.0.0.1:6000\n\n127.0.0.1:6001   \n";
        std::fs::write(&path, original).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let a: PublicKey = KEY_A.parse().unwrap();
        let b: PublicKey = KEY_B.parse().unwrap();
        let key_file = Path::new("tracker.key");
        assert!(record_key(&path, 2, &b, key_file).unwrap());
        assert!(!record_key(&path, 2, &b, key_file).unwrap(), "already there");
        assert!(record_key(&path, 1, &a, key_file).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("# two trackers\n127.0.0.1:6000 {KEY_A}\n\n127.0.0.1:6001 {KEY_B}\n")
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "the file keeps its mode");

        let err = record_key(&path, 1, &b, key_file).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2") && msg.contains(KEY_B), "{msg}");
        assert!(matches!(
            record_key(&path, 3, &a, key_file),
            Err(RecordKeyError::Info(TrackerInfoError::NoSuchTracker { id: 3, count: 2 }))
        ));
    }

    #[test]
    fn concurrent_writers_lose_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tracker_info.txt");
        let lines: String = (0..8).map(|i| format!("127.0.0.1:{}\n", 7000 + i)).collect();
        std::fs::write(&path, lines).unwrap();
        let keys: Vec<PublicKey> = (0..8u8).map(|i| PublicKey([i + 1; 32])).collect();
        std::thread::scope(|s| {
            for (i, key) in keys.iter().enumerate() {
                let path = &path;
                s.spawn(move || record_key(path, i as u32 + 1, key, Path::new("k")).unwrap());
            }
        });
        let info = TrackerInfo::load(&path).unwrap();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(info.key(i as u32 + 1), Some(*key));
        }
    }

    #[test]
    fn the_file_view_learns_keys_written_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tracker_info.txt");
        std::fs::write(&path, "127.0.0.1:6000\n").unwrap();
        let view = TrackerInfoFile::load(&path).unwrap();
        assert_eq!(view.current().key(1), None);
        let a: PublicKey = KEY_A.parse().unwrap();
        record_key(&path, 1, &a, Path::new("k")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while view.current().key(1).is_none() {
            assert!(Instant::now() < deadline, "key never learned");
            std::thread::sleep(RELOAD_EVERY / 4);
        }
        assert_eq!(view.current().key(1), Some(a));
    }
}
