#!/usr/bin/env bash
# Issue 19's figures: downloads between peers behind home routers, in a lab of network
# namespaces made for the run (needs root). A "public" network (a router, 5.0.0.0/24) holds
# the tracker (5.0.0.1) and public peers (5.0.0.101...); each home is a router (nft
# masquerade, port-preserving or with random ports, optionally miniupnpd) with one host
# behind it (192.168.N.2). Every peer's uplink is shaped with tc tbf (a home's on its
# router's public side). Nothing leaves the namespaces; they are deleted at exit.
#
# Each case prints its figures beside its bound:
#   direct    a public seeder to a downloader behind a router
#   mapped    a seeder behind a UPnP router (miniupnpd) to a public downloader
#   reversed  a seeder behind a router (no UPnP) to a public downloader
#   punched   a seeder behind a router to a downloader behind another (no UPnP)
#   relayed   a seeder behind a router with random ports to a downloader behind another
#   crowd     one seeder and N leechers, each behind its own router (UPnP routers with
#             --crowd-upnp), all at once
# A direct or punched path should carry >= 90% of the shaped rate and bring the first
# verified piece within 1.5 s (punched: 3 s); a relayed one >= 80% of min(rate, relay cap)
# and its first piece within 3 s; the crowd all finish within 1.25x the Kumar-Ross bound
# max(F/u_s, N*F/(u_s + sum u_i)).
set -euo pipefail

usage() {
    cat <<USAGE
Usage: scripts/bench-nat.sh [--bin DIR] [--size MIB] [--rate MBIT] [--crowd N]
                           [--crowd-upnp] [--cases LIST] [--tracker-arg ARG]... [--keep]

  --bin DIR        where the tracker and client binaries are (default: build release)
  --size MIB       the file's size (default 32)
  --rate MBIT      every peer's uplink, in Mbit/s (default 40)
  --crowd N        leechers of the crowd case (default 16)
  --crowd-upnp     the crowd's routers run miniupnpd (default: plain masquerade)
  --cases LIST     comma-separated cases to run (default: all; see the top of this file)
  --tracker-arg A  pass A to the tracker (repeat for several words, e.g. a relay cap)
  --keep           keep the work directory
  -h, --help       show this help
USAGE
}

BIN=""
SIZE_MIB=32
RATE=40
CROWD=16
CROWD_UPNP=0
CASES="direct,mapped,reversed,punched,relayed,crowd"
TRACKER_ARGS=()
KEEP=0
while (($#)); do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --size) SIZE_MIB=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --crowd) CROWD=$2; shift 2 ;;
        --crowd-upnp) CROWD_UPNP=1; shift ;;
        --cases) CASES=$2; shift 2 ;;
        --tracker-arg) TRACKER_ARGS+=("$2"); shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-nat.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

if ((EUID != 0)); then
    echo "bench-nat.sh: needs root (it makes network namespaces); nothing measured" >&2
    exit 2
fi
for tool in ip nft tc miniupnpd python3; do
    command -v "$tool" >/dev/null || {
        echo "bench-nat.sh: $tool is missing (apt-get install iproute2 nftables miniupnpd)" >&2
        exit 2
    }
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z $BIN ]]; then
    (cd "$ROOT" && cargo build --release -q --bin tracker --bin client)
    BIN=$ROOT/target/release
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/p2p-bench-nat.XXXXXX")
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

