"""librdkafka (through confluent-kafka) against a real ringlog process."""
import signal
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from records import PARTITIONS, PerPartitionOrder, value

MILLION = 1_000_000
CONSUME_TIMEOUT_S = 300


def create_topic(bootstrap, name, partitions, replication=1, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, replication, config=config or {})])
    for f in futures.values():
        f.result(timeout=30)
    return admin


def produce_numbered(bootstrap, topic, total, **conf):
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, **conf})
    started = time.time()
    for i in range(total):
        while True:
            try:
                p.produce(topic, value=value(i), partition=i % PARTITIONS, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0, "records still in flight after flush"
    elapsed = time.time() - started
    assert errors == [], f"{len(errors)} delivery errors, first: {errors[0]}"
    return total / elapsed


def consumer(bootstrap, **conf):
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "ringlog-tests",  # required by the client; no group protocol is used
        "enable.auto.commit": False,
        "auto.offset.reset": "error",
        **conf,
    })


def consume_and_check(bootstrap, topic, total):
    check = PerPartitionOrder(total)
    c = consumer(bootstrap)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    started = time.time()
    deadline = started + CONSUME_TIMEOUT_S
    try:
        while not check.complete():
            assert time.time() < deadline, f"consumed {check.seen} of {total} before the deadline"
            for m in c.consume(num_messages=10_000, timeout=1.0):
                if m.error():
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    continue
                check.check(m.partition(), m.offset(), m.value())
    finally:
        c.close()
    check.assert_complete()
    return total / (time.time() - started)


@pytest.mark.parametrize("idempotent", [False, True], ids=["acks_all", "idempotent"])
def test_million_records_survive_sigterm_and_sigkill_restarts(broker, idempotent):
    topic = "million"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    cpu = broker.cpu_seconds()
    rate = produce_numbered(broker.bootstrap, topic, MILLION, **{"enable.idempotence": idempotent})
    produce_cpu, cpu = broker.cpu_seconds() - cpu, broker.cpu_seconds()
    print(f"\nlibrdkafka produce acks=all idempotent={idempotent}: {rate:,.0f} records/s, "
          f"broker CPU {produce_cpu:.2f} s")
    rate = consume_and_check(broker.bootstrap, topic, MILLION)
    print(f"librdkafka consume: {rate:,.0f} records/s, broker CPU {broker.cpu_seconds() - cpu:.2f} s")
    assert broker.restart(signal.SIGTERM) == 0
    consume_and_check(broker.bootstrap, topic, MILLION)
    broker.restart(signal.SIGKILL)
    consume_and_check(broker.bootstrap, topic, MILLION)


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_keys_headers_timestamps_round_trip(broker, codec):
    topic = f"codec-{codec}"
    create_topic(broker.bootstrap, topic, 3)
    p = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": codec, "linger.ms": 20})
    base_ts = 1_700_000_000_000
    sent = []
    for i in range(600):
        key = None if i % 3 == 0 else b"key-%d" % i
        val = None if i % 50 == 49 else value(i) * (1 + i % 4)
        headers = [("h1", b"v-%d" % i), ("empty", b""), ("h1", b"again")] if i % 2 else None
        part = i % 3
        p.produce(topic, key=key, value=val, headers=headers, partition=part, timestamp=base_ts + i)
        sent.append((part, key, val, headers or [], base_ts + i))
    assert p.flush(30) == 0
    c = consumer(broker.bootstrap)
    c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in range(3)])
    got = {0: [], 1: [], 2: []}
    deadline = time.time() + 60
    while sum(map(len, got.values())) < len(sent) and time.time() < deadline:
        for m in c.consume(1000, 1.0):
            assert not m.error(), m.error()
            got[m.partition()].append((m.partition(), m.key(), m.value(), m.headers() or [], m.timestamp()[1]))
    c.close()
    for q in range(3):
        assert got[q] == [s for s in sent if s[0] == q], f"partition {q} differs"


def test_list_offsets_earliest_latest_by_time_and_max_timestamp(broker):
    topic = "offsets"
    admin = create_topic(broker.bootstrap, topic, 2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    base = 1_600_000_000_000
    # Partition 0 gets timestamps base+0, +10, ..., one record per batch, with the
    # maximum in the middle; partition 1 stays empty.
    stamps = [base + 10 * i for i in range(20)]
    stamps[7] = base + 10_000
    for ts in stamps:
        p.produce(topic, value=b"x", partition=0, timestamp=ts)
        p.flush(10)
    c = consumer(broker.bootstrap)
    assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 20)
    assert c.get_watermark_offsets(TopicPartition(topic, 1), timeout=10) == (0, 0)
    found = c.offsets_for_times([TopicPartition(topic, 0, base + 25)], timeout=10)
    assert found[0].offset == 3
    found = c.offsets_for_times([TopicPartition(topic, 0, base + 20_000)], timeout=10)
    assert found[0].offset == -1  # no record that new: Kafka answers -1
    c.close()
    specs = {
        TopicPartition(topic, 0): OffsetSpec.max_timestamp(),
        TopicPartition(topic, 1): OffsetSpec.earliest(),
    }
    results = {tp.partition: f.result(timeout=10) for tp, f in admin.list_offsets(specs).items()}
    assert results[0].offset == 7 and results[0].timestamp == base + 10_000
    assert results[1].offset == 0


