//! Issue 20: the binaries' command lines: `--version` names the commit, and the client
//! prints completion scripts.

use std::process::Command;

use crate::support::{client_bin, tracker_bin};

/// The commit this tree is at, as the build script reads it (`unknown` outside git).
fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

#[test]
fn version_names_the_binary_its_version_and_its_commit() {
    for (bin, name) in [(client_bin(), "client"), (tracker_bin(), "tracker")] {
        let out = Command::new(bin).arg("--version").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let line = String::from_utf8(out.stdout).unwrap();
        let version = env!("CARGO_PKG_VERSION");
        // The binary was built from this tree, maybe one commit behind a test run that
        // follows a commit without rebuilding; the shape is what matters.
        assert!(line.starts_with(&format!("{name} {version} (commit ")), "{line}");
        let built = line.trim_end().trim_end_matches(')').rsplit(' ').next().unwrap().to_string();
        assert!(
            built == "unknown"
                || (built.len() == 12 && built.chars().all(|c| c.is_ascii_hexdigit())),
            "{line}"
        );
        if commit() == "unknown" {
            assert_eq!(built, "unknown");
        }
    }
}

#[test]
fn the_client_prints_completion_scripts_without_an_address() {
    for (shell, marker) in
        [("bash", "complete -F"), ("zsh", "#compdef client"), ("fish", "complete -c client")]
    {
        let out = Command::new(client_bin()).args(["--completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("profile"), "{shell}: {script}");
    }
    let out = Command::new(client_bin()).args(["--completions", "tcsh"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'tcsh'"));
}
