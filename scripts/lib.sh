# shellcheck shell=bash
# Helpers shared by demo.sh, bench.sh and other swarm scripts: start trackers and peers on
# 127.0.0.1, drive each peer through a FIFO on its stdin, wait on printed lines (never on
# fixed sleeps), and stop every process started here (and only those) on exit.
#
# The caller sets WORK (a directory for state and logs) and BIN (where tracker and client
# are) before calling these, and calls lib_init once.

declare -A PID FD

# lib_init: installs the cleanup trap. KEEP=1 keeps $WORK.
lib_init() {
    trap lib_cleanup EXIT
    trap 'exit 130' INT TERM
}

lib_cleanup() {
    local status=$?
    local name
    for name in "${!FD[@]}"; do close_fd "$name"; done
    for name in "${!PID[@]}"; do kill "${PID[$name]}" 2>/dev/null || true; done
    for name in "${!PID[@]}"; do wait "${PID[$name]}" 2>/dev/null || true; done
    if [[ ${KEEP:-0} == 1 || $status != 0 ]]; then
        echo "work directory (state and logs): $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}

# wait_for FILE PATTERN [SECONDS]: waits until FILE has a line matching PATTERN.
wait_for() {
    local file=$1 pattern=$2 limit=${3:-30} i
    for ((i = 0; i < limit * 20; i++)); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "timed out waiting for '$pattern' in $file" >&2
    return 1
}

# write_tracker_info N [BASE_PORT]: writes $WORK/tracker_info.txt for N trackers.
write_tracker_info() {
    local n=$1 base=${2:-$((20000 + RANDOM % 12000))} i
    : >"$WORK/tracker_info.txt"
    for ((i = 0; i < n; i++)); do echo "127.0.0.1:$((base + i))" >>"$WORK/tracker_info.txt"; done
}

# start_tracker ID [OPTIONS...]: starts tracker ID with its data in $WORK/trackerID.
# Every peer of a local swarm signs up from 127.0.0.1: no per-address sign-up limit.
start_tracker() { start_tracker_in "" "$@"; }

# start_tracker_in NETNS ID [OPTIONS...]: start_tracker inside network namespace NETNS
# (the caller's own if empty).
start_tracker_in() {
    local netns=$1 id=$2
    shift 2
    local in=()
    [[ -z $netns ]] || in=(ip netns exec "$netns")
    : >"$WORK/tracker$id.out"
    "${in[@]}" "$BIN/tracker" "$WORK/tracker_info.txt" "$id" --data-dir "$WORK/tracker$id" \
        --signups-per-ip-per-hour 0 "$@" \
        </dev/null >>"$WORK/tracker$id.out" 2>>"$WORK/tracker$id.log" &
    PID[tracker$id]=$!
    wait_for "$WORK/tracker$id.out" "listening on"
}

# leader_id T: the id of the tracker (of trackers 1..T) whose latest "serving as" line says
# it leads, with the highest term; empty if none does.
leader_id() {
    local t line term best=-1 id=
    for ((t = 1; t <= $1; t++)); do
        line=$(grep "serving as" "$WORK/tracker$t.out" 2>/dev/null | tail -n1) || true
        [[ $line == *"serving as primary (term "* ]] || continue
        term=${line##*(term }
        term=${term%)*}
        if ((term > best)); then
            best=$term
            id=$t
        fi
    done
    printf '%s\n' "$id"
}

# close_fd NAME: closes the FIFO this script writes to NAME's stdin through.
close_fd() {
    local fd=${FD[$1]:-}
    if [[ -n $fd ]]; then
        exec {fd}>&-
        unset "FD[$1]"
    fi
}

# kill9 NAME: SIGKILLs process NAME and forgets it.
kill9() {
    local name=$1
    kill -9 "${PID[$name]}" 2>/dev/null || true
    wait "${PID[$name]}" 2>/dev/null || true
    unset "PID[$name]"
    close_fd "$name"
}

# start_peer NAME [OPTIONS...]: a client on 127.0.0.1 reading commands from the FIFO
# $WORK/NAME.in, its output in $WORK/NAME.out, its state in $WORK/NAME.
start_peer() { start_peer_in "" 127.0.0.1:0 "$@"; }

# start_peer_in NETNS LISTEN NAME [OPTIONS...]: start_peer inside network namespace NETNS
# (the caller's own if empty), listening on LISTEN. `ip netns exec` execs the client, so
# PID[NAME] is the client's own.
start_peer_in() {
    local netns=$1 listen=$2 name=$3
    shift 3
    local in=()
    [[ -z $netns ]] || in=(ip netns exec "$netns")
    [[ -p $WORK/$name.in ]] || mkfifo "$WORK/$name.in"
    : >"$WORK/$name.out"
    "${in[@]}" "$BIN/client" "$listen" "$WORK/tracker_info.txt" --state-dir "$WORK/$name" "$@" \
        <"$WORK/$name.in" >>"$WORK/$name.out" 2>>"$WORK/$name.log" &
    PID[$name]=$!
    local fd
    exec {fd}>"$WORK/$name.in"
    FD[$name]=$fd
    wait_for "$WORK/$name.out" "listening on"
}

# lines NAME: how many lines peer NAME has printed.
lines() { wc -l <"$WORK/$1.out"; }

# send NAME COMMAND: sends COMMAND to peer NAME without waiting.
send() { echo "$2" >&"${FD[$1]}"; }

# run NAME COMMAND [LINES] [SECONDS]: sends COMMAND and waits until it printed LINES lines
# (default 1); prints them, indented, after the command.
run() {
    local name=$1 cmd=$2 want=${3:-1} limit=${4:-60} before i
    before=$(lines "$name")
    send "$name" "$cmd"
    for ((i = 0; i < limit * 20; i++)); do
        (($(lines "$name") >= before + want)) && break
        sleep 0.05
    done
    printf '%-8s> %s\n' "$name" "$cmd"
    tail -n +"$((before + 1))" "$WORK/$name.out" | sed 's/^/          /'
    (($(lines "$name") >= before + want)) || { echo "no answer from $name" >&2; return 1; }
}

# quiet_run: run without printing.
quiet_run() { run "$@" >/dev/null; }

# now: seconds since the epoch with nanoseconds.
now() { date +%s.%N; }
