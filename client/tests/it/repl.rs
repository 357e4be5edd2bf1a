//! The REPL as a person lives in it (issue 10), driven through a pipe: one client per state
//! directory.

use std::process::{Command, Stdio};

use crate::support::{client_bin, Cluster};

/// Issue 10: two clients on one state directory overwrote each other's shares.
#[test]
fn a_second_client_on_the_same_state_dir_is_refused() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut first = cluster.client("c");
    let second = Command::new(client_bin())
        .arg("127.0.0.1:0")
        .arg(&cluster.info)
        .arg("--state-dir")
        .arg(cluster.path("c"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(!String::from_utf8_lossy(&second.stdout).contains("listening on"));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: state directory {} is in use by another client; stop that client or choose another --state-dir",
            cluster.path("c").display()
        )
    );
    // The first one goes on, and once it has quit the directory is free again.
    first.ok("create_user alice pw", "created user alice");
    assert!(first.close_stdin().success());
    let mut again = cluster.client("c");
    again.ok("login alice pw", "logged in as alice");
}

/// Issue 10: with port 0 every client used `client-127.0.0.1-0-state`.
#[test]
fn the_default_state_dir_is_named_after_the_bound_port() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let cwd = cluster.path("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let run = || {
        let out = Command::new(client_bin())
            .arg("127.0.0.1:0")
            .arg(&cluster.info)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let port = stdout.trim().rsplit(':').next().unwrap().to_string();
        port.parse::<u16>().unwrap()
    };
    let (a, b) = (run(), run());
    assert_ne!(a, b);
    for port in [a, b] {
        let dir = cwd.join(format!("client-127.0.0.1-{port}-state"));
        assert!(dir.join("client.key").is_file(), "{} has no key", dir.display());
    }
    assert!(!cwd.join("client-127.0.0.1-0-state").exists());
}
