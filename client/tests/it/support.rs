//! Test harness: starts the real `tracker` and `client` binaries on 127.0.0.1, waits on their
//! readiness lines, drives clients through stdin, and kills every process in `Drop`.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use wait_timeout::ChildExt;

/// The failure bound of every wait; tests never wait on a fixed delay.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The unknown command sent after each command to mark the end of its output.
const SYNC: &str = "__sync__";
const SYNC_REPLY: &str = "error: unknown command '__sync__' (type help for the list)";

/// PBKDF2 iterations for test trackers: debug builds hash slowly, and the KDF itself has
/// its own unit tests.
const TEST_KDF_ITERATIONS: &str = "2000";

pub fn client_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_client"))
}

/// The example binary `name` of the client crate (`cargo build --examples`).
pub fn example_bin(name: &str) -> PathBuf {
    let path = client_bin().with_file_name("examples").join(name);
    assert!(
        path.exists(),
        "{} not found: build it first with `cargo build --workspace --bins --examples`",
        path.display()
    );
    path
}

pub fn tracker_bin() -> PathBuf {
    let path = client_bin().with_file_name("tracker");
    assert!(
        path.exists(),
        "{} not found: build it first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// A free port on `ip` (127.0.0.1 or ::1) at the time of the call. Trackers must know each other's
/// addresses before they start, so `tracker_info.txt` needs ports chosen in advance;
/// `Cluster::start` retries if another process takes one in between.
///
/// Chosen below the kernel's ephemeral range (`ip_local_port_range`), so that no outgoing
/// connection of any process can take it while a tracker that used it restarts: tests that
/// restart a tracker need its port again. Only another test's choice could clash, and
/// each choice starts at a random place in the range.
fn free_port(ip: IpAddr) -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.min(65_536));
    if high > low + 1000 {
        let start = fastrand::u32(..);
        let span = high - low;
        for _ in 0..span.min(2000) {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let port = low + start.wrapping_add(n.wrapping_mul(7919)) % span;
            if let Ok(listener) = TcpListener::bind((ip, port as u16)) {
                return listener.local_addr().unwrap().port();
            }
        }
    }
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// Reads a child's stdout line by line into a channel.
pub fn line_channel(stdout: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Spawns `command` with piped stdin and stdout (read line by line into a channel), debug
/// logs to `stderr` (unless the command sets `RUST_LOG` itself).
fn spawn_piped(
    command: &mut Command,
    stderr: std::fs::File,
) -> (Child, Option<ChildStdin>, Receiver<String>) {
    if !command.get_envs().any(|(key, _)| key == "RUST_LOG") {
        command.env("RUST_LOG", "debug");
    }
    let mut child =
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
    let lines = line_channel(child.stdout.take().unwrap());
    let stdin = child.stdin.take();
    (child, stdin, lines)
}

/// Waits for a line containing `listening on ` and returns the address after it, or `None`
/// if the process ended first.
fn wait_listening(lines: &Receiver<String>) -> Option<SocketAddr> {
    loop {
        let line = lines.recv_timeout(TIMEOUT).ok()?;
        if let Some(at) = line.find("listening on ") {
            return Some(line[at + "listening on ".len()..].trim().parse().unwrap());
        }
    }
}

/// A command that runs `bin`, inside network namespace `netns` if one is given (`ip netns
/// exec` execs the program: its PID is the program's).
pub fn launcher(netns: Option<&str>, bin: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns]).arg(bin);
            command
        }
        None => Command::new(bin),
    }
}

/// A temporary directory with a `tracker_info.txt` for `n` trackers.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub info: PathBuf,
    pub addrs: Vec<SocketAddr>,
    /// The network namespace every process of the cluster runs in (none: the host's).
    pub netns: Option<String>,
    /// Options every tracker of the cluster is started with.
    pub tracker_args: Vec<String>,
    /// The loopback address trackers and clients listen on: 127.0.0.1, or ::1 (issue 19:
    /// IPv6).
    pub loopback: IpAddr,
    /// `RUST_LOG` of the trackers, when not `debug`.
    pub tracker_log_level: Option<String>,
}

/// Tracker options for tests whose workload is thousands of `create_group`s by a few
/// users: no per-user group or rate limit in the way.
pub const LOAD_LIMITS: [&str; 4] =
    ["--max-groups-per-user", "1000000", "--max-writes-per-second", "1000000"];

