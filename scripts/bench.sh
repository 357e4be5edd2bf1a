#!/usr/bin/env bash
# Benchmarks on this machine, all on 127.0.0.1: the secure channel's cipher on one core,
# upload_file hashing throughput, download throughput from 1 and from N seeders, and the
# downloader's peak RSS, each beside sha1sum and cat of the same file; the same downloads
# with the bench-only plaintext baseline (records copied, not encrypted), side by side;
# then, if installed, the same N-seeder download with libtorrent (scripts/bench-libtorrent.sh)
# and with aria2c (scripts/bench-aria2.sh) as yardsticks. Prints key=value lines and a summary.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: scripts/bench.sh [--size MIB] [--seeders N] [--rounds N] [--no-libtorrent] [--no-aria2]
                       [--no-flash] [--only-flash] [--flash-mib N] [--flash-rounds N] [--keep]

  --size MIB     size of the random test file (default 1024)
  --seeders N    seeders for the multi-seeder download (default 3)
  --rounds N     rounds of encrypted and plaintext downloads, alternated (default 3);
                 the best of each is reported
  --no-libtorrent  skip the libtorrent yardstick: the same file from N libtorrent seeders,
                 run once after the rounds, with libtorrent's default encryption setting and
                 with RC4 forced (scripts/bench-libtorrent.sh; needs libtorrent's Python
                 bindings, else it says so and is skipped)
  --no-aria2     skip the aria2c yardstick
  --no-flash     skip the flash-crowd figures (one seeder capped at 50 MB/s, 8 and 16
                 leechers of a 256 MiB file, beside one leecher alone; issue 12)
  --only-flash   only the flash-crowd figures
  --flash-mib N  the flash crowd's file size (default 256)
  --flash-rounds N  runs of each flash-crowd scenario; the median is reported (default 3)
  --keep         keep the work directory
  -h, --help     show this help
USAGE
}

SIZE_MIB=1024
SEEDERS=3
ROUNDS=3
LIBTORRENT=1
ARIA2=1
FLASH=1
ONLY_FLASH=0
FLASH_MIB=256
FLASH_ROUNDS=3
KEEP=0
while (($#)); do
    case "$1" in
        --size) SIZE_MIB=$2; shift 2 ;;
        --seeders) SEEDERS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --no-libtorrent) LIBTORRENT=0; shift ;;
        --no-aria2) ARIA2=0; shift ;;
        --no-flash) FLASH=0; shift ;;
        --only-flash) ONLY_FLASH=1; shift ;;
        --flash-mib) FLASH_MIB=$2; shift 2 ;;
        --flash-rounds) FLASH_ROUNDS=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/p2p-bench.XXXXXX")
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
lib_init

(cd "$ROOT" && cargo build --release --quiet --bins)
if [[ $ONLY_FLASH == 0 ]]; then
# The plaintext baseline: the same code with records copied instead of sealed, built into
# its own target directory so that it can never be mistaken for a release binary.
PLAIN_TARGET="$TARGET/bench-plaintext"
(cd "$ROOT" && cargo build --release --quiet --bins --features common/bench-plaintext --target-dir "$PLAIN_TARGET")
PLAIN_BIN="$PLAIN_TARGET/release"
(cd "$ROOT" && cargo build --release --quiet -p common --example cipher_speed)

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
min() { echo "if ($1 < $2) $1 else $2" | bc -l; }
field() { sed -n "s/^$1=//p" <<<"$2"; }

sha1sum_s=$(seconds sha1sum "$FILE")
cat_s=$(seconds cat "$FILE")
cipher=$("$BIN/examples/cipher_speed")

# Encrypted and plaintext rounds alternate, so that both see the same machine state.
best() { if [[ -z $1 ]]; then echo "$2"; else min "$1" "$2"; fi; }
upload_s="" one_s="" many_s="" plain_one_s="" plain_many_s="" one_rss=0 many_rss=0
for ((round = 1; round <= ROUNDS; round++)); do
    out=$(bash "$ROOT/scripts/bench-download.sh" --bin "$BIN" --file "$FILE" --seeders "$SEEDERS")
    upload_s=$(best "$upload_s" "$(field upload_hash_seconds "$out")")
    one_s=$(best "$one_s" "$(field download_1_seeder_seconds "$out")")
    many_s=$(best "$many_s" "$(field download_n_seeders_seconds "$out")")
    rss=$(field downloader_peak_rss_kib_1_seeder "$out"); ((rss > one_rss)) && one_rss=$rss
    rss=$(field downloader_peak_rss_kib_n_seeders "$out"); ((rss > many_rss)) && many_rss=$rss
    leech_result=$(field leechN_result "$out")
    plain=$(P2P_BENCH_PLAINTEXT=1 bash "$ROOT/scripts/bench-download.sh" --bin "$PLAIN_BIN" --file "$FILE" --seeders "$SEEDERS")
    plain_one_s=$(best "$plain_one_s" "$(field download_1_seeder_seconds "$plain")")
    plain_many_s=$(best "$plain_many_s" "$(field download_n_seeders_seconds "$plain")")
