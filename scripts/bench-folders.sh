#!/usr/bin/env bash
# Folders (issue 23) with the binaries in --bin: a tracker, two seeders and a leecher on
# 127.0.0.1, and two trees: many small files (1 to 64 KiB) and a few large ones. For each
# tree, times `tar | sha1sum` of it (the baseline: reading and hashing every byte once),
# upload_file of it (scan and hash), and download_file of it whole from the two seeders
# (fetch, verify, write the tree), and checks the copy with diff -r. Prints key=value lines,
# and the two ratios to the baseline (the goal is at most 1.5). Then, where a Python with
# libtorrent 2.x's bindings is found (as scripts/bench-libtorrent.sh looks for one), the
# same with libtorrent: a v1 torrent of the tree with 512 KiB pieces, two libtorrent
# seeders, one leecher timed until every piece is checked and every file fsync'd; without
# them it says libtorrent_skipped=not installed.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: scripts/bench-folders.sh --bin DIR [--small N] [--big N] [--big-mib M] [--keep]
                                [--python PATH | --no-libtorrent]

  --bin DIR      where the tracker and client binaries are (build with --release)
  --small N      files in the tree of small files, 1 to 64 KiB each (default 10000)
  --big N        files in the tree of large files (default 20)
  --big-mib M    size of each large file in MiB (default 50)
  --keep         keep the work directory
  --python PATH  the Python interpreter with the libtorrent module (default: the first of
                 \$LIBTORRENT_PYTHON, python3 on PATH and /usr/bin/python3 that imports it)
  --no-libtorrent  do not run the libtorrent comparison
  -h, --help     show this help
USAGE
}