impl Cluster {
    /// A cluster of `n` trackers; none is started yet.
    pub fn new(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let info = dir.path().join("tracker_info.txt");
        let mut cluster = Cluster {
            dir,
            info,
            addrs: Vec::new(),
            netns: None,
            tracker_args: Vec::new(),
            loopback: IpAddr::from([127, 0, 0, 1]),
            tracker_log_level: None,
        };
        cluster.pick_ports(n);
        cluster
    }

    /// A cluster of `n` trackers on ::1, whose clients listen on ::1 too; `None` where this
    /// host has no IPv6 loopback.
    pub fn on_ipv6_loopback(n: usize) -> Option<Cluster> {
        let loopback = IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
        TcpListener::bind((loopback, 0)).ok()?;
        let mut cluster = Cluster::new(0);
        cluster.loopback = loopback;
        cluster.pick_ports(n);
        Some(cluster)
    }

    /// A cluster of `n` trackers inside network namespace `netns` (which the caller made),
    /// tracker `i` on `127.0.0.(10 + i):7000`, so that links between trackers are pairs of
    /// addresses a test can cut while clients (on 127.0.0.1) still reach every tracker.
    pub fn in_netns(n: usize, netns: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let info = dir.path().join("tracker_info.txt");
        let addrs: Vec<SocketAddr> =
            (1..=n as u8).map(|i| SocketAddr::from(([127, 0, 0, 10 + i], 7000))).collect();
        let text: String = addrs.iter().map(|a| format!("{a}\n")).collect();
        std::fs::write(&info, format!("# test trackers\n{text}")).unwrap();
        Cluster {
            dir,
            info,
            addrs,
            netns: Some(netns.to_string()),
            tracker_args: Vec::new(),
            loopback: IpAddr::from([127, 0, 0, 1]),
            tracker_log_level: None,
        }
    }

    /// The same cluster, its trackers started with `LOAD_LIMITS`.
    pub fn with_load_limits(mut self) -> Cluster {
        self.tracker_args = LOAD_LIMITS.iter().map(|a| a.to_string()).collect();
        self
    }

    fn pick_ports(&mut self, n: usize) {
        let ip = self.loopback;
        self.addrs = (0..n).map(|_| SocketAddr::new(ip, free_port(ip))).collect();
        let text: String = self.addrs.iter().map(|a| format!("{a}\n")).collect();
        std::fs::write(&self.info, format!("# test trackers\n{text}")).unwrap();
    }

    /// The key tracker `id` wrote into `tracker_info.txt` (it must have started once).
    pub fn tracker_key(&self, id: u32) -> common::PublicKey {
        let info = common::tracker_info::TrackerInfo::load(&self.info).unwrap();
        info.key(id).unwrap_or_else(|| panic!("tracker {id} has not written its key yet"))
    }

    /// Tracker `id`'s own key pair, read from its data directory (to play a tracker whose
    /// key was stolen).
    pub fn tracker_identity(&self, id: u32) -> common::Identity {
        let path = self.dir.path().join(format!("tracker-{id}")).join("tracker.key");
        common::Identity::load_or_create(&path).unwrap().0
    }

    /// Starts tracker `id` (1-based) with its own data directory.
    pub fn start_tracker(&self, id: u32) -> TrackerProc {
        self.try_start_tracker(id, &[]).expect("tracker did not start")
    }

