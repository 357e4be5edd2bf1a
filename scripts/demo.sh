#!/usr/bin/env bash
# A local demo of the group file-sharing system: builds the release binaries, starts two
# trackers and three peers on 127.0.0.1, and walks through accounts, groups, join requests
# and file announcements, including a tracker crash (kill -9) and restart that loses
# nothing. Every process it starts is stopped on exit; logs stay in the work directory.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: scripts/demo.sh [--keep]

Builds target/release/{tracker,client}, then runs a scripted session of two trackers and
three peers on 127.0.0.1, printing every command and its output.

Options:
  --keep      keep the work directory (state, logs) instead of deleting it
  -h, --help  show this help

Environment:
  DEMO_PORT_BASE  first of the two tracker ports (default: random in 20000-49999)
USAGE
}

KEEP=0
for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --keep) KEEP=1 ;;
        *) echo "demo.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/target/release"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/p2p-demo.XXXXXX")
declare -A PID FD
PORT_BASE=${DEMO_PORT_BASE:-$((20000 + RANDOM % 30000))}

cleanup() {
    local status=$?
    for name in "${!FD[@]}"; do exec {FD[$name]}>&- 2>/dev/null || true; done
    for name in "${!PID[@]}"; do kill "${PID[$name]}" 2>/dev/null || true; done
    for name in "${!PID[@]}"; do wait "${PID[$name]}" 2>/dev/null || true; done
    if [[ $KEEP == 1 || $status != 0 ]]; then
        echo "work directory (state and logs): $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }

# wait_for FILE PATTERN: waits (up to 30 s) until FILE has a line matching PATTERN.
wait_for() {
    local file=$1 pattern=$2
    for _ in $(seq 300); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "demo.sh: timed out waiting for '$pattern' in $file" >&2
    return 1
}

start_tracker() {
    local id=$1
    "$BIN/tracker" "$WORK/tracker_info.txt" "$id" --data-dir "$WORK/tracker$id" \
        </dev/null >"$WORK/tracker$id.out" 2>"$WORK/tracker$id.log" &
    PID[tracker$id]=$!
    wait_for "$WORK/tracker$id.out" "listening on"
    echo "tracker $id: $(cat "$WORK/tracker$id.out")"
}

# start_peer NAME: a client reading commands from a FIFO, its output in NAME.out.
start_peer() {
    local name=$1
    mkfifo "$WORK/$name.in"
    "$BIN/client" 127.0.0.1:0 "$WORK/tracker_info.txt" --state-dir "$WORK/$name" \
        <"$WORK/$name.in" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    PID[$name]=$!
    exec {FD[$name]}>"$WORK/$name.in"
    wait_for "$WORK/$name.out" "listening on"
    echo "$name: $(head -n1 "$WORK/$name.out")"
}

# run NAME COMMAND [LINES]: sends COMMAND to peer NAME and prints the LINES (default 1)
# lines of output it produces.
run() {
    local name=$1 cmd=$2 want=${3:-1} before
    before=$(wc -l <"$WORK/$name.out")
    echo "$cmd" >&"${FD[$name]}"
    for _ in $(seq 300); do
        (( $(wc -l <"$WORK/$name.out") >= before + want )) && break
        sleep 0.1
    done
    printf '%-6s> %s\n' "$name" "$cmd"
    tail -n +"$((before + 1))" "$WORK/$name.out" | sed 's/^/        /'
}

step "building release binaries"
(cd "$ROOT" && cargo build --release --quiet --bins)

step "starting two trackers and three peers in $WORK"
printf '127.0.0.1:%d\n127.0.0.1:%d\n' "$PORT_BASE" "$((PORT_BASE + 1))" >"$WORK/tracker_info.txt"
start_tracker 1
start_tracker 2
for name in alice bob carol; do start_peer "$name"; done

step "accounts"
for name in alice bob carol; do run "$name" "create_user $name pw-$name"; done
run carol "login carol wrong-password"
for name in alice bob carol; do run "$name" "login $name pw-$name"; done

step "alice creates a group and announces a 3 MiB file (hashed in 512 KiB pieces)"
head -c $((3 * 1024 * 1024)) /dev/urandom >"$WORK/holiday.bin"
run alice "create_group photos"
run alice "upload_file $WORK/holiday.bin photos"

step "bob and carol ask to join; alice accepts bob and rejects carol"
run bob "join_group photos"
run carol "join_group photos"
run alice "list_requests photos" 2
run alice "accept_request photos bob"
run alice "reject_request photos carol"
run bob "list_my_groups"
run bob "list_files photos"
run carol "list_files photos"

step "tracker 1 crashes (kill -9) and restarts from its data directory"
kill -9 "${PID[tracker1]}"
wait "${PID[tracker1]}" 2>/dev/null || true
start_tracker 1
run bob "list_files photos"
run alice "list_groups"

step "done"
for name in alice bob carol; do echo exit >&"${FD[$name]}"; done
for name in alice bob carol; do wait "${PID[$name]}" 2>/dev/null || true; unset "PID[$name]"; done
echo "every acknowledged change survived the crash; see README.md for more"