LAB=bn$$ # namespace names' prefix
NAMESPACES=()
nat_cleanup() {
    lib_cleanup
    local ns
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap nat_cleanup EXIT
trap 'exit 130' INT TERM

# shape NS DEV: caps DEV's egress in NS at $RATE Mbit/s.
shape() {
    local burst=$((RATE * 1000000 / 8 / 100))
    ((burst >= 65536)) || burst=65536
    ip -n "$1" link set "$2" txqueuelen 1000
    tc -n "$1" qdisc add dev "$2" root tbf rate "${RATE}mbit" burst "$burst" latency 100ms
}

# lab_public: the public network's namespace, a router between everything plugged into it
# (as the internet is: a packet between two homes crosses at least one router, which hole
# punching's short-lived first SYN relies on), holding the tracker's address.
lab_public() {
    local p=$LAB-pub
    ip netns add "$p"
    NAMESPACES+=("$p")
    ip -n "$p" link set lo up
    ip -n "$p" addr add 5.0.0.1/32 dev lo
    ip netns exec "$p" sysctl -qw net.ipv4.ip_forward=1
}

# plug NS DEV PORT ADDR: a veth pair, DEV in NS with ADDR (in 5.0.0.0/24, on-link: the
# public router answers ARP for every other address of it), PORT in the public router
# with a host route to ADDR.
plug() {
    local ns=$1 dev=$2 port=$3 addr=$4
    ip link add "$dev" netns "$ns" type veth peer name "$port" netns "$LAB-pub"
    ip netns exec "$LAB-pub" sysctl -qw "net.ipv4.conf.$port.proxy_arp=1"
    ip -n "$LAB-pub" link set "$port" up
    ip -n "$LAB-pub" route add "$addr/32" dev "$port"
    ip -n "$ns" addr add "$addr/24" dev "$dev"
    ip -n "$ns" link set "$dev" up
}

# public_host K: namespace $LAB-qK at 5.0.0.(100+K), its uplink shaped.
public_host() {
    local k=$1 q=$LAB-q$1
    ip netns add "$q"
    NAMESPACES+=("$q")
    ip -n "$q" link set lo up
    plug "$q" eth0 "vq$k" "5.0.0.$((100 + k))"
    shape "$q" eth0
}

# home N KIND: router $LAB-rN (5.0.0.(10+N) outside, 192.168.N.1 inside) and host $LAB-hN
# (192.168.N.2) behind it. KIND: plain (port-preserving masquerade), random (random
# ports), upnp (plain, and miniupnpd speaking UPnP-IGD, NAT-PMP and PCP).
home() {
    local n=$1 kind=$2 r=$LAB-r$1 h=$LAB-h$1
    ip netns add "$r"
    ip netns add "$h"
    NAMESPACES+=("$h" "$r")
    ip -n "$r" link set lo up
    ip -n "$h" link set lo up
    plug "$r" wan0 "vr$n" "5.0.0.$((10 + n))"
    shape "$r" wan0
    ip link add lan0 netns "$r" type veth peer name eth0 netns "$h"
    ip -n "$r" addr add "192.168.$n.1/24" dev lan0
    ip -n "$h" addr add "192.168.$n.2/24" dev eth0
    ip -n "$r" link set lan0 up
    ip -n "$h" link set eth0 up
    ip -n "$h" route add default via "192.168.$n.1"
    ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
    local masquerade="masquerade"
    [[ $kind != random ]] || masquerade="masquerade random"
    cat >"$WORK/r$n.nft" <<NFT
table inet filter {
    chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
    chain miniupnpd { }
    chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
    chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; oifname "wan0" $masquerade; }
    chain prerouting_miniupnpd { }
    chain postrouting_miniupnpd { }
}
NFT
    ip netns exec "$r" nft -f "$WORK/r$n.nft"
    [[ $kind == upnp ]] || return 0
    cat >"$WORK/r$n.miniupnpd.conf" <<CONF
ext_ifname=wan0
listening_ip=lan0
port=0
enable_upnp=yes
enable_natpmp=yes
secure_mode=yes
system_uptime=yes
uuid=3f8c1e52-19a0-4c1b-9a57-0f3e2b6d7a$(printf %02x "$n")
allow 1024-65535 192.168.$n.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
CONF
    : >"$WORK/r$n.miniupnpd.log"
    ip netns exec "$r" miniupnpd -d -f "$WORK/r$n.miniupnpd.conf" -P "$WORK/r$n.miniupnpd.pid" \
        </dev/null >>"$WORK/r$n.miniupnpd.log" 2>&1 &
    PID[miniupnpd$n]=$!
    wait_for "$WORK/r$n.miniupnpd.log" "Listening for NAT-PMP/PCP traffic"
}