    /// Starts tracker `id`, or `None` if it exited before listening (a port clash).
    pub fn try_start_tracker(&self, id: u32, extra: &[&str]) -> Option<TrackerProc> {
        let data_dir = self.dir.path().join(format!("tracker-{id}"));
        // Appended to: a restarted tracker's log follows its previous run's.
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("tracker-{id}.log")))
            .unwrap();
        let mut command = launcher(self.netns.as_deref(), &tracker_bin());
        command
            .arg(&self.info)
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--kdf-iterations", TEST_KDF_ITERATIONS])
            .args(&self.tracker_args)
            .args(extra);
        if let Some(level) = &self.tracker_log_level {
            command.env("RUST_LOG", level);
        }
        let (child, stdin, lines) = spawn_piped(&mut command, stderr);
        let mut proc = TrackerProc { child, stdin, addr: self.addrs[id as usize - 1], id, lines };
        // Where it listens: its line of tracker_info.txt, or `--listen` (behind a proxy).
        let listen = extra
            .iter()
            .position(|a| *a == "--listen")
            .and_then(|i| extra.get(i + 1))
            .map_or(proc.addr, |a| a.parse().unwrap());
        match wait_listening(&proc.lines) {
            Some(addr) => {
                assert_eq!(addr, listen);
                Some(proc)
            }
            None => {
                proc.kill();
                None
            }
        }
    }

    /// Starts a one-tracker cluster, re-picking the port if another process took it.
    pub fn with_one_tracker() -> (Cluster, TrackerProc) {
        Cluster::with_one_tracker_args(&[])
    }

    /// Like `with_one_tracker`, with extra tracker options.
    pub fn with_one_tracker_args(extra: &[&str]) -> (Cluster, TrackerProc) {
        let mut cluster = Cluster::new(1);
        for _ in 0..5 {
            if let Some(tracker) = cluster.try_start_tracker(1, extra) {
                return (cluster, tracker);
            }
            cluster.pick_ports(1);
        }
        panic!("could not start a tracker");
    }

    /// Starts a client with its own state directory named `name`.
    pub fn client(&self, name: &str) -> ClientProc {
        self.client_with(name, &[])
    }

    /// Starts a client whose `tracker_info.txt` lists the trackers in `order` (ids), so that
    /// it talks to `order[0]` first.
    pub fn client_via(&self, name: &str, order: &[u32]) -> ClientProc {
        let info = self.dir.path().join(format!("{name}-trackers.txt"));
        let listed = common::tracker_info::TrackerInfo::load(&self.info).unwrap();
        let line = |id: u32| match listed.key(id) {
            Some(key) => format!("{} {key}\n", self.addrs[id as usize - 1]),
            None => format!("{}\n", self.addrs[id as usize - 1]),
        };
        let text: String = order.iter().map(|id| line(*id)).collect();
        std::fs::write(&info, text).unwrap();
        ClientProc::start_in(self.netns.as_deref(), &info, &self.dir.path().join(name), &[], &[])
    }

    /// Starts every tracker and waits until each serves.
    pub fn start_all(&self) -> Vec<TrackerProc> {
        let trackers: Vec<TrackerProc> =
            (1..=self.addrs.len() as u32).map(|id| self.start_tracker(id)).collect();
        for t in &trackers {
            t.wait_serving();
        }
        trackers
    }

    /// Starts a client with extra command-line options.
    pub fn client_with(&self, name: &str, extra: &[&str]) -> ClientProc {
        ClientProc::start_at(
            self.netns.as_deref(),
            &SocketAddr::new(self.loopback, 0).to_string(),
            &self.info,
            &self.dir.path().join(name),
            extra,
            &[],
        )
    }

    /// Restarts `client`, signed up as `name`, with `extra` arguments (say, only a seeder
    /// slow: `--max-upload-rate`); it resumes its session and shares.
    pub fn restart_with(&self, client: &mut ClientProc, name: &str, extra: &[&str]) {
        client.send_line("exit");
        client.close_stdin();
        *client = self.client_with(name, extra);
        client.resumed(name);
    }

    /// Clients named `names`, all logged in and members of group `g` (owned by the first),
    /// each started with the options `extra`.
    pub fn members(&self, names: &[&str], extra: &[&str]) -> Vec<ClientProc> {
        let mut clients: Vec<ClientProc> =
            names.iter().map(|n| self.client_with(n, extra)).collect();
        for (c, name) in clients.iter_mut().zip(names) {
            c.sign_up(name);
        }
        clients[0].ok("create_group g", "created group g");
        for (i, name) in names.iter().enumerate().skip(1) {
            clients[i].ok("join_group g", "requested to join group g");
            clients[0]
                .ok(&format!("accept_request g {name}"), &format!("accepted {name} into group g"));
        }
        clients
    }

    /// A path inside the cluster's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The text of tracker `id`'s log so far.
    pub fn tracker_log(&self, id: u32) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("tracker-{id}.log")))
            .unwrap_or_default()
    }
}

