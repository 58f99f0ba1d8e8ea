#!/usr/bin/env python3
"""Time to serving after a crash: fills a broker (`ringlog perf produce`), waits until
every partition has stored a recovery point, writes a small tail past it, SIGKILLs the
broker, then restarts it alternately from its recovery points and with them removed
(the full scan every crash start did before recovery points), with the page cache
dropped before each start, and prints the seconds from exec to an accepting listener.

    target/test-venv/bin/python scripts/restart_time.py --gb 20 --partitions 200

Needs root (to drop the page cache) and --gb of free disk in --workdir.
"""

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import RINGLOG, free_port, log, perf  # noqa: E402

TOPIC = "restart"
POINT = "recovery-point.json"


def start(a, data, port, binary):
    cmd = [binary, "serve",
           "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
           "--override", f"log.dirs={data}"]
    for o in a.override:
        cmd += ["--override", o]
    logf = open(os.path.join(os.path.dirname(data), "broker.log"), "a")
    logf.write(f"==== {' '.join(cmd)}\n")
    logf.flush()
    began = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the broker exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                seconds = time.monotonic() - began
                with open(f"/proc/{proc.pid}/io") as f:
                    io = dict(line.split(": ") for line in f.read().splitlines())
                log(f"   read {int(io['read_bytes']) / 1e9:.2f} GB from the device to start")
                return proc, seconds
        except OSError:
            time.sleep(0.01)


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def partition_dirs(data):
    return sorted(glob.glob(os.path.join(data, f"{TOPIC}-*")))


def log_ends(port, partitions):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": f"127.0.0.1:{port}", "group.id": "restart-time"})
    try:
        return [c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=30)[1]
                for p in range(partitions)]
    finally:
        c.close()


def points_newer_than(data, t):
    dirs = partition_dirs(data)
    return dirs and all(os.path.exists(os.path.join(d, POINT))
                        and os.path.getmtime(os.path.join(d, POINT)) > t for d in dirs)


def drop_page_cache():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=20, help="what the broker holds")
    p.add_argument("--partitions", type=int, default=200)
    p.add_argument("--tail-mb", type=float, default=50, help="written past the recovery points")
    p.add_argument("--runs", type=int, default=2, help="starts of each kind, alternated")
    p.add_argument("--before-bin", default=None,
                   help="a build to start without recovery points (default: this one)")
    p.add_argument("--override", action="append", default=[], help="ringlog setting KEY=VALUE")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--keep", action="store_true", help="keep the data and broker log")
    a = p.parse_args()

    workdir = tempfile.mkdtemp(prefix="ringlog-restart-", dir=a.workdir)
    data = os.path.join(workdir, "data")
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    try:
        proc, _ = start(a, data, port, RINGLOG)
        log(f"== filling {a.gb} GB into {a.partitions} partitions")
        began = time.time()
        perf(["produce", "--bootstrap", bootstrap, "--topic", TOPIC,
                       "--partitions", a.partitions, "--record-bytes", 1024,
                       "--seconds", 3600, "--max-bytes", int(a.gb * 1e9)], timeout=3600)
        fill_end = time.time()
        log(f"== filled in {fill_end - began:.0f} s; waiting for every partition's recovery point")
        deadline = time.time() + 300
        while not points_newer_than(data, fill_end):
            if time.time() > deadline:
                raise SystemExit("no recovery point after 300 s")
            time.sleep(1)
        rate = 20_000
        tail_s = max(1, a.tail_mb * 1e6 / 1024 / rate)
        perf(["produce", "--bootstrap", bootstrap, "--topic", TOPIC,
              "--partitions", a.partitions, "--record-bytes", 1024,
              "--seconds", tail_s, "--rate", rate], timeout=600)
        ends = log_ends(port, a.partitions)
        kill(proc)
        points = {d: open(os.path.join(d, POINT), "rb").read() for d in partition_dirs(data)}
        held = sum(os.path.getsize(f) for f in glob.glob(os.path.join(data, "*", "*.log")))
        past = sum(ends) - sum(json.loads(b)["end_offset"] for b in points.values())
        log(f"== holding {held / 1e9:.1f} GB, {past} records past the recovery points")

        results = {"from_recovery_point": [], "full_scan": []}
        for run in range(a.runs):
            for kind in ("from_recovery_point", "full_scan"):
                for d, b in points.items():
                    path = os.path.join(d, POINT)
                    if kind == "full_scan":
                        if os.path.exists(path):
                            os.remove(path)
                    else:
                        with open(path, "wb") as f:
                            f.write(b)
                binary = RINGLOG if kind == "from_recovery_point" else (a.before_bin or RINGLOG)
                drop_page_cache()
                proc, seconds = start(a, data, port, binary)
                got = log_ends(port, a.partitions)
                kill(proc)
                if got != ends:
                    raise SystemExit(f"{kind}: log ends differ after the start: {got} vs {ends}")
                results[kind].append(seconds)
                log(f"== {kind}: serving after {seconds:.2f} s, every log end as before")
        with open(os.path.join(workdir, "broker.log")) as f:
            text = f.read()
        summary = {
            "held_gb": round(held / 1e9, 2),
            "partitions": a.partitions,
            "records_past_points": past,
            "runs": results,
            "median_s": {k: statistics.median(v) for k, v in results.items()},
            "starts_from_a_point": text.count("recovered from the recovery point"),
        }
        print(json.dumps(summary, indent=2))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(summary, f, indent=2)
    finally:
        if a.keep:
            log(f"== kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