# peer NAME WHERE [OPTIONS...]: a client at home N (WHERE=hN) or public host K (qK), signed
# up and logged in as NAME.
peer() {
    local name=$1 where=$2 listen
    shift 2
    case $where in
        h*) listen=192.168.${where#h}.2:0 ;;
        q*) listen=5.0.0.$((100 + ${where#q})):0; set -- --no-port-mapping "$@" ;;
    esac
    start_peer_in "$LAB-$where" "$listen" "$name" "$@"
    quiet_run "$name" "create_user $name pw"
    quiet_run "$name" "login $name pw"
}

# group OWNER GROUP MEMBER...: OWNER creates GROUP and lets the members in.
group() {
    local owner=$1 g=$2 m
    shift 2
    quiet_run "$owner" "create_group $g"
    for m in "$@"; do
        quiet_run "$m" "join_group $g"
        quiet_run "$owner" "accept_request $g $m"
    done
}

# now_ns: nanoseconds since the epoch (bash's clock: no process started, which matters on
# a machine whose two cores the lab's routers keep busy).
now_ns() {
    local us=${EPOCHREALTIME/[.,]/}
    echo "${us}000"
}

# cpu_ticks: the machine's CPU time so far, busy and in all, in clock ticks ("BUSY TOTAL";
# idle and I/O wait are not busy), read from /proc/stat without starting a process.
cpu_ticks() {
    local user nice system idle iowait irq softirq steal rest
    read -r _ user nice system idle iowait irq softirq steal rest </proc/stat
    local busy=$((user + nice + system + irq + softirq + steal))
    echo "$busy $((busy + idle + iowait))"
}

# uplink_bytes N...: the bytes each home N's router has sent up so far, one line each (the
# public router's receive counter of its port vrN, read in one process).
uplink_bytes() {
    local n
    for n in "$@"; do
        ip netns exec "$LAB-pub" cat "/sys/class/net/vr$n/statistics/rx_bytes"
    done
}

# json NAME: the last line of NAME's show_downloads --json.
json() {
    local before
    before=$(lines "$1")
    send "$1" "show_downloads --json"
    until (($(lines "$1") > before)); do sleep 0.01; done
    tail -n1 "$WORK/$1.out"
}

# field JSON KEY: a number or string field of one line of JSON.
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2]))' "$1" "$2"; }

# paths JSON: the paths the download used, sorted and unique.
paths() {
    python3 -c 'import json,sys; print(",".join(sorted(set(json.loads(sys.argv[1])["paths"].values()))) or "none")' "$1"
}

