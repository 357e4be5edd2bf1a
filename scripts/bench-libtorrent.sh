#!/usr/bin/env bash
# Yardstick for our own downloader: how fast does libtorrent (2.x, through its Python bindings)
# fetch one file from N seeders over 127.0.0.1? Starts N libtorrent seeders and one timed
# libtorrent leecher, each its own process, all on 127.0.0.1, with no tracker: the leecher
# is given the seeders' addresses. The Python side is scripts/bench_libtorrent.py.
# Figures go to stdout as key=value lines (plus "# " summary lines); progress goes to stderr.
# Exit codes: 0 ok (also when libtorrent is not installed: it says so and measures nothing),
# 1 failure (download failed, copy differs, timeout), 2 usage.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
Usage: scripts/bench-libtorrent.sh [options]

Times one libtorrent leecher downloading a file from N libtorrent seeders, everything on
127.0.0.1 (DHT, LSD, UPnP, NAT-PMP and uTP off, peers added by address, several connections
per IP allowed, a private v1 torrent with SHA-1 pieces). The time runs from adding the torrent
to the leecher until every piece has passed its SHA-1 check and the file is fsynced (our
downloader's wait_downloads also ends after a whole-file check and an fsync); the copy is
then compared with the original, untimed.

Options:
  --size MIB        size of the random test file in MiB (default 1024; ignored with --file)
  --seeders N       number of libtorrent seeders (default 3)
  --file PATH       use this existing file instead of generating random data
  --encryption E    libtorrent's peer encryption (MSE/PE): "default" (libtorrent's defaults,
                    stated explicitly: pe_enabled both ways, pe_both, prefer_rc4 off, which
                    obfuscates the handshake and sends the data in plaintext), "forced" (RC4
                    on the whole stream, both ways), or "both" (default: both, in turn)
  --piece-kib K     piece size in KiB (default 512, as ours; 0 = libtorrent's default size)
  --work DIR        put the run's files in a new subdirectory of DIR (default: a mktemp dir
                    in ${TMPDIR:-/tmp}); it is deleted at the end unless --keep
  --keep            keep the work directory (its path is printed)
  --timeout SEC     give up on the leecher after SEC seconds (default 3600)
  --python PATH     the Python interpreter with the libtorrent module (default: the first of
                    $LIBTORRENT_PYTHON, python3 on PATH and /usr/bin/python3 that imports it)
  --install         if no interpreter imports libtorrent: pip install libtorrent (PyPI wheel),
                    else apt-get install python3-libtorrent (for /usr/bin/python3)
  -h, --help        show this help

RC4 here is obfuscation, not authentication: our links are Noise with AES-GCM.

Output (stdout), one key=value per line, e.g.:
  libtorrent_version=2.1.1.0  libtorrent_seconds=2.345  libtorrent_mb_per_sec=457.86
  libtorrent_rc4_seconds=...  libtorrent_rc4_mb_per_sec=...  (MB = 10^6 bytes)
EOF
}

die() { echo "bench-libtorrent: $*" >&2; exit 1; }
log() { echo "bench-libtorrent: $*" >&2; }

size_mib=1024
seeders=3
work_parent=""
src_file=""
keep=0
encryption=both
piece_kib=512
leech_timeout=3600
python=""
install=0

while (($#)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --size) size_mib=${2:?--size needs a value}; shift 2 ;;
        --seeders) seeders=${2:?--seeders needs a value}; shift 2 ;;
        --file) src_file=${2:?--file needs a value}; shift 2 ;;
        --encryption) encryption=${2:?--encryption needs a value}; shift 2 ;;
        --piece-kib) piece_kib=${2:?--piece-kib needs a value}; shift 2 ;;
        --work) work_parent=${2:?--work needs a value}; shift 2 ;;
        --keep) keep=1; shift ;;
        --timeout) leech_timeout=${2:?--timeout needs a value}; shift 2 ;;
        --python) python=${2:?--python needs a value}; shift 2 ;;
        --install) install=1; shift ;;
        *) echo "bench-libtorrent: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