BIN=""
SMALL=10000
BIG=20
BIG_MIB=50
KEEP=0
PYTHON=""
LIBTORRENT=1
while (($#)); do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --small) SMALL=$2; shift 2 ;;
        --big) BIG=$2; shift 2 ;;
        --big-mib) BIG_MIB=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --python) PYTHON=$2; shift 2 ;;
        --no-libtorrent) LIBTORRENT=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-folders.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[[ -n $BIN ]] || { usage >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/p2p-bench-folders.XXXXXX")
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
lib_init

# The trees: small/ spread over 100 subdirectories, big/ flat. Random bytes (from one
# stream, cut into files), so that nothing compresses or deduplicates.
make_trees() {
    local i dir size
    mkdir -p "$WORK/data/small" "$WORK/data/big"
    for ((i = 0; i < SMALL; i++)); do
        dir="$WORK/data/small/d$((i % 100))"
        [[ -d $dir ]] || mkdir "$dir"
        size=$(((RANDOM * 32768 + RANDOM) % (64 * 1024) + 1024))
        head -c "$size" /dev/urandom >"$dir/f$i.bin"
    done
    for ((i = 0; i < BIG; i++)); do
        head -c "$((BIG_MIB * 1024 * 1024))" /dev/urandom >"$WORK/data/big/f$i.bin"
    done
}
make_trees
# Written back now, so that no timed run (the download ends in a syncfs of the file
# system) pays for the trees' writes.
sync

write_tracker_info 1
start_tracker 1
for name in seed1 seed2 leech; do start_peer "$name"; done
for name in seed1 seed2 leech; do
    quiet_run "$name" "create_user $name pw"
    quiet_run "$name" "login $name pw"
done
quiet_run seed1 "create_group bench"
for name in seed2 leech; do
    quiet_run "$name" "join_group bench"
    quiet_run seed1 "accept_request bench $name"
done

# bench TREE: prints TREE's figures.
bench() {
    local tree=$1 t0 tar_s share_s download_s bytes files
    bytes=$(find "$WORK/data/$tree" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
    files=$(find "$WORK/data/$tree" -type f | wc -l)
    # The baseline, from a warm page cache as the share is (the first read warms it).
    tar -cf - -C "$WORK/data" "$tree" | sha1sum >/dev/null
    sync
    t0=$(now)
    tar -cf - -C "$WORK/data" "$tree" | sha1sum >/dev/null
    tar_s=$(echo "$(now) - $t0" | bc -l)
    t0=$(now)
    quiet_run seed1 "upload_file $WORK/data/$tree bench" 1 1200
    share_s=$(echo "$(now) - $t0" | bc -l)
    quiet_run seed2 "upload_file $WORK/data/$tree bench" 1 1200
    mkdir -p "$WORK/leech-files"
    # Nothing dirty left from the shares (or another tree's download) for its syncfs.
    sync
    t0=$(now)
    quiet_run leech "download_file bench $tree/ $WORK/leech-files"
    quiet_run leech "wait_downloads" 1 1200
    download_s=$(echo "$(now) - $t0" | bc -l)
    diff -r "$WORK/data/$tree" "$WORK/leech-files/$tree" >/dev/null \
        || { echo "bench-folders.sh: the leech's copy of $tree differs" >&2; exit 1; }
    cat <<RESULT
${tree}_files=$files
${tree}_bytes=$bytes
${tree}_tar_sha1sum_seconds=$tar_s
${tree}_share_seconds=$share_s
${tree}_download_2_seeders_seconds=$download_s
${tree}_share_vs_tar=$(echo "$share_s / $tar_s" | bc -l | cut -c1-5)
${tree}_download_vs_tar=$(echo "$download_s / $tar_s" | bc -l | cut -c1-5)
${tree}_leech_result=$(tail -n1 "$WORK/leech.out")
RESULT
    # The client's own split, when it logs at info (RUST_LOG=client=info).
    sed -n "s/.*staging .*\/\.$tree\.part: \(.*\)/${tree}_leech_staging=\1/p
s/.*$tree: syncfs took \(.*\) s/${tree}_leech_syncfs_seconds=\1/p
s/.*$tree: pieces fetched in \(.*\) s, checked and renamed in \(.*\) s/${tree}_leech_fetched_seconds=\1 ${tree}_leech_finished_seconds=\2/p" \
        "$WORK/leech.log"

}

bench small >>"$WORK/results"
bench big >>"$WORK/results"
cat "$WORK/results"

# The libtorrent comparison (scripts/bench_libtorrent.py does libtorrent's side).
imports_libtorrent() {
    "$1" -c 'import sys, libtorrent as lt; sys.exit(0 if lt.__version__.startswith("2.") else 1)' \
        >/dev/null 2>&1
}
find_python() {
    local candidates=() py
    if [[ -n $PYTHON ]]; then
        candidates=("$PYTHON")
    else
        [[ -n ${LIBTORRENT_PYTHON:-} ]] && candidates+=("$LIBTORRENT_PYTHON")
        command -v python3 >/dev/null 2>&1 && candidates+=("$(command -v python3)")
        candidates+=(/usr/bin/python3)
    fi
    for py in "${candidates[@]}"; do
        if [[ -x $py ]] && imports_libtorrent "$py"; then
            PYTHON=$py
            return 0
        fi
    done
    return 1
}

# bench_libtorrent TREE: prints TREE's figures with libtorrent (default encryption policy:
# an obfuscated handshake, then the data in plaintext), the seeders started from resume
# data saying they have every piece, as ours trust what they shared.
bench_libtorrent() {
    local tree=$1
    local helper="$ROOT/scripts/bench_libtorrent.py" torrent="$WORK/lt-$tree.torrent"
    local created result i d key port peers=() download_s tar_s
    created=$("$PYTHON" "$helper" create --file "$WORK/data/$tree" --torrent "$torrent")
    for i in 1 2; do
        d="$WORK/lt-$tree-seed$i"
        mkdir -p "$d"
        cp -al "$WORK/data/$tree" "$d/$tree"
        "$PYTHON" "$helper" seed --torrent "$torrent" --dir "$d" </dev/null >"$d.out" 2>"$d.log" &
        key="lt-seed$i"
        PID[$key]=$!
    done
    for i in 1 2; do
        wait_for "$WORK/lt-$tree-seed$i.out" '^listening on ' 600
        port=$(sed -n 's/^listening on //p' "$WORK/lt-$tree-seed$i.out")
        peers+=(--peer "$port")
    done
    mkdir -p "$WORK/lt-$tree-leech"
    result=$("$PYTHON" "$helper" leech --torrent "$torrent" --dir "$WORK/lt-$tree-leech" \
        --timeout 1200 "${peers[@]}" </dev/null 2>"$WORK/lt-$tree-leech.log")
    for i in 1 2; do
        key="lt-seed$i"
        kill "${PID[$key]}" 2>/dev/null || true
        wait "${PID[$key]}" 2>/dev/null || true
        unset "PID[$key]"
    done
    diff -r "$WORK/data/$tree" "$WORK/lt-$tree-leech/$tree" >/dev/null \
        || { echo "bench-folders.sh: libtorrent's copy of $tree differs" >&2; exit 1; }
    rm -rf "$WORK/lt-$tree-leech" "$WORK/lt-$tree-seed1" "$WORK/lt-$tree-seed2"
    download_s=$(sed -n 's/^download_fsync_seconds=//p' <<<"$result")
    tar_s=$(sed -n "s/^${tree}_tar_sha1sum_seconds=//p" "$WORK/results")
    cat <<RESULT
${tree}_libtorrent_pieces=$(sed -n 's/^num_pieces=//p' <<<"$created")
${tree}_libtorrent_create_seconds=$(sed -n 's/^torrent_create_seconds=//p' <<<"$created")
${tree}_libtorrent_download_2_seeders_seconds=$download_s
${tree}_libtorrent_download_vs_tar=$(echo "$download_s / $tar_s" | bc -l | cut -c1-5)
RESULT
}

if ((LIBTORRENT)); then
    if find_python; then
        echo "libtorrent_version=$("$PYTHON" "$ROOT/scripts/bench_libtorrent.py" version)"
        bench_libtorrent small
        bench_libtorrent big
    else
        echo "libtorrent_skipped=not installed"
    fi
fi
