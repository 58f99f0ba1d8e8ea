"""Overload: 10,000 idle connections plus 10 consumers that pipeline fetches and never
read their sockets, while producers run. The broker's RSS stays under the bound the
README states, and other clients (a librdkafka producer and consumer, a metadata
call) keep being served.

Fetch responses here are built in memory (`ringlog.fetch.zero.copy=false`), the case
where a non-reading consumer could pin the most: without backpressure each of the 10
would hold 16 pipelined responses of 8 MB."""
import os
import resource
import socket
import struct
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from test_librdkafka import create_topic

IDLE_CONNECTIONS = 10_000
NON_READING_CONSUMERS = 10
PIPELINED_FETCHES = 16
PARTITION_MAX_BYTES = 8 << 20
BACKLOG_RECORDS = 40_000  # 1 KiB each: 40 MB to fetch
# The bound stated in README.md ("Limits under overload").
RSS_BOUND_MB = 512


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fetch_v4(correlation_id, topic, partition_max_bytes):
    """A Fetch v4 request frame for partition 0 from offset 0, built by hand."""
    client = b"non-reader"
    name = topic.encode()
    body = struct.pack(">hhih", 1, 4, correlation_id, len(client)) + client
    body += struct.pack(">iiiib", -1, 500, 1, 64 << 20, 0)
    body += struct.pack(">ih", 1, len(name)) + name
    body += struct.pack(">iiqi", 1, 0, 0, partition_max_bytes)
    return struct.pack(">i", len(body)) + body


def produce(bootstrap, topic, count, errors):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": 1})
    payload = os.urandom(1024)
    for i in range(count):
        while True:
            try:
                p.produce(topic, payload, on_delivery=lambda err, msg: err and errors.append(err))
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def test_idle_connections_and_non_reading_consumers_stay_within_the_rss_bound(broker_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert hard >= IDLE_CONNECTIONS + 1000, f"RLIMIT_NOFILE hard limit {hard} is too low"
    b = broker_factory(["ringlog.fetch.zero.copy=false"])
    create_topic(b.bootstrap, "load", 1)
    errors = []
    produce(b.bootstrap, "load", BACKLOG_RECORDS, errors)
    assert not errors
    pid = b.proc.pid
    peak = [rss_mb(pid)]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    idle = []
    non_readers = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            idle.append(socket.create_connection(("127.0.0.1", b.port), timeout=10))
        for i in range(NON_READING_CONSUMERS):
            s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            for n in range(PIPELINED_FETCHES):
                s.sendall(fetch_v4(n, "load", PARTITION_MAX_BYTES))
            non_readers.append(s)
        # Producers keep writing while all of that is held open.
        producer = threading.Thread(target=produce, args=(b.bootstrap, "load", 20_000, errors))
        producer.start()
        # Another client is still served: it reads the backlog from the start.
        c = Consumer({
            "bootstrap.servers": b.bootstrap,
            "group.id": "overload-check",
            "enable.auto.commit": False,
        })
        c.assign([TopicPartition("load", 0, OFFSET_BEGINNING)])
        got = 0
        deadline = time.time() + 60
        while got < BACKLOG_RECORDS and time.time() < deadline:
            for m in c.consume(1000, timeout=1):
                assert m.error() is None, m.error()
                got += 1
        c.close()
        assert got >= BACKLOG_RECORDS, f"a reading consumer got {got} of {BACKLOG_RECORDS} records"
        producer.join(timeout=120)
        assert not producer.is_alive(), "the producer did not finish"
        assert not errors, errors[:5]
        md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
        assert "load" in md.topics
        held = rss_mb(pid)
    finally:
        stop.set()
        sampler.join()
        for s in idle + non_readers:
            s.close()
    print(f"broker RSS: peak {peak[0]:.0f} MB, {held:.0f} MB with everything open")
    assert peak[0] < RSS_BOUND_MB, f"broker RSS peaked at {peak[0]:.0f} MB (bound {RSS_BOUND_MB} MB)"