def test_delete_topic_and_recreate_starts_empty(broker):
    topic = "doomed"
    admin = create_topic(broker.bootstrap, topic, PARTITIONS)
    produce_numbered(broker.bootstrap, topic, 800)
    for f in admin.delete_topics([topic]).values():
        f.result(timeout=30)
    assert topic not in admin.list_topics(timeout=10).topics
    # Deleted data must not come back, neither now nor after a restart.
    assert broker.restart(signal.SIGTERM) == 0
    assert topic not in admin.list_topics(timeout=10).topics
    admin = create_topic(broker.bootstrap, topic, PARTITIONS)
    c = consumer(broker.bootstrap)
    for q in range(PARTITIONS):
        assert c.get_watermark_offsets(TopicPartition(topic, q), timeout=10) == (0, 0)
    c.close()
    produce_numbered(broker.bootstrap, topic, 1000)
    consume_and_check(broker.bootstrap, topic, 1000)


def test_create_topic_errors_use_kafka_codes(broker):
    admin = create_topic(broker.bootstrap, "exists", 1)
    cases = [
        (NewTopic("exists", 1, 1), KafkaError.TOPIC_ALREADY_EXISTS),
        (NewTopic("too-replicated", 1, 3), KafkaError.INVALID_REPLICATION_FACTOR),
        (NewTopic("bad/name", 1, 1), KafkaError.TOPIC_EXCEPTION),
        (NewTopic("bad-config", 1, 1, config={"no.such.config": "1"}), KafkaError.INVALID_CONFIG),
    ]
    for new, code in cases:
        (f,) = admin.create_topics([new]).values()
        with pytest.raises(Exception) as err:
            f.result(timeout=30)
        assert err.value.args[0].code() == code, f"{new.topic}: {err.value}"
    for f in admin.delete_topics(["never-existed"]).values():
        with pytest.raises(Exception) as err:
            f.result(timeout=30)
        assert err.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_retention_and_auto_offset_reset(broker_factory):
    broker = broker_factory(["log.segment.bytes=2000", "log.retention.check.interval.ms=50"])
    create_topic(broker.bootstrap, "expiring", 1, config={"retention.ms": "60000"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(200):
        p.produce("expiring", value=value(i), partition=0, timestamp=1000 + i)  # 1970: expired
        if i % 10 == 9:
            p.flush(10)
    assert p.flush(10) == 0
    c = consumer(broker.bootstrap)
    # Retention may already have run while records arrived: wait until the log start
    # is above 0 and has stayed put for several retention runs.
    deadline = time.time() + 30
    seen = []
    while len(seen) < 6 or seen[-1] == 0 or len(set(seen[-6:])) > 1:
        assert time.time() < deadline, f"retention did not settle: {seen[-6:]}"
        seen.append(c.get_watermark_offsets(TopicPartition("expiring", 0), timeout=10)[0])
        time.sleep(0.06)
    start, end = c.get_watermark_offsets(TopicPartition("expiring", 0), timeout=10)
    c.close()
    assert 0 < start < end == 200
    for reset, first in [("earliest", start), ("latest", None)]:
        c = consumer(broker.bootstrap, **{"auto.offset.reset": reset})
        c.assign([TopicPartition("expiring", 0, 0)])
        msgs = c.consume(500, 3.0)
        c.close()
        if first is None:
            assert [m for m in msgs if not m.error()] == [], "latest: nothing old is delivered"
        else:
            assert msgs and not msgs[0].error() and msgs[0].offset() == first
            assert msgs[0].value() == value(first)
    c = consumer(broker.bootstrap, **{"auto.offset.reset": "error"})
    c.assign([TopicPartition("expiring", 0, 0)])
    deadline = time.time() + 10
    errors = []
    while not errors and time.time() < deadline:
        errors = [m.error() for m in c.consume(10, 0.5) if m.error()]
    c.close()
    assert errors and errors[0].code() == KafkaError._AUTO_OFFSET_RESET, errors


def test_admin_delete_records(broker):
    admin = create_topic(broker.bootstrap, "trimmed", 1)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(100):
        p.produce("trimmed", value=value(i), partition=0)
    assert p.flush(10) == 0
    (f,) = admin.delete_records([TopicPartition("trimmed", 0, 60)]).values()
    assert f.result(timeout=30).low_watermark == 60
    c = consumer(broker.bootstrap)
    assert c.get_watermark_offsets(TopicPartition("trimmed", 0), timeout=10) == (60, 100)
    c.assign([TopicPartition("trimmed", 0, OFFSET_BEGINNING)])
    msgs = [m for m in c.consume(100, 5.0) if not m.error()]
    c.close()
    assert [m.offset() for m in msgs] == list(range(60, 100))
    assert all(m.value() == value(m.offset()) for m in msgs)
