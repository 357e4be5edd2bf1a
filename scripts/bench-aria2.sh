#!/usr/bin/env bash
# Yardstick for our own downloader: how fast does a real BitTorrent client (aria2c) fetch one
# file from N seeders over 127.0.0.1? Starts a private opentracker, N aria2c seeders and one
# timed aria2c leecher, all on 127.0.0.1 only, then checks the copy with sha1sum.
# Figures go to stdout as key=value lines (plus "# " summary lines); progress goes to stderr.
# Exit codes: 0 ok, 1 failure (download failed, checksum mismatch, timeout), 2 usage, 3 missing tools.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
Usage: scripts/bench-aria2.sh [options]

Times one aria2c leecher downloading a file from N aria2c seeders through a local opentracker,
everything on 127.0.0.1 (DHT, LPD and PEX off, private torrent, 512 KiB pieces).

Options:
  --size MIB       size of the random test file in MiB (default 1024; ignored with --file)
  --seeders N      number of aria2c seeders (default 3)
  --file PATH      use this existing file instead of generating random data
  --work DIR       put the run's files in a new subdirectory of DIR (default: a mktemp dir);
                   it is deleted at the end unless --keep
  --keep           keep the work directory (its path is printed)
  --verify-seeders make seeders hash-check their copy first (--check-integrity=true) instead
                   of seeding unverified (--bt-seed-unverified=true, the default)
  --timeout SEC    give up on the leecher after SEC seconds (default 3600)
  --install        apt-get install the missing Debian packages (aria2, opentracker, mktorrent)
  -h, --help       show this help

Needs: aria2c (Debian: aria2), opentracker (Debian: opentracker), and mktorrent (Debian:
mktorrent) or transmission-create (Debian: transmission-cli). Without --install a missing
tool makes the script print the packages to install and exit 3.

Output (stdout), one key=value per line, e.g.:
  file_size_bytes=1073741824  aria2c_download_seconds=5.120  aria2c_download_mb_per_s=209.72
  sha1_match=1  sha1sum_seconds=1.900  cat_seconds=0.150  (MB = 10^6 bytes)
EOF
}

die() { echo "bench-aria2: $*" >&2; exit 1; }
log() { echo "bench-aria2: $*" >&2; }

size_mib=1024
seeders=3
work_parent=""
src_file=""
keep=0
verify_seeders=0
install=0
leech_timeout=3600

while (($#)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --size) size_mib=${2:?--size needs a value}; shift 2 ;;
        --size=*) size_mib=${1#*=}; shift ;;
        --seeders) seeders=${2:?--seeders needs a value}; shift 2 ;;
        --seeders=*) seeders=${1#*=}; shift ;;
        --work) work_parent=${2:?--work needs a value}; shift 2 ;;
        --work=*) work_parent=${1#*=}; shift ;;
        --file) src_file=${2:?--file needs a value}; shift 2 ;;
        --file=*) src_file=${1#*=}; shift ;;
        --timeout) leech_timeout=${2:?--timeout needs a value}; shift 2 ;;
        --timeout=*) leech_timeout=${1#*=}; shift ;;
        --keep) keep=1; shift ;;
        --verify-seeders) verify_seeders=1; shift ;;
        --install) install=1; shift ;;
        *) echo "bench-aria2: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

