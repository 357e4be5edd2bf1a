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
    /// The namespaces of homes added after the first (`add_home`).
    more: Vec<String>,
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
            more: Vec::new(),
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
            loopback: std::net::IpAddr::from([127, 0, 0, 1]),
            tracker_log_level: None,
        }
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Another home network (number `n`, from 2) behind a router of its own at
    /// `5.0.0.{n+1}` doing nft masquerade, port-preserving where it can, or with random
    /// ports (`random`: as carrier-grade NAT does); no router daemon. Returns the home's
    /// namespace and its host's address.
    fn add_home(&mut self, n: u8, random: bool) -> (String, String) {
        let (r, h) = (self.ns(&format!("rtr{n}")), self.ns(&format!("home{n}")));
        for ns in [&r, &h] {
            self.must(&["ip", "netns", "add", ns]);
            self.more.push(ns.clone());
        }
        let p = self.ns("pub");
        let pub_dev = format!("pub{n}");
        self.must(&[
            "ip", "link", "add", "wan0", "netns", &r, "type", "veth", "peer", "name", &pub_dev,
            "netns", &p,
        ]);
        self.must(&[
            "ip", "link", "add", "lan0", "netns", &r, "type", "veth", "peer", "name", "eth0",
            "netns", &h,
        ]);
        // The public network is one /24 over several veths: each router gets a host route.
        let public = format!("5.0.0.{}", n + 1);
        let host = format!("192.168.{}.2", 77 + n);
        for (ns, dev, addr) in [
            (&r, "wan0", format!("{public}/24")),
            (&r, "lan0", format!("192.168.{}.1/24", 77 + n)),
            (&h, "eth0", format!("{host}/24")),
        ] {
            self.must(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev]);
            self.must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        self.must(&["ip", "-n", &p, "link", "set", &pub_dev, "up"]);
        // The public network forwards between the routers (each believes the others on
        // its link: the public side answers for them).
        self.must(&["ip", "netns", "exec", &p, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        self.must(&["ip", "netns", "exec", &p, "sysctl", "-qw", "net.ipv4.conf.all.proxy_arp=1"]);
        self.must(&["ip", "netns", "exec", &p, "sysctl", "-qw", "net.ipv4.conf.pub0.proxy_arp=1"]);
        self.must(&["ip", "-n", &p, "route", "add", &format!("{public}/32"), "dev", &pub_dev]);
        for ns in [&r, &h] {
            self.must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let gateway = format!("192.168.{}.1", 77 + n);
        self.must(&["ip", "-n", &h, "route", "add", "default", "via", &gateway]);
        self.must(&["ip", "netns", "exec", &r, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let masquerade = if random { "masquerade random" } else { "masquerade" };
        let rules = self.dir.path().join(format!("router{n}.nft"));
        std::fs::write(
            &rules,
            format!(
                "table inet nat {{\n\
                 chain postrouting {{ type nat hook postrouting priority 100; policy accept; oifname \"wan0\" {masquerade}; }}\n\
                 }}\n"
            ),
        )
        .expect("write the router's rules");
        self.must(&["ip", "netns", "exec", &r, "nft", "-f", &rules.display().to_string()]);
        (h, host)
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
        let first = ["home", "rtr", "pub"].map(|ns| self.ns(ns));
        for ns in self.more.iter().rev().chain(&first) {
            let _ = quiet(std::process::Command::new("ip").args(["netns", "del", ns]));
        }
    }
}

/// Waits until `user`'s peer has its long poll for calls open on tracker 1 (its log says
/// so at debug level).
fn wait_awaiting_calls(cluster: &Cluster, user: &str) {
    let deadline = std::time::Instant::now() + crate::support::TIMEOUT;
    let wanted = |line: &str| line.contains(&format!("< {user}@")) && line.ends_with("AwaitCalls");
    while !cluster.tracker_log(1).lines().any(wanted) {
        assert!(std::time::Instant::now() < deadline, "{user} never waited for calls");
        std::thread::sleep(std::time::Duration::from_millis(20));
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

/// `seed`, in the home network, shares a fresh `f.bin` in group `g`; once it registered its
/// public address (the router's, as the tracker sees it, with its listen port), `leech`
/// downloads it to `out.bin`, whole, from a connection the seeder reversed. Returns the
/// original's path.
fn download_reversed(
    cluster: &Cluster,
    seed: &mut ClientProc,
    leech: &mut ClientProc,
    content: u64,
) -> std::path::PathBuf {
    let port = seed.listen.port();
    let original = cluster.path("f.bin");
    write_random(&original, 1_500_000, content);
    let line = seed.run1(&format!("upload_file '{}' g", original.display()));
    assert!(line.starts_with("uploaded "), "{line}");
    seed.wait_log(&format!("reachable at [{ROUTER_PUBLIC}:{port}, {HOME_HOST}:{port}]"));
    let out = cluster.path("out.bin");
    leech.run1(&format!("download_file g f.bin {}", out.display()));
    let done = leech.wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    let path = done[0].paths.get(&format!("{HOME_HOST}:{port}")).map(String::as_str);
    assert_eq!(path, Some("reversed"), "{done:?}");
    original
}

/// A downloader on the public network, member of group `g`, which `seed` creates.
fn public_leech_in_group_of(lab: &Lab, cluster: &Cluster, seed: &mut ClientProc) -> ClientProc {
    leech_in_group_of(&lab.ns("pub"), PUBLIC_HOST, cluster, seed, &[])
}

/// A downloader in namespace `ns` at `host`, member of group `g`, which `seed` creates.
/// `extra` are more options of the downloader.
fn leech_in_group_of(
    ns: &str,
    host: &str,
    cluster: &Cluster,
    seed: &mut ClientProc,
    extra: &[&str],
) -> ClientProc {
    let options: Vec<&str> = ["--no-port-mapping"].iter().chain(extra).copied().collect();
    let mut leech = ClientProc::start_at(
        Some(ns),
        &format!("{host}:0"),
        &cluster.info,
        &cluster.path("leech"),
        &options,
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
    // Without a mapping: every address of the seeder fails, and the seeder is reached by
    // reversal (it connects out to the public downloader).
    let original = download_reversed(&cluster, &mut seed, &mut leech, 19);
    assert!(!lab.forwards().contains(&format!("{HOME_HOST}:{port}")), "{}", lab.forwards());

    // With port mapping, as a service: the same port (its state directory's), the router
    // forwards it, and a download completes through it.
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
    // The advertiser registers the mapping: the downloader dials it first.
    seed.wait_log(&format!("reachable at [{ROUTER_PUBLIC}:{port}"));
    let out2 = cluster.path("out2.bin");
    leech.run1(&format!("download_file g f.bin {}", out2.display()));
    let done = leech.wait_downloads_json();
    let second = done.iter().rev().find(|d| d.is_complete("f.bin")).expect("a second download");
    assert_eq!(done.len(), 2, "{done:?}");
    assert_eq!(second.from_peers.get(&format!("{HOME_HOST}:{port}")), Some(&3), "{done:?}");
    // Issue 19's "behind a UPnP router, the path is direct".
    let path = second.paths.get(&format!("{HOME_HOST}:{port}")).map(String::as_str);
    assert_eq!(path, Some("direct"), "{done:?}");
    leech.wait_log(&format!("peer={HOME_HOST}:{port}: reached at {ROUTER_PUBLIC}:{port}"));
    crate::support::assert_same_file(&original, &out2);

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

/// Issue 19, connection reversal: a seeder behind a home router without port mapping
/// cannot be dialed, so the public downloader asks the tracker to have it connect out; the
/// seeder, long polling the tracker for calls, dials the downloader back, and the download
/// completes over that connection (`path` `reversed`), the ticket checked as ever.
#[test]
fn a_natted_seeder_connects_back_to_a_public_downloader() {
    let Some(lab) = Lab::create("a_natted_seeder_connects_back_to_a_public_downloader") else {
        return;
    };
    let cluster = lab.cluster();
    let _tracker = cluster.start_all();
    let mut seed = home_seed(&lab, &cluster, &["--no-port-mapping"]);
    let port = seed.listen.port();
    let mut leech = public_leech_in_group_of(&lab, &cluster, &mut seed);
    let original = download_reversed(&cluster, &mut seed, &mut leech, 21);
    let out = cluster.path("out.bin");
    leech.wait_log(&format!("peer={HOME_HOST}:{port}: reached by reversal"));
    seed.wait_log(&format!("seeder: called leech back at {PUBLIC_HOST}:"));
    crate::support::assert_same_file(&original, &out);
}

/// Hostile input (issue 19): a reversal must name the caller's own ticket and a peer that
/// shares that file, and a caller gets at most its budget of reversals (10 at once, then
/// 30 a minute), whatever it names: the tracker cannot be made a cannon.
#[test]
fn reversals_are_checked_and_bounded_per_caller() {
    use common::message::{FileMeta, Reply, Request, TrackerError};
    use common::{GroupId, Password, PublicKey, Sha1Digest, UserId};

    let (cluster, tracker) = Cluster::with_one_tracker();
    tracker.wait_serving();
    let mut sessions = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let mut raw = crate::support::RawSession::connect(&cluster, &tracker);
        let (name, password) =
            (UserId::new(user).unwrap(), Password::new(format!("pw-{user}")).unwrap());
        assert_eq!(raw.call(Request::CreateUser { user: name, password }), Ok(Reply::Done));
        raw.login(user, "127.0.0.1:7".parse().unwrap());
        sessions.push(raw);
    }
    let g = GroupId::new("g").unwrap();
    let [alice, bob, carol] = &mut sessions[..] else { unreachable!() };
    assert_eq!(alice.call(Request::CreateGroup { group: g.clone() }), Ok(Reply::Done));
    for (who, name) in [(&mut *bob, "bob"), (&mut *carol, "carol")] {
        assert_eq!(who.call(Request::JoinGroup { group: g.clone() }), Ok(Reply::Done));
        let accept = Request::AcceptRequest { group: g.clone(), user: UserId::new(name).unwrap() };
        assert_eq!(alice.call(accept), Ok(Reply::Done));
    }
    let pieces = vec![Sha1Digest::of(b"piece")];
    let digest = common::hash::file_digest(5, &pieces);
    let file = FileMeta { name: "f.bin".parse().unwrap(), size: 5, digest, pieces, tree: None };
    let upload = Request::UploadFile { group: g.clone(), file };
    assert_eq!(alice.call(upload), Ok(Reply::Uploaded { new_file: true }));
    let get = |who: &mut crate::support::RawSession| match who
        .call(Request::GetFile { group: g.clone(), name: "f.bin".parse().unwrap() })
    {
        Ok(Reply::FileInfo { peers, ticket, .. }) => (peers[0].key, *ticket),
        other => panic!("{other:?}"),
    };
    let (alice_key, bob_ticket) = get(bob);
    let (_, carol_ticket) = get(carol);

    // Another member's ticket is refused, and so is a peer that shares nothing.
    let stolen = Request::Reverse { ticket: carol_ticket.clone(), seeder: alice_key, nonce: 1 };
    assert!(matches!(bob.call(stolen), Err(TrackerError::BadTicket(_))));
    let stranger =
        Request::Reverse { ticket: bob_ticket.clone(), seeder: PublicKey([9; 32]), nonce: 2 };
    assert_eq!(
        bob.call(stranger),
        Err(TrackerError::CannotReverse("that peer does not share the file".into()))
    );
    // A real sharer that waits for no call (a raw session polls nothing).
    let real = || Request::Reverse { ticket: bob_ticket.clone(), seeder: alice_key, nonce: 3 };
    let waits_nowhere = Err(TrackerError::NotWaiting);
    let mut answers = Vec::new();
    let asking = std::time::Instant::now();
    for _ in 0..60 {
        answers.push(bob.call(real()));
    }
    // Two refusals above spent two of bob's burst of 40; 38 more pass the check, then none
    // but the one a second the budget (60 a minute) gives back meanwhile.
    let refill = asking.elapsed().as_secs() as usize + 1;
    let over = Err(TrackerError::CannotReverse("more than 60 reversals a minute asked".into()));
    assert!(answers[..38].iter().all(|a| a == &waits_nowhere), "{answers:?}");
    assert!(answers.iter().all(|a| a == &waits_nowhere || a == &over), "{answers:?}");
    let passed = answers.iter().filter(|a| *a == &waits_nowhere).count();
    assert!(passed <= 38 + refill, "{passed} passed in {refill} s: {answers:?}");
    assert_eq!(answers.last(), Some(&over), "{answers:?}");
    // Hole punches share the reversals' budget.
    let punch = Request::Punch { ticket: bob_ticket.clone(), seeder: alice_key, nonce: 5, port: 0 };
    assert_eq!(bob.call(punch), over);
    // Carol's budget is her own.
    let carol_asks = Request::Reverse { ticket: carol_ticket.clone(), seeder: alice_key, nonce: 4 };
    assert_eq!(carol.call(carol_asks), waits_nowhere);
    // A punch goes only to the caller's public addresses (carol registered none).
    let carol_punches =
        Request::Punch { ticket: carol_ticket, seeder: alice_key, nonce: 6, port: 0 };
    let nowhere = "the caller registered no public address to punch to";
    assert_eq!(carol.call(carol_punches), Err(TrackerError::CannotReverse(nowhere.into())));
}

/// Issue 19, hole punching: a seeder behind one home router and a downloader behind
/// another (both masquerading, port-preserving, no port mapping) reach each other neither
/// directly nor by reversal; the tracker has them connect to each other at once from their
/// listening ports, and each router lets the other's SYN in (`punched`). The relay is asked
/// for at the same moment: the source may start relayed (the relay is faster to join than a
/// hole, whose SYNs cross a second apart) and moves to the hole once it is punched; the
/// relay is slowed (1 MB/s for the user) so that the 12 MB download outlasts the punch.
#[test]
fn nat_to_nat_is_punched_through_port_preserving_routers() {
    let test = "nat_to_nat_is_punched_through_port_preserving_routers";
    let Some(mut lab) = Lab::create(test) else { return };
    let mut homes = TwoHomes::new(&mut lab, false, &["--relay-user-rate", "8"], None);
    let (original, out) = homes.share(12_000_000, 22);
    homes.leech.run1(&format!("download_file g f.bin {}", out.display()));
    let done = homes.leech.wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    let path = done[0].paths.get(&homes.seed_addr).map(String::as_str);
    homes.dump_logs_unless(path == Some("punched"));
    assert_eq!(path, Some("punched"), "{done:?}");
    homes.leech.wait_log(&format!("peer={}: reached ", homes.seed_addr));
    homes.leech.wait_log("hole punched through both routers");
    homes.seed.wait_log("seeder: leech asks for a hole punch to");
    homes.seed.wait_log("seeder: punched through to leech");
    crate::support::assert_same_file(&original, &out);
}

/// Issue 19: two peers behind routers that fetch from each other at once each get a hole
/// of their own. Punched between both listening ports, the two connections would be one
/// four-tuple and the second could not be made (it would go through the relay, here slowed
/// to 1 MB/s); the downloader punches from a port of its own instead. Each side's upload is
/// capped, so the two downloads (12 MB each) overlap.
#[test]
fn two_peers_behind_routers_fetching_from_each_other_are_both_punched() {
    let test = "two_peers_behind_routers_fetching_from_each_other_are_both_punched";
    let Some(mut lab) = Lab::create(test) else { return };
    let mut homes = TwoHomes::new(&mut lab, false, &["--relay-user-rate", "8"], None);
    let (original, out) = homes.share(12_000_000, 23);
    // The downloader shares a file of its own, which the seeder fetches.
    let theirs = homes.cluster.path("g.bin");
    write_random(&theirs, 12_000_000, 24);
    let line = homes.leech.run1(&format!("upload_file '{}' g", theirs.display()));
    assert!(line.starts_with("uploaded "), "{line}");
    wait_awaiting_calls(&homes.cluster, "leech");
    homes.leech.wait_log("reachable at [5.0.0.");
    for peer in [&mut homes.seed, &mut homes.leech] {
        let line = peer.run1("limit_rate up 3M");
        assert!(line.starts_with("upload 3.0 MB/s"), "{line}");
    }
    let back = homes.cluster.path("back.bin");
    homes.leech.run1(&format!("download_file g f.bin {}", out.display()));
    homes.seed.run1(&format!("download_file g g.bin {}", back.display()));
    let fetched = homes.leech.wait_downloads_json();
    let fetched_back = homes.seed.wait_downloads_json();
    let leech_addr = homes.leech.listen.to_string();
    let path = fetched[0].paths.get(&homes.seed_addr).map(String::as_str);
    let path_back = fetched_back[0].paths.get(&leech_addr).map(String::as_str);
    let both = path == Some("punched") && path_back == Some("punched");
    homes.dump_logs_unless(both);
    assert!(fetched[0].is_complete("f.bin"), "{fetched:?}");
    assert!(fetched_back[0].is_complete("g.bin"), "{fetched_back:?}");
    assert_eq!(
        (path, path_back),
        (Some("punched"), Some("punched")),
        "{fetched:?} {fetched_back:?}"
    );
    // Both holes punched while both downloads ran (the relay, faster to join, may carry
    // the first pieces): no punch ran into the other's four-tuple.
    homes.leech.wait_log(&format!("peer={}: ", homes.seed_addr));
    homes.seed.wait_log(&format!("peer={leech_addr}: "));
    homes.seed.wait_log("seeder: punched through to leech");
    homes.leech.wait_log("seeder: punched through to seed");
    for peer in [&homes.seed, &homes.leech] {
        let log = peer.log_text();
        assert!(!log.contains("Cannot assign requested address"), "{log}");
        assert!(!log.contains("no hole punched"), "{log}");
    }
    crate::support::assert_same_file(&original, &out);
    crate::support::assert_same_file(&theirs, &back);
}

/// Issue 19, relays: a seeder behind a router that randomizes its ports (carrier-grade
/// NAT), where no hole can be punched: both join the tracker's relay, which copies their
/// end-to-end encrypted bytes (`relayed`).
#[test]
fn a_seeder_behind_a_randomizing_nat_is_relayed() {
    let Some(mut lab) = Lab::create("a_seeder_behind_a_randomizing_nat_is_relayed") else {
        return;
    };
    let mut homes = TwoHomes::new(&mut lab, true, &[], None);
    let (original, out) = homes.share(2_500_000, 22);
    homes.leech.run1(&format!("download_file g f.bin {}", out.display()));
    let done = homes.leech.wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    let path = done[0].paths.get(&homes.seed_addr).map(String::as_str);
    assert_eq!(path, Some("relayed"), "{done:?}");
    homes.leech.wait_log(&format!("peer={}: reached through a tracker's relay", homes.seed_addr));
    homes.seed.wait_log("seeder: relaying to leech through tracker 1");
    crate::support::assert_same_file(&original, &out);
}

/// Issue 19, a relayed source moves to a hole punched later: the downloader's router drops
/// every SYN between the two homes' public addresses at first (the relay, through the
/// tracker, passes), so the download starts `relayed`, slowed to 1 MB/s (32 MiB: half a
/// minute, while the background punches come 4, then 8, then 16 s apart); once the punch
/// tried beside the relay failed, the rule is removed, a background punch goes through, and
/// the worker moves to it between two pieces: the source is `punched` before the download
/// ends, every piece counted once.
#[test]
fn a_relayed_source_moves_to_a_hole_punched_later() {
    let Some(mut lab) = Lab::create("a_relayed_source_moves_to_a_hole_punched_later") else {
        return;
    };
    let mut homes = TwoHomes::new(&mut lab, false, &["--relay-user-rate", "8"], None);
    // On the downloader's router, before connection tracking: no SYN to or from the
    // seeder's router (5.0.0.4).
    let rtr2 = lab.ns("rtr2");
    let rules = lab.dir.path().join("nopunch.nft");
    std::fs::write(
        &rules,
        "table ip nopunch {\n\
         chain pre { type filter hook prerouting priority -300; policy accept;\n\
         ip daddr 5.0.0.4 tcp flags & (syn | ack) == syn drop;\n\
         ip saddr 5.0.0.4 tcp flags & (syn | ack) == syn drop; }\n\
         }\n",
    )
    .expect("write the blocking rules");
    lab.must(&["ip", "netns", "exec", &rtr2, "nft", "-f", &rules.display().to_string()]);
    let (original, out) = homes.share(32 * 1024 * 1024, 25);
    homes.leech.run1(&format!("download_file g f.bin {}", out.display()));
    // Relayed, with pieces still to fetch: the block is lifted.
    let deadline = std::time::Instant::now() + crate::support::TIMEOUT;
    loop {
        let now = homes.leech.downloads();
        let path = now[0].paths.get(&homes.seed_addr).map(String::as_str);
        if path == Some("relayed") && now[0].pieces_have > 0 {
            assert_eq!(now[0].state, "downloading", "{now:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never relayed: {now:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The punch tried beside the relay failed: the rule is lifted for the next ones.
    homes.leech.wait_log("punch 1 to [5.0.0.4:");
    lab.must(&["ip", "netns", "exec", &rtr2, "nft", "delete", "table", "ip", "nopunch"]);
    let done = homes.leech.wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    let path = done[0].paths.get(&homes.seed_addr).map(String::as_str);
    homes.dump_logs_unless(path == Some("punched"));
    assert_eq!(path, Some("punched"), "{done:?}");
    homes.leech.wait_log(&format!(
        "peer={}: moved from the relay to a hole punched through both routers",
        homes.seed_addr
    ));
    // The seeder took the punched connection beside the relayed one.
    homes.seed.wait_log("seeder: punched through to leech");
    // Every piece counted once, all from that one source.
    assert_eq!(done[0].from_peers.get(&homes.seed_addr), Some(&64), "{done:?}");
    crate::support::assert_same_file(&original, &out);
}

/// Issue 19, a reversal that fails, then a punch: the downloader listens on the wildcard
/// address, so it cannot tell that it is behind a router and asks for a reversal; its
/// router drops new connections to its port (a firewall), so the seeder's call back never
/// connects; after its 3 s the downloader punches (and asks for a relay at once), and the
/// source ends `punched`.
#[test]
fn a_failed_reversal_is_followed_by_a_punch() {
    let Some(mut lab) = Lab::create("a_failed_reversal_is_followed_by_a_punch") else {
        return;
    };
    let mut homes = TwoHomes::new(&mut lab, false, &["--relay-user-rate", "8"], Some("0.0.0.0"));
    let port = homes.leech.listen.port();
    let rules = lab.dir.path().join("firewall.nft");
    std::fs::write(
        &rules,
        format!(
            "table ip firewall {{\n\
             chain pre {{ type filter hook prerouting priority 0; policy accept;\n\
             iifname \"wan0\" tcp dport {port} ct state new drop; }}\n\
             }}\n"
        ),
    )
    .expect("write the firewall's rules");
    lab.must(&["ip", "netns", "exec", &lab.ns("rtr2"), "nft", "-f", &rules.display().to_string()]);
    let (original, out) = homes.share(12_000_000, 26);
    homes.leech.run1(&format!("download_file g f.bin {}", out.display()));
    let done = homes.leech.wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    let path = done[0].paths.get(&homes.seed_addr).map(String::as_str);
    homes.dump_logs_unless(path == Some("punched"));
    assert_eq!(path, Some("punched"), "{done:?}");
    homes.seed.wait_log("seeder: leech asks to be called back at [5.0.0.3:");
    homes.leech.wait_log(&format!(
        "peer={}: no address answered (Connection refused (os error 111)), the peer did not \
         connect back within 3 s; punching a hole and asking for a relay at once",
        homes.seed_addr
    ));
    homes.leech.wait_log("hole punched through both routers");
    crate::support::assert_same_file(&original, &out);
}

/// A seeder behind one home router (5.0.0.4, with random ports if `random_ports`) and a
/// downloader behind another (5.0.0.3, port-preserving), both members of group `g`, with a
/// tracker started with `tracker_args`; the downloader listens on `leech_ip` if given (else
/// its host's address).
struct TwoHomes {
    cluster: Cluster,
    _tracker: Vec<crate::support::TrackerProc>,
    seed: ClientProc,
    leech: ClientProc,
    /// The address the seeder logged in with (its name in `show_downloads`).
    seed_addr: String,
}

impl TwoHomes {
    fn new(
        lab: &mut Lab,
        random_ports: bool,
        tracker_args: &[&str],
        leech_ip: Option<&str>,
    ) -> TwoHomes {
        let (seed_ns, seed_host) = lab.add_home(3, random_ports);
        let (leech_ns, leech_host) = lab.add_home(2, false);
        let mut cluster = lab.cluster();
        cluster.tracker_args = tracker_args.iter().map(|a| a.to_string()).collect();
        let tracker = cluster.start_all();
        let mut seed = ClientProc::start_at(
            Some(&seed_ns),
            &format!("{seed_host}:0"),
            &cluster.info,
            &cluster.path("seed"),
            &["--no-port-mapping"],
            &[],
        );
        let seed_addr = format!("{seed_host}:{}", seed.listen.port());
        let leech_ip = leech_ip.unwrap_or(&leech_host);
        let leech = leech_in_group_of(&leech_ns, leech_ip, &cluster, &mut seed, &[]);
        TwoHomes { cluster, _tracker: tracker, seed, leech, seed_addr }
    }

    /// The seeder shares a fresh `f.bin` of `size` bytes (random from `content`) once it
    /// waits for calls and registered its public address; returns it and where the
    /// downloader is to put it.
    fn share(&mut self, size: usize, content: u64) -> (std::path::PathBuf, std::path::PathBuf) {
        let original = self.cluster.path("f.bin");
        write_random(&original, size, content);
        let line = self.seed.run1(&format!("upload_file '{}' g", original.display()));
        assert!(line.starts_with("uploaded "), "{line}");
        wait_awaiting_calls(&self.cluster, "seed");
        let port = self.seed.listen.port();
        self.seed.wait_log(&format!("reachable at [5.0.0.4:{port}"));
        (original, self.cluster.path("out.bin"))
    }

    /// Prints both peers' logs unless `fine`, for the failure that follows.
    fn dump_logs_unless(&self, fine: bool) {
        if !fine {
            eprintln!("LEECH:\n{}\nSEED:\n{}", self.leech.log_text(), self.seed.log_text());
        }
    }
}

/// Issue 19's "two NATed seeders at once": both behind the home router, both reached by
/// reversal by the public downloader at once.
#[test]
fn two_natted_seeders_at_once_are_both_reversed() {
    let Some(lab) = Lab::create("two_natted_seeders_at_once_are_both_reversed") else { return };
    let cluster = lab.cluster();
    let _tracker = cluster.start_all();
    // Each seeder slow enough that neither serves the whole file before the other is
    // connected.
    let slow = ["--no-port-mapping", "--max-upload-rate", "2000000"];
    let mut seed = home_seed(&lab, &cluster, &slow);
    let mut leech = public_leech_in_group_of(&lab, &cluster, &mut seed);
    let mut seed2 = ClientProc::start_at(
        Some(&lab.ns("home")),
        &format!("{HOME_HOST}:0"),
        &cluster.info,
        &cluster.path("seed2"),
        &slow,
        &[],
    );
    seed2.sign_up("seed2");
    seed2.ok("join_group g", "requested to join group g");
    seed.ok("accept_request g seed2", "accepted seed2 into group g");
    let original = cluster.path("f.bin");
    write_random(&original, 12 * 512 * 1024, 23);
    let line = seed.run1(&format!("upload_file '{}' g", original.display()));
    assert!(line.starts_with("uploaded "), "{line}");
    let line = seed2.run1(&format!("upload_file '{}' g", original.display()));
    assert!(line.starts_with("sharing f.bin in group g"), "{line}");
    // Both wait for calls (a peer starts its long poll a moment after it logs in).
    for user in ["seed", "seed2"] {
        wait_awaiting_calls(&cluster, user);
    }
    let out = cluster.path("out.bin");
    leech.run1(&format!("download_file g f.bin {}", out.display()));
    let done = leech.wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    for s in [&seed, &seed2] {
        let addr = format!("{HOME_HOST}:{}", s.listen.port());
        assert_eq!(done[0].paths.get(&addr).map(String::as_str), Some("reversed"), "{done:?}");
    }
    crate::support::assert_same_file(&original, &out);
}

/// Hostile input (issue 19): a tracker's relay copies no byte until the two ends the leader
/// named have joined, each proving its key and a live session of it: an end without a
/// session, a logged-in member the leader did not name, and a relay nobody asked for are
/// refused; the two named ends then get each other's bytes, unchanged.
#[test]
fn a_relay_joins_only_the_two_named_ends() {
    use common::connection::Connection;
    use common::message::{
        ClientMessage, FileMeta, Reply, Request, SessionToken, TrackerError, TrackerMessage,
        PROTOCOL_VERSION,
    };
    use common::{GroupId, Identity, Password, Sha1Digest, UserId};
    use std::io::{Read, Write};

    let (cluster, tracker) = Cluster::with_one_tracker();
    tracker.wait_serving();
    let mut sessions = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let mut raw = crate::support::RawSession::connect(&cluster, &tracker);
        let (name, password) =
            (UserId::new(user).unwrap(), Password::new(format!("pw-{user}")).unwrap());
        assert_eq!(raw.call(Request::CreateUser { user: name, password }), Ok(Reply::Done));
        raw.login(user, "127.0.0.1:7".parse().unwrap());
        sessions.push(raw);
    }
    let g = GroupId::new("g").unwrap();
    let mut carol = sessions.pop().unwrap();
    let mut bob = sessions.pop().unwrap();
    let mut alice = sessions.pop().unwrap();
    assert_eq!(alice.call(Request::CreateGroup { group: g.clone() }), Ok(Reply::Done));
    for (who, name) in [(&mut bob, "bob"), (&mut carol, "carol")] {
        assert_eq!(who.call(Request::JoinGroup { group: g.clone() }), Ok(Reply::Done));
        let accept = Request::AcceptRequest { group: g.clone(), user: UserId::new(name).unwrap() };
        assert_eq!(alice.call(accept), Ok(Reply::Done));
    }
    let pieces = vec![Sha1Digest::of(b"piece")];
    let digest = common::hash::file_digest(5, &pieces);
    let file = FileMeta { name: "f.bin".parse().unwrap(), size: 5, digest, pieces, tree: None };
    let upload = Request::UploadFile { group: g.clone(), file };
    assert_eq!(alice.call(upload), Ok(Reply::Uploaded { new_file: true }));
    let (alice_key, ticket) =
        match bob.call(Request::GetFile { group: g.clone(), name: "f.bin".parse().unwrap() }) {
            Ok(Reply::FileInfo { peers, ticket, .. }) => (peers[0].key, *ticket),
            other => panic!("{other:?}"),
        };

    // Alice waits for calls; Bob asks for a relay once the tracker has her wait.
    let polls = |log: String| log.matches("AwaitCalls").count();
    let before = polls(cluster.tracker_log(tracker.id));
    let waiting = std::thread::spawn(move || {
        let calls = alice.call(Request::AwaitCalls);
        (alice, calls)
    });
    let deadline = std::time::Instant::now() + crate::support::TIMEOUT;
    while polls(cluster.tracker_log(tracker.id)) == before {
        assert!(std::time::Instant::now() < deadline, "alice's wait never reached the tracker");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let nonce = 77;
    // The log line comes a moment before the wait is registered: a few tries at most.
    let at = (0..5)
        .find_map(|_| {
            match bob.call(Request::Relay { ticket: ticket.clone(), seeder: alice_key, nonce }) {
                Ok(Reply::RelayAt { tracker }) => Some(tracker),
                Err(TrackerError::NotWaiting) => None,
                other => panic!("{other:?}"),
            }
        })
        .expect("a relay once alice waits");
    assert_eq!(at, tracker.id);
    let (alice, calls) = waiting.join().unwrap();
    let call = match calls {
        Ok(Reply::Calls { calls }) => calls.into_iter().next().expect("bob's call"),
        other => panic!("{other:?}"),
    };
    assert_eq!((call.nonce, call.relay, call.user.as_str()), (nonce, Some(tracker.id), "bob"));

    let key = cluster.tracker_key(tracker.id);
    let join = |identity: &Identity, session: SessionToken, nonce: u64| {
        let stream = std::net::TcpStream::connect(tracker.addr).unwrap();
        let mut conn: Connection<TrackerMessage, ClientMessage> =
            Connection::connect(stream, identity, &key, crate::support::raw_timeouts()).unwrap();
        conn.send(&ClientMessage::Relay { version: PROTOCOL_VERSION, session, nonce }).unwrap();
        conn
    };
    let refused = |mut conn: Connection<TrackerMessage, ClientMessage>| match conn.recv() {
        Ok(Some(TrackerMessage::RelayRefused { reason })) => reason,
        other => panic!("{other:?}"),
    };
    // No session of that key: refused before anything else.
    let stranger = Identity::generate().unwrap();
    assert_eq!(refused(join(&stranger, SessionToken([5; 32]), nonce)), TrackerError::NotLoggedIn);
    // A member with a session, not named by the leader; a relay nobody asked for.
    let not_an_end = TrackerError::CannotReverse("not an end of that relay".into());
    assert_eq!(refused(join(&carol.identity, carol.token().unwrap(), nonce)), not_an_end);
    let unknown = TrackerError::CannotReverse("no such relay".into());
    assert_eq!(refused(join(&bob.identity, bob.token().unwrap(), nonce + 1)), unknown);

    // The two named ends: the downloader waits for the seeder, then bytes pass both ways.
    std::thread::scope(|scope| {
        let bob_end = scope.spawn(|| {
            let mut conn = join(&bob.identity, bob.token().unwrap(), nonce);
            assert!(matches!(conn.recv(), Ok(Some(TrackerMessage::RelayReady))));
            let mut socket = conn.into_socket().unwrap();
            socket.write_all(b"sealed bytes").unwrap();
            let mut back = [0u8; 4];
            socket.read_exact(&mut back).unwrap();
            back
        });
        let mut conn = join(&alice.identity, alice.token().unwrap(), nonce);
        assert!(matches!(conn.recv(), Ok(Some(TrackerMessage::RelayReady))));
        conn.send(&ClientMessage::RelayGo).unwrap();
        let mut socket = conn.into_socket().unwrap();
        let mut got = [0u8; 12];
        socket.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"sealed bytes");
        socket.write_all(b"back").unwrap();
        assert_eq!(&bob_end.join().unwrap(), b"back");
    });
}

/// Issue 19's clear error: with relaying off on the tracker, a downloader behind one router
/// and a seeder behind another that randomizes its ports (so that no hole can be punched)
/// cannot reach each other any way, and the download fails saying so (at its stall
/// timeout, here 12 s).
#[test]
fn with_relaying_off_nat_to_nat_fails_saying_why() {
    let Some(mut lab) = Lab::create("with_relaying_off_nat_to_nat_fails_saying_why") else {
        return;
    };
    let (seed_ns, seed_host) = lab.add_home(3, true);
    let (leech_ns, leech_host) = lab.add_home(2, false);
    let mut cluster = lab.cluster();
    cluster.tracker_args = vec!["--no-relay".to_string()];
    let _tracker = cluster.start_all();
    let mut seed = ClientProc::start_at(
        Some(&seed_ns),
        &format!("{seed_host}:0"),
        &cluster.info,
        &cluster.path("seed"),
        &["--no-port-mapping"],
        &[],
    );
    let stall = ["--stall-timeout", "12"];
    let mut leech = leech_in_group_of(&leech_ns, &leech_host, &cluster, &mut seed, &stall);
    let original = cluster.path("f.bin");
    write_random(&original, 600_000, 24);
    let line = seed.run1(&format!("upload_file '{}' g", original.display()));
    assert!(line.starts_with("uploaded "), "{line}");
    let out = cluster.path("out.bin");
    leech.run1(&format!("download_file g f.bin {}", out.display()));
    let done = leech.wait_downloads();
    assert_eq!(
        done,
        ["[F] [g] f.bin: no holder of f.bin can be reached: both behind NAT and relaying is off"]
    );
}

/// Issue 19 with three trackers: the seeder waits for calls on one follower, the downloader
/// asks another; the leader checks the call and has the follower where the seeder waits
/// pass it on (and, for a relay, expect both ends there).
#[test]
fn a_call_reaches_a_seeder_waiting_on_another_tracker() {
    use common::message::{FileMeta, Reply, Request};
    use common::{GroupId, Password, Sha1Digest, UserId};

    let cluster = Cluster::new(3);
    let mut trackers = cluster.start_all();
    let leader = {
        let mut all: Vec<&mut crate::support::TrackerProc> = trackers.iter_mut().collect();
        crate::support::wait_leader(&mut all)
    };
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (f1, f2) = (&trackers[followers[0]], &trackers[followers[1]]);
    let mut alice = crate::support::RawSession::connect(&cluster, f1);
    let mut bob = crate::support::RawSession::connect(&cluster, f2);
    for (who, user) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        let (name, password) =
            (UserId::new(user).unwrap(), Password::new(format!("pw-{user}")).unwrap());
        assert_eq!(who.call(Request::CreateUser { user: name, password }), Ok(Reply::Done));
        who.login(user, "127.0.0.1:7".parse().unwrap());
    }
    let g = GroupId::new("g").unwrap();
    assert_eq!(alice.call(Request::CreateGroup { group: g.clone() }), Ok(Reply::Done));
    assert_eq!(bob.call(Request::JoinGroup { group: g.clone() }), Ok(Reply::Done));
    let accept = Request::AcceptRequest { group: g.clone(), user: UserId::new("bob").unwrap() };
    assert_eq!(alice.call(accept), Ok(Reply::Done));
    let pieces = vec![Sha1Digest::of(b"piece")];
    let digest = common::hash::file_digest(5, &pieces);
    let file = FileMeta { name: "f.bin".parse().unwrap(), size: 5, digest, pieces, tree: None };
    let upload = Request::UploadFile { group: g.clone(), file };
    assert_eq!(alice.call(upload), Ok(Reply::Uploaded { new_file: true }));
    let (alice_key, ticket) =
        match bob.call(Request::GetFile { group: g.clone(), name: "f.bin".parse().unwrap() }) {
            Ok(Reply::FileInfo { peers, ticket, .. }) => (peers[0].key, *ticket),
            other => panic!("{other:?}"),
        };
    for (n, relay) in [(1u64, false), (2, true)] {
        let polls = |log: String| log.matches("AwaitCalls").count();
        let before = polls(cluster.tracker_log(f1.id));
        let waiting = std::thread::spawn(move || {
            let calls = alice.call(Request::AwaitCalls);
            (alice, calls)
        });
        let deadline = std::time::Instant::now() + crate::support::TIMEOUT;
        while polls(cluster.tracker_log(f1.id)) == before {
            assert!(std::time::Instant::now() < deadline, "alice's wait never reached tracker");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let ask = || match relay {
            false => Request::Reverse { ticket: ticket.clone(), seeder: alice_key, nonce: n },
            true => Request::Relay { ticket: ticket.clone(), seeder: alice_key, nonce: n },
        };
        let expected = match relay {
            false => Reply::Done,
            true => Reply::RelayAt { tracker: f1.id },
        };
        let answer = (0..5)
            .map(|_| bob.call(ask()))
            .find(|a| a != &Err(common::message::TrackerError::NotWaiting))
            .expect("an answer once alice waits");
        assert_eq!(answer, Ok(expected));
        let (back, calls) = waiting.join().unwrap();
        alice = back;
        match calls {
            Ok(Reply::Calls { calls }) => {
                assert_eq!(calls.len(), 1, "{calls:?}");
                assert_eq!((calls[0].nonce, calls[0].relay), (n, relay.then_some(f1.id)));
            }
            other => panic!("{other:?}"),
        }
    }
}
