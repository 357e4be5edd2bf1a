#!/usr/bin/env bash
# Benchmarks on this machine, all on 127.0.0.1: upload_file hashing throughput, download
# throughput from 1 and from N seeders, and the downloader's peak RSS, each beside sha1sum
# and cat of the same file; then, if installed, the same download with aria2c as the
# yardstick (scripts/bench-aria2.sh). Prints key=value lines and a summary.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: scripts/bench.sh [--size MIB] [--seeders N] [--no-aria2] [--no-flash] [--keep]

  --size MIB     size of the random test file (default 1024)
  --seeders N    seeders for the multi-seeder download (default 3)
  --no-aria2     skip the aria2c yardstick
  --no-flash     skip the flash-crowd figure (one seeder capped at 50 MB/s, 8 leechers
                 of a 256 MiB file, beside one leecher alone)
  --keep         keep the work directory
  -h, --help     show this help
USAGE
}

SIZE_MIB=1024
SEEDERS=3
ARIA2=1
FLASH=1
KEEP=0
while (($#)); do
    case "$1" in
        --size) SIZE_MIB=$2; shift 2 ;;
        --seeders) SEEDERS=$2; shift 2 ;;
        --no-aria2) ARIA2=0; shift ;;
        --no-flash) FLASH=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/target/release"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/p2p-bench.XXXXXX")
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
lib_init

(cd "$ROOT" && cargo build --release --quiet --bins)

BYTES=$((SIZE_MIB * 1024 * 1024))
FILE="$WORK/bench.bin"
head -c "$BYTES" /dev/urandom >"$FILE"
cat "$FILE" >/dev/null # warm the page cache, as for every measurement below

# seconds COMMAND...: wall time of COMMAND in seconds.
seconds() {
    local t0 t1
    t0=$(now)
    "$@" >/dev/null
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}
mbps() { echo "scale=1; $BYTES / $1 / 1000000" | bc -l; }
fmt() { printf '%.3f' "$1"; }

sha1sum_s=$(seconds sha1sum "$FILE")
cat_s=$(seconds cat "$FILE")

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
    quiet_run "$name" "download_file bench bench.bin $WORK/$name-files"
    quiet_run "$name" "wait_downloads" 1 600
    echo "$(now) - $t0" | bc -l
}
rss_kib() { awk '/VmHWM/ { print $2 }' "/proc/${PID[$1]}/status"; }

one_s=$(download leech1)
one_rss=$(rss_kib leech1)
cmp -s "$FILE" "$WORK/leech1-files/bench.bin" || { echo "bench.sh: leech1's copy differs" >&2; exit 1; }
tail -n1 "$WORK/leech1.out" >"$WORK/leech1.result"

for ((i = 2; i <= SEEDERS; i++)); do
    mkdir -p "$WORK/seed$i-files"
    ln "$FILE" "$WORK/seed$i-files/bench.bin"
    quiet_run "seed$i" "upload_file $WORK/seed$i-files/bench.bin bench" 1 600
done
many_s=$(download leechN)
many_rss=$(rss_kib leechN)
cmp -s "$FILE" "$WORK/leechN-files/bench.bin" || { echo "bench.sh: leechN's copy differs" >&2; exit 1; }

cat <<RESULT
file_mib=$SIZE_MIB
sha1sum_seconds=$(fmt "$sha1sum_s")
cat_seconds=$(fmt "$cat_s")
upload_hash_seconds=$(fmt "$upload_s")
download_1_seeder_seconds=$(fmt "$one_s")
download_${SEEDERS}_seeders_seconds=$(fmt "$many_s")
downloader_peak_rss_kib_1_seeder=$one_rss
downloader_peak_rss_kib_${SEEDERS}_seeders=$many_rss
RESULT

echo
echo "== summary ($SIZE_MIB MiB, MB = 10^6 bytes)"
printf '%-34s %8.3f s %8.1f MB/s\n' "sha1sum" "$sha1sum_s" "$(mbps "$sha1sum_s")"
printf '%-34s %8.3f s %8.1f MB/s\n' "cat > /dev/null" "$cat_s" "$(mbps "$cat_s")"
printf '%-34s %8.3f s %8.1f MB/s  (%.1fx sha1sum)\n' "upload_file (hashing)" "$upload_s" "$(mbps "$upload_s")" \
    "$(echo "$sha1sum_s / $upload_s" | bc -l)"
printf '%-34s %8.3f s %8.1f MB/s  peak RSS %d MiB\n' "download from 1 seeder" "$one_s" "$(mbps "$one_s")" $((one_rss / 1024))
printf '%-34s %8.3f s %8.1f MB/s  peak RSS %d MiB\n' "download from $SEEDERS seeders" "$many_s" "$(mbps "$many_s")" $((many_rss / 1024))
echo "leechN: $(tail -n1 "$WORK/leechN.out")"

if [[ $ARIA2 == 1 ]]; then
    if [[ -x $ROOT/scripts/bench-aria2.sh ]]; then
        echo
        echo "== yardstick: aria2c from $SEEDERS seeders (scripts/bench-aria2.sh)"
        status=0
        bash "$ROOT/scripts/bench-aria2.sh" --size "$SIZE_MIB" --seeders "$SEEDERS" --file "$FILE" || status=$?
        if [[ $status == 3 ]]; then echo "aria2 yardstick skipped: its tools are not installed (see above)"; fi
    fi
fi

if [[ $FLASH == 1 ]]; then
    echo
    echo "== flash crowd: one seeder capped at 50 MB/s, a 256 MiB file (scripts/swarm.sh)"
    # slowest_secs OUTPUT: the largest per-peer time in a swarm.sh summary table.
    slowest_secs() { awk '$2 == "leecher" { if ($3 > m) m = $3 } END { print m }' <<<"$1"; }
    alone=$(bash "$ROOT/scripts/swarm.sh" share --peers 2 --trackers 1 --size 256 --seed-rate 50000000 --bin "$BIN")
    crowd=$(bash "$ROOT/scripts/swarm.sh" flash --peers 9 --trackers 1 --size 256 --seed-rate 50000000 --bin "$BIN")
    alone_s=$(slowest_secs "$alone")
    crowd_s=$(slowest_secs "$crowd")
    echo "$crowd" | sed -n '/== summary/,$p'
    echo "flash_1_leecher_seconds=$alone_s"
    echo "flash_8_leechers_seconds=$crowd_s"
    printf 'one leecher alone: %s s; 8 leechers at once: %s s (%.1fx the time for 8x the data)\n' \
        "$alone_s" "$crowd_s" "$(echo "$crowd_s / $alone_s" | bc -l)"
fi
