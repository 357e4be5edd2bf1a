//! Issue 20: `client --attach`, a REPL (or one command with `-c`) on the client running on
//! a state directory, through its control socket: the same `Peer`, the same output.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::{client_bin, Cluster};

fn attach(state: &Path, command: Option<&str>, stdin: &str) -> Output {
    let mut cmd = Command::new(client_bin());
    cmd.arg("--attach").arg("--state-dir").arg(state);
    if let Some(command) = command {
        cmd.args(["-c", command]);
    }
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn attach_runs_commands_on_the_running_client_and_says_when_none_runs() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["alice"], &[]);
    let state = cluster.path("alice");
    let socket = state.join("control.sock");
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);

    // One command: its output, exit 0; a failing one, exit 1.
    let out = attach(&state, Some("list_my_groups"), "");
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "g\n"), "{out:?}");
    let out = attach(&state, Some("list_files nope"), "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).starts_with("error: "), "{out:?}");
    // The same peer: a cap set through attach is the running client's.
    let out = attach(&state, Some("limit_rate up 1M"), "");
    assert_eq!(stdout(&out), "upload 1.0 MB/s, download unlimited\n", "{out:?}");
    c[0].ok("limit_rate", "upload 1.0 MB/s, download unlimited");

    // A REPL from a pipe; `exit` leaves the client running.
    let out = attach(&state, None, "list_my_groups\nlimit_rate down off\nbogus\nexit\n");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(lines[0], "g");
    assert_eq!(lines[1], "upload 1.0 MB/s, download unlimited");
    assert!(lines[2].starts_with("error: unknown command 'bogus'"), "{lines:?}");
    assert_eq!(c[0].run("list_my_groups"), ["g"]);

    // No client on a state directory: exit 2, saying so.
    let empty = cluster.path("nobody");
    std::fs::create_dir(&empty).unwrap();
    let out = attach(&empty, Some("list_groups"), "");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: no client runs on "));

    // A client killed leaves its socket: attach says nobody listens; the next client on
    // the directory replaces it.
    c[0].kill();
    assert!(socket.exists());
    let out = attach(&state, Some("list_groups"), "");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody listens"), "{out:?}");
    let mut again = cluster.client("alice");
    again.resumed("alice");
    let out = attach(&state, Some("list_my_groups"), "");
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "g\n"), "{out:?}");
    // And stopping the client removes it.
    again.send_line("exit");
    assert!(again.close_stdin().success());
    assert!(!socket.exists());
}

/// A state directory whose path is too long for a Unix socket (107 bytes) still runs its
/// client; only `--attach` cannot reach it, and says why.
#[test]
fn a_state_dir_too_long_for_a_socket_still_runs_its_client() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let deep = cluster.path(&"d".repeat(120));
    let mut c = crate::support::ClientProc::start(&cluster.info, &deep, &[]);
    c.ok("create_user deep pw", "created user deep");
    let out = attach(&deep, Some("list_groups"), "");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("too long for a Unix socket"), "{stderr}");
}
