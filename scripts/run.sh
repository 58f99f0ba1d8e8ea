#!/usr/bin/env bash
# Builds ringlog (release) and runs the broker.
#   scripts/run.sh                          # uses ./server.properties (127.0.0.1:9092)
#   scripts/run.sh my.properties --override log.dirs=/data/ringlog
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
    echo "ringlog needs a Rust toolchain (cargo); install it with rustup first." >&2
    exit 1
fi
cargo build --release --locked
config=server.properties
if [[ $# -gt 0 && $1 != --* ]]; then
    config=$1
    shift
fi
exec target/release/ringlog serve "$config" "$@"
