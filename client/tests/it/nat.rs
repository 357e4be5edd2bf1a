//! Issue 19, peers behind routers: a tracker tells each client the address it sees it
//! from, peers register every address they may be reached at, and downloaders try them all.

use crate::support::{write_random, ClientProc, Cluster};

/// A seeder listening on the wildcard address logs in with an address no one can dial
/// (`0.0.0.0:PORT`); it is reached at the address it registered, the IP the tracker sees it
/// from with its listen port.
#[test]
fn a_seeder_on_the_wildcard_address_is_reached_where_the_tracker_sees_it() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut seed = ClientProc::start_at(
        None,
        "0.0.0.0:0",
        &cluster.info,
        &cluster.path("seed"),
        &["--no-port-mapping"],
        &[],
    );
    let port = seed.listen.port();
    seed.sign_up("seed");
    seed.ok("create_group g", "created group g");
    seed.wait_log(&format!("reachable at [127.0.0.1:{port}]"));
    let mut leech = cluster.client("leech");
    leech.sign_up("leech");
    leech.ok("join_group g", "requested to join group g");
    seed.ok("accept_request g leech", "accepted leech into group g");
    let original = cluster.path("f.bin");
    write_random(&original, 700_000, 19);
    let line = seed.run1(&format!("upload_file '{}' g", original.display()));
    assert!(line.starts_with("uploaded "), "{line}");
    let out = cluster.path("out.bin");
    leech.run1(&format!("download_file g f.bin {}", out.display()));
    let done = leech.wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    // Named by the address it logged in with, reached at the one it registered.
    assert_eq!(done[0].from_peers.get(&format!("0.0.0.0:{port}")), Some(&2), "{done:?}");
    assert_eq!(done[0].paths.get(&format!("0.0.0.0:{port}")).map(String::as_str), Some("direct"));
    leech.wait_log(&format!("peer=0.0.0.0:{port}: reached at 127.0.0.1:{port}"));
    crate::support::assert_same_file(&original, &out);
}

