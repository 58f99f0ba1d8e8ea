"""Produce throughput under each flush policy, side by side in one run.

    target/test-venv/bin/python benches/flush_policy.py [RECORDS]

Starts target/release/ringlog once per policy (fresh log dir each), produces RECORDS
100-byte records with librdkafka (acks=all, 8 partitions) and prints records/s, broker
CPU-seconds, and the group-commit counts from the broker's log (sync rounds run vs
sync requests served: requests per round is how many appends shared each fdatasync).
The client shares the machine's cores with the broker; compare ratios, not absolutes.
"""
import pathlib
import signal
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from conftest import Broker  # noqa: E402
from records import value  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

POLICIES = [
    ("no fsync (default)", []),
    ("flush.ms=1000", ["log.flush.interval.ms=1000"]),
    ("fsync every batch (flush.messages=1)", ["log.flush.interval.messages=1"]),
]


def run(overrides, records):
    with tempfile.TemporaryDirectory() as tmp:
        b = Broker(pathlib.Path(tmp) / "data", overrides)
        b.start()
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        for f in admin.create_topics([NewTopic("bench", 8, 1)]).values():
            f.result(30)
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5})
        cpu = b.cpu_seconds()
        started = time.time()
        for i in range(records):
            while True:
                try:
                    p.produce("bench", value=value(i), partition=i % 8)
                    break
                except BufferError:
                    p.poll(0.01)
        assert p.flush(300) == 0
        rate = records / (time.time() - started)
        cpu = b.cpu_seconds() - cpu
        b.stop(signal.SIGTERM)
        rounds = requests = 0
        for line in b.log_text().splitlines():
            if "shard stopped" in line:
                fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
                rounds += int(fields["sync_rounds"])
                requests += int(fields["sync_requests"])
        return rate, cpu, rounds, requests


def main():
    records = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    print(f"{records:,} records of 100 B, librdkafka acks=all, 8 partitions")
    print(f"{'policy':40} {'records/s':>10} {'broker CPU s':>12} {'sync rounds':>11} {'requests':>9}")
    for name, overrides in POLICIES:
        rate, cpu, rounds, requests = run(overrides, records)
        print(f"{name:40} {rate:10,.0f} {cpu:12.2f} {rounds:11,} {requests:9,}")


if __name__ == "__main__":
    main()