# one_download CASE SEED LEECH GROUP FIRST_BOUND SHARE: LEECH fetches f.bin of GROUP (shared
# by SEED); prints the time to the first verified piece and the rate after it, beside
# their bounds (FIRST_BOUND seconds, SHARE percent of the shaped rate).
one_download() {
    local case=$1 seed=$2 leech=$3 g=$4 first_bound=$5 share=$6
    run "$seed" "upload_file $WORK/f.bin $g" >/dev/null
    local start first="" line have state
    start=$(now_ns)
    send "$leech" "download_file $g f.bin $WORK/$case.out.bin"
    while :; do
        line=$(json "$leech")
        read -r have state < <(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j.get("pieces_have"), j.get("state"))' "$line")
        if [[ -z $first ]] && ((have > 0)); then first=$(now_ns); fi
        [[ $state == downloading ]] || break
        if (($(now_ns) - start > 120 * 10 ** 9)); then state=timeout; break; fi
        sleep 0.05
    done
    local done_at
    done_at=$(now_ns)
    if [[ $state != complete ]]; then
        printf '%-9s %s (%s pieces after %d s): %s\n' "$case" "$state" "$have" \
            $(((done_at - start) / 10 ** 9)) "$(field "$line" reason)"
        return 0
    fi
    cmp -s "$WORK/f.bin" "$WORK/$case.out.bin" || { echo "$case: the copy differs" >&2; exit 1; }
    python3 - "$case" "$start" "$first" "$done_at" "$SIZE_MIB" "$RATE" "$first_bound" "$share" \
        "$(paths "$line")" "$WORK/$leech.log" <<'PY'
import datetime, sys
case, start, first, done, mib, rate, first_bound, share, paths, log = sys.argv[1:]
start, first, done = int(start) / 1e9, int(first) / 1e9, int(done) / 1e9
# The first piece's time as the leecher logged it (the coordinator's trace line), not when
# the loop above saw it: on a loaded machine each round of polling costs a tenth of a
# second or more.
for entry in open(log, errors="replace"):
    if "verified and written" in entry and entry.startswith("["):
        stamp = entry[1:].split("Z", 1)[0]
        first = datetime.datetime.fromisoformat(stamp).replace(tzinfo=datetime.timezone.utc).timestamp()
        break
size = int(mib) * 1024 * 1024
piece = 512 * 1024
mbit = (size - piece) * 8 / (done - first) / 1e6
bound = float(rate) * float(share) / 100
print(f"{case:<9} path={paths:<9} first piece {first - start:5.2f} s (bound {float(first_bound):.1f} s)"
      f"  rate {mbit:5.1f} Mbit/s (bound >= {bound:.1f}: {share}% of {rate})"
      f"  total {done - start:5.2f} s  {'ok' if mbit >= bound and first - start <= float(first_bound) else 'MISSED'}")
PY
}