/// A lab of network namespaces made for one test (issue 19): a public network (`pub`,
/// 5.0.0.0/24: the trackers and public peers at 5.0.0.1, the router's public side at
/// 5.0.0.2) and a home network (`home`, 192.168.77.0/24) behind a router (`rtr`) doing
/// nft masquerade and running Debian's `miniupnpd` (UPnP-IGD and NAT-PMP). The networks
/// exist only inside these namespaces, linked by veth pairs and to nothing else, so no
/// packet leaves them. miniupnpd refuses to map ports behind a private or reserved
/// address, so the public side has an address from outside those ranges. Deleted on drop,
/// after miniupnpd (killed by its PID); the test's processes, declared after the lab,
/// are dropped (killed) before it.
struct Lab {
    prefix: String,
    miniupnpd: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

const PUBLIC_HOST: &str = "5.0.0.1";
const ROUTER_PUBLIC: &str = "5.0.0.2";
const HOME_HOST: &str = "192.168.77.2";

impl Lab {
    /// The lab, or `None` (saying why) without root or the tools it needs.
    fn create(test: &str) -> Option<Lab> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping {test}: needs root for network namespaces (ip netns)");
            return None;
        }
        for (tool, arg) in [("ip", "-V"), ("nft", "--version"), ("miniupnpd", "--version")] {
            if !quiet(std::process::Command::new(tool).arg(arg)) {
                eprintln!(
                    "skipping {test}: {tool} is missing (apt-get install iproute2 nftables miniupnpd)"
                );
                return None;
            }
        }
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("p2pn{}x{n}", std::process::id());
        let lab = Lab {
            prefix,
            miniupnpd: None,
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        for ns in ["pub", "rtr", "home"] {
            lab.must(&["ip", "netns", "add", &lab.ns(ns)]);
        }
        let (p, r, h) = (lab.ns("pub"), lab.ns("rtr"), lab.ns("home"));
        lab.must(&[
            "ip", "link", "add", "wan0", "netns", &r, "type", "veth", "peer", "name", "pub0",
            "netns", &p,
        ]);
        lab.must(&[
            "ip", "link", "add", "lan0", "netns", &r, "type", "veth", "peer", "name", "eth0",
            "netns", &h,
        ]);
        for (ns, dev, addr) in [
            (&p, "pub0", format!("{PUBLIC_HOST}/24")),
            (&r, "wan0", format!("{ROUTER_PUBLIC}/24")),
            (&r, "lan0", "192.168.77.1/24".to_string()),
            (&h, "eth0", format!("{HOME_HOST}/24")),
        ] {
            lab.must(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev]);
            lab.must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        for ns in [&p, &r, &h] {
            lab.must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        lab.must(&["ip", "-n", &h, "route", "add", "default", "via", "192.168.77.1"]);
        lab.must(&["ip", "netns", "exec", &r, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // The chains miniupnpd fills (its defaults' names), and the masquerade.
        let rules = lab.dir.path().join("router.nft");
        std::fs::write(
            &rules,
            "table inet filter {\n\
             chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }\n\
             chain miniupnpd { }\n\
             chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }\n\
             chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; oifname \"wan0\" masquerade; }\n\
             chain prerouting_miniupnpd { }\n\
             chain postrouting_miniupnpd { }\n\
             }\n",
        )
        .expect("write the router's rules");
        lab.must(&["ip", "netns", "exec", &r, "nft", "-f", &rules.display().to_string()]);
        Some(lab)
    }

    /// Starts miniupnpd on the router (in the foreground, its log in the lab's directory),
    /// speaking NAT-PMP and PCP, and UPnP-IGD too if `upnp`; waits until it takes requests.
    fn start_miniupnpd(&mut self, upnp: bool) {
        let conf = self.dir.path().join("miniupnpd.conf");
        let upnp = if upnp { "yes" } else { "no" };
        std::fs::write(
            &conf,
            format!(
                "ext_ifname=wan0\nlistening_ip=lan0\nport=0\nenable_upnp={upnp}\nenable_natpmp=yes\n\
                 secure_mode=yes\nsystem_uptime=yes\nuuid=3f8c1e52-19a0-4c1b-9a57-0f3e2b6d7a19\n\
                 allow 1024-65535 192.168.77.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
            ),
        )
        .expect("write miniupnpd.conf");
        let log_path = self.dir.path().join("miniupnpd.log");
        let log = std::fs::File::create(&log_path).expect("miniupnpd's log");
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns("rtr"), "miniupnpd", "-d", "-f"])
            .arg(&conf)
            .arg("-P")
            .arg(self.dir.path().join("miniupnpd.pid"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("miniupnpd's log"))
            .stderr(log)
            .spawn()
            .expect("start miniupnpd");
        self.miniupnpd = Some(child);
        let deadline = std::time::Instant::now() + crate::support::TIMEOUT;
        let ready = "Listening for NAT-PMP/PCP traffic";
        while !std::fs::read_to_string(&log_path).unwrap_or_default().contains(ready) {
            assert!(std::time::Instant::now() < deadline, "miniupnpd did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// A tracker on the public network (not started).
    fn cluster(&self) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let info = dir.path().join("tracker_info.txt");
        let addr = format!("{PUBLIC_HOST}:7001");
        std::fs::write(&info, format!("{addr}\n")).expect("write tracker_info.txt");
        Cluster {
            dir,
            info,
            addrs: vec![addr.parse().expect("an address")],
            netns: Some(self.ns("pub")),
            tracker_args: Vec::new(),
            tracker_log_level: None,
        }
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    #[track_caller]
    fn must(&self, args: &[&str]) {
        let ok = quiet(std::process::Command::new(args[0]).args(&args[1..]));
        assert!(ok, "lab setup failed: {}", args.join(" "));
    }

    /// The router's port forwards, as miniupnpd wrote them.
    fn forwards(&self) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns("rtr"), "nft", "list", "chain", "inet", "filter"])
            .arg("prerouting_miniupnpd")
            .output()
            .expect("nft list");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.miniupnpd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in ["home", "rtr", "pub"] {
            let _ = quiet(std::process::Command::new("ip").args(["netns", "del", &self.ns(ns)]));
        }
    }
}

fn quiet(command: &mut std::process::Command) -> bool {
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Issue 19's first case: a seeder behind a home router is unreachable for a public
/// downloader (no piece, as before port mapping), until it runs with port mapping: the
/// router (miniupnpd) grants a mapping, the downloader reaches the seeder through it, and
/// the mapping is gone once the seeder stopped on SIGTERM.
/// A seeder in the home network behind the router, with `extra` options.
fn home_seed(lab: &Lab, cluster: &Cluster, extra: &[&str]) -> ClientProc {
    let listen = format!("{HOME_HOST}:0");
    let home = lab.ns("home");
    ClientProc::start_at(Some(&home), &listen, &cluster.info, &cluster.path("seed"), extra, &[])
}

/// A downloader on the public network, member of group `g`, which `seed` creates.
fn public_leech_in_group_of(lab: &Lab, cluster: &Cluster, seed: &mut ClientProc) -> ClientProc {
    let mut leech = ClientProc::start_at(
        Some(&lab.ns("pub")),
        &format!("{PUBLIC_HOST}:0"),
        &cluster.info,
        &cluster.path("leech"),
        &["--no-port-mapping"],
        &[],
    );
    seed.sign_up("seed");
    seed.ok("create_group g", "created group g");
    leech.sign_up("leech");
    leech.ok("join_group g", "requested to join group g");
    seed.ok("accept_request g leech", "accepted leech into group g");
    leech
}

#[test]
fn behind_a_upnp_router_a_seeder_is_reached_through_its_mapping() {
    let Some(mut lab) = Lab::create("behind_a_upnp_router_a_seeder_is_reached_through_its_mapping")
    else {
        return;
    };
    lab.start_miniupnpd(true);
    let cluster = lab.cluster();
    let _tracker = cluster.start_all();
    let start_seed = |extra: &[&str]| home_seed(&lab, &cluster, extra);
    let mut seed = start_seed(&["--no-port-mapping"]);
    let port = seed.listen.port();
    let mut leech = public_leech_in_group_of(&lab, &cluster, &mut seed);
    let original = cluster.path("f.bin");
    write_random(&original, 1_500_000, 19);
    let line = seed.run1(&format!("upload_file '{}' g", original.display()));
    assert!(line.starts_with("uploaded "), "{line}");
    // Its public address as the tracker sees it (masqueraded), with its listen port.
    seed.wait_log(&format!("reachable at [{ROUTER_PUBLIC}:{port}, {HOME_HOST}:{port}]"));

    // Without a mapping: every address of the seeder fails, and nothing arrives.
    let out = cluster.path("out.bin");
    leech.run1(&format!("download_file g f.bin {}", out.display()));
    leech.wait_log(&format!("peer={HOME_HOST}:{port}: connection ended"));
    let before = leech.downloads();
    assert_eq!((before[0].state.as_str(), before[0].pieces_have), ("downloading", 0), "{before:?}");
    assert!(!lab.forwards().contains(&format!("{HOME_HOST}:{port}")), "{}", lab.forwards());

    // With port mapping, as a service: the same port (its state directory's), the router
    // forwards it, and the download completes through it.
    assert!(seed.close_stdin().success());
    let mut seed = start_seed(&["--serve"]);
    assert_eq!(seed.listen.port(), port);
    seed.resumed("seed");
    // Through UPnP-IGD, at miniupnpd's HTTP port.
    seed.wait_log("port mapping: router UPnP-IGD 192.168.77.1:");
    seed.wait_log(&format!("forwards {ROUTER_PUBLIC}:{port} to port {port}"));
    assert!(
        lab.forwards().contains(&format!("dnat ip to {HOME_HOST}:{port}")),
        "{}",
        lab.forwards()
    );
    let done = leech.wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    assert_eq!(done[0].from_peers.get(&format!("{HOME_HOST}:{port}")), Some(&3), "{done:?}");
    // Issue 19's "behind a UPnP router, the path is direct".
    let path = done[0].paths.get(&format!("{HOME_HOST}:{port}")).map(String::as_str);
    assert_eq!(path, Some("direct"), "{done:?}");
    leech.wait_log(&format!("peer={HOME_HOST}:{port}: reached at {ROUTER_PUBLIC}:{port}"));
    crate::support::assert_same_file(&original, &out);

    // SIGTERM: a clean stop, which removes the mapping.
    let pid = rustix::process::Pid::from_raw(seed.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(seed.wait().success(), "SIGTERM: not a clean stop");
    seed.wait_log(&format!("port mapping: removed {ROUTER_PUBLIC}:{port}"));
    assert!(!lab.forwards().contains(&format!("{HOME_HOST}:{port}")), "{}", lab.forwards());
}

/// The same behind a router that speaks only PCP and NAT-PMP (miniupnpd without UPnP-IGD):
/// the seeder, at its REPL, is mapped through PCP, downloaded from through the mapping,
/// and the mapping is gone after `exit`.
#[test]
fn behind_a_pcp_router_a_seeder_is_reached_through_its_mapping() {
    let Some(mut lab) = Lab::create("behind_a_pcp_router_a_seeder_is_reached_through_its_mapping")
    else {
        return;
    };
    lab.start_miniupnpd(false);
    let cluster = lab.cluster();
    let _tracker = cluster.start_all();
    let mut seed = home_seed(&lab, &cluster, &[]);
    let port = seed.listen.port();
    let mut leech = public_leech_in_group_of(&lab, &cluster, &mut seed);
    seed.wait_log(&format!(
        "port mapping: router PCP 192.168.77.1 forwards {ROUTER_PUBLIC}:{port} to port {port}"
    ));
    assert!(
        lab.forwards().contains(&format!("dnat ip to {HOME_HOST}:{port}")),
        "{}",
        lab.forwards()
    );
    let original = cluster.path("f.bin");
    write_random(&original, 600_000, 20);
    let line = seed.run1(&format!("upload_file '{}' g", original.display()));
    assert!(line.starts_with("uploaded "), "{line}");
    let out = cluster.path("out.bin");
    leech.run1(&format!("download_file g f.bin {}", out.display()));
    let done = leech.wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    let path = done[0].paths.get(&format!("{HOME_HOST}:{port}")).map(String::as_str);
    assert_eq!(path, Some("direct"), "{done:?}");
    crate::support::assert_same_file(&original, &out);
    assert!(seed.close_stdin().success());
    seed.wait_log(&format!("port mapping: removed {ROUTER_PUBLIC}:{port}"));
    assert!(!lab.forwards().contains(&format!("{HOME_HOST}:{port}")), "{}", lab.forwards());
}

/// Hostile input (issue 19): a peer that registers many addresses, or ones no one can dial
/// (multicast, unspecified, port 0), is listed with at most 4 dialable ones; what it
/// registers later replaces them.
#[test]
fn registered_addresses_are_bounded_and_checked_by_the_tracker() {
    use common::message::{FileMeta, Reply, Request};
    use common::{GroupId, Password, Sha1Digest, UserId};

    let (cluster, tracker) = Cluster::with_one_tracker();
    tracker.wait_serving();
    let mut sessions = Vec::new();
    for user in ["alice", "bob"] {
        let mut raw = crate::support::RawSession::connect(&cluster, &tracker);
        let (name, password) =
            (UserId::new(user).unwrap(), Password::new(format!("pw-{user}")).unwrap());
        assert_eq!(raw.call(Request::CreateUser { user: name, password }), Ok(Reply::Done));
        raw.login(user, "127.0.0.1:7".parse().unwrap());
        sessions.push(raw);
    }
    let g = GroupId::new("g").unwrap();
    let (alice, bob) = sessions.split_at_mut(1);
    let (alice, bob) = (&mut alice[0], &mut bob[0]);
    assert_eq!(alice.call(Request::CreateGroup { group: g.clone() }), Ok(Reply::Done));
    assert_eq!(bob.call(Request::JoinGroup { group: g.clone() }), Ok(Reply::Done));
    let accept = Request::AcceptRequest { group: g.clone(), user: UserId::new("bob").unwrap() };
    assert_eq!(alice.call(accept), Ok(Reply::Done));
    let pieces = vec![Sha1Digest::of(b"piece")];
    let digest = common::hash::file_digest(5, &pieces);
    let file = FileMeta { name: "f.bin".parse().unwrap(), size: 5, digest, pieces, tree: None };
    let upload = Request::UploadFile { group: g.clone(), file };
    assert_eq!(alice.call(upload), Ok(Reply::Uploaded { new_file: true }));

    let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
    let mut flood = vec![addr("224.0.0.1:6201"), addr("0.0.0.0:6201"), addr("10.0.0.1:0")];
    flood.extend((1..=6).map(|i| addr(&format!("10.0.0.{i}:6201"))));
    assert_eq!(alice.call(Request::Reachable { addrs: flood }), Ok(Reply::Done));
    let listed = |bob: &mut crate::support::RawSession| {
        let get = Request::GetFile { group: g.clone(), name: "f.bin".parse().unwrap() };
        match bob.call(get) {
            Ok(Reply::FileInfo { peers, .. }) => {
                assert_eq!(peers.len(), 1, "{peers:?}");
                peers[0].addrs.clone()
            }
            other => panic!("{other:?}"),
        }
    };
    let expected: Vec<_> = (1..=4).map(|i| addr(&format!("10.0.0.{i}:6201"))).collect();
    assert_eq!(listed(bob), expected);
    let again = vec![addr("10.0.0.9:6201")];
    assert_eq!(alice.call(Request::Reachable { addrs: again.clone() }), Ok(Reply::Done));
    assert_eq!(listed(bob), again);
}
