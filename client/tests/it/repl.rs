//! The REPL as a person lives in it (issue 10), driven through a pipe: one client per state
//! directory, Ctrl-C that interrupts a command and never the client, and the commands
//! people reach for (`list_shares`, `help <command>`, "did you mean", `~` in paths); and in
//! a terminal (tmux, skipped where it is not installed): the README's by-hand path.

use std::net::TcpListener;
use std::process::{Command, Stdio};

use rustix::process::{kill_process, Pid, Signal};

use crate::support::{client_bin, write_random, ClientProc, Cluster};

fn sigint(pid: u32) {
    kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::INT).unwrap();
}

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
            "error: state directory {} is in use by another client; stop that client, or start this one with another --profile NAME (or --state-dir DIR)",
            cluster.path("c").display()
        )
    );
    // The first one goes on, and once it has quit the directory is free again.
    first.ok("create_user alice pw", "created user alice");
    assert!(first.close_stdin().success());
    let mut again = cluster.client("c");
    again.ok("login alice pw", "logged in as alice");
}

/// Issue 20: the default state directory is the profile's, under `XDG_STATE_HOME` (or
/// `~/.local/state`), whatever the port; port 0 means the port of last time, so a
/// restarted peer keeps its address; a second client on a profile is refused, naming
/// `--profile`.
#[test]
fn the_default_state_dir_is_the_profiles_and_port_0_means_the_port_of_last_time() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let home = cluster.path("home");
    let cwd = cluster.path("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let client = |profile: Option<&str>, xdg: bool| {
        let mut command = Command::new(client_bin());
        command.arg("127.0.0.1:0").arg(&cluster.info).current_dir(&cwd).env("HOME", &home);
        match xdg {
            true => command.env("XDG_STATE_HOME", cluster.path("xdg")),
            false => command.env_remove("XDG_STATE_HOME"),
        };
        if let Some(profile) = profile {
            command.args(["--profile", profile]);
        }
        command
    };
    let port = |out: std::process::Output| {
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout.trim().rsplit(':').next().unwrap().parse::<u16>().unwrap()
    };
    let run = |profile, xdg| port(client(profile, xdg).stdin(Stdio::null()).output().unwrap());
    let first = run(None, false);
    let default = home.join(".local/state/p2p-groups/default");
    assert!(default.join("client.key").is_file(), "{} has no key", default.display());
    assert_eq!(run(None, false), first, "port 0 did not reuse the port of last time");
    // Another profile is another state, and another port.
    let work = run(Some("work"), false);
    assert_ne!(work, first);
    assert!(home.join(".local/state/p2p-groups/work/client.key").is_file());
    assert!(cluster.path("xdg").read_dir().is_err());
    run(None, true);
    assert!(cluster.path("xdg/p2p-groups/default/client.key").is_file());
    // Nothing in the working directory.
    assert_eq!(cwd.read_dir().unwrap().count(), 0);

    // The port of last time taken by someone else: another port, and the client starts.
    let squatter = TcpListener::bind(("127.0.0.1", first)).unwrap();
    let moved = run(None, false);
    assert_ne!(moved, first);
    drop(squatter);

    // A second client on a profile in use is refused, naming --profile.
    let mut running =
        client(None, false).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(running.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    let second = client(None, false).stdin(Stdio::null()).output().unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("with another --profile NAME"), "{stderr}");
    drop(running.stdin.take());
    assert!(running.wait().unwrap().success());
    let bad = client(Some("../x"), false).stdin(Stdio::null()).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("profile name '../x' is not usable"));
}

/// Issue 10: Ctrl-C during `wait_downloads` killed the client (exit 130).
#[test]
fn sigint_interrupts_wait_downloads_and_the_client_lives_on() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    // A seeder this slow keeps the download running for as long as the test needs.
    let mut c = cluster.members(&["seed", "leech"], &["--max-upload-rate", "1000"]);
    let file = cluster.path("slow.bin");
    write_random(&file, 2 * 1024 * 1024, 7);
    let line = c[0].run1(&format!("upload_file {} g", file.display()));
    assert!(line.starts_with("uploaded slow.bin"), "{line}");
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    let leech = &mut c[1];
    leech.ok(
        &format!("download_file g slow.bin {}", out.display()),
        &format!("downloading slow.bin from group g to {}", out.join("slow.bin").display()),
    );
    // A Ctrl-C between commands interrupts nothing.
    sigint(leech.pid());
    let shown = leech.run1("show_downloads --active");
    assert!(shown.starts_with("[D] [g] slow.bin "), "{shown}");
    assert!(leech.is_running());

    leech.send_line("wait_downloads");
    leech.wait_log("wait_downloads: waiting");
    sigint(leech.pid());
    let lines = leech.run("show_downloads");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines[0],
        "error: interrupted; downloads go on in the background (show_downloads lists them)"
    );
    assert!(lines[1].starts_with("[D] [g] slow.bin "), "{lines:?}");
    assert!(leech.is_running());
}

