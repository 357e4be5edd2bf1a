//! Issue 9, the Jepsen way: three trackers in a network namespace of the test's own, links
//! between them cut (policy-routing blackholes between their addresses, both ways) or a
//! tracker paused (SIGSTOP), while clients on 127.0.0.1 keep writing through any tracker
//! they reach. Every write's outcome is recorded; after healing, every acknowledged write
//! must be visible through every tracker, all state digests must be equal, and no term may
//! have had two leaders.
//!
//! Needs root (for `ip netns`); without it each test says so and passes vacuously.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{
    wait_converged, wait_leader, ClientProc, Cluster, DelayProxy, TrackerProc, TIMEOUT,
};

/// A network namespace made for one test, deleted on drop (after the processes in it,
/// which the test declares later and so drops first).
struct Netns {
    name: String,
    cuts: Mutex<BTreeSet<(u32, u32)>>,
}

static NEXT_NETNS: AtomicUsize = AtomicUsize::new(0);

impl Netns {
    /// A fresh namespace with loopback up and the local routing table consulted after the
    /// rules a test adds; `None` (with a message) where that cannot be done.
    fn create(test: &str) -> Option<Netns> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping {test}: needs root for a network namespace (ip netns)");
            return None;
        }
        let name =
            format!("p2pj-{}-{}", std::process::id(), NEXT_NETNS.fetch_add(1, Ordering::Relaxed));
        if !run(&["ip", "netns", "add", &name]) {
            eprintln!("skipping {test}: `ip netns add` failed");
            return None;
        }
        let netns = Netns { name, cuts: Mutex::new(BTreeSet::new()) };
        let ready = netns.ip(&["link", "set", "lo", "up"])
            && netns.ip(&["rule", "add", "pref", "100", "lookup", "local"])
            && netns.ip(&["rule", "del", "pref", "0"]);
        assert!(ready, "cannot set up loopback routing in {}", netns.name);
        Some(netns)
    }

    fn ip(&self, args: &[&str]) -> bool {
        let mut all = vec!["ip", "netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        run(&all)
    }

    fn blackhole(&self, verb: &str, a: u32, b: u32) {
        for (from, to) in [(a, b), (b, a)] {
            let (from, to) = (tracker_ip(from), tracker_ip(to));
            let ok = self.ip(&["rule", verb, "pref", "10", "from", &from, "to", &to, "blackhole"]);
            assert!(ok, "ip rule {verb} {from} -> {to} failed");
        }
    }

    /// Cuts the link between trackers `a` and `b`, both ways.
    fn cut(&self, a: u32, b: u32) {
        let pair = (a.min(b), a.max(b));
        if self.cuts.lock().unwrap().insert(pair) {
            self.blackhole("add", pair.0, pair.1);
        }
    }

    /// Cuts tracker `id` off from every other tracker of `1..=n`.
    fn isolate(&self, id: u32, n: u32) {
        for other in (1..=n).filter(|o| *o != id) {
            self.cut(id, other);
        }
    }

    /// Restores every link.
    fn heal(&self) {
        let cuts = std::mem::take(&mut *self.cuts.lock().unwrap());
        for (a, b) in cuts {
            self.blackhole("del", a, b);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

fn run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Tracker `id`'s address in `Cluster::in_netns`.
fn tracker_ip(id: u32) -> String {
    format!("127.0.0.{}", 10 + id)
}

/// What happened to each write.
#[derive(Default)]
struct History {
    acknowledged: Vec<String>,
    /// Failed with an error line: may or may not have been applied.
    failed: Vec<(String, String)>,
    slowest: Duration,
}

/// Clients that write (`create_group`) in a loop, each through any tracker it reaches,
/// until stopped; every outcome goes into the history.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    history: Arc<Mutex<History>>,
    threads: Vec<std::thread::JoinHandle<ClientProc>>,
}

impl Writers {
    fn start(cluster: &Cluster, n: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let history = Arc::new(Mutex::new(History::default()));
        let mut threads = Vec::new();
        for i in 0..n {
            let mut client = cluster.client(&format!("w{i}"));
            client.sign_up(&format!("w{i}"));
            let (stop, acked, history) = (stop.clone(), acked.clone(), history.clone());
            threads.push(std::thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let group = format!("w{i}g{k}");
                    k += 1;
                    let started = Instant::now();
                    let line = client.run1(&format!("create_group {group}"));
                    let took = started.elapsed();
                    let mut history = history.lock().unwrap();
                    history.slowest = history.slowest.max(took);
                    if line == format!("created group {group}") {
                        history.acknowledged.push(group);
                        acked.fetch_add(1, Ordering::Relaxed);
                    } else {
                        assert!(line.starts_with("error: "), "{line}");
                        history.failed.push((group, line));
                    }
                }
                client
            }));
        }
        Writers { stop, acked, history, threads }
    }

    /// Waits until `more` further writes were acknowledged.
    fn wait_acked(&self, more: usize) {
        let target = self.acked.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + TIMEOUT * 2;
        while self.acked.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "writes stopped being acknowledged");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            drop(thread.join().expect("a writer panicked"));
        }
        Arc::try_unwrap(self.history).ok().unwrap().into_inner().unwrap()
    }
}