done

# The libtorrent yardstick, on the same file in the same session as our rounds.
lt_out="" lt_s="" lt_rc4_s=""
if [[ $LIBTORRENT == 1 ]]; then
    lt_out=$(bash "$ROOT/scripts/bench-libtorrent.sh" --file "$FILE" --seeders "$SEEDERS" --encryption both) \
        || lt_out="libtorrent_skipped=it failed (exit $?, see above)"
    lt_s=$(field libtorrent_seconds "$lt_out")
    lt_rc4_s=$(field libtorrent_rc4_seconds "$lt_out")
fi

cat <<RESULT
file_mib=$SIZE_MIB
$cipher
sha1sum_seconds=$(fmt "$sha1sum_s")
cat_seconds=$(fmt "$cat_s")
upload_hash_seconds=$(fmt "$upload_s")
download_1_seeder_seconds=$(fmt "$one_s")
download_${SEEDERS}_seeders_seconds=$(fmt "$many_s")
plaintext_download_1_seeder_seconds=$(fmt "$plain_one_s")
plaintext_download_${SEEDERS}_seeders_seconds=$(fmt "$plain_many_s")
downloader_peak_rss_kib_1_seeder=$one_rss
downloader_peak_rss_kib_${SEEDERS}_seeders=$many_rss
RESULT
if [[ -n $lt_out ]]; then grep -v '^#' <<<"$lt_out"; fi

echo
echo "== summary ($SIZE_MIB MiB, MB = 10^6 bytes, best of $ROUNDS rounds)"
printf '%-38s %8.3f s %8.1f MB/s\n' "sha1sum" "$sha1sum_s" "$(mbps "$sha1sum_s")"
printf '%-38s %8.3f s %8.1f MB/s\n' "cat > /dev/null" "$cat_s" "$(mbps "$cat_s")"
printf '%-38s %8.3f s %8.1f MB/s  (%.1fx sha1sum)\n' "upload_file (hashing)" "$upload_s" "$(mbps "$upload_s")" \
    "$(echo "$sha1sum_s / $upload_s" | bc -l)"
printf '%-38s %8.3f s %8.1f MB/s  peak RSS %d MiB\n' "download from 1 seeder" "$one_s" "$(mbps "$one_s")" $((one_rss / 1024))
printf '%-38s %8.3f s %8.1f MB/s  peak RSS %d MiB\n' "download from $SEEDERS seeders" "$many_s" "$(mbps "$many_s")" $((many_rss / 1024))
printf '%-38s %8.3f s %8.1f MB/s\n' "plaintext baseline, 1 seeder" "$plain_one_s" "$(mbps "$plain_one_s")"
printf '%-38s %8.3f s %8.1f MB/s\n' "plaintext baseline, $SEEDERS seeders" "$plain_many_s" "$(mbps "$plain_many_s")"
printf 'encryption costs: %.2fx the plaintext time from 1 seeder, %.2fx from %s seeders (budget 1.35x)\n' \
    "$(echo "$one_s / $plain_one_s" | bc -l)" "$(echo "$many_s / $plain_many_s" | bc -l)" "$SEEDERS"
echo "cipher on one core: $(tr '\n' ' ' <<<"$cipher")"
echo "leechN: $leech_result"
if [[ -n $lt_s ]]; then
    lt_version=$(field libtorrent_version "$lt_out")
    echo "yardstick: libtorrent $lt_version, the same file from $SEEDERS libtorrent seeders, one run each," \
        "$(field piece_length_bytes "$lt_out") B pieces, timed to every piece SHA-1-checked and fsynced:"
    printf '%-38s %8.3f s %8.1f MB/s  (ours from %s seeders: %.2fx its time)\n' "libtorrent, default pe (plain data)" \
        "$lt_s" "$(mbps "$lt_s")" "$SEEDERS" "$(echo "$many_s / $lt_s" | bc -l)"
    printf '%-38s %8.3f s %8.1f MB/s  (ours from %s seeders: %.2fx its time)\n' "libtorrent, RC4 forced" \
        "$lt_rc4_s" "$(mbps "$lt_rc4_s")" "$SEEDERS" "$(echo "$many_s / $lt_rc4_s" | bc -l)"
    echo "(libtorrent's RC4 is obfuscation, not authenticated encryption; our links are Noise with AES-GCM)"
elif [[ $LIBTORRENT == 1 ]]; then
    echo "libtorrent yardstick skipped: $(field libtorrent_skipped "$lt_out")"
fi

