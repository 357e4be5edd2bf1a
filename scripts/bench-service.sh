#!/usr/bin/env bash
# Issue 20's service figures: a peer run as a service (`client --serve`, standard input
# closed) that shares N files (default 100), after a restart: the time from its start to
# "logged in as ... (resumed)" (goal: back and serving within 1 s), and its memory and
# threads once idle (goal: bounded, not growing with time). One tracker on 127.0.0.1.
set -euo pipefail
usage() {
    cat <<USAGE
Usage: scripts/bench-service.sh [--shares N] [--idle SECS] [--bin DIR] [--keep]
  --shares N   files the peer shares (default 100)
  --idle SECS  how long the idle service is watched, sampling its memory (default 20)
  --bin DIR    the tracker and client binaries (default: build release into target/)
  --keep       keep the work directory
  -h, --help   show this help
USAGE
}
SHARES=100
IDLE=20
BIN=""
KEEP=0
while (($#)); do
    case "$1" in
        --shares) SHARES=$2; shift 2 ;;
        --idle) IDLE=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-service.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z $BIN ]]; then
    (cd "$ROOT" && cargo build --release --quiet --bins)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/p2p-bench-service.XXXXXX")
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
lib_init

write_tracker_info 1
start_tracker 1
wait_for "$WORK/tracker1.out" "serving as"
start_peer svc
quiet_run svc "create_user svc pw"
quiet_run svc "login svc pw"
quiet_run svc "create_group g"
mkdir -p "$WORK/files"
for ((i = 0; i < SHARES; i++)); do
    head -c $((4096 + i)) /dev/urandom >"$WORK/files/f$i.bin"
    quiet_run svc "upload_file $WORK/files/f$i.bin g"
done
# `exit` keeps the session for the service.
send svc exit
wait "${PID[svc]}" 2>/dev/null || true
unset "PID[svc]"
close_fd svc

t0=$(now)
"$BIN/client" 127.0.0.1:0 "$WORK/tracker_info.txt" --state-dir "$WORK/svc" --serve \
    </dev/null >"$WORK/svc-serve.out" 2>"$WORK/svc-serve.log" &
PID[svc-serve]=$!
wait_for "$WORK/svc-serve.out" "(resumed)"
resume_s=$(echo "$(now) - $t0" | bc -l)
pid=${PID[svc-serve]}
rss() { awk '/VmRSS/ { print $2 }' "/proc/$pid/status"; }
first=$(rss)
peak=$first
for ((s = 0; s < IDLE; s++)); do
    sleep 1
    now_kib=$(rss)
    ((now_kib > peak)) && peak=$now_kib
done
last=$(rss)
threads=$(awk '/Threads/ { print $2 }' "/proc/$pid/status")
fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
printf 'shares=%s\nresume_seconds=%.3f\nrss_kib_first=%s\nrss_kib_after_%ss=%s\nrss_kib_peak=%s\nthreads=%s\nfds=%s\n' \
    "$SHARES" "$resume_s" "$first" "$IDLE" "$last" "$peak" "$threads" "$fds"
echo "== summary: a --serve peer sharing $SHARES files, restarted"
printf '  back, logged in and sharing: %.3f s after its start (goal: within 1 s)\n' "$resume_s"
printf '  idle memory: %s KiB at first, %s KiB after %s s, peak %s KiB; %s threads, %s descriptors (goal: bounded)\n' \
    "$first" "$last" "$IDLE" "$peak" "$threads" "$fds"