/// Only SIGINT interrupts: SIGTERM still ends the client, as scripts expect.
#[test]
fn sigterm_still_ends_the_client() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.client("c");
    c.ok("create_user alice pw", "created user alice");
    kill_process(Pid::from_raw(c.pid() as i32).unwrap(), Signal::TERM).unwrap();
    let status = c.wait();
    assert!(!status.success(), "{status:?}");
}

/// Issue 10: a tracker call that hangs gives up on Ctrl-C with an `error: ` line.
#[test]
fn sigint_makes_a_hanging_tracker_call_give_up() {
    let cluster = Cluster::new(1);
    // A "tracker" that accepts connections and never answers the handshake.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let key = common::Identity::generate().unwrap().public();
    let info = cluster.path("silent-tracker.txt");
    std::fs::write(&info, format!("{} {key}\n", silent.local_addr().unwrap())).unwrap();
    let mut c = ClientProc::start(&info, &cluster.path("c"), &[]);
    c.send_line("create_user alice pw");
    let (_conn, _) = silent.accept().unwrap();
    sigint(c.pid());
    let lines = c.run("show_downloads");
    assert_eq!(
        lines,
        [
            "error: interrupted before the tracker answered",
            "error: not logged in; login <user_id> <passwd> first (create_user makes an account)"
        ]
    );
    assert!(c.is_running());
}

#[test]
fn list_shares_shows_what_this_peer_shares_per_group() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["alice"], &[]);
    let c = &mut c[0];
    c.ok("create_group h", "created group h");
    assert_eq!(c.run("list_shares"), Vec::<String>::new());
    let a = cluster.path("a file.bin");
    write_random(&a, 600 * 1024, 1);
    let b = cluster.path("b.bin");
    write_random(&b, 100, 2);
    c.run1(&format!("upload_file '{}' h", a.display()));
    c.run1(&format!("upload_file {} g", b.display()));
    c.run1(&format!("upload_file '{}' g", a.display()));
    let (a, b) = (a.canonicalize().unwrap(), b.canonicalize().unwrap());
    assert_eq!(
        c.run("list_shares"),
        [
            format!("[g] 'a file.bin': 2/2 pieces, 614400 bytes, from {}", a.display()),
            format!("[g] b.bin: 1/1 pieces, 100 bytes, from {}", b.display()),
            format!("[h] 'a file.bin': 2/2 pieces, 614400 bytes, from {}", a.display()),
        ]
    );
    c.ok("stop_share g b.bin", "stopped sharing b.bin in group g");
    assert_eq!(c.run("list_shares").len(), 2);
    c.ok("logout", "logged out");
    c.err(
        "list_shares",
        "not logged in; login <user_id> <passwd> first (create_user makes an account)",
    );
}

#[test]
fn help_names_a_command_and_near_misses_get_a_suggestion() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.client("c");
    assert_eq!(
        c.run("help download_file"),
        [
            "download_file <group_id> <file_name> [<destination_path>]",
            "  Starts downloading in the background to a directory or a new file path (~ is your home directory); without one, into the download directory (download_dir in config.toml, else $XDG_DOWNLOAD_DIR, else ~/Downloads). A folder: name/ fetches all of it into <destination>/name/; name/path/f fetches only that file, to <destination>/f; name/path/d/ only that subfolder, into <destination>/d/.",
        ]
    );
    let help = c.run("help");
    assert!(help.contains(&"list_shares".to_string()), "{help:?}");
    assert!(help.contains(&"help [<command>]".to_string()), "{help:?}");
    c.err(
        "lgoin alice pw",
        "unknown command 'lgoin'; did you mean 'login'? (type help for the list)",
    );
    c.err("help lgoin", "unknown command 'lgoin'; did you mean 'login'? (type help for the list)");
    c.err("frobnicate", "unknown command 'frobnicate' (type help for the list)");
    c.err("help a b", "wrong number of arguments for help; usage: help [<command>]");
}

