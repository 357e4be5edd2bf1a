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

/// Issue 20: `config.toml` in the state directory sets the download directory and the caps;
/// the command line wins; a mistake stops the start naming the file, the line and the key.
#[test]
fn config_toml_sets_the_download_dir_and_caps_and_a_mistake_stops_the_start() {
    let (cluster, _tracker) = crate::support::Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &[]);
    let original = cluster.path("f.bin");
    crate::support::write_random(&original, 600_000, 71);
    c[0].run1(&format!("upload_file {} g", original.display()));
    c[1].send_line("exit");
    assert!(c[1].close_stdin().success());
    let state = cluster.path("leech");
    let downloads = cluster.path("dl");
    std::fs::write(
        state.join("config.toml"),
        format!(
            "# the leech's settings\ndownload_dir = \"{}\"\nmax_upload_rate = 2_000_000\n",
            downloads.display()
        ),
    )
    .unwrap();
    let mut leech = cluster.client("leech");
    leech.resumed("leech");
    leech.ok("limit_rate", "upload 2.0 MB/s, download unlimited");
    let line = leech.run1("download_file g f.bin");
    assert_eq!(
        line,
        format!("downloading f.bin from group g to {}", downloads.join("f.bin").display())
    );
    let done = leech.wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    crate::support::assert_same_file(&original, &downloads.join("f.bin"));
    leech.send_line("exit");
    assert!(leech.close_stdin().success());
    // The command line wins.
    let mut leech = cluster.client_with("leech", &["--max-upload-rate", "1000"]);
    leech.resumed("leech");
    leech.ok("limit_rate", "upload 1.0 kB/s, download unlimited");
    leech.send_line("exit");
    assert!(leech.close_stdin().success());

    // A mistake: no start, one line naming the file, the line and the key.
    std::fs::write(state.join("config.toml"), "max_upload_rate = 5\ncolour = \"blue\"\n").unwrap();
    let out = Command::new(client_bin())
        .arg("127.0.0.1:0")
        .arg(&cluster.info)
        .arg("--state-dir")
        .arg(&state)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "error: {} line 2, key colour: unknown field `colour`",
        state.join("config.toml").display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}
