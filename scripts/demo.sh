#!/usr/bin/env bash
# A local demo of the group file-sharing system: builds the release binaries, starts three
# trackers (one Raft group) and four peers on 127.0.0.1, and walks through accounts, groups,
# join requests, sharing and parallel downloads, with the leading tracker killed (kill -9)
# in the middle of the downloads: the other two elect a new leader, nothing is lost, and
# the killed one comes back and catches up. Every process it starts is stopped on exit; logs stay in the work
# directory (with --keep, or after a failure).
set -euo pipefail

usage() {
    cat <<USAGE
Usage: scripts/demo.sh [--keep] [--web]

Builds target/release/{tracker,client}, then runs a scripted session of three trackers
and four peers on 127.0.0.1, printing every command and its output.

Options:
  --keep      keep the work directory (state, logs) instead of deleting it
  --web       dave serves the dashboard on 127.0.0.1 (its URL is printed): watch its
              piece map fill from several peers; at a terminal the demo then waits for
              Enter before it stops everything
  -h, --help  show this help

Environment:
  DEMO_PORT_BASE  the first tracker's port; the others use the next ones (default: random)
USAGE
}

KEEP=0
WEB=0
for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --keep) KEEP=1 ;;
        --web) WEB=1 ;;
        *) echo "demo.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/p2p-demo.XXXXXX")
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
lib_init

step() { printf '\n== %s\n' "$*"; }

step "building release binaries"
(cd "$ROOT" && cargo build --release --quiet --bins)

PEERS=(alice bob carol dave)
step "starting three trackers (they elect a leader by majority and replicate every change) and ${#PEERS[@]} peers in $WORK"
write_tracker_info 3 "${DEMO_PORT_BASE:-$((20000 + RANDOM % 12000))}"
for id in 1 2 3; do start_tracker "$id"; done
for id in 1 2 3; do wait_for "$WORK/tracker$id.out" "serving as"; sed "s/^/tracker $id: /" "$WORK/tracker$id.out"; done
echo "tracker_info.txt was written as plain IP:PORT lines; each tracker added its public key at"
echo "first start, and from now on every link (clients, trackers, peers) is a Noise channel in"
echo "which the other side must prove the key listed here:"
sed 's/^/    /' "$WORK/tracker_info.txt"
start_peer alice --max-upload-rate 8000000
for name in bob carol; do start_peer "$name"; done
if ((WEB)); then start_peer dave --web 127.0.0.1:0; else start_peer dave; fi
for name in "${PEERS[@]}"; do echo "$name: $(head -n1 "$WORK/$name.out")"; done
if ((WEB)); then
    wait_for "$WORK/dave.out" "dashboard at"
    echo "dave's $(grep -m1 'dashboard at' "$WORK/dave.out")  <- open it now, to watch dave's downloads"
fi

step "accounts (passwords are stored as salted PBKDF2-HMAC-SHA1)"
for name in "${PEERS[@]}"; do run "$name" "create_user $name pw-$name"; done
run carol "login carol wrong-password"
for name in "${PEERS[@]}"; do run "$name" "login $name pw-$name"; done

step "alice creates a group and shares a 24 MiB file (SHA1 of every 512 KiB piece, on all cores)"
echo "(alice serves at most 8 MB/s, so that the downloaders visibly trade pieces with each other)"
head -c $((24 * 1024 * 1024)) /dev/urandom >"$WORK/holiday.bin"
run alice "create_group photos"
run alice "upload_file $WORK/holiday.bin photos"

step "bob, carol and dave ask to join; alice accepts bob and dave, rejects carol"
for name in bob carol dave; do run "$name" "join_group photos"; done
run alice "list_requests photos" 3
run alice "accept_request photos bob"
run alice "accept_request photos dave"
run alice "reject_request photos carol"
run bob "list_my_groups"
run bob "list_files photos"
run carol "list_files photos"
run carol "download_file photos holiday.bin $WORK"

step "carol asks again, and this time alice accepts"
run carol "join_group photos"
run alice "accept_request photos carol"

if ((WEB)) && [[ -t 0 ]]; then
    # The downloads take seconds: give the watcher time to open the dashboard first.
    read -r -p "open dave's dashboard, then press Enter to start the downloads " _ || true
fi
step "bob, carol and dave download at once; each shares every verified piece with the others at once"
for name in bob carol dave; do
    mkdir -p "$WORK/$name-files"
    run "$name" "download_file photos holiday.bin $WORK/$name-files"
done
for name in bob carol dave; do run "$name" "show_downloads"; done

LEADER=$(leader_id 3)
[[ -n $LEADER ]] || { echo "demo.sh: no tracker says it leads" >&2; exit 1; }
step "tracker $LEADER (the leader) crashes (kill -9) while they download; the other two elect a new leader"
kill9 "tracker$LEADER"
run carol "create_group carols-own" 1 30
run alice "list_groups" 2
# The write above went through the new leader, which printed its "serving as" line.
NEW_LEADER=$(leader_id 3)
for id in 1 2 3; do
    ((id == LEADER)) && continue
    echo "tracker $id: $(grep 'serving as' "$WORK/tracker$id.out" | tail -n1)"
done
[[ $NEW_LEADER != "$LEADER" ]] || { echo "demo.sh: no new leader" >&2; exit 1; }

step "the downloads complete; tracker $LEADER restarts, catches up from the new leader and serves again"
# named: replaces each peer's `user@address` (or bare address) by its name, to read who
# served whom.
named() {
    local args=() name addr
    for name in "${PEERS[@]}"; do
        addr=$(grep -o 'listening on .*' "$WORK/$name.out" | head -n1 | cut -d' ' -f3)
        args+=(-e "s/[[:alnum:]_.-]*@$addr=/$name=/g" -e "s/$addr=/$name=/g")
    done
    sed "${args[@]}"
}
for name in bob carol dave; do run "$name" "wait_downloads" 1 120 | named; done
start_tracker "$LEADER"
wait_for "$WORK/tracker$LEADER.out" "serving as"
echo "tracker $LEADER: $(tail -n1 "$WORK/tracker$LEADER.out")"
run alice "list_files photos"

step "checksums: every copy is identical"
(cd "$WORK" && sha1sum holiday.bin bob-files/holiday.bin carol-files/holiday.bin dave-files/holiday.bin)

if ((WEB)) && [[ -t 0 ]]; then
    step "dave's dashboard stays up: $(grep -m1 -o 'http://.*' "$WORK/dave.out")"
    read -r -p "press Enter to stop everything " _ || true
fi

step "done"
for name in "${PEERS[@]}"; do send "$name" exit; done
for name in "${PEERS[@]}"; do wait "${PID[$name]}" 2>/dev/null || true; unset "PID[$name]"; done
echo "every acknowledged change survived the crash, every copy is intact; see README.md for more"
