//! `<state-dir>/config.toml`: a profile's settings (issue 20, SPEC "Where a client keeps its
//! state"), parsed with the `toml` crate into a typed struct that refuses unknown keys.
//! Every key is optional, and an option on the command line wins over it. A mistake stops
//! the start with one line that names the file, the line and the key.
//!
//! ```toml
//! download_dir = "~/Downloads/p2p"   # where download_file puts files without a destination
//! max_upload_rate = 10_000_000       # bytes per second, 0 = unlimited
//! max_download_rate = 0
//! web = "127.0.0.1:8080"             # as --web
//! port_mapping = false               # as --no-port-mapping (default true)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The settings of `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Where `download_file` without a destination puts files (`~` is the home directory).
    pub download_dir: Option<PathBuf>,
    /// The upload cap in bytes per second (0: none).
    pub max_upload_rate: Option<u64>,
    /// The download cap in bytes per second (0: none).
    pub max_download_rate: Option<u64>,
    /// Where to serve the dashboard, as `--web`.
    pub web: Option<SocketAddr>,
    /// Whether to ask the router for a port mapping (`false`: as `--no-port-mapping`).
    pub port_mapping: Option<bool>,
}

/// Why `config.toml` cannot be used. `Display` is the line after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} line {line}{key}: {message}")]
    Invalid { path: String, line: usize, key: String, message: String },
}

impl ConfigFile {
    /// The settings in `path`; none if there is no such file.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigFileError> {
        let shown = || path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => ConfigFile::parse(&text).map_err(|e| e.at(shown())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
            Err(source) => Err(ConfigFileError::Read { path: shown(), source }),
        }
    }

    /// The settings in `text`.
    pub fn parse(text: &str) -> Result<ConfigFile, Located> {
        toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |span| span.start).min(text.len());
            let line = text[..offset].matches('\n').count() + 1;
            // The key whose value is wrong: the start of the line the mistake is on.
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(key, _)| key.trim().trim_matches('"').to_string())
                .filter(|key| !key.is_empty() && !key.starts_with('#'));
            Located { line, key, message: e.message().trim().to_string() }
        })
    }

    /// `download_dir` with a leading `~` made the home directory.
    pub fn download_dir(&self, home: Option<&Path>) -> Option<PathBuf> {
        self.download_dir.as_deref().map(|dir| crate::command::expand_home(dir, home))
    }
}

/// A mistake in the text, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub line: usize,
    pub key: Option<String>,
    pub message: String,
}

impl Located {
    fn at(self, path: String) -> ConfigFileError {
        let key = self.key.map(|k| format!(", key {k}")).unwrap_or_default();
        ConfigFileError::Invalid { path, line: self.line, key, message: self.message }
    }
}

/// Where `download_file` without a destination puts files: `download_dir` of `config.toml`,
/// else `$XDG_DOWNLOAD_DIR`, else `$HOME/Downloads` (SPEC).
pub fn default_download_dir(
    configured: Option<PathBuf>,
    xdg_download_dir: Option<PathBuf>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    configured
        .or(xdg_download_dir.filter(|d| d.is_absolute()))
        .or_else(|| home.map(|h| h.join("Downloads")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_optional_and_typed() {
        assert_eq!(ConfigFile::parse(""), Ok(ConfigFile::default()));
        let text = "download_dir = \"~/dl\"\nmax_upload_rate = 10_000_000\n\
                    max_download_rate = 0\nweb = \"127.0.0.1:8080\"\nport_mapping = false\n";
        let config = ConfigFile::parse(text).unwrap();
        assert_eq!(config.max_upload_rate, Some(10_000_000));
        assert_eq!(config.max_download_rate, Some(0));
        assert_eq!(config.web, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(config.port_mapping, Some(false));
        assert_eq!(
            config.download_dir(Some(Path::new("/home/al"))),
            Some(PathBuf::from("/home/al/dl"))
        );
    }

    #[test]
    fn a_mistake_names_its_line_and_key() {
        let check = |text: &str, line: usize, key: Option<&str>, says: &str| {
            let err = ConfigFile::parse(text).unwrap_err();
            assert_eq!((err.line, err.key.as_deref()), (line, key), "{err:?}");
            assert!(err.message.contains(says), "{err:?}");
        };
        check(
            "web = \"127.0.0.1:8080\"\ncolour = 3\n",
            2,
            Some("colour"),
            "unknown field `colour`",
        );
        check("max_upload_rate = \"fast\"\n", 1, Some("max_upload_rate"), "invalid type");
        check("# caps\nmax_download_rate = -1\n", 2, Some("max_download_rate"), "");
        check("web = \"not an address\"\n", 1, Some("web"), "");
        check("download_dir = \n", 1, Some("download_dir"), "");
        let err = ConfigFile::parse("colour = 3\n").unwrap_err().at("/s/config.toml".into());
        assert!(
            err.to_string()
                .starts_with("/s/config.toml line 1, key colour: unknown field `colour`"),
            "{err}"
        );
    }

    #[test]
    fn the_download_dir_is_the_configured_one_then_xdgs_then_homes() {
        let home = Some(Path::new("/home/al"));
        let xdg = Some(PathBuf::from("/x/dl"));
        assert_eq!(
            default_download_dir(Some(PathBuf::from("/c")), xdg.clone(), home),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(default_download_dir(None, xdg, home), Some(PathBuf::from("/x/dl")));
        assert_eq!(
            default_download_dir(None, Some(PathBuf::from("rel")), home),
            Some(PathBuf::from("/home/al/Downloads"))
        );
        assert_eq!(default_download_dir(None, None, None), None);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC{0,80}") {
            let _ = ConfigFile::parse(&text);
        }
    }
}
