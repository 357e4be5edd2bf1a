#!/usr/bin/env bash
# Launches a multi-peer swarm on 127.0.0.1 and runs a scenario through it: T replicated
# trackers, N peers each in its own directory with its own state, every peer driven through
# a FIFO on its stdin. Waits on printed lines, never on fixed sleeps; logs every process;
# stops every process it started (and only those) on exit or Ctrl-C; prints a summary.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: scripts/swarm.sh SCENARIO [options]

Scenarios:
  share    peer p0 uploads a file; every other peer joins the group and downloads it in
           parallel; every copy is checked with sha1sum
  flash    a flash crowd: one seeder with a capped upload rate, every other peer downloads
           at once; shows how many pieces each peer served (leechers feed each other)
  churn    like share, while peers and trackers die: a leecher is killed (kill -9) and
           restarted (it resumes), another quits and comes back, the leading tracker is
           killed and restarted (the others, a majority, elect a new leader); every
           download must still end intact

Options:
  --peers N          peers, seeder included (default 4)
  --trackers T       trackers (default 3; a majority of them must be up to write)
  --size MIB         size of the generated file (default 16)
  --file PATH        share this file instead of a generated one
  --seed-rate BPS    cap the seeder's upload, bytes/s (default: 20000000 for flash,
                     4000000 for churn, unlimited for share)
  --bin DIR          use the tracker and client binaries in DIR (default: build
                     \$CARGO_TARGET_DIR/release, or target/release, first)
  --work DIR         keep state and logs in DIR (default: a new temporary directory)
  --keep             keep the work directory after a successful run
  --web              peer p1 (a leecher) serves the dashboard on 127.0.0.1; its URL is
                     printed: watch its piece map fill from the seeder and the other
                     leechers. At a terminal the script waits for Enter before the
                     downloads start and again before it stops everything
  -h, --help         show this help

Output ends with a table: per peer its role, time to complete, MB/s, pieces received
from the seeder and from other peers, and pieces it served; then totals, and how many
copies of the file the seeder served (pieces it served / pieces in the file).
USAGE
}

SCENARIO=
PEERS=4
TRACKERS=3
SIZE_MIB=16
FILE=
SEED_RATE=
BIN=
WORK=
KEEP=0
WEB=0
while (($#)); do
    case "$1" in
        share|flash|churn) SCENARIO=$1; shift ;;
        --peers) PEERS=$2; shift 2 ;;
        --trackers) TRACKERS=$2; shift 2 ;;
        --size) SIZE_MIB=$2; shift 2 ;;
        --file) FILE=$2; shift 2 ;;
        --seed-rate) SEED_RATE=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --web) WEB=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "swarm.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[[ -n $SCENARIO ]] || { echo "swarm.sh: no scenario given" >&2; usage >&2; exit 2; }
((PEERS >= 2)) || { echo "swarm.sh: need at least 2 peers" >&2; exit 2; }
((TRACKERS >= 1)) || { echo "swarm.sh: need at least 1 tracker" >&2; exit 2; }
if [[ $SCENARIO == churn ]] && ((PEERS < 4 || TRACKERS < 3)); then
    echo "swarm.sh: churn needs at least 4 peers and 3 trackers (a majority outlives one)" >&2
    exit 2
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z $BIN ]]; then
    (cd "$ROOT" && cargo build --release --quiet --bins)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
fi
if [[ -n $WORK ]]; then
    mkdir -p "$WORK"
    KEEP=1
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/p2p-swarm.XXXXXX")
fi
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
lib_init

say() { printf '%s\n' "$*"; }

if [[ -z $SEED_RATE ]]; then
    case $SCENARIO in
        flash) SEED_RATE=20000000 ;;
        churn) SEED_RATE=4000000 ;;
        *) SEED_RATE=0 ;;
    esac
fi

say "== $SCENARIO: $TRACKERS trackers, $PEERS peers, work directory $WORK"
write_tracker_info "$TRACKERS"
for ((t = 1; t <= TRACKERS; t++)); do start_tracker "$t"; done
for ((t = 1; t <= TRACKERS; t++)); do wait_for "$WORK/tracker$t.out" "serving as" 60; done