is_posint() { [[ $1 =~ ^[0-9]+$ ]] && (( 10#$1 > 0 )); }
is_posint "$size_mib" || { echo "bench-aria2: --size must be a positive integer (MiB)" >&2; exit 2; }
is_posint "$seeders" || { echo "bench-aria2: --seeders must be a positive integer" >&2; exit 2; }
is_posint "$leech_timeout" || { echo "bench-aria2: --timeout must be a positive integer" >&2; exit 2; }
size_mib=$((10#$size_mib)); seeders=$((10#$seeders)); leech_timeout=$((10#$leech_timeout))
if [[ -n $src_file && ! -f $src_file ]]; then
    echo "bench-aria2: --file $src_file is not a regular file" >&2; exit 2
fi

# ---------------------------------------------------------------- tools
missing_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have aria2c || missing_pkgs+=(aria2)
have opentracker || missing_pkgs+=(opentracker)
if ! have mktorrent && ! have transmission-create; then missing_pkgs+=(mktorrent); fi
for tool in timeout sha1sum head awk; do have "$tool" || die "needs $tool (coreutils/gawk)"; done

if ((${#missing_pkgs[@]})); then
    if ((!install)); then
        echo "bench-aria2: missing tools; install these Debian packages:" >&2
        echo "    apt-get install -y ${missing_pkgs[*]}" >&2
        echo "(or rerun with --install)" >&2
        exit 3
    fi
    sudo=()
    if ((EUID != 0)); then
        have sudo || die "--install needs root or sudo"
        sudo=(sudo)
    fi
    # Refresh the package lists only if apt does not know one of the packages yet.
    for pkg in "${missing_pkgs[@]}"; do
        if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            log "running apt-get update"
            "${sudo[@]}" apt-get update
            break
        fi
    done
    log "installing ${missing_pkgs[*]}"
    # Debian's opentracker ships a systemd unit; it is only started where systemd runs.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing_pkgs[@]}"
    if ! have aria2c || ! have opentracker; then die "install did not provide aria2c/opentracker"; fi
fi

# ---------------------------------------------------------------- helpers
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
mbps() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.2f", n / 1e6 / s; else print "inf" }'; }

pids=()
work=""
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $work && -d $work ]]; then
        if ((keep)); then log "kept work directory $work"; else rm -rf -- "$work"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A TCP port on 127.0.0.1 that nothing listens on and that this run has not handed out yet.
taken_ports=" "
pick_port() {
    local p
    for _ in $(seq 500); do
        p=$((20000 + RANDOM % 40000))
        [[ $taken_ports == *" $p "* ]] && continue
        if have ss && [[ -n $(ss -Htan "sport = :$p" 2>/dev/null) ]]; then continue; fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
        taken_ports+="$p "
        REPLY=$p
        return 0
    done
    die "no free port found"
}

# HTTP/1.0 GET to 127.0.0.1:$1 path $2, raw response (headers + body) on stdout.
http_get() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1"
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
        timeout 5 cat <&3
    ) 2>/dev/null
}

# ---------------------------------------------------------------- setup
if [[ -n $work_parent ]]; then
    mkdir -p -- "$work_parent"
    work=$(mktemp -d "$work_parent/bench-aria2.XXXXXX")
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/bench-aria2.XXXXXX")
fi
work=$(cd "$work" && pwd)
log "work directory $work"
mkdir -p "$work/src" "$work/tracker" "$work/leech"

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
fi
size_bytes=$(stat -L -c %s -- "$data")
((size_bytes > 0)) || die "the file is empty"

# Tracker first (its port goes into the torrent).
pick_port; tracker_port=$REPLY
announce="http://127.0.0.1:$tracker_port/announce"

# Torrent: 512 KiB pieces (2^19), private flag (no DHT/PEX for it anyway), one tracker.
torrent="$work/$name.torrent"
log "creating torrent (piece length 2^19)"
t0=$(now)
if have mktorrent; then
    mktorrent -l 19 -p -a "$announce" -n "$name" -o "$torrent" "$data" >"$work/mktorrent.log" 2>&1 \
        || { cat "$work/mktorrent.log" >&2; die "mktorrent failed"; }
    creator=mktorrent
else
    transmission-create -p -s 512 -t "$announce" -o "$torrent" "$data" >"$work/mktorrent.log" 2>&1 \
        || { cat "$work/mktorrent.log" >&2; die "transmission-create failed"; }
    creator=transmission-create
fi
t1=$(now)
torrent_seconds=$(elapsed "$t0" "$t1")

info_hash=$(aria2c --no-conf=true -S "$torrent" | awk '/^Info Hash:/ { print tolower($3) }')
[[ $info_hash =~ ^[0-9a-f]{40}$ ]] || die "could not read the info hash of $torrent"
info_hash_url=""
for ((k = 0; k < 40; k += 2)); do info_hash_url+="%${info_hash:k:2}"; done

# opentracker, TCP only, bound to 127.0.0.1. Debian's build only serves whitelisted info
# hashes (-w). As root it chroots into -d and drops to nobody, so the whitelist path is
# relative to that directory and must be world-readable.
echo "$info_hash" >"$work/tracker/whitelist.txt"
chmod 755 "$work/tracker"; chmod 644 "$work/tracker/whitelist.txt"
ot_args=(-i 127.0.0.1 -p "$tracker_port" -d "$work/tracker")
if opentracker -h 2>&1 | grep -q -- '-w '; then ot_args+=(-w whitelist.txt); fi
opentracker "${ot_args[@]}" >"$work/tracker.log" 2>&1 &
pids+=($!)
tracker_pid=$!

# Ready = the port accepts connections and an announce for our hash is not refused (the
# whitelist is loaded by a thread after start). The probe announces event=stopped, so it
# leaves no peer behind.
probe="/announce?info_hash=$info_hash_url&peer_id=-BENCHPROBE-00000000&port=1&uploaded=0&downloaded=0&left=0&numwant=0&compact=1&event=stopped"
deadline=$((SECONDS + 30))
until resp=$(http_get "$tracker_port" "$probe" | tr -d '\0') && [[ $resp == *"d8:"* || $resp == *interval* ]] && [[ $resp != *"failure reason"* ]]; do
    kill -0 "$tracker_pid" 2>/dev/null || { cat "$work/tracker.log" >&2; die "opentracker exited"; }
    ((SECONDS < deadline)) || { cat "$work/tracker.log" >&2; die "opentracker not ready after 30 s (last answer: ${resp:-none})"; }
    sleep 0.1
done
log "opentracker ready on 127.0.0.1:$tracker_port"

common=(--no-conf=true --disable-ipv6=true --interface=127.0.0.1
    --enable-dht=false --enable-dht6=false --bt-enable-lpd=false --enable-peer-exchange=false
    --follow-torrent=false --summary-interval=0 --console-log-level=warn --log-level=notice)
if ((verify_seeders)); then
    seed_check=(--check-integrity=true)
else
    seed_check=(--bt-seed-unverified=true)
fi

# Seeders: each its own directory holding a hard link (or symlink) to the same file.
for ((i = 1; i <= seeders; i++)); do
    d="$work/seed$i"
    mkdir -p "$d"
    ln -- "$data" "$d/$name" 2>/dev/null || ln -s -- "$(readlink -f -- "$data")" "$d/$name"
    pick_port; port=$REPLY
    aria2c "${common[@]}" "${seed_check[@]}" --seed-ratio=0.0 --dir="$d" --listen-port="$port" \
        --log="$work/seed$i.log" "$torrent" >"$work/seed$i.out" 2>&1 &
    pids+=($!)
done

# Ready = the tracker counts all N seeders as complete (scrape).
ready_timeout=$((60 + (verify_seeders ? size_bytes * seeders / 20000000 : 0)))
deadline=$((SECONDS + ready_timeout))
complete=0
while :; do
    complete=$(http_get "$tracker_port" "/scrape?info_hash=$info_hash_url" | tr -d '\0' \
        | grep -ao '8:completei[0-9]*e' | head -n1 | tr -dc '0-9' | cut -c2-) || true
    complete=${complete:-0}
    ((complete >= seeders)) && break
    for pid in "${pids[@]:1}"; do
        kill -0 "$pid" 2>/dev/null || { cat "$work"/seed*.out >&2; die "a seeder exited"; }
    done
    ((SECONDS < deadline)) || die "only $complete of $seeders seeders registered after $ready_timeout s (see --keep logs)"
    sleep 0.2
done
log "$seeders seeders registered with the tracker"

# Flush the generated file's dirty pages now so writeback does not overlap the timed run.
sync

# ---------------------------------------------------------------- timed download
pick_port; leech_port=$REPLY
log "downloading with aria2c (timeout $leech_timeout s)"
t0=$(now)
leech_rc=0
timeout "$leech_timeout" aria2c "${common[@]}" --seed-time=0 --file-allocation=none \
    --dir="$work/leech" --listen-port="$leech_port" --log="$work/leech.log" \
    "$torrent" >"$work/leech.out" 2>&1 || leech_rc=$?
t1=$(now)
download_seconds=$(elapsed "$t0" "$t1")
if ((leech_rc != 0)); then
    cat "$work/leech.out" >&2
    die "leecher failed (exit $leech_rc$( ((leech_rc == 124)) && echo ", timed out"))"
fi
got="$work/leech/$name"
[[ -f $got ]] || die "leecher exited 0 but $got is missing"

# ---------------------------------------------------------------- check and references
t0=$(now)
src_sha=$(sha1sum <"$data" | cut -d' ' -f1)
t1=$(now)
sha1_seconds=$(elapsed "$t0" "$t1")
got_sha=$(sha1sum <"$got" | cut -d' ' -f1)
sha1_match=0
[[ $src_sha == "$got_sha" ]] && sha1_match=1

t0=$(now)
cat -- "$data" >/dev/null
t1=$(now)
cat_seconds=$(elapsed "$t0" "$t1")

download_mbps=$(mbps "$size_bytes" "$download_seconds")
sha1_mbps=$(mbps "$size_bytes" "$sha1_seconds")
cat_mbps=$(mbps "$size_bytes" "$cat_seconds")
aria2_version=$(aria2c --version | awk 'NR == 1 { print $3 }')

cat <<EOF
file_size_bytes=$size_bytes
file_size_mib=$(awk -v n="$size_bytes" 'BEGIN { printf "%.2f", n / 1048576 }')
seeders=$seeders
piece_length_bytes=524288
aria2c_version=$aria2_version
torrent_creator=$creator
torrent_create_seconds=$torrent_seconds
seeder_mode=$( ((verify_seeders)) && echo check-integrity || echo seed-unverified)
aria2c_file_allocation=none
aria2c_download_seconds=$download_seconds
aria2c_download_mb_per_s=$download_mbps
sha1_match=$sha1_match
sha1sum_seconds=$sha1_seconds
sha1sum_mb_per_s=$sha1_mbps
cat_seconds=$cat_seconds
cat_mb_per_s=$cat_mbps
# aria2c $aria2_version fetched $size_bytes bytes from $seeders seeders on 127.0.0.1 in $download_seconds s ($download_mbps MB/s).
# For reference (warm page cache): sha1sum of the file took $sha1_seconds s ($sha1_mbps MB/s), cat > /dev/null $cat_seconds s ($cat_mbps MB/s).
# sha1 of the download $( ((sha1_match)) && echo matches || echo "DOES NOT MATCH") the original ($src_sha).
EOF
((sha1_match)) || die "checksum mismatch: got $got_sha, want $src_sha"
