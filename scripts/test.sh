#!/usr/bin/env bash
# Runs every test of the workspace. The client's integration tests start the real tracker
# binary too, which `cargo test` alone does not build (it is another package), so build
# every binary first. Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
cargo test --workspace "$@"