/// The Jepsen checks, after healing: every acknowledged write through every tracker, equal
/// digests, one leader per term.
fn check(cluster: &Cluster, trackers: &mut [TrackerProc], history: &History) {
    let n = trackers.len() as u32;
    for id in 1..=n {
        let mut reader = cluster.client_via(&format!("reader{id}"), &[id]);
        reader.ok("login w0 pw-w0", "logged in as w0");
        let groups: BTreeSet<String> = reader.run("list_groups").into_iter().collect();
        let lost: Vec<&String> =
            history.acknowledged.iter().filter(|g| !groups.contains(*g)).collect();
        assert!(lost.is_empty(), "acknowledged writes missing through tracker {id}: {lost:?}");
    }
    let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().collect();
    wait_converged(&mut refs);
    let mut leaders: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
    for id in 1..=n {
        for line in cluster.tracker_log(id).lines() {
            if let Some(at) = line.find(" serving as primary (term ") {
                let term = &line[at + " serving as primary (term ".len()..];
                let term: u64 = term.trim_end_matches(')').parse().unwrap();
                leaders.entry(term).or_default().insert(id);
            }
        }
    }
    for (term, ids) in &leaders {
        assert_eq!(ids.len(), 1, "term {term} had leaders {ids:?}");
    }
    eprintln!(
        "{} writes acknowledged, {} failed (indeterminate), slowest {:?}; leaders by term {leaders:?}",
        history.acknowledged.len(),
        history.failed.len(),
        history.slowest
    );
}

/// Starts three trackers in `netns`, and writers; returns them with the leader's index.
fn three(netns: &Netns) -> (Cluster, Vec<TrackerProc>) {
    let cluster = Cluster::in_netns(3, &netns.name).with_load_limits();
    let trackers = cluster.start_all();
    (cluster, trackers)
}

fn leader_of(trackers: &mut [TrackerProc]) -> usize {
    let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().collect();
    wait_leader(&mut refs)
}

#[test]
fn a_leader_cut_off_from_both_followers_loses_nothing_acknowledged() {
    let Some(netns) = Netns::create("leader isolation") else { return };
    let (cluster, mut trackers) = three(&netns);
    let writers = Writers::start(&cluster, 3);
    writers.wait_acked(30);
    let old = leader_of(&mut trackers);
    netns.isolate(old as u32 + 1, 3);
    // The other two elect a leader and writes go on through them.
    writers.wait_acked(50);
    std::thread::sleep(Duration::from_secs(2));
    netns.heal();
    writers.wait_acked(30);
    let history = writers.finish();
    check(&cluster, &mut trackers, &history);
}