# crowd: one seeder and $CROWD leechers, each behind its own router, all at once.
crowd() {
    local kind=plain i
    ((CROWD_UPNP == 0)) || kind=upnp
    home 40 "$kind"
    peer crowdseed h40
    local leeches=()
    for ((i = 1; i <= CROWD; i++)); do
        home $((40 + i)) "$kind"
        peer "crowd$i" "h$((40 + i))"
        leeches+=("crowd$i")
    done
    group crowdseed gc "${leeches[@]}"
    run crowdseed "upload_file $WORK/f.bin gc" >/dev/null
    local start l cpu_before cpu_after homes=() sent_before sent_after
    for ((i = 0; i <= CROWD; i++)); do homes+=($((40 + i))); done
    sent_before=$(uplink_bytes "${homes[@]}" | paste -sd' ')
    start=$(now_ns)
    cpu_before=$(cpu_ticks)
    for l in "${leeches[@]}"; do
        send "$l" "download_file gc f.bin $WORK/$l.bin"
        send "$l" "wait_downloads"
    done
    # One grep a round over the outputs of those still downloading: this loop shares the
    # two cores with the crowd, and a grep per leecher per round cost it several percent.
    local -A finished=()
    local pending=("${leeches[@]}") ended=() t f
    while ((${#pending[@]})); do
        mapfile -t ended < <(
            cd "$WORK" || exit
            grep -l '^\[[CF]\]' "${pending[@]/%/.out}" || true
        )
        t=$(now_ns)
        for f in "${ended[@]}"; do finished[${f%.out}]=$t; done
        pending=()
        for l in "${leeches[@]}"; do [[ -n ${finished[$l]:-} ]] || pending+=("$l"); done
        if ((t - start > 600 * 10 ** 9)); then break; fi
        sleep 0.1
    done
    cpu_after=$(cpu_ticks)
    sent_after=$(uplink_bytes "${homes[@]}" | paste -sd' ')
    local failed=0
    for l in "${leeches[@]}"; do
        if [[ -z ${finished[$l]:-} ]] || ! cmp -s "$WORK/f.bin" "$WORK/$l.bin"; then
            failed=$((failed + 1))
        fi
    done
    python3 - "$start" "$SIZE_MIB" "$RATE" "$CROWD" "$failed" "$kind" "$cpu_before $cpu_after" \
        "$sent_before" "$sent_after" "${finished[@]}" <<'PY'
import sys
start, mib, rate, n, failed, kind, cpu, sent0, sent1 = sys.argv[1:10]
busy0, total0, busy1, total1 = map(int, cpu.split())
sent = [b - a for a, b in zip(map(int, sent0.split()), map(int, sent1.split()))]
times = sorted((int(t) - int(start)) / 1e9 for t in sys.argv[10:])
took = times[-1] if times else float("inf")
f = int(mib) * 1024 * 1024 * 8 / 1e6  # Mbit
u = float(rate)
n = int(n)
bound = max(f / u, n * f / (u + n * u))
print(f"crowd     {n} leechers, {kind} routers: all done in {took:5.2f} s"
      f" (Kumar-Ross {bound:.2f} s; bound 1.25x = {1.25 * bound:.2f} s)"
      f"  {int(failed)} failed  {'ok' if took <= 1.25 * bound and failed == '0' else 'MISSED'}")
if times:
    print(f"          finished: first {times[0]:5.2f} s, median {times[len(times) // 2]:5.2f} s,"
          f" last {times[-1]:5.2f} s")
# Everything on the machine shares its cores with the crowd: the lab's routers and links
# (forwarding, NAT, shaping) as much as the peers.
print(f"          cores busy {100 * (busy1 - busy0) / max(1, total1 - total0):3.0f}% of the time"
      f" from the first download_file to the last finish")
# What crossed the uplinks (frames, headers and acknowledgements included): the seeder's
# in copies of the file, the leechers' beside the least they must send, (N - 1) copies
# when the seeder sends one. Duplicates and the seeder's extra copies show here.
size = int(mib) * 1024 * 1024
if sent:
    print(f"          uplinks: the seeder sent {sent[0] / size:4.2f} copies, the leechers"
          f" {sum(sent[1:]) / 1e6:6.0f} MB ({sum(sent[1:]) / ((n - 1) * size):4.2f}x {n - 1} copies)")
PY
}

head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$WORK/f.bin"
lab_public
# The leechers log each verified piece, with its time (read back by one_download).
export RUST_LOG="${RUST_LOG:-warn},client::download::coordinator=trace"
echo "5.0.0.1:7001" >"$WORK/tracker_info.txt"
start_tracker_in "$LAB-pub" 1 "${TRACKER_ARGS[@]}"
echo "file ${SIZE_MIB} MiB, every uplink ${RATE} Mbit/s (tc tbf), tracker on the public network"

for case in ${CASES//,/ }; do
    case $case in
        direct)
            public_host 1
            home 1 plain
            peer seed_d q1
            peer leech_d h1
            group seed_d gd leech_d
            one_download direct seed_d leech_d gd 1.5 90
            ;;
        mapped)
            home 2 upnp
            public_host 2
            peer seed_m h2
            peer leech_m q2
            group seed_m gm leech_m
            # Wait until the router forwards the seeder's port (miniupnpd's rule).
            for ((i = 0; i < 300; i++)); do
                ip netns exec "$LAB-r2" nft list chain inet filter prerouting_miniupnpd |
                    grep -q dnat && break
                sleep 0.1
            done
            one_download mapped seed_m leech_m gm 1.5 90
            ;;
        reversed)
            home 3 plain
            public_host 3
            peer seed_r h3
            peer leech_r q3
            group seed_r gr leech_r
            one_download reversed seed_r leech_r gr 3 90
            ;;
        punched)
            home 4 plain
            home 5 plain
            peer seed_p h4
            peer leech_p h5
            group seed_p gp leech_p
            one_download punched seed_p leech_p gp 3 90
            ;;
        relayed)
            home 6 random
            home 7 plain
            peer seed_x h6
            peer leech_x h7
            group seed_x gx leech_x
            one_download relayed seed_x leech_x gx 3 80
            ;;
        crowd) crowd ;;
        *) echo "bench-nat.sh: unknown case '$case'" >&2; exit 2 ;;
    esac
done