#[test]
fn a_leading_tilde_in_a_path_is_the_home_directory() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let home = cluster.path("home");
    std::fs::create_dir_all(home.join("in")).unwrap();
    std::fs::create_dir_all(home.join("out")).unwrap();
    write_random(&home.join("in/t.bin"), 1000, 3);
    let start = |name: &str| {
        ClientProc::start_with_env(&cluster.info, &cluster.path(name), &[], &[("HOME", &home)])
    };
    let (mut seed, mut leech) = (start("seed"), start("leech"));
    seed.sign_up("seed");
    leech.sign_up("leech");
    seed.ok("create_group g", "created group g");
    leech.ok("join_group g", "requested to join group g");
    seed.ok("accept_request g leech", "accepted leech into group g");
    seed.ok("upload_file ~/in/t.bin g", "uploaded t.bin to group g (1000 bytes, 1 piece)");
    leech.ok(
        "download_file g t.bin ~/out",
        &format!("downloading t.bin from group g to {}", home.join("out/t.bin").display()),
    );
    let done = leech.wait_downloads();
    assert!(done[0].starts_with("[C] [g] t.bin"), "{done:?}");
    crate::support::assert_same_file(&home.join("in/t.bin"), &home.join("out/t.bin"));
}

/// A shell in a pseudo-terminal (tmux, with a socket of its own), typed into as a person
/// would. Every process it started is killed by PID (`pids.txt`), then the tmux server.
struct Terminal {
    socket: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Terminal {
    /// A terminal running bash in `dir`, or `None` when tmux is not installed.
    fn start(dir: &std::path::Path) -> Option<Terminal> {
        let socket = dir.join("tmux.sock");
        let tmux_ok = Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success());
        if !tmux_ok {
            eprintln!("tmux not found: skipping this terminal test");
            return None;
        }
        let status = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["-f", "/dev/null", "new-session", "-d", "-x", "200", "-y", "50", "-c"])
            .arg(dir)
            // The profile's state goes under the test's directory, not the user's home.
            .arg(format!(
                "env PS1='$ ' XDG_STATE_HOME='{}' bash --norc --noprofile -i",
                dir.join("state").display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
        Some(Terminal { socket, dir: dir.to_path_buf() })
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-S").arg(&self.socket).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text`, then Enter.
    fn type_line(&self, text: &str) {
        self.tmux(&["send-keys", "-l", text]);
        self.tmux(&["send-keys", "Enter"]);
    }

    /// Everything on the screen and in its history, wrapped lines joined.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-S", "-"])
    }

    /// Waits until the screen shows `pattern` `count` times, and returns the screen.
    fn wait_for(&self, pattern: &str, count: usize) -> String {
        let deadline = std::time::Instant::now() + crate::support::TIMEOUT;
        loop {
            let screen = self.screen();
            if screen.matches(pattern).count() >= count {
                return screen;
            }
            assert!(std::time::Instant::now() < deadline, "no {pattern:?} on\n{screen}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// At the shell prompt, starts a client in state directory `name` and signs `name` up
    /// and in (password `pw`), up to its prompt.
    fn start_client_and_sign_up(&self, cluster: &Cluster, name: &str) {
        self.wait_prompt("$");
        self.type_line(&format!(
            "{} 127.0.0.1:0 {} --state-dir {name}",
            client_bin().display(),
            cluster.info.display()
        ));
        self.wait_prompt(">");
        self.type_line(&format!("create_user {name} pw"));
        self.wait_for(&format!("created user {name}"), 1);
        self.wait_prompt(">");
        self.type_line(&format!("login {name} pw"));
        self.wait_prompt(&format!("{name}>"));
    }

    /// Waits until the last non-blank line of the screen is `prompt` (the program reads).
    fn wait_prompt(&self, prompt: &str) {
        let deadline = std::time::Instant::now() + crate::support::TIMEOUT;
        loop {
            let screen = self.screen();
            if screen.lines().rfind(|l| !l.trim().is_empty()).map(str::trim_end) == Some(prompt) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "no prompt {prompt:?} on\n{screen}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let pids = std::fs::read_to_string(self.dir.join("pids.txt")).unwrap_or_default();
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            if let Some(pid) = Pid::from_raw(pid) {
                let _ = kill_process(pid, Signal::KILL);
            }
        }
        self.tmux(&["kill-server"]);
    }
}

/// Issue 10: the README's "Running it by hand", pasted into one terminal. The trackers run
/// as background jobs and must not be stopped for reading the terminal; each stdout line
/// shows once; the client logs to a file, Ctrl-C at its prompt only hints, Tab completes,
/// and its history holds no password.
#[test]
fn the_readme_by_hand_path_works_in_one_terminal() {
    let cluster = Cluster::new(3);
    let dir = cluster.dir.path();
    let Some(term) = Terminal::start(dir) else { return };
    term.wait_prompt("$");
    let (tracker, client) = (crate::support::tracker_bin(), client_bin());
    // The README's lines, with the test's binaries and cheap password hashing.
    for id in 1..=3 {
        term.type_line(&format!(
            "{} tracker_info.txt {id} --kdf-iterations 2000 &",
            tracker.display()
        ));
    }
    term.type_line("jobs -p > pids.txt");
    // Every tracker says so before the client starts: a background job's late line would
    // land after the client's prompt, as it would for a person.
    term.wait_for(" serving as ", 3);
    term.type_line(&format!("{} 127.0.0.1:0 tracker_info.txt", client.display()));
    term.wait_prompt(">");
    let screen = term.screen();
    let port = screen
        .lines()
        .find(|l| l.starts_with("listening on 127.0.0.1:"))
        .and_then(|l| l.rsplit(':').next())
        .unwrap_or_else(|| panic!("no listening line on\n{screen}"))
        .trim()
        .to_string();
    assert!(port.parse::<u16>().is_ok(), "{screen}");
    let state_dir = dir.join("state/p2p-groups/default");
    assert!(screen.contains(&format!("log: {}/client.log", state_dir.display())), "{screen}");

    term.type_line("create_user zed pw");
    term.wait_for("created user zed", 1);
    term.wait_prompt(">");
    term.type_line("login zed pw");
    term.wait_for("logged in as zed", 1);
    term.wait_prompt("zed>");
    term.tmux(&["send-keys", "-l", "half typed"]);
    term.tmux(&["send-keys", "C-c"]);
    term.wait_for("type exit or press Ctrl-D to quit", 1);
    term.wait_prompt("zed>");
    // Tab completes command names and paths.
    term.tmux(&["send-keys", "-l", "list_my_g"]);
    term.tmux(&["send-keys", "Tab"]);
    term.wait_prompt("zed> list_my_groups");
    term.tmux(&["send-keys", "Enter"]);
    term.wait_prompt("zed>");
    term.tmux(&["send-keys", "-l", "upload_file tracker_in"]);
    term.tmux(&["send-keys", "Tab"]);
    term.wait_prompt("zed> upload_file tracker_info.txt");
    term.tmux(&["send-keys", "C-c"]);
    term.wait_for("type exit or press Ctrl-D to quit", 2);
    term.wait_prompt("zed>");
    term.type_line("exit");
    term.wait_prompt("$");

    // The trackers kept running in the background, and said each line once.
    term.type_line("jobs");
    let screen = term.wait_for("Running", 3);
    assert!(!screen.contains("Stopped"), "{screen}");
    for id in 1..=3 {
        assert_eq!(screen.matches(&format!("tracker {id} listening on")).count(), 1, "{screen}");
    }
    // Brought to the foreground, a tracker reads its commands again.
    term.type_line("fg %1");
    term.type_line("status");
    term.wait_for(" view=", 1);
    term.type_line("quit");
    term.wait_prompt("$");

    let history = std::fs::read_to_string(state_dir.join("history.txt")).unwrap();
    assert!(history.contains("list_my_groups"), "{history}");
    assert!(!history.contains("pw") && !history.contains("half"), "{history}");
    assert!(state_dir.join("client.log").is_file());
}

/// Issue 10: a download's end printed nothing until one polled `show_downloads`, and
/// neither `download_file` nor `wait_downloads` showed progress. On a terminal
/// `download_file` follows its download with a live bar naming the peers (`user@addr`)
/// until it ends, or until Ctrl-C leaves it to the background; then its line appears at
/// once, above the line being typed (which stays as it was); `wait_downloads` draws the
/// bars too. The bars are cleared at the end. Sizes read as `8.4 MB` there.
#[test]
fn on_a_terminal_downloads_announce_their_end_and_show_live_progress() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let Some(term) = Terminal::start(cluster.dir.path()) else { return };
    // 8 MiB at 1 MB/s: long enough to press Ctrl-C and type a few keys before it ends.
    let mut seed = cluster.client_with("seed", &["--max-upload-rate", "1000000"]);
    seed.sign_up("seed");
    seed.ok("create_group g", "created group g");
    let upload = |seed: &mut ClientProc, name: &str, mib: usize, content: u64| {
        let file = cluster.path(name);
        write_random(&file, mib * 1024 * 1024, content);
        let line = seed.run1(&format!("upload_file {} g", file.display()));
        assert!(line.starts_with(&format!("uploaded {name}")), "{line}");
        file
    };
    let file = upload(&mut seed, "big.bin", 8, 5);
    std::fs::create_dir(cluster.path("out")).unwrap();

    term.start_client_and_sign_up(&cluster, "leech");
    term.type_line("join_group g");
    term.wait_for("requested to join group g", 1);
    seed.ok("accept_request g leech", "accepted leech into group g");
    term.wait_prompt("leech>");
    term.type_line("download_file g big.bin out");
    term.wait_for("downloading big.bin from group g", 1);
    // download_file follows it: a bar with the peer by name, then Ctrl-C leaves it running.
    let screen = term.wait_for(" MB/8.39 MB ", 1);
    assert!(screen.contains("[g] big.bin (1 peer: seed@127.0.0.1:"), "{screen}");
    term.tmux(&["send-keys", "C-c"]);
    term.wait_for("the download goes on in the background", 1);
    term.wait_prompt("leech>");
    term.tmux(&["send-keys", "-l", "list_gr"]);
    term.wait_prompt("leech> list_gr");
    assert!(!term.screen().contains("[C] [g] big.bin"), "finished before the test typed");
    term.wait_for("[C] [g] big.bin -> ", 1);
    term.wait_prompt("leech> list_gr");
    let screen = term.screen();
    let lines: Vec<&str> = screen.lines().collect();
    let notice = lines.iter().position(|l| l.starts_with("[C] [g] big.bin -> ")).unwrap();
    let prompt = lines.iter().rposition(|l| l.starts_with("leech> list_gr")).unwrap();
    assert!(notice < prompt, "{screen}");
    // At a terminal, sizes read as people write them, and peers by their user.
    assert!(lines[notice].contains(" (8.4 MB in "), "{screen}");
    assert!(lines[notice].contains("pieces from seed@127.0.0.1:"), "{screen}");
    term.tmux(&["send-keys", "Enter"]);
    term.wait_for("did you mean 'list_groups'?", 1);
    term.wait_prompt("leech>");

    // Followed to its end: the bar moves in place (one line, redrawn), then gives way to
    // the [C] line.
    let file2 = upload(&mut seed, "big2.bin", 2, 6);
    term.type_line("list_files g");
    term.wait_for("big2.bin 2.1 MB, 1 sharer, digest ", 1);
    term.wait_prompt("leech>");
    term.type_line("download_file g big2.bin out");
    let screen = term.wait_for(" MB/2.10 MB ", 1);
    assert_eq!(screen.matches("[g] big2.bin (1 peer: seed@").count(), 1, "{screen}");
    assert!(screen.contains(" ETA "), "{screen}");
    term.wait_for("[C] [g] big2.bin -> out/big2.bin (2.1 MB in ", 1);
    term.wait_prompt("leech>");
    assert!(!term.screen().contains(" ETA "), "the bar was not cleared:\n{}", term.screen());

    // Left to the background, then waited for: wait_downloads draws the bar.
    let file3 = upload(&mut seed, "big3.bin", 2, 7);
    term.type_line("download_file g big3.bin out");
    term.wait_for(" MB/2.10 MB ", 1);
    term.tmux(&["send-keys", "C-c"]);
    term.wait_for("the download goes on in the background", 2);
    term.wait_prompt("leech>");
    term.type_line("wait_downloads");
    term.wait_for("[g] big3.bin (1 peer: seed@", 1);
    term.wait_for("[C] [g] big3.bin -> out/big3.bin (2.1 MB in ", 1);
    term.wait_prompt("leech>");
    assert!(!term.screen().contains(" ETA "), "the bar was not cleared:\n{}", term.screen());
    term.type_line("exit");
    term.wait_prompt("$");
    crate::support::assert_same_file(&file, &cluster.path("out/big.bin"));
    crate::support::assert_same_file(&file2, &cluster.path("out/big2.bin"));
    crate::support::assert_same_file(&file3, &cluster.path("out/big3.bin"));
}

/// Issue 10: nothing was said when a request was decided or a group passed to the user,
/// and Tab completed neither group ids nor file names. Notices arrive above the prompt,
/// the half-typed line staying as it was; Tab completes the groups the tracker lists and
/// the files `list_files` would list. An owner is told of requests to join.
#[test]
fn on_a_terminal_group_news_arrive_above_the_prompt_and_tab_completes_ids() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let Some(term) = Terminal::start(cluster.dir.path()) else { return };
    let mut owner = cluster.client("owner");
    owner.sign_up("owner");
    owner.ok("create_group team", "created group team");
    owner.ok("create_group tools", "created group tools");
    let file = cluster.path("report.txt");
    write_random(&file, 1000, 9);
    assert!(owner.run1(&format!("upload_file {} team", file.display())).starts_with("uploaded "));

    term.start_client_and_sign_up(&cluster, "zed");
    // Group ids: fetched from the tracker on the first Tab.
    term.tmux(&["send-keys", "-l", "join_group te"]);
    term.tmux(&["send-keys", "Tab"]);
    term.wait_prompt("zed> join_group team");
    term.tmux(&["send-keys", "Enter"]);
    term.wait_for("requested to join group team", 1);
    term.wait_prompt("zed>");
    term.type_line("join_group tools");
    term.wait_for("requested to join group tools", 1);
    term.wait_prompt("zed>");

    // Accepted while a line is half typed: the notice comes above it.
    term.tmux(&["send-keys", "-l", "list_files te"]);
    term.wait_prompt("zed> list_files te");
    owner.ok("accept_request team zed", "accepted zed into group team");
    owner.ok("reject_request tools zed", "rejected zed's request to join group tools");
    term.wait_for("notice: your request to join group team was accepted", 1);
    term.wait_for("notice: your request to join group tools was rejected", 1);
    term.wait_prompt("zed> list_files te");
    let screen = term.screen();
    let lines: Vec<&str> = screen.lines().collect();
    let notice = lines.iter().position(|l| l.starts_with("notice: your request")).unwrap();
    let prompt = lines.iter().rposition(|l| l.starts_with("zed> list_files te")).unwrap();
    assert!(notice < prompt, "{screen}");
    term.tmux(&["send-keys", "Tab"]);
    term.wait_prompt("zed> list_files team");
    term.tmux(&["send-keys", "Enter"]);
    term.wait_for("report.txt 1.0 kB, 1 sharer, digest ", 1);
    term.wait_prompt("zed>");
    // File names: those list_files just listed.
    term.tmux(&["send-keys", "-l", "download_file team rep"]);
    term.tmux(&["send-keys", "Tab"]);
    term.wait_prompt("zed> download_file team report.txt");
    term.tmux(&["send-keys", "C-c"]);
    term.wait_prompt("zed>");

    // The owner leaves: the group passes to zed, its longest-standing member.
    owner.ok("leave_group team", "left group team");
    term.wait_for("notice: you now own group team (its owner left)", 1);
    term.wait_prompt("zed>");
    // Issue 20: the new owner is told of a request to join, with the command to accept it.
    owner.ok("join_group team", "requested to join group team");
    term.wait_for("notice: owner asks to join group team; accept_request team owner", 1);
    term.wait_prompt("zed>");
    term.type_line("accept_request team owner");
    term.wait_for("accepted owner into group team", 1);
    term.wait_prompt("zed>");
    term.type_line("exit");
    term.wait_prompt("$");
}

/// Issue 10: scripts parsed the human `[C]` lines; `--json` gives them one object a line.
#[test]
fn show_and_wait_downloads_print_json_for_scripts() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &[]);
    let file = cluster.path("j.bin");
    write_random(&file, 600 * 1024, 9);
    c[0].run1(&format!("upload_file {} g", file.display()));
    let dest = cluster.path("j-copy.bin");
    c[1].run1(&format!("download_file g j.bin {}", dest.display()));
    let done = c[1].run1("wait_downloads --json");
    let record: serde_json::Value = serde_json::from_str(&done).unwrap();
    assert_eq!(record["state"], "complete", "{done}");
    assert_eq!(record["group"], "g");
    assert_eq!(record["file"], "j.bin");
    assert_eq!(record["destination"], dest.display().to_string());
    assert_eq!(record["size"], 600 * 1024);
    assert_eq!(record["pieces"], 2);
    assert_eq!(record["pieces_have"], 2);
    assert_eq!(record["from_peers"][c[0].listen.to_string()], 2, "{done}");
    assert!(record["reason"].is_null());
    let shown: serde_json::Value =
        serde_json::from_str(&c[1].run1("show_downloads --json")).unwrap();
    assert_eq!(shown["state"], "complete");
    // Only the downloads still running; none here.
    assert_eq!(c[1].run("show_downloads --active"), Vec::<String>::new());
    // Without the option, the lines are as they were.
    assert!(c[1].run1("show_downloads").starts_with("[C] [g] j.bin -> "));
    c[1].err(
        "show_downloads --yaml",
        "unknown option '--yaml' for show_downloads; usage: show_downloads [--json] [--active]",
    );
}

