#!/usr/bin/env bash
# Before/after figures for a change to the client: the download of one random file from N
# seeders (scripts/bench-download.sh) with two builds, interleaved (A B A B ...), each round
# followed by the libtorrent yardstick (scripts/bench-libtorrent.sh) on the same file, so all
# three see the same machine. Prints the load before each run, every run, then the median,
# min and max of each. As in bench.sh, our N-seeder download also finds the leecher that
# fetched the file from one seeder just before, so it has N + 1 sources; libtorrent has N.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: scripts/bench-compare.sh --before DIR --after DIR [--rounds N] [--size MIB] [--seeders N]
                               [--no-libtorrent] [--keep]

  --before DIR     release binaries (tracker, client) of the "before" build, e.g.
                   /work/wt-before/target/release
  --after DIR      release binaries of the "after" build
  --rounds N       rounds of before, after and libtorrent, in this order (default 3)
  --size MIB       size of the random test file (default 1024)
  --seeders N      seeders for the multi-seeder download (default 3)
  --no-libtorrent  skip the libtorrent yardstick
  --keep           keep the work directory
  -h, --help       show this help

Both builds run this tree's scripts/bench-download.sh; bench-libtorrent.sh runs with
libtorrent's default encryption setting and with RC4 forced (see its --help).
USAGE
}

BEFORE=""
AFTER=""
ROUNDS=3
SIZE_MIB=1024
SEEDERS=3
LIBTORRENT=1
KEEP=0
while (($#)); do
    case "$1" in
        --before) BEFORE=$2; shift 2 ;;
        --after) AFTER=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --size) SIZE_MIB=$2; shift 2 ;;
        --seeders) SEEDERS=$2; shift 2 ;;
        --no-libtorrent) LIBTORRENT=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-compare.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
for dir in "$BEFORE" "$AFTER"; do
    [[ -x $dir/tracker && -x $dir/client ]] || { echo "bench-compare.sh: no tracker and client in '$dir'" >&2; usage >&2; exit 2; }
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/p2p-bench-compare.XXXXXX")
BIN="" # lib.sh's; unused here
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
lib_init

BYTES=$((SIZE_MIB * 1024 * 1024))
FILE="$WORK/bench.bin"
head -c "$BYTES" /dev/urandom >"$FILE"
cat "$FILE" >/dev/null # warm the page cache, as bench.sh does

field() { sed -n "s/^$1=//p" <<<"$2"; }
fmt() { printf '%.3f' "$1"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
# stats NUMBERS...: "median M (min A, max B)"; the median of an even count is the lower middle.
stats() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "median %.3f (min %.3f, max %.3f, n %d)", v[int((NR + 1) / 2)], v[1], v[NR], NR }'
}

declare -A runs
echo "file_mib=$SIZE_MIB seeders=$SEEDERS rounds=$ROUNDS before=$BEFORE after=$AFTER"
for ((round = 1; round <= ROUNDS; round++)); do
    for side in before after; do
        dir=$BEFORE
        [[ $side == after ]] && dir=$AFTER
        echo "round=$round side=$side load_before=\"$(load)\" uptime=\"$(uptime)\""
        out=$(bash "$ROOT/scripts/bench-download.sh" --bin "$dir" --file "$FILE" --seeders "$SEEDERS")
        many=$(fmt "$(field download_n_seeders_seconds "$out")")
        one=$(fmt "$(field download_1_seeder_seconds "$out")")
        runs[$side-many]+=" $many"
        runs[$side-one]+=" $one"
        echo "round=$round side=$side download_${SEEDERS}_seeders_seconds=$many download_1_seeder_seconds=$one" \
            "upload_hash_seconds=$(fmt "$(field upload_hash_seconds "$out")")" \
            "peak_rss_kib_${SEEDERS}_seeders=$(field downloader_peak_rss_kib_n_seeders "$out")"
    done
    if [[ $LIBTORRENT == 1 ]]; then
        echo "round=$round side=libtorrent load_before=\"$(load)\" uptime=\"$(uptime)\""
        out=$(bash "$ROOT/scripts/bench-libtorrent.sh" --file "$FILE" --seeders "$SEEDERS" --encryption both) \
            || out="libtorrent_skipped=it failed (exit $?, see above)"
        if [[ -n $(field libtorrent_skipped "$out") ]]; then
            echo "libtorrent skipped: $(field libtorrent_skipped "$out")"
            LIBTORRENT=0
            continue
        fi
        lt_version=$(field libtorrent_version "$out")
        runs[lt]+=" $(field libtorrent_seconds "$out")"
        runs[lt_rc4]+=" $(field libtorrent_rc4_seconds "$out")"
        echo "round=$round side=libtorrent libtorrent_seconds=$(field libtorrent_seconds "$out")" \
            "libtorrent_rc4_seconds=$(field libtorrent_rc4_seconds "$out")" \
            "connections_default=rc4:$(field libtorrent_connections_rc4 "$out"),obfuscated_plaintext:$(field libtorrent_connections_obfuscated_plaintext "$out"),plaintext:$(field libtorrent_connections_plaintext "$out")" \
            "piece_length_bytes=$(field piece_length_bytes "$out")"
    fi
done
echo "load_after=\"$(load)\""

mbps() { echo "scale=1; $BYTES / $1 / 1000000" | bc -l; }
median_of() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo
echo "== summary ($SIZE_MIB MiB, $SEEDERS seeders, $ROUNDS interleaved rounds, MB = 10^6 bytes)"
for side in before after; do
    # shellcheck disable=SC2086 # the runs are a space-separated list
    printf '%-24s %s  %s MB/s  runs:%s\n' "$side, $SEEDERS seeders" "$(stats ${runs[$side-many]})" \
        "$(mbps "$(median_of ${runs[$side-many]})")" "${runs[$side-many]}"
    # shellcheck disable=SC2086
    printf '%-24s %s  runs:%s\n' "$side, 1 seeder" "$(stats ${runs[$side-one]})" "${runs[$side-one]}"
done
if [[ -n ${runs[lt]:-} ]]; then
    # shellcheck disable=SC2086
    printf '%-24s %s  %s MB/s  runs:%s\n' "libtorrent $lt_version" "$(stats ${runs[lt]})" \
        "$(mbps "$(median_of ${runs[lt]})")" "${runs[lt]}"
    # shellcheck disable=SC2086
    printf '%-24s %s  %s MB/s  runs:%s\n' "libtorrent, RC4 forced" "$(stats ${runs[lt_rc4]})" \
        "$(mbps "$(median_of ${runs[lt_rc4]})")" "${runs[lt_rc4]}"
fi