seed_opts=()
((SEED_RATE > 0)) && seed_opts=(--max-upload-rate "$SEED_RATE")
start_peer p0 "${seed_opts[@]}"
for ((i = 1; i < PEERS; i++)); do
    if ((WEB && i == 1)); then
        start_peer p1 --web 127.0.0.1:0
        # Before any command: its output lines are counted from here on.
        wait_for "$WORK/p1.out" "dashboard at"
    else
        start_peer "p$i"
    fi
done
if ((WEB)); then
    say "p1's $(grep -m1 'dashboard at' "$WORK/p1.out")  <- open it to watch p1's download"
fi
declare -A ADDR
for ((i = 0; i < PEERS; i++)); do
    ADDR[p$i]=$(grep -o 'listening on .*' "$WORK/p$i.out" | head -n1 | cut -d' ' -f3)
done

for ((i = 0; i < PEERS; i++)); do
    quiet_run "p$i" "create_user p$i pw-p$i"
    quiet_run "p$i" "login p$i pw-p$i"
done
quiet_run p0 "create_group swarm"
for ((i = 1; i < PEERS; i++)); do
    quiet_run "p$i" "join_group swarm"
    quiet_run p0 "accept_request swarm p$i"
done

if [[ -z $FILE ]]; then
    FILE="$WORK/swarm-$SIZE_MIB.bin"
    head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$FILE"
fi
NAME=$(basename "$FILE")
SUM=$(sha1sum <"$FILE" | cut -d' ' -f1)
run p0 "upload_file '$FILE' swarm" 1 600

if ((WEB)) && [[ -t 0 ]]; then
    read -r -p "open p1's dashboard, then press Enter to start the downloads " _ || true
fi
for ((i = 1; i < PEERS; i++)); do
    mkdir -p "$WORK/p$i-files"
    send "p$i" "download_file swarm '$NAME' $WORK/p$i-files"
done
for ((i = 1; i < PEERS; i++)); do wait_for "$WORK/p$i.out" "downloading $NAME"; done
say "$((PEERS - 1)) downloads started"

# restart_peer NAME: starts peer NAME again on its state directory, where its last run
# kept its session: it logs in again by itself, and its unfinished download resumes.
restart_peer() {
    local name=$1
    start_peer "$name"
    ADDR[$name]=$(grep -o 'listening on .*' "$WORK/$name.out" | tail -n1 | cut -d' ' -f3)
    wait_for "$WORK/$name.out" "logged in as $name (resumed)" 60
}

# pieces NAME: how many pieces peer NAME's download has verified (from show_downloads).
pieces() {
    local before
    before=$(lines "$1")
    send "$1" "show_downloads"
    wait_for_lines "$1" $((before + 1))
    tail -n +"$((before + 1))" "$WORK/$1.out" | grep -oE '\(([0-9]+)/' | head -n1 | tr -dc '0-9'
}

# wait_for_lines NAME N: waits until peer NAME has printed N lines.
wait_for_lines() {
    local i
    for ((i = 0; i < 600; i++)); do
        (($(lines "$1") >= $2)) && return 0
        sleep 0.05
    done
    return 1
}

if [[ $SCENARIO == churn ]]; then
    # Let p1 get a quarter of the file first, so that its restart has something to resume.
    total=$(( ($(stat -c %s "$FILE") + 524287) / 524288 ))
    for ((k = 0; k < 300; k++)); do
        have=$(pieces p1)
        ((${have:-0} * 4 >= total)) && break
    done
    run p1 "show_downloads"
    say "-- churn: p1 is killed (kill -9) mid-download"
    kill9 p1
    say "-- churn: p2 quits (exit) mid-download"
    send p2 exit
    wait "${PID[p2]}" 2>/dev/null || true
    unset "PID[p2]"
    close_fd p2
    leader=$(leader_id "$TRACKERS")
    [[ -n $leader ]] || { echo "swarm.sh: no tracker says it leads" >&2; exit 1; }
    say "-- churn: tracker $leader (the leader) is killed (kill -9)"
    kill9 "tracker$leader"
    restart_peer p1
    say "-- churn: p1 restarted; its session and its download resume"
    restart_peer p2
    say "-- churn: p2 restarted; its session and its download resume"
    start_tracker "$leader"
    wait_for "$WORK/tracker$leader.out" "serving as" 60
    say "-- churn: tracker $leader restarted: $(tail -n1 "$WORK/tracker$leader.out")"
