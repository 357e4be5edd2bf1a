//! The `tracker_info.txt` format: one tracker per line as `IP:PORT`; blank lines and lines
//! starting with `#` are ignored; tracker N is the N-th address line (1-based).

use std::net::SocketAddr;
use std::path::Path;

/// Why a `tracker_info.txt` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrackerInfoError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// A line is not `IP:PORT`.
    #[error("line {line}: expected IP:PORT, found {text:?}")]
    BadLine { line: usize, text: String },
    /// Two lines name the same address.
    #[error("line {line}: {addr} is listed twice")]
    Duplicate { line: usize, addr: SocketAddr },
    /// No tracker is listed.
    #[error("no tracker listed")]
    Empty,
}

/// The trackers of a deployment, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerInfo {
    addrs: Vec<SocketAddr>,
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
        let mut addrs = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let addr: SocketAddr = line
                .parse()
                .map_err(|_| TrackerInfoError::BadLine { line: i + 1, text: line.to_string() })?;
            if addrs.contains(&addr) {
                return Err(TrackerInfoError::Duplicate { line: i + 1, addr });
            }
            addrs.push(addr);
        }
        if addrs.is_empty() {
            return Err(TrackerInfoError::Empty);
        }
        Ok(TrackerInfo { addrs })
    }

    /// The address of tracker `id` (1-based), if listed.
    pub fn addr(&self, id: u32) -> Option<SocketAddr> {
        let idx = usize::try_from(id).ok()?.checked_sub(1)?;
        self.addrs.get(idx).copied()
    }

    /// Every tracker as `(id, address)`, in file order.
    pub fn trackers(&self) -> impl Iterator<Item = (u32, SocketAddr)> + '_ {
        (1u32..).zip(self.addrs.iter().copied())
    }

    /// How many trackers are listed.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Always false: an empty list does not parse.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_comments_and_blanks() {
        let info =
            TrackerInfo::parse("# trackers\n\n127.0.0.1:6000\n  127.0.0.1:6001  \n").unwrap();
        assert_eq!(info.len(), 2);
        assert_eq!(info.addr(1), Some("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(info.addr(2), Some("127.0.0.1:6001".parse().unwrap()));
        assert_eq!(info.addr(0), None);
        assert_eq!(info.addr(3), None);
    }

    #[test]
    fn bad_line_names_its_number() {
        let err = TrackerInfo::parse("127.0.0.1:6000\n\nlocalhost\n").unwrap_err();
        assert_eq!(err.to_string(), "line 3: expected IP:PORT, found \"localhost\"");
    }

    #[test]
    fn rejects_empty_and_duplicates() {
        assert!(matches!(TrackerInfo::parse("# none\n"), Err(TrackerInfoError::Empty)));
        assert!(matches!(
            TrackerInfo::parse("127.0.0.1:1\n127.0.0.1:1\n"),
            Err(TrackerInfoError::Duplicate { line: 2, .. })
        ));
    }
}
