#!/usr/bin/env bash
# Tracker replication figures on 127.0.0.1: write latency with one and with two trackers,
# the failover time a client sees when the primary is killed, and the time a restarted
# tracker takes to catch up after missing N writes. Prints key=value lines and a summary.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: scripts/bench-trackers.sh [--writes N] [--missed N] [--keep]

  --writes N   writes timed for the latency figures (default 500)
  --missed N   writes a restarted tracker must catch up on (default 10000)
  --keep       keep the work directory
  -h, --help   show this help
USAGE
}

WRITES=500
MISSED=10000
KEEP=0
while (($#)); do
    case "$1" in
        --writes) WRITES=$2; shift 2 ;;
        --missed) MISSED=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-trackers.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/target/release"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/p2p-bench-trackers.XXXXXX")
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
lib_init
(cd "$ROOT" && cargo build --release --quiet --bins)

# commands FILE PREFIX N: N create_group commands after a login, in FILE.
commands() {
    local file=$1 prefix=$2 n=$3 i
    { echo "login bench pw"; for ((i = 0; i < n; i++)); do echo "create_group $prefix$i"; done; } >"$file"
}

# timed_batch INFO FILE: runs a piped client on FILE; prints the seconds it took.
timed_batch() {
    local info=$1 file=$2 t0
    t0=$(now)
    "$BIN/client" 127.0.0.1:0 "$info" --state-dir "$WORK/batch" <"$file" >"$WORK/batch.out" 2>>"$WORK/batch.log"
    if grep -q '^error: ' "$WORK/batch.out"; then
        echo "bench-trackers.sh: a write failed: $(grep -m1 '^error: ' "$WORK/batch.out")" >&2
        return 1
    fi
    echo "$(now) - $t0" | bc -l
}

setup_user() {
    printf 'create_user bench pw\n' | "$BIN/client" 127.0.0.1:0 "$1" --state-dir "$WORK/batch" >/dev/null 2>&1
}

# 1. Write latency, one tracker.
mkdir -p "$WORK/one"
WORK_ALL=$WORK
WORK="$WORK_ALL/one"
write_tracker_info 1
# Key derivation is not what is measured here: keep logins cheap.
start_tracker 1 --kdf-iterations 1000
wait_for "$WORK/tracker1.out" "serving as"
setup_user "$WORK/tracker_info.txt"
commands "$WORK/writes.txt" one "$WRITES"
one_s=$(timed_batch "$WORK/tracker_info.txt" "$WORK/writes.txt")
kill9 tracker1

# 2. Write latency, two trackers (every write is on both disks before it is acknowledged).
mkdir -p "$WORK_ALL/two"
WORK="$WORK_ALL/two"
write_tracker_info 2
for id in 1 2; do
    mkfifo "$WORK/tracker$id.in"
done
# Trackers here read 'status' from a FIFO, so they are started by hand.
start_fifo_tracker() {
    local id=$1
    : >"$WORK/tracker$id.out"
    "$BIN/tracker" "$WORK/tracker_info.txt" "$id" --data-dir "$WORK/tracker$id" --kdf-iterations 1000 \
        <"$WORK/tracker$id.in" >>"$WORK/tracker$id.out" 2>>"$WORK/tracker$id.log" &
    PID[tracker$id]=$!
    local fd
    exec {fd}>"$WORK/tracker$id.in"
    FD[tracker$id]=$fd
    wait_for "$WORK/tracker$id.out" "serving as" 60
}
start_fifo_tracker 1
start_fifo_tracker 2
setup_user "$WORK/tracker_info.txt"
commands "$WORK/writes.txt" two "$WRITES"
two_s=$(timed_batch "$WORK/tracker_info.txt" "$WORK/writes.txt")

# 3. Failover time: kill the primary, then time one write through the client.
commands "$WORK/one-write.txt" failover 1
kill -9 "${PID[tracker1]}"
failover_s=$(timed_batch "$WORK/tracker_info.txt" "$WORK/one-write.txt")
wait "${PID[tracker1]}" 2>/dev/null || true
unset "PID[tracker1]"

# 4. Catch-up: tracker 1 misses MISSED writes, then restarts.
commands "$WORK/missed.txt" missed "$MISSED"
missed_write_s=$(timed_batch "$WORK/tracker_info.txt" "$WORK/missed.txt")
t0=$(now)
start_fifo_tracker 1
catch_up_s=$(echo "$(now) - $t0" | bc -l)
echo status >&"${FD[tracker1]}"
echo status >&"${FD[tracker2]}"
wait_for "$WORK/tracker1.out" "digest="
wait_for "$WORK/tracker2.out" "digest="
d1=$(grep -o 'digest=.*' "$WORK/tracker1.out" | tail -n1)
d2=$(grep -o 'digest=.*' "$WORK/tracker2.out" | tail -n1)
same=0
[[ $d1 == "$d2" ]] && same=1
WORK=$WORK_ALL

ms() { echo "scale=2; $1 * 1000 / $2" | bc -l; }
cat <<RESULT
writes=$WRITES
write_latency_ms_1_tracker=$(ms "$one_s" "$WRITES")
write_latency_ms_2_trackers=$(ms "$two_s" "$WRITES")
failover_seconds=$(printf '%.3f' "$failover_s")
missed_writes=$MISSED
missed_writes_seconds=$(printf '%.3f' "$missed_write_s")
catch_up_seconds=$(printf '%.3f' "$catch_up_s")
digests_equal_after_catch_up=$same
RESULT
echo
echo "== summary"
echo "write latency (create_group, one client, sequential): $(ms "$one_s" "$WRITES") ms with 1 tracker, $(ms "$two_s" "$WRITES") ms with 2"
echo "failover seen by a client (kill -9 of the primary to its next write done): $(printf '%.3f' "$failover_s") s (includes client start-up)"
echo "restart and catch-up after $MISSED missed writes: $(printf '%.3f' "$catch_up_s") s to serving; digests equal: $same"
