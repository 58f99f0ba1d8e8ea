#!/usr/bin/env bash
# The benchmark: builds ringlog (release), starts a broker with tuning/ringlog.properties
# in a temporary directory, runs the workloads, stops it, prints a table and writes
# JSON (target/bench/). Every option is scripts/bench.py's:
#   scripts/bench.sh                          # every workload against ringlog
#   scripts/bench.sh --compare                # and against tansu, side by side
#   scripts/bench.sh --bootstrap HOST:PORT    # against any Kafka endpoint already up
#   scripts/bench.sh --quick                  # 2 s per workload
#   scripts/bench.sh --workloads produce-1k-acks1-p8,consume-1k-p8-cached
#   scripts/bench.sh --workloads librdkafka-small-batch --compare   # CPU per M small-batch
#                    records at the default and split placement, beside tansu in-memory
#   scripts/bench.sh --workloads fetch-sessions   # a 1,000-partition consumer, with and
#                    without incremental fetch sessions
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
    echo "the benchmark builds ringlog: install a Rust toolchain (rustup) first" >&2
    exit 1
fi
echo "== building ringlog (release)" >&2
cargo build --release --locked >&2
venv=target/test-venv
if [[ ! -x $venv/bin/python ]]; then
    echo "== creating $venv" >&2
    python3 -m venv "$venv"
fi
# librdkafka (through confluent-kafka) for the real-client workload.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt >&2
exec "$venv/bin/python" scripts/bench.py "$@"
