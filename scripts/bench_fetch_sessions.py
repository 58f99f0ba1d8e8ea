"""A consumer of many partitions of which few receive data: broker CPU with incremental
fetch sessions (KIP-227) and without.

The consumer is kafka-python (a real client whose sessions can be switched off:
`enable_incremental_fetch_sessions`), assigned all PARTITIONS partitions of a topic
from their ends; a librdkafka producer writes RATE records/s, round-robin into
WITH_DATA of them (slowly enough that the consumer keeps up either way: each append
wakes one fetch, so both fetch as often). Without sessions every fetch names, and every answer carries, all
partitions; with one, a fetch names only what moved and the answer holds only
partitions with news. Rounds alternate between the two, a fresh consumer each; each
reports broker CPU-s per second of the measured window, the consumer's fetch requests
per second and the records it received. Called by scripts/bench.py.
"""

import statistics
import threading
import time

from bench import log

NAMES = ["fetch-sessions"]
ROUNDS = 3
PARTITIONS = 1000
WITH_DATA = 4
RATE = 20
WARM_UP_S = 3


def _produce_steadily(bootstrap, topic, stop):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": 1})
    sent = 0
    next_at = time.monotonic()
    while not stop.is_set():
        p.produce(topic, b"x" * 100, partition=sent % WITH_DATA)
        sent += 1
        p.poll(0)
        next_at += 1 / RATE
        time.sleep(max(0.0, next_at - time.monotonic()))
    p.flush(30)


def _consume(bootstrap, topic, sessions, seconds, broker):
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                      enable_incremental_fetch_sessions=sessions, fetch_max_wait_ms=500)
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        c.assign(parts)
        c.seek_to_end()
        warm_until = time.monotonic() + WARM_UP_S
        while time.monotonic() < warm_until:
            c.poll(timeout_ms=100)
        fetches0 = _fetches(c)
        cpu0, t0 = broker.cpu_seconds(), time.monotonic()
        records = 0
        while time.monotonic() < t0 + seconds:
            for batch in c.poll(timeout_ms=100).values():
                records += len(batch)
        cpu, secs = broker.cpu_seconds() - cpu0, time.monotonic() - t0
        fetches = _fetches(c) - fetches0
        return {"broker_cpu_s_per_s": cpu / secs, "fetches_per_s": fetches / secs,
                "broker_cpu_ms_per_fetch": 1000 * cpu / fetches if fetches else None,
                "records": records, "session_epoch": _session_epoch(c)}
    finally:
        c.close()


def _fetches(consumer):
    """Fetch responses the consumer has handled so far."""
    return consumer._fetcher._bench_fetches


def _session_epoch(consumer):
    """The epoch the consumer's fetch session reached (how many incremental fetches it
    made in it; 0 without one): evidence that the broker kept the session."""
    handlers = consumer._fetcher._session_handlers.values()
    return max([h.next_metadata.epoch for h in handlers] + [0])


def _count_fetches():
    """kafka-python keeps no total of fetches: count the responses it handles."""
    from kafka.consumer.fetcher import Fetcher
    if getattr(Fetcher, "_bench_counted", False):
        return
    handle = Fetcher._handle_fetch_response

    def counted(self, *args, **kwargs):
        self._bench_fetches = getattr(self, "_bench_fetches", 0) + 1
        return handle(self, *args, **kwargs)
    Fetcher._handle_fetch_response = counted
    Fetcher._bench_fetches = 0
    Fetcher._bench_counted = True


def run(a, start_broker):
    """{"with sessions"|"without sessions": {"rounds": [...], "median_broker_cpu_s_per_s": x}}"""
    from confluent_kafka.admin import AdminClient, NewTopic
    _count_fetches()
    b = start_broker()
    figures = {"with sessions": [], "without sessions": []}
    stop = threading.Event()
    topic = "bench-fetch-sessions"
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        for f in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
            f.result(60)
        producer = threading.Thread(target=_produce_steadily, args=(b.bootstrap, topic, stop))
        producer.start()
        try:
            for r in range(ROUNDS):
                for name, sessions in [("with sessions", True), ("without sessions", False)]:
                    log(f"== fetch sessions: {name}, round {r + 1} of {ROUNDS}")
                    got = _consume(b.bootstrap, topic, sessions, a.seconds, b)
                    figures[name].append(got)
                    log(f"   broker {got['broker_cpu_s_per_s']:.3f} CPU-s/s, "
                        f"{got['fetches_per_s']:.0f} fetches/s, {got['records']} records, "
                        f"session epoch {got['session_epoch']}")
        finally:
            stop.set()
            producer.join()
    finally:
        b.stop()
    return {name: {"rounds": rounds, "median_broker_cpu_s_per_s":
                   statistics.median(r["broker_cpu_s_per_s"] for r in rounds)}
            for name, rounds in figures.items()}


def print_summary(out):
    print(f"\n## a consumer of {PARTITIONS} partitions, {WITH_DATA} receiving {RATE} records/s "
          f"(kafka-python; broker CPU-s per second; {ROUNDS} rounds each, alternating)")
    print(f"{'':18} {'fetches/s each round':>22} {'CPU-ms per fetch':>22} "
          f"{'CPU-s/s each round':>24} {'median':>8}")
    for name, f in out.items():
        rates = ", ".join(f"{r['fetches_per_s']:.0f}" for r in f["rounds"])
        per_fetch = ", ".join(f"{r['broker_cpu_ms_per_fetch']:.2f}" for r in f["rounds"]
                              if r["broker_cpu_ms_per_fetch"])
        each = ", ".join(f"{r['broker_cpu_s_per_s']:.3f}" for r in f["rounds"])
        print(f"{name:18} {rates:>22} {per_fetch:>22} {each:>24} "
              f"{f['median_broker_cpu_s_per_s']:8.3f}")
    with_, without = (out[k]["median_broker_cpu_s_per_s"] for k in ("with sessions", "without sessions"))
    if without:
        print(f"with / without sessions: {with_ / without:.2f}")
