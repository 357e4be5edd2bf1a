#!/usr/bin/env bash
# Runs every test of the workspace. The client's integration tests start the real tracker
# binary too (and the client's delay_proxy example), which `cargo test` alone does not
# build, so build every binary and example first. Extra arguments go to `cargo test` (e.g.
# a test name filter).
# Ends with one totals line over every test binary: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --examples
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