/// `client/examples/delay_proxy` forwarding `listen` to `to`, each direction delayed by
/// `delay_ms`, with `loss_pct` percent of chunks held back as a retransmission would be;
/// killed on drop.
pub struct DelayProxy {
    child: Child,
}

impl DelayProxy {
    pub fn start(listen: SocketAddr, to: SocketAddr, delay_ms: u64, loss_pct: f64) -> DelayProxy {
        let mut command = Command::new(example_bin("delay_proxy"));
        command.args(["--listen", &listen.to_string(), "--to", &to.to_string()]).args([
            "--delay-ms",
            &delay_ms.to_string(),
            "--loss-pct",
            &loss_pct.to_string(),
        ]);
        let (child, _stdin, lines) =
            spawn_piped(&mut command, std::fs::File::create("/dev/null").unwrap());
        let mut proxy = DelayProxy { child };
        // "delay_proxy listening on LISTEN to TO"
        let started = std::iter::from_fn(|| lines.recv_timeout(TIMEOUT).ok())
            .any(|line| line.contains("listening on"));
        if !started {
            let _ = proxy.child.kill();
            panic!("delay_proxy did not start on {listen}");
        }
        proxy
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running tracker; killed (SIGKILL) on drop.
pub struct TrackerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    pub addr: SocketAddr,
    pub id: u32,
    lines: Receiver<String>,
}

impl TrackerProc {
    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `quit` on stdin and waits for a clean exit.
    pub fn quit(mut self) -> std::process::ExitStatus {
        let mut stdin = self.stdin.take().unwrap();
        writeln!(stdin, "quit").unwrap();
        wait_exit(&mut self.child)
    }

    /// Waits for a stdout line containing `pattern` and returns it.
    pub fn wait_line(&self, pattern: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(TIMEOUT)
                .unwrap_or_else(|e| panic!("tracker {}: no {pattern:?} ({e})", self.id));
            if line.contains(pattern) {
                return line;
            }
        }
    }

    /// Waits until the tracker serves (as primary or backup).
    pub fn wait_serving(&self) -> String {
        self.wait_line("serving as")
    }

    /// Sends `command` on the tracker's stdin and returns the first stdout line containing
    /// `answer`.
    pub fn command(&mut self, command: &str, answer: &str) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        self.wait_line(answer)
    }

    /// Waits for the process to exit by itself and returns its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        wait_exit(&mut self.child)
    }

    /// The tracker's `status` line: role, view, last entry and state digest.
    pub fn status(&mut self) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "status").unwrap();
        stdin.flush().unwrap();
        self.wait_line(&format!("tracker {}: ", self.id))
    }

    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// Waits until every tracker in `trackers` reports the same state digest (followers apply