if [[ $ARIA2 == 1 ]]; then
    if [[ -x $ROOT/scripts/bench-aria2.sh ]]; then
        echo
        echo "== yardstick: aria2c from $SEEDERS seeders (scripts/bench-aria2.sh)"
        status=0
        bash "$ROOT/scripts/bench-aria2.sh" --size "$SIZE_MIB" --seeders "$SEEDERS" --file "$FILE" || status=$?
        if [[ $status == 3 ]]; then echo "aria2 yardstick skipped: its tools are not installed (see above)"; fi
    fi
fi

fi # ONLY_FLASH

if [[ $FLASH == 1 ]]; then
    echo
    echo "== flash crowd (issue 12): one seeder capped at 50 MB/s, a $FLASH_MIB MiB file (scripts/swarm.sh)"
    # slowest_secs OUTPUT: the largest per-peer time in a swarm.sh summary table.
    slowest_secs() { awk '$2 == "leecher" { if ($3 > m) m = $3 } END { print m }' <<<"$1"; }
    # copies OUTPUT: the copies of the file the seeder served.
    copies() { sed -n 's/^seeder copies: \([0-9.]*\).*/\1/p' <<<"$1"; }
    # median NUMBERS...: the median (the lower middle one of an even count).
    median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
    # longest_fsync DIR: the longest completion fsync of the leechers logged in DIR.
    longest_fsync() {
        cat "$1"/p*.log 2>/dev/null | sed -n 's/.*fsync took \([0-9.]*\) s.*/\1/p' | sort -g | tail -1
    }
    # swarm NAME SCENARIO ARGS...: one run, its state and logs in $WORK/NAME (the leechers
    # log how long their completion fsync took).
    swarm() {
        local name=$1
        shift
        RUST_LOG="${RUST_LOG:-warn},client::download=info" bash "$ROOT/scripts/swarm.sh" "$@" \
            --trackers 1 --size "$FLASH_MIB" --seed-rate 50000000 --bin "$BIN" --work "$WORK/$name" --keep
    }
    # The disk alone: N writers of the file at once with O_DIRECT, as N leechers write.
    disk_floor() {
        local n=$1 t0 t1 i
        t0=$(now)
        for ((i = 0; i < n; i++)); do
            dd if=/dev/zero of="$WORK/disk-$i" bs=512K count=$((FLASH_MIB * 2)) oflag=direct status=none &
        done
        wait
        t1=$(now)
        rm -f "$WORK"/disk-*
        echo "$t1 - $t0" | bc -l
    }
    summary=()
    alone_runs=()
    for ((r = 1; r <= FLASH_ROUNDS; r++)); do
        alone=$(swarm "alone-$r" share --peers 2)
        alone_runs+=("$(slowest_secs "$alone")")
        rm -rf "$WORK/alone-$r"
    done
    alone_s=$(median "${alone_runs[@]}")
    echo "flash_1_leecher_seconds=$alone_s (runs: ${alone_runs[*]})"
    for n in 8 16; do
        runs=() copies_runs=() fsyncs=()
        for ((r = 1; r <= FLASH_ROUNDS; r++)); do
            crowd=$(swarm "crowd-$n-$r" flash --peers $((n + 1)))
            echo "$crowd" | sed -n '/== summary/,$p' | grep -v '^work directory'
            runs+=("$(slowest_secs "$crowd")")
            copies_runs+=("$(copies "$crowd")")
            fsyncs+=("$(longest_fsync "$WORK/crowd-$n-$r")")
            rm -rf "$WORK/crowd-$n-$r"
        done
        crowd_s=$(median "${runs[@]}")
        ratio=$(printf '%.2f' "$(echo "$crowd_s / $alone_s" | bc -l)")
        crowd_copies=$(median "${copies_runs[@]}")
        disk_s=$(disk_floor "$n")
        echo "flash_${n}_leechers_seconds=$crowd_s (runs: ${runs[*]})"
        echo "flash_${n}_leechers_ratio=$ratio"
        echo "flash_${n}_leechers_seeder_copies=$crowd_copies (runs: ${copies_runs[*]})"
        echo "flash_${n}_leechers_longest_completion_fsync_seconds=${fsyncs[*]}"
        echo "flash_${n}_disk_floor_seconds=$(printf '%.2f' "$disk_s")"
        summary+=("$(printf '%2d leechers at once: %6.2f s (median of %d), %.2fx one leecher alone (%.2f s) for %dx the data; the seeder served %s copies' \
            "$n" "$crowd_s" "$FLASH_ROUNDS" "$ratio" "$alone_s" "$n" "$crowd_copies")")
        summary+=("$(printf '    the disk alone: %d writers of %d MiB with O_DIRECT take %.2f s (%.2fx); longest completion fsync per run: %s s' \
            "$n" "$FLASH_MIB" "$disk_s" "$(echo "$disk_s / $alone_s" | bc -l)" "${fsyncs[*]}")")
    done
    echo
    echo "== flash crowd summary (goals: 8 leechers <= 1.25x with <= 1.15 copies; 16 leechers <= 1.4x)"
    printf '%s\n' "${summary[@]}"
fi