#[test]
fn a_link_cut_then_a_two_way_split_lose_nothing_acknowledged() {
    let Some(netns) = Netns::create("one-link cut and split") else { return };
    let (cluster, mut trackers) = three(&netns);
    let writers = Writers::start(&cluster, 3);
    writers.wait_acked(30);
    // Clients use tracker 1 first: cut a link of tracker 1's, whichever role it has.
    let leader = leader_of(&mut trackers) as u32 + 1;
    let other = if leader == 1 { 2 } else { 1 };
    netns.cut(leader, other);
    writers.wait_acked(80);
    netns.heal();
    writers.wait_acked(30);
    // Then a two-way split: one follower alone on one side, the leader and the other
    // follower on the other.
    let leader = leader_of(&mut trackers) as u32 + 1;
    let alone = leader % 3 + 1;
    netns.isolate(alone, 3);
    writers.wait_acked(80);
    netns.heal();
    writers.wait_acked(30);
    let history = writers.finish();
    check(&cluster, &mut trackers, &history);
}

#[test]
fn flapping_links_lose_nothing_acknowledged() {
    let Some(netns) = Netns::create("flapping links") else { return };
    let (cluster, mut trackers) = three(&netns);
    let writers = Writers::start(&cluster, 3);
    writers.wait_acked(30);
    // A different cut every 700 ms: a tracker isolated, or one link cut.
    let mut rng = fastrand::Rng::with_seed(9);
    for _ in 0..10 {
        netns.heal();
        let a = rng.u32(1..=3);
        if rng.bool() {
            netns.isolate(a, 3);
        } else {
            netns.cut(a, a % 3 + 1);
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    netns.heal();
    writers.wait_acked(30);
    let history = writers.finish();
    check(&cluster, &mut trackers, &history);
}

#[test]
fn a_paused_leader_loses_nothing_acknowledged() {
    let Some(netns) = Netns::create("paused leader") else { return };
    let (cluster, mut trackers) = three(&netns);
    let writers = Writers::start(&cluster, 3);
    writers.wait_acked(30);
    let leader = leader_of(&mut trackers);
    let pid = trackers[leader].pid().to_string();
    assert!(run(&["kill", "-STOP", &pid]));
    let paused = Instant::now();
    // The others elect a leader and serve; the paused one wakes up, 10 s later, as a
    // deposed leader with stale ideas.
    writers.wait_acked(50);
    std::thread::sleep(Duration::from_secs(10).saturating_sub(paused.elapsed()));
    assert!(run(&["kill", "-CONT", &pid]));
    writers.wait_acked(30);
    let history = writers.finish();
    check(&cluster, &mut trackers, &history);
}

/// 50 ms each way between every two trackers (and to clients), with 1% of chunks held back
/// as a lost segment would be: writes go on, batched, the leader dies, and nothing
/// acknowledged is lost.
#[test]
fn a_slow_lossy_network_between_trackers_loses_nothing_acknowledged() {
    let cluster = Cluster::new(3).with_load_limits();
    let mut trackers = Vec::new();
    let mut listens = Vec::new();
    let mut proxies = Vec::new();
    for id in 1..=3u32 {
        let real = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        proxies.push(DelayProxy::start(cluster.addrs[id as usize - 1], real, 50, 1.0));
        listens.push(real.to_string());
        trackers
            .push(cluster.try_start_tracker(id, &["--listen", &listens[id as usize - 1]]).unwrap());
    }
    for t in &trackers {
        t.wait_serving();
    }
    let writers = Writers::start(&cluster, 4);
    writers.wait_acked(40);
    let leader = leader_of(&mut trackers);
    trackers[leader].kill();
    writers.wait_acked(40);
    let history = writers.finish();
    // The killed leader comes back and catches up through the slow links.
    let id = leader as u32 + 1;
    trackers[leader] = cluster.try_start_tracker(id, &["--listen", &listens[leader]]).unwrap();
    check(&cluster, &mut trackers, &history);
}