/// a moment after the leader acknowledges), and returns it; panics with their status lines
/// after `TIMEOUT`.
#[track_caller]
pub fn wait_converged(trackers: &mut [&mut TrackerProc]) -> String {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let statuses: Vec<String> = trackers.iter_mut().map(|t| t.status()).collect();
        let digests: Vec<&str> =
            statuses.iter().map(|s| s.split("digest=").nth(1).unwrap_or("")).collect();
        if digests.windows(2).all(|w| w[0] == w[1]) {
            return digests[0].to_string();
        }
        assert!(std::time::Instant::now() < deadline, "digests differ: {statuses:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until one of `trackers` says it is the primary (the Raft leader) and returns its
/// position in the slice.
#[track_caller]
pub fn wait_leader(trackers: &mut [&mut TrackerProc]) -> usize {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        for (i, t) in trackers.iter_mut().enumerate() {
            if t.status().contains(": primary ") {
                return i;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no leader among the trackers");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for TrackerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for `child` to exit, killing it if it takes longer than `TIMEOUT`.
pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    match child.wait_timeout(TIMEOUT).unwrap() {
        Some(status) => status,
        None => {
            let _ = child.kill();
            panic!("process did not exit within {TIMEOUT:?}");
        }
    }
}

/// A running client driven through its stdin; killed on drop.
pub struct ClientProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Where this client serves pieces.
    pub listen: SocketAddr,
    /// Its stderr.
    log: PathBuf,
}

impl ClientProc {
    pub fn start(info: &Path, state_dir: &Path, extra: &[&str]) -> ClientProc {
        ClientProc::start_in(None, info, state_dir, extra, &[])
    }

    /// Starts a client with extra environment variables (its log in `<state_dir>.log`).
    pub fn start_with_env(
        info: &Path,
        state_dir: &Path,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> ClientProc {
        ClientProc::start_in(None, info, state_dir, extra, env)
    }

    /// Like `start_with_env`, inside network namespace `netns` if one is given.
    pub fn start_in(
        netns: Option<&str>,
        info: &Path,
        state_dir: &Path,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> ClientProc {
        ClientProc::start_at(netns, "127.0.0.1:0", info, state_dir, extra, env)
    }

    /// Like `start_in`, serving pieces on `listen` (an `IP:PORT` argument).
    pub fn start_at(
        netns: Option<&str>,
        listen: &str,
        info: &Path,
        state_dir: &Path,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> ClientProc {
        let log = state_dir.with_extension("log");
        let stderr = std::fs::File::create(&log).unwrap();
        let mut command = launcher(netns, &client_bin());
        command.arg(listen).arg(info).arg("--state-dir").arg(state_dir).args(extra);
        command.envs(env.iter().copied());
        let (child, stdin, lines) = spawn_piped(&mut command, stderr);
        let listen = wait_listening(&lines).expect("client did not start");
        ClientProc { child, stdin, lines, listen, log }
    }

    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit (after a signal), killing it after `TIMEOUT`.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        wait_exit(&mut self.child)
    }

    /// Waits until the client's log (stderr, at debug level) has a line containing
    /// `pattern`: a readiness signal for what prints nothing on stdout.
    pub fn wait_log(&self, pattern: &str) {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(pattern) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {pattern:?} in {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The text of the client's log (stderr) so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asserts that the client, just started on a state directory whose last run kept its
    /// session, logged in again by itself: its first line.
    #[track_caller]
    pub fn resumed(&mut self, user: &str) {
        loop {
            let line = self.lines.recv_timeout(TIMEOUT).unwrap_or_else(|e| panic!("no line ({e})"));
            // The dashboard's line, with `--web`, comes first.
            if !line.starts_with("dashboard at ") {
                assert_eq!(line, format!("logged in as {user} (resumed)"));
                return;
            }
        }
    }

    /// Sends one raw line without waiting for anything.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Runs `command` and returns every line it printed.
    pub fn run(&mut self, command: &str) -> Vec<String> {
        self.send_line(command);
        self.send_line(SYNC);
        let mut out = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(TIMEOUT)
                .unwrap_or_else(|e| panic!("no output for {command:?} ({e}); got so far {out:?}"));
            if line == SYNC_REPLY {
                return out;
            }
            out.push(line);
        }
    }

    /// Sends every command of `commands` at once (pipelined), then returns every line they
    /// printed.
    pub fn run_many(&mut self, commands: &[String]) -> Vec<String> {
        for command in commands {
            self.send_line(command);
        }
        self.run("")
    }

    /// Runs `command` and returns its single output line.
    #[track_caller]
    pub fn run1(&mut self, command: &str) -> String {
        let out = self.run(command);
        assert_eq!(out.len(), 1, "{command:?} printed {out:?}");
        out.into_iter().next().unwrap()
    }

    /// Runs `command` until its single line contains `wanted` (for what a client tells
    /// its tracker after the fact, such as a finished download becoming a share), and
    /// returns that line; fails with the last line after `TIMEOUT`.
    #[track_caller]
    pub fn run1_until(&mut self, command: &str, wanted: &str) -> String {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let line = self.run1(command);
            if line.contains(wanted) {
                return line;
            }
            assert!(std::time::Instant::now() < deadline, "{command:?} still prints {line:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `command`, asserting it succeeds with exactly `expected` as its only line.
    #[track_caller]
    pub fn ok(&mut self, command: &str, expected: &str) {
        assert_eq!(self.run1(command), expected, "{command:?}");
    }

    /// Runs `command`, asserting it fails with exactly `error: <reason>`.
    #[track_caller]
    pub fn err(&mut self, command: &str, reason: &str) {
        assert_eq!(self.run1(command), format!("error: {reason}"), "{command:?}");
    }

    /// Creates `user` (password `pw-<user>`) and logs in.
    pub fn sign_up(&mut self, user: &str) {
        self.ok(&format!("create_user {user} pw-{user}"), &format!("created user {user}"));
        self.ok(&format!("login {user} pw-{user}"), &format!("logged in as {user}"));
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs `wait_downloads` and returns its lines.
    pub fn wait_downloads(&mut self) -> Vec<String> {
        self.run("wait_downloads")
    }

    /// Runs `wait_downloads --json` and returns the downloads it describes.
    pub fn wait_downloads_json(&mut self) -> Vec<Download> {
        self.run("wait_downloads --json").iter().map(|l| Download::parse(l)).collect()
    }

    /// Runs `show_downloads --json` and returns the downloads it describes.
    pub fn downloads(&mut self) -> Vec<Download> {
        self.run("show_downloads --json").iter().map(|l| Download::parse(l)).collect()
    }

    /// Closes stdin and waits for the client to exit on its own.
    pub fn close_stdin(&mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        wait_exit(&mut self.child)
    }

    /// Everything the client printed after the last `run` (drained without waiting).
    pub fn remaining_output(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `len` bytes of deterministic pseudo-random data to `path`.
pub fn write_random(path: &Path, len: usize, seed: u64) {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, data).unwrap();
}

/// Asserts two files have the same bytes.
#[track_caller]
pub fn assert_same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x.len() == y.len() && x == y, "{} and {} differ", a.display(), b.display());
}

/// The timeouts of the raw connections tests open.
pub fn raw_timeouts() -> common::connection::Timeouts {
    common::connection::Timeouts { handshake: TIMEOUT, read: TIMEOUT, write: TIMEOUT }
}

/// Opens a secure channel to a peer's piece server as `identity`, checking the peer's key.
pub fn peer_connect(
    addr: SocketAddr,
    key: &common::PublicKey,
    identity: &common::Identity,
) -> common::connection::Connection<
    common::peer_message::PeerReply,
    common::peer_message::PeerRequest,
> {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    common::connection::Connection::connect(stream, identity, key, raw_timeouts()).unwrap()
}

/// A raw protocol session with a tracker, for tests that play a misbehaving peer.
pub struct RawSession {
    pub conn: common::connection::Connection<
        common::message::TrackerMessage,
        common::message::ClientMessage,
    >,
    /// The key this session proves to the tracker.
    pub identity: common::Identity,
    session: Option<common::message::SessionToken>,
    seq: u64,
}

impl RawSession {
    /// Connects to `tracker` of `cluster` with a fresh key pair.
    pub fn connect(cluster: &Cluster, tracker: &TrackerProc) -> RawSession {
        let identity = common::Identity::generate().unwrap();
        RawSession::connect_as(tracker.addr, &cluster.tracker_key(tracker.id), identity)
    }

    /// Connects to the tracker at `addr`, which must prove `key`, as `identity`.
    pub fn connect_as(
        addr: SocketAddr,
        key: &common::PublicKey,
        identity: common::Identity,
    ) -> RawSession {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        RawSession::open(stream, key, identity)
    }

    /// Connects to `tracker` of `cluster` from the loopback address `from` (another host,
    /// as the tracker sees it), with a fresh key pair.
    pub fn connect_from(
        cluster: &Cluster,
        tracker: &TrackerProc,
        from: std::net::Ipv4Addr,
    ) -> RawSession {
        let stream = connect_from(from, tracker.addr);
        let identity = common::Identity::generate().unwrap();
        RawSession::open(stream, &cluster.tracker_key(tracker.id), identity)
    }

    /// Connects to `tracker` of `cluster` from the loopback address `from` as `identity`
    /// (a device coming back).
    pub fn connect_from_as(
        cluster: &Cluster,
        tracker: &TrackerProc,
        from: std::net::Ipv4Addr,
        identity: common::Identity,
    ) -> RawSession {
        RawSession::connect_at_from(tracker.addr, &cluster.tracker_key(tracker.id), from, identity)
    }

    /// Connects to the tracker at `addr`, which must prove `key`, from the loopback
    /// address `from`, as `identity`.
    pub fn connect_at_from(
        addr: SocketAddr,
        key: &common::PublicKey,
        from: std::net::Ipv4Addr,
        identity: common::Identity,
    ) -> RawSession {
        RawSession::open(connect_from(from, addr), key, identity)
    }

    fn open(
        stream: std::net::TcpStream,
        key: &common::PublicKey,
        identity: common::Identity,
    ) -> RawSession {
        use common::message::{ClientMessage, TrackerMessage, PROTOCOL_VERSION};
        let mut conn =
            common::connection::Connection::connect(stream, &identity, key, raw_timeouts())
                .unwrap();
        conn.send(&ClientMessage::Hello { version: PROTOCOL_VERSION }).unwrap();
        let welcome = conn.recv().unwrap();
        assert!(matches!(welcome, Some(TrackerMessage::Welcome { .. })));
        RawSession { conn, identity, session: None, seq: 0 }
    }

    pub fn call(
        &mut self,
        request: common::message::Request,
    ) -> Result<common::message::Reply, common::message::TrackerError> {
        self.seq += 1;
        // Each raw session is its own client (ids of retried requests must not collide).
        let client = u64::from_le_bytes(self.identity.public().0[..8].try_into().unwrap());
        let id = common::message::RequestId { client, seq: self.seq };
        self.call_as(id, request)
    }

    /// Sends `request` under the request id `id` (a retry, or someone else's id).
    pub fn call_as(
        &mut self,
        id: common::message::RequestId,
        request: common::message::Request,
    ) -> Result<common::message::Reply, common::message::TrackerError> {
        use common::message::{ClientMessage, TrackerMessage};
        self.conn.send(&ClientMessage::Request { id, session: self.session, request }).unwrap();
        match self.conn.recv().unwrap() {
            Some(TrackerMessage::Response { id: got, result }) if got == id => result,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The session token, once logged in.
    pub fn token(&self) -> Option<common::message::SessionToken> {
        self.session
    }

    /// Uses `token` as this session's token (to play a thief).
    pub fn use_token(&mut self, token: common::message::SessionToken) {
        self.session = Some(token);
    }

    /// Logs in as `user` (password `pw-<user>`), announcing `peer_addr` as its piece server.
    pub fn login(&mut self, user: &str, peer_addr: SocketAddr) {
        self.try_login(user, peer_addr).unwrap();
    }

    /// Like `login`, returning the tracker's refusal.
    pub fn try_login(
        &mut self,
        user: &str,
        peer_addr: SocketAddr,
    ) -> Result<(), common::message::TrackerError> {
        use common::message::{Reply, Request, SessionToken};
        // 32 random bytes (a fresh public key is as random as any).
        let token = SessionToken(common::Identity::generate().unwrap().public().0);
        let request = Request::Login {
            user: common::UserId::new(user).unwrap(),
            password: common::Password::new(format!("pw-{user}")).unwrap(),
            peer_addr,
            session: token,
        };
        match self.call(request)? {
            Reply::LoggedIn => self.session = Some(token),
            other => panic!("unexpected {other:?}"),
        }
        Ok(())
    }
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.2, ...): a client on
/// another host, as the tracker sees it.
pub fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> std::net::TcpStream {
    use rustix::net::{AddressFamily, SocketType};
    let socket = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&socket, &SocketAddr::from((from, 0))).unwrap();
    rustix::net::connect(&socket, &to).unwrap();
    std::net::TcpStream::from(socket)
}

/// One download as `show_downloads --json` describes it: what tests read instead of the
/// human `[D]`/`[C]`/`[F]` lines.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Download {
    /// `downloading`, `complete` or `failed`.
    pub state: String,
    pub group: String,
    pub file: String,
    pub pieces_have: u32,
    pub pieces_resumed: u32,
    /// Pieces received from each peer address.
    pub from_peers: std::collections::BTreeMap<String, u32>,
    /// The user on each peer address.
    pub peer_users: std::collections::BTreeMap<String, String>,
    /// How each source peer was reached (`direct`, ...; issue 19).
    pub paths: std::collections::BTreeMap<String, String>,
    /// Why a resumed download started over in a fresh `.part` file (issue 21).
    #[serde(default)]
    pub started_over: Option<String>,
}

impl Download {
    #[track_caller]
    fn parse(line: &str) -> Download {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a download ({e}): {line}"))
    }

    /// Whether it completed, as `file` of group `g`.
    pub fn is_complete(&self, file: &str) -> bool {
        self.state == "complete" && self.group == "g" && self.file == file
    }
}
