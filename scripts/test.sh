#!/usr/bin/env bash
# Installs what the tests need, builds ringlog, runs every test:
# unit and wire-level tests (cargo test), then the real-client suites (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kcat >/dev/null; then
    echo "== installing kcat"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq kcat >/dev/null
fi

venv=target/test-venv
if [[ ! -x $venv/bin/python ]]; then
    echo "== creating $venv"
    python3 -m venv "$venv"
fi
echo "== installing Python test requirements"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

echo "== building"
cargo build --release --locked

echo "== cargo test"
cargo test --locked

echo "== client tests (pytest)"
cd tests
RINGLOG_BIN="$PWD/../target/release/ringlog" "../$venv/bin/python" -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning "$@"