/// Issue 20: without a majority of trackers, a command says so at once, gives up within a
/// few seconds, and what the user typed meanwhile runs next.
#[test]
fn on_a_terminal_a_command_without_a_majority_says_it_waits_and_typed_lines_are_kept() {
    let cluster = Cluster::new(3);
    let mut trackers = cluster.start_all();
    let Some(term) = Terminal::start(cluster.dir.path()) else { return };
    term.start_client_and_sign_up(&cluster, "zed");
    term.type_line("create_group one");
    term.wait_for("created group one", 1);
    term.wait_prompt("zed>");

    // Trackers 2 and 3 go: tracker 1, which the client talks to, is alone.
    trackers.remove(2).kill();
    trackers.remove(1).kill();
    term.type_line("create_group two");
    term.wait_for(
        "waiting for a majority of trackers: tracker 1 reaches 1 of 3 and 2 are needed",
        1,
    );
    // Typed while the command waits: it runs once the command gave up.
    term.type_line("help login");
    term.wait_for("error: no majority: tracker 1 reaches 1 of 3 trackers and 2 are needed", 1);
    term.wait_for("login <user_id> <passwd>", 1);
    term.wait_prompt("zed>");
    let screen = term.screen();
    let error = screen.find("error: no majority").unwrap();
    let help = screen.rfind("login <user_id> <passwd>").unwrap();
    assert!(error < help, "{screen}");
    term.type_line("exit");
    term.wait_prompt("$");
}