fi

for ((i = 1; i < PEERS; i++)); do
    before=$(lines "p$i")
    send "p$i" "wait_downloads"
    for _ in $(seq 12000); do
        (($(lines "p$i") > before)) && break
        sleep 0.05
    done
    tail -n +"$((before + 1))" "$WORK/p$i.out" | grep -m1 "\] $NAME" >"$WORK/p$i.result" || true
done

# Summary: parse every [C] line; pieces received from an address are pieces that peer served.
declare -A SERVED NAME_OF
for ((i = 0; i < PEERS; i++)); do NAME_OF[${ADDR[p$i]}]="p$i"; SERVED[p$i]=0; done
failed=0
rows=()
for ((i = 1; i < PEERS; i++)); do
    line=$(cat "$WORK/p$i.result")
    file="$WORK/p$i-files/$NAME"
    if [[ $line != "[C]"* ]] || [[ $(sha1sum <"$file" | cut -d' ' -f1) != "$SUM" ]]; then
        failed=$((failed + 1))
        rows+=("$(printf '%-6s %-8s %s' "p$i" "leecher" "FAILED: ${line:-no result}")")
        continue
    fi
    secs=$(sed -E 's/.* bytes in ([0-9.]+) s.*/\1/' <<<"$line")
    rate=$(sed -E 's/.* s, ([0-9.]+) MB\/s.*/\1/' <<<"$line")
    resumed=$(grep -oE '[0-9]+ pieces resumed' <<<"$line" | cut -d' ' -f1 || true)
    from_seed=0
    from_peers=0
    read -ra sources <<<"$(sed -E 's/.*pieces from (.*)\)$/\1/' <<<"$line")"
    for kv in "${sources[@]}"; do
        addr=${kv%=*}
        addr=${addr##*@} # peers read user@addr since issue 10
        n=${kv##*=}
        who=${NAME_OF[$addr]:-}
        if [[ -z $who ]]; then
            # An address of an earlier run of a restarted peer.
            who=unknown
        fi
        [[ $who != unknown ]] && SERVED[$who]=$((${SERVED[$who]} + n))
        if [[ $who == p0 ]]; then from_seed=$((from_seed + n)); else from_peers=$((from_peers + n)); fi
    done
    rows+=("$(printf '%-6s %-8s %8s %9s %9s %10s %8s' "p$i" leecher "$secs" "$rate" "$from_seed" "$from_peers" "${resumed:-0}")")
done

say
say "== summary: $NAME ($(stat -c %s "$FILE") bytes, sha1 $SUM)"
printf '%-6s %-8s %8s %9s %9s %10s %8s %7s\n' peer role "secs" "MB/s" "from-seed" "from-peers" resumed served
printf '%-6s %-8s %8s %9s %9s %10s %8s %7s\n' p0 seeder - - - - - "${SERVED[p0]}"
for ((i = 1; i < PEERS; i++)); do printf '%s %7s\n' "${rows[$((i - 1))]}" "${SERVED[p$i]}"; done
total_peers=0
for ((i = 1; i < PEERS; i++)); do total_peers=$((total_peers + ${SERVED[p$i]})); done
say "totals: $((PEERS - 1 - failed)) of $((PEERS - 1)) copies intact; pieces served by the seeder ${SERVED[p0]}, by leechers $total_peers"
n_pieces=$(( ($(stat -c %s "$FILE") + 524287) / 524288 ))
if ((n_pieces > 0)); then
    say "seeder copies: $(printf '%.2f' "$(echo "${SERVED[p0]} / $n_pieces" | bc -l)") (${SERVED[p0]} pieces served of a $n_pieces-piece file)"
fi
if ((WEB)) && [[ -t 0 ]]; then
    read -r -p "p1's dashboard stays up: press Enter to stop everything " _ || true
fi
if ((failed > 0)); then
    say "swarm.sh: $failed download(s) failed or differ"
    exit 1
fi
