#!/usr/bin/env bash
# A local ringlog cluster on loopback: N nodes in combined mode (broker and
# controller), one controller quorum, data under one folder.
#   scripts/cluster.sh start [N]     # default 3: clients on 127.0.0.1:9092..., quorum on :19092...
#   scripts/cluster.sh status
#   scripts/cluster.sh stop
# RINGLOG_CLUSTER_DIR (default target/cluster) holds each node's data, log and pid;
# RINGLOG_CLUSTER_PORT (default 9092) is node 0's client port, node i's is PORT + i,
# and its controller port PORT + 10000 + i. Extra `--override key=value` arguments
# after N apply to every node.
set -euo pipefail
# A RINGLOG_BIN given relative to the caller's folder still names the same file below.
if [[ -n ${RINGLOG_BIN:-} ]]; then RINGLOG_BIN=$(realpath "$RINGLOG_BIN"); fi
cd "$(dirname "$0")/.."
dir=${RINGLOG_CLUSTER_DIR:-target/cluster}
base=${RINGLOG_CLUSTER_PORT:-9092}
bin=${RINGLOG_BIN:-target/release/ringlog}

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

case ${1:-} in
start)
    n=${2:-3}
    shift $(($# >= 2 ? 2 : 1))
    if [[ -z ${RINGLOG_BIN:-} ]]; then cargo build --release --locked; fi
    voters=()
    for ((i = 0; i < n; i++)); do voters+=("$i@127.0.0.1:$((base + 10000 + i))"); done
    voters=$(IFS=,; echo "${voters[*]}")
    cpus=$(nproc)
    mkdir -p "$dir"
    for ((i = 0; i < n; i++)); do
        if running "$dir/node-$i.pid"; then
            echo "node $i is already running (pid $(cat "$dir/node-$i.pid"))"
            continue
        fi
        "$bin" serve \
            --override node.id=$i \
            --override log.dirs="$dir/node-$i" \
            --override listeners=PLAINTEXT://127.0.0.1:$((base + i)),CONTROLLER://127.0.0.1:$((base + 10000 + i)) \
            --override controller.quorum.voters="$voters" \
            --override ringlog.cpus=$((i % cpus)) \
            "$@" >>"$dir/node-$i.log" 2>&1 &
        echo $! >"$dir/node-$i.pid"
    done
    # Serving once every node lists every broker.
    for _ in $(seq 1 100); do
        sleep 0.3
        ready=0
        for ((i = 0; i < n; i++)); do
            grep -q "registered with the controller" "$dir/node-$i.log" 2>/dev/null && ready=$((ready + 1))
        done
        if ((ready == n)); then break; fi
    done
    "$0" status
    bootstrap=()
    for ((i = 0; i < n; i++)); do bootstrap+=("127.0.0.1:$((base + i))"); done
    (IFS=,; echo "bootstrap: ${bootstrap[*]}")
    ;;
status)
    shopt -s nullglob
    for pid in "$dir"/node-*.pid; do
        node=$(basename "$pid" .pid)
        if running "$pid"; then state="running (pid $(cat "$pid"))"; else state="stopped"; fi
        leads=$(grep -c "this node leads the metadata quorum" "$dir/$node.log" 2>/dev/null || true)
        echo "$node: $state; led the quorum ${leads:-0} time(s); log $dir/$node.log"
    done
    ;;
stop)
    shopt -s nullglob
    for pid in "$dir"/node-*.pid; do
        if running "$pid"; then kill -TERM "$(cat "$pid")"; fi
    done
    for pid in "$dir"/node-*.pid; do
        while running "$pid"; do sleep 0.1; done
        rm -f "$pid"
    done
    echo "stopped"
    ;;
*)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
