#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS each (default 45), starting
# from the committed corpus in fuzz/corpus. New inputs the run finds go to a scratch
# copy, not into the repository; a crash fails the script and leaves its input in
# target/fuzz-artifacts/<target>/ (add it to fuzz/corpus/<target>/ once fixed).
#
# With a nightly toolchain the targets build with AddressSanitizer (cargo-fuzz's
# default); with only stable they build without a sanitizer (`-s none`), still
# coverage-guided.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-45}
shift || true

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    build=(cargo +nightly fuzz build -O)
else
    build=(cargo fuzz build -O -s none)
fi
cd fuzz
echo "== building the fuzz targets: ${build[*]}"
"${build[@]}"
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo fuzz list)
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    echo "== fuzzing $t for ${seconds}s"
    mkdir -p "$scratch/$t" "$root/target/fuzz-artifacts/$t"
    cp -r "corpus/$t/." "$scratch/$t/"
    # -timeout: an input that runs a minute is a hang (the recovery target found one
    # that spun forever); the outer timeout bounds the whole run regardless.
    timeout $((seconds + 300)) "target/x86_64-unknown-linux-gnu/release/$t" "$scratch/$t" \
        -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="$root/target/fuzz-artifacts/$t/" 2>"$scratch/$t.log" || {
        tail -n 60 "$scratch/$t.log"
        echo "== $t: CRASH (input in target/fuzz-artifacts/$t/)"
        exit 1
    }
    grep -E "^stat::number_of_executed_units|^Done" "$scratch/$t.log" || true
done
echo "== fuzzing: no crashes"