is_posint() { [[ $1 =~ ^[0-9]+$ ]] && ((10#$1 > 0)); }
is_posint "$size_mib" || { echo "bench-libtorrent: --size must be a positive integer (MiB)" >&2; exit 2; }
is_posint "$seeders" || { echo "bench-libtorrent: --seeders must be a positive integer" >&2; exit 2; }
is_posint "$leech_timeout" || { echo "bench-libtorrent: --timeout must be a positive integer" >&2; exit 2; }
[[ $piece_kib =~ ^[0-9]+$ ]] || { echo "bench-libtorrent: --piece-kib must be a number (KiB)" >&2; exit 2; }
case "$encryption" in
    default) modes=(default) ;;
    forced) modes=(forced) ;;
    both) modes=(default forced) ;;
    *) echo "bench-libtorrent: --encryption must be default, forced or both" >&2; exit 2 ;;
esac
size_mib=$((10#$size_mib)); seeders=$((10#$seeders)); leech_timeout=$((10#$leech_timeout))
if [[ -n $src_file && ! -f $src_file ]]; then
    echo "bench-libtorrent: --file $src_file is not a regular file" >&2; exit 2
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HELPER="$ROOT/scripts/bench_libtorrent.py"

# ---------------------------------------------------------------- libtorrent
# imports_libtorrent PY: PY imports libtorrent 2.x.
imports_libtorrent() {
    "$1" -c 'import sys, libtorrent as lt; sys.exit(0 if lt.__version__.startswith("2.") else 1)' >/dev/null 2>&1
}
find_python() {
    local candidates=() py
    if [[ -n $python ]]; then
        candidates=("$python")
    else
        [[ -n ${LIBTORRENT_PYTHON:-} ]] && candidates+=("$LIBTORRENT_PYTHON")
        command -v python3 >/dev/null 2>&1 && candidates+=("$(command -v python3)")
        candidates+=(/usr/bin/python3)
    fi
    for py in "${candidates[@]}"; do
        if [[ -x $py ]] && imports_libtorrent "$py"; then
            python=$py
            return 0
        fi
    done
    return 1
}
if ! find_python && ((install)); then
    log "installing libtorrent's Python bindings"
    if command -v python3 >/dev/null 2>&1; then
        python3 -m pip install --quiet libtorrent >&2 || log "pip install libtorrent failed"
    fi
    if ! find_python; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y python3-libtorrent >&2 \
            || log "apt-get install python3-libtorrent failed"
    fi
    find_python || true
fi
if ! imports_libtorrent "${python:-/nonexistent}"; then
    echo "bench-libtorrent: no Python interpreter here imports libtorrent 2.x; install one of:" >&2
    echo "    python3 -m pip install libtorrent            (PyPI wheel)" >&2
    echo "    apt-get install -y python3-libtorrent        (Debian, for /usr/bin/python3)" >&2
    echo "(or rerun with --install); nothing measured" >&2
    echo "libtorrent_skipped=not installed"
    exit 0
fi
# The interpreter itself, not a wrapper such as a pyenv shim (a shell script run at each start).
python=$("$python" -c 'import sys; print(sys.executable)')
lt_version=$("$python" "$HELPER" version)

# ---------------------------------------------------------------- helpers
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
mbps() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.2f", n / 1e6 / s; else print "inf" }'; }
field() { sed -n "s/^$1=//p" <<<"$2"; }

seed_pids=()
work=""
# stop_seeders: ends the seeders this script started, by PID, and reaps them.
stop_seeders() {
    local pid
    for pid in "${seed_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${seed_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    seed_pids=()
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_seeders
    if [[ -n $work && -d $work ]]; then
        if ((keep || rc != 0)); then log "kept work directory $work"; else rm -rf -- "$work"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- setup
if [[ -n $work_parent ]]; then
    mkdir -p -- "$work_parent"
    work=$(mktemp -d "$work_parent/bench-libtorrent.XXXXXX")
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/bench-libtorrent.XXXXXX")
fi
work=$(cd "$work" && pwd)
log "work directory $work (libtorrent $lt_version, $python)"
mkdir -p "$work/src"

if [[ -n $src_file ]]; then
    name=$(basename -- "$src_file")
    data="$work/src/$name"
    # Hard link when possible (same filesystem), else a symlink; the original is only read.
    ln -- "$src_file" "$data" 2>/dev/null || ln -s -- "$(cd "$(dirname -- "$src_file")" && pwd)/$name" "$data"
else
    name="random-${size_mib}MiB.bin"
    data="$work/src/$name"
    log "generating $size_mib MiB of random data"
    head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$data"
    cat -- "$data" >/dev/null # warm the page cache, as bench.sh does
fi
size_bytes=$(stat -L -c %s -- "$data")
((size_bytes > 0)) || die "the file is empty"

torrent="$work/$name.torrent"
log "creating the torrent"
created=$("$python" "$HELPER" create --file "$data" --torrent "$torrent" --piece-kib "$piece_kib")
piece_length=$(field piece_length_bytes "$created")

# run_mode MODE: one timed download with encryption MODE; prints its key=value lines.
run_mode() {
    local mode=$1 i t d out port peers=() t0 t1 leech_rc=0 result
    for ((i = 1; i <= seeders; i++)); do
        d="$work/$mode-seed$i"
        mkdir -p "$d"
        ln -- "$data" "$d/$name" 2>/dev/null || ln -s -- "$(readlink -f -- "$data")" "$d/$name"
        "$python" "$HELPER" seed --torrent "$torrent" --dir "$d" --encryption "$mode" \
            </dev/null >"$d.out" 2>"$d.log" &
        seed_pids+=($!)
    done
    # Ready = each seeder printed its address (it does so once it seeds).
    for ((i = 1; i <= seeders; i++)); do
        out="$work/$mode-seed$i.out"
        for ((t = 0; t < 600; t++)); do
            grep -q '^listening on ' "$out" && break
            kill -0 "${seed_pids[i - 1]}" 2>/dev/null || { cat "$work/$mode-seed$i.log" >&2; die "seeder $i exited"; }
            sleep 0.1
        done
        port=$(sed -n 's/^listening on //p' "$out")
        [[ -n $port ]] || die "seeder $i not ready after 60 s"
        peers+=(--peer "$port")
    done
    # Flush dirty pages now (a generated file, an earlier copy) so that writeback does not
    # overlap the timed run.
    sync
    log "downloading with libtorrent, encryption $mode, from $seeders seeders"
    mkdir -p "$work/$mode-leech"
    t0=$(now)
    result=$(timeout "$leech_timeout" "$python" "$HELPER" leech --torrent "$torrent" --dir "$work/$mode-leech" \
        --encryption "$mode" --timeout "$leech_timeout" "${peers[@]}" </dev/null 2>"$work/$mode-leech.log") || leech_rc=$?
    t1=$(now)
    stop_seeders
    if ((leech_rc != 0)); then
        cat "$work/$mode-leech.log" >&2
        die "leecher failed (exit $leech_rc)"
    fi
    cmp -s -- "$data" "$(field file "$result")" || die "the libtorrent copy differs from the original"
    rm -rf -- "$work/$mode-leech" "$work/$mode"-seed*

    local key=libtorrent
    [[ $mode == forced ]] && key=libtorrent_rc4
    local secs
    secs=$(field download_fsync_seconds "$result")
    echo "${key}_seconds=$secs"
    echo "${key}_mb_per_sec=$(mbps "$size_bytes" "$secs")"
    echo "${key}_unsynced_seconds=$(field download_seconds "$result")"
    echo "${key}_process_seconds=$(elapsed "$t0" "$t1")"
    echo "${key}_connections=$(field connections "$result")"
    echo "${key}_connections_rc4=$(field connections_rc4 "$result")"
    echo "${key}_connections_obfuscated_plaintext=$(field connections_obfuscated_plaintext "$result")"
    echo "${key}_connections_plaintext=$(field connections_plaintext "$result")"
    echo "${key}_copy_matches=1"
    echo "# libtorrent $lt_version, encryption $mode: $size_bytes bytes from $seeders seeders on 127.0.0.1" \
        "in $secs s ($(mbps "$size_bytes" "$secs") MB/s), add_torrent to verified and fsynced."
}

cat <<EOF
libtorrent_version=$lt_version
libtorrent_python=$python
file_size_bytes=$size_bytes
seeders=$seeders
piece_length_bytes=$piece_length
torrent_format=v1 (SHA-1 pieces), private
torrent_create_seconds=$(field torrent_create_seconds "$created")
seeder_start=resume data with every piece (no re-hash; the torrent creation hashed the file)
libtorrent_encryption_default=pe_enabled in and out, allowed_enc_level pe_both, prefer_rc4 off
libtorrent_encryption_forced=pe_forced in and out, allowed_enc_level pe_rc4, prefer_rc4 on
EOF
for mode in "${modes[@]}"; do run_mode "$mode"; done