/// Issue 20: a REPL attached to a running client (`--attach`) on a terminal is told what
/// the client's own terminal would be: a request to join a group its user owns, above the
/// prompt, and a download that ended; a script attached through a pipe gets only answers.
#[test]
fn an_attached_terminal_is_told_of_join_requests_and_finished_downloads() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["alice", "carol"], &[]);
    let Some(term) = Terminal::start(cluster.dir.path()) else { return };
    term.wait_prompt("$");
    let alice = cluster.path("alice");
    term.type_line(&format!("{} --attach --state-dir {}", client_bin().display(), alice.display()));
    term.wait_prompt("attached>");
    // Half a command typed: the notice prints above the prompt, which comes back.
    term.tmux(&["send-keys", "-l", "list_fi"]);
    let mut bob = cluster.client("bob");
    bob.sign_up("bob");
    bob.ok("join_group g", "requested to join group g");
    term.wait_for("notice: bob asks to join group g; accept_request g bob", 1);
    term.wait_prompt("attached>");
    term.tmux(&["send-keys", "C-u"]);
    term.type_line("accept_request g bob");
    term.wait_for("accepted bob into group g", 1);
    term.wait_prompt("attached>");
    // A download started through the attached REPL ends: its line arrives unasked.
    let file = cluster.path("n.bin");
    write_random(&file, 300 * 1024, 4);
    c[1].run1(&format!("upload_file {} g", file.display()));
    let dest = cluster.path("n-copy.bin");
    term.type_line(&format!("download_file g n.bin {}", dest.display()));
    term.wait_for("[C] [g] n.bin -> ", 1);
    term.wait_prompt("attached>");
    // A script attached meanwhile sees answers only, as on a pipe.
    let out = Command::new(client_bin())
        .args(["--attach", "--state-dir"])
        .arg(&alice)
        .args(["-c", "list_my_groups"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "g\n", "{out:?}");
    term.type_line("exit");
    term.wait_prompt("$");
    assert_eq!(c[0].run("list_my_groups"), ["g"]);
}
