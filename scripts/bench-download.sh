#!/usr/bin/env bash
# One round of scripts/bench.sh's transfer figures with the binaries in --bin: a tracker,
# N seeders and two leechers on 127.0.0.1; times upload_file (hashing), a download from one
# seeder and one from N seeders, and the leechers' peak RSS. Prints key=value lines.
# bench.sh runs it for the release binaries and for the bench-only plaintext baseline.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: scripts/bench-download.sh --bin DIR --file FILE [--seeders N] [--keep]

  --bin DIR      where the tracker and client binaries are
  --file FILE    the file to share (its page cache should be warm)
  --seeders N    seeders for the multi-seeder download (default 3)
  --keep         keep the work directory
  -h, --help     show this help
USAGE
}

BIN=""
FILE=""
SEEDERS=3
KEEP=0
while (($#)); do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --file) FILE=$2; shift 2 ;;
        --seeders) SEEDERS=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-download.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[[ -n $BIN && -n $FILE ]] || { usage >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/p2p-bench-dl.XXXXXX")
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
lib_init

write_tracker_info 1
start_tracker 1
for ((i = 1; i <= SEEDERS; i++)); do start_peer "seed$i"; done
start_peer leech1
start_peer leechN
all=(leech1 leechN)
for ((i = 1; i <= SEEDERS; i++)); do all+=("seed$i"); done
for name in "${all[@]}"; do
    quiet_run "$name" "create_user $name pw"
    quiet_run "$name" "login $name pw"
done
quiet_run seed1 "create_group bench"
for name in "${all[@]}"; do
    [[ $name == seed1 ]] && continue
    quiet_run "$name" "join_group bench"
    quiet_run seed1 "accept_request bench $name"
done

# upload_file: hashing every piece (and the file digest) on all cores.
t0=$(now)
quiet_run seed1 "upload_file $FILE bench" 1 600
upload_s=$(echo "$(now) - $t0" | bc -l)

# download NAME: times download_file + wait_downloads on peer NAME.
download() {
    local name=$1 t0
    mkdir -p "$WORK/$name-files"
    t0=$(now)
    quiet_run "$name" "download_file bench $(basename "$FILE") $WORK/$name-files"
    quiet_run "$name" "wait_downloads" 1 600
    echo "$(now) - $t0" | bc -l
}
rss_kib() { awk '/VmHWM/ { print $2 }' "/proc/${PID[$1]}/status"; }

one_s=$(download leech1)
one_rss=$(rss_kib leech1)
cmp -s "$FILE" "$WORK/leech1-files/$(basename "$FILE")" || { echo "bench-download.sh: leech1's copy differs" >&2; exit 1; }

for ((i = 2; i <= SEEDERS; i++)); do
    mkdir -p "$WORK/seed$i-files"
    ln "$FILE" "$WORK/seed$i-files/$(basename "$FILE")"
    quiet_run "seed$i" "upload_file $WORK/seed$i-files/$(basename "$FILE") bench" 1 600
done
many_s=$(download leechN)
many_rss=$(rss_kib leechN)
cmp -s "$FILE" "$WORK/leechN-files/$(basename "$FILE")" || { echo "bench-download.sh: leechN's copy differs" >&2; exit 1; }

cat <<RESULT
upload_hash_seconds=$upload_s
download_1_seeder_seconds=$one_s
download_n_seeders_seconds=$many_s
downloader_peak_rss_kib_1_seeder=$one_rss
downloader_peak_rss_kib_n_seeders=$many_rss
leechN_result=$(tail -n1 "$WORK/leechN.out")
RESULT
