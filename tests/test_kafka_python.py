"""kafka-python (a pure-Python client, independent of librdkafka) against ringlog."""
import signal
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from records import PARTITIONS, PerPartitionOrder, value

MILLION = 1_000_000
CONSUME_TIMEOUT_S = 600


def create_topic(bootstrap, name, partitions):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    admin.close()


def consume_and_check(bootstrap, topic, total):
    check = PerPartitionOrder(total)
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                      max_partition_fetch_bytes=1 << 20, fetch_max_bytes=8 << 20)
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    started = time.time()
    deadline = started + CONSUME_TIMEOUT_S
    while not check.complete():
        assert time.time() < deadline, f"consumed {check.seen} of {total} before the deadline"
        for tp, msgs in c.poll(timeout_ms=1000, max_records=50_000).items():
            for m in msgs:
                check.check(tp.partition, m.offset, m.value)
    c.close()
    check.assert_complete()
    return total / (time.time() - started)


def test_million_records_survive_sigterm_and_sigkill_restarts(broker):
    topic = "million-kp"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5,
                      batch_size=256 << 10, max_in_flight_requests_per_connection=5)
    failures = []
    cpu = broker.cpu_seconds()
    started = time.time()
    for i in range(MILLION):
        p.send(topic, value=value(i), partition=i % PARTITIONS).add_errback(failures.append)
    p.flush(timeout=300)
    rate = MILLION / (time.time() - started)
    p.close()
    assert failures == [], f"{len(failures)} sends failed, first: {failures[0]!r}"
    produce_cpu, cpu = broker.cpu_seconds() - cpu, broker.cpu_seconds()
    print(f"\nkafka-python produce acks=all: {rate:,.0f} records/s, broker CPU {produce_cpu:.2f} s")
    rate = consume_and_check(broker.bootstrap, topic, MILLION)
    print(f"kafka-python consume: {rate:,.0f} records/s, broker CPU {broker.cpu_seconds() - cpu:.2f} s")
    assert broker.restart(signal.SIGTERM) == 0
    consume_and_check(broker.bootstrap, topic, MILLION)
    broker.restart(signal.SIGKILL)
    consume_and_check(broker.bootstrap, topic, MILLION)


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_keys_headers_timestamps_round_trip(broker, codec):
    topic = f"kp-codec-{codec}"
    create_topic(broker.bootstrap, topic, 3)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=codec, linger_ms=20)
    base_ts = 1_700_000_000_000
    sent = []
    for i in range(600):
        key = None if i % 3 == 0 else b"key-%d" % i
        val = value(i) * (1 + i % 4)
        headers = [("h1", b"v-%d" % i), ("empty", b"")] if i % 2 else []
        part = i % 3
        p.send(topic, key=key, value=val, headers=headers, partition=part, timestamp_ms=base_ts + i)
        sent.append((part, key, val, headers, base_ts + i))
    p.flush(timeout=30)
    p.close()
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, group_id=None)
    parts = [TopicPartition(topic, q) for q in range(3)]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    got = {0: [], 1: [], 2: []}
    deadline = time.time() + 60
    while sum(map(len, got.values())) < len(sent) and time.time() < deadline:
        for tp, msgs in c.poll(timeout_ms=1000).items():
            for m in msgs:
                got[tp.partition].append((tp.partition, m.key, m.value, list(m.headers), m.timestamp))
    c.close()
    for q in range(3):
        assert got[q] == [s for s in sent if s[0] == q], f"partition {q} differs"


def test_offsets_for_times_and_end_offsets(broker):
    topic = "kp-offsets"
    create_topic(broker.bootstrap, topic, 1)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
    base = 1_650_000_000_000
    for i in range(10):
        p.send(topic, value=b"v", partition=0, timestamp_ms=base + 100 * i).get(timeout=10)
    p.close()
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    tp = TopicPartition(topic, 0)
    assert c.beginning_offsets([tp])[tp] == 0
    assert c.end_offsets([tp])[tp] == 10
    assert c.offsets_for_times({tp: base + 450})[tp].offset == 5
    assert c.offsets_for_times({tp: base + 100_000})[tp] is None
    c.close()


def test_group_consumer_commits_and_a_successor_resumes_there(broker_factory):
    b = broker_factory(["group.initial.rebalance.delay.ms=0"])
    create_topic(b.bootstrap, "py-group", 3)
    p = KafkaProducer(bootstrap_servers=b.bootstrap, acks="all")
    for i in range(300):
        p.send("py-group", value=str(i).encode(), partition=i % 3)
    p.flush()
    p.close()

    def member():
        # A short session: should a closing member fail to leave, it expires soon.
        c = KafkaConsumer("py-group", bootstrap_servers=b.bootstrap, group_id="py",
                          enable_auto_commit=False, auto_offset_reset="earliest",
                          session_timeout_ms=6000, heartbeat_interval_ms=500)
        return c

    first = member()
    seen = []
    deadline = time.time() + 60
    while len(seen) < 120:
        assert time.time() < deadline, f"first member read {len(seen)}"
        for msgs in first.poll(timeout_ms=200, max_records=40).values():
            seen.extend(int(m.value) for m in msgs)
        first.commit()
    assert sorted(first.assignment()) == [TopicPartition("py-group", q) for q in range(3)]
    first.close()
    second = member()
    deadline = time.time() + 60
    while len(seen) < 300:
        assert time.time() < deadline, f"read {len(seen)} of 300"
        for msgs in second.poll(timeout_ms=200).values():
            seen.extend(int(m.value) for m in msgs)
    second.commit()
    # The successor started exactly at the committed offsets: no record twice.
    assert sorted(seen) == list(range(300))
    assert [second.committed(TopicPartition("py-group", q)) for q in range(3)] == [100] * 3
    second.close()
