//! The swarm scripts users run, at a small size, so that they cannot rot (issue 5).

use std::path::PathBuf;
use std::process::Command;

use crate::support::client_bin;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs `scripts/swarm.sh` on the debug binaries and returns its output; fails the test if
/// the script fails. `timeout` sends SIGTERM, on which the script stops what it started.
fn swarm(args: &[&str]) -> String {
    let bin = client_bin().parent().unwrap().to_path_buf();
    let out = Command::new("timeout")
        .args(["--signal=TERM", "300", "bash"])
        .arg(root().join("scripts/swarm.sh"))
        .args(args)
        .arg("--bin")
        .arg(&bin)
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "swarm.sh {args:?} failed:\n{text}");
    text
}

#[test]
fn swarm_share_scenario() {
    let out = swarm(&["share", "--peers", "3", "--trackers", "2", "--size", "2"]);
    assert!(out.contains("totals: 2 of 2 copies intact"), "{out}");
}

#[test]
fn swarm_flash_crowd_scenario() {
    let out = swarm(&[
        "flash",
        "--peers",
        "4",
        "--trackers",
        "1",
        "--size",
        "4",
        "--seed-rate",
        "2000000",
    ]);
    assert!(out.contains("totals: 3 of 3 copies intact"), "{out}");
    assert!(out.contains("peer   role"), "no summary table:\n{out}");
}

/// p1, killed mid-download, is the first receiver of the pieces the seeder handed it
/// (issue 12: each piece goes to one leecher first); the others must still get them.
#[test]
fn swarm_churn_scenario() {
    let out = swarm(&[
        "churn",
        "--peers",
        "4",
        "--trackers",
        "3",
        "--size",
        "6",
        "--seed-rate",
        "2000000",
    ]);
    assert!(out.contains("totals: 3 of 3 copies intact"), "{out}");
    assert!(out.contains("(the leader) is killed"), "{out}");
    assert!(out.contains(" restarted: tracker "), "{out}");
}

#[test]
fn swarm_refuses_bad_arguments_with_usage() {
    let out = Command::new("bash")
        .arg(root().join("scripts/swarm.sh"))
        .arg("--frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage: scripts/swarm.sh"));
}
