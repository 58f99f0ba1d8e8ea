"""Transactions and exactly-once against one broker, with real clients: librdkafka
(confluent-kafka) and the Java client (kafka-clients 4.3.0).

Helper programs: tests/txn/*.py (confluent-kafka), tests/java/JavaTxnCheck.java."""
import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import ROOT
from test_java_client import compile_java
from test_librdkafka import create_topic

TXN_DIR = ROOT / "tests" / "txn"
JAVA_SOURCE = ROOT / "tests" / "java" / "JavaTxnCheck.java"


def txn_producer(bootstrap, txn_id, **conf):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                  "linger.ms": 5, **conf})
    p.init_transactions(60)
    return p


def send(p, topic, prefix, n, partitions):
    for i in range(n):
        p.produce(topic, value=f"{prefix}{i}".encode(), partition=i % partitions)


def read_all(bootstrap, topic, partitions, isolation, expect, idle_s=3.0, limit_s=60):
    """Every value of `topic` from the start: until `expect` values are read and then
    nothing more arrives for `idle_s` (a late aborted or control record would)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{isolation}",
                  "isolation.level": isolation, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = []
    deadline = time.time() + limit_s
    quiet_since = time.time()
    while time.time() < deadline:
        msgs = c.consume(1000, 0.3)
        if msgs:
            quiet_since = time.time()
            for m in msgs:
                assert m.error() is None, m.error()
                seen.append(m.value().decode())
        elif len(seen) >= expect and time.time() - quiet_since >= idle_s:
            break
    c.close()
    return seen


def high_watermarks(bootstrap, topic, partitions, isolation):
    """The end offsets a consumer of `isolation` is told (ListOffsets LATEST: the last
    stable offset for read_committed), summed over the partitions."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "marks",
                  "isolation.level": isolation})
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                   for p in range(partitions))
    finally:
        c.close()


def count(values, prefix):
    return sum(1 for v in values if v.startswith(prefix))


def test_librdkafka_commit_abort_and_isolation_levels(broker):
    create_topic(broker.bootstrap, "tx-basic", 3)
    p = txn_producer(broker.bootstrap, "tx-basic")
    p.begin_transaction()
    send(p, "tx-basic", "c", 3000, 3)
    p.commit_transaction(60)
    p.begin_transaction()
    send(p, "tx-basic", "a", 1500, 3)
    p.flush(60)
    p.abort_transaction(60)
    # An open transaction holds read_committed consumers back at its first offset.
    p.begin_transaction()
    send(p, "tx-basic", "o", 600, 3)
    p.flush(60)
    committed_end = 3000 + 1500 + 2 * 3  # records and two markers per partition
    assert high_watermarks(broker.bootstrap, "tx-basic", 3, "read_committed") == committed_end
    assert high_watermarks(broker.bootstrap, "tx-basic", 3, "read_uncommitted") == committed_end + 600
    early = read_all(broker.bootstrap, "tx-basic", 3, "read_committed", 3000)
    assert (count(early, "c"), count(early, "a"), count(early, "o")) == (3000, 0, 0)
    p.commit_transaction(60)

    committed = read_all(broker.bootstrap, "tx-basic", 3, "read_committed", 3600)
    assert sorted(committed) == sorted([f"c{i}" for i in range(3000)] + [f"o{i}" for i in range(600)])
    everything = read_all(broker.bootstrap, "tx-basic", 3, "read_uncommitted", 5100)
    assert (count(everything, "c"), count(everything, "a"), count(everything, "o")) == (3000, 1500, 600)
    assert len(everything) == 5100, "no control record reaches the application"
    end = committed_end + 600 + 3
    assert high_watermarks(broker.bootstrap, "tx-basic", 3, "read_committed") == end


@pytest.fixture(scope="module")
def txn_classpath(tmp_path_factory):
    return compile_java(tmp_path_factory.mktemp("java-txn-classes"), JAVA_SOURCE)


def run_java(classpath, *args):
    out = subprocess.run(["java", "-cp", classpath, "JavaTxnCheck", *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"java {args[0]} failed:\n{out.stdout}\n{out.stderr}"
    assert f"ok {args[0]}" in out.stdout


def test_java_commit_abort_isolation_and_admin(broker, txn_classpath):
    run_java(txn_classpath, "commit-abort", broker.bootstrap, "java-txn")


def test_java_second_producer_fences_the_first(broker, txn_classpath):
    run_java(txn_classpath, "fence", broker.bootstrap, "java-fence")


def test_an_idle_transactional_id_expires(broker_factory, txn_classpath):
    b = broker_factory(["transactional.id.expiration.ms=2000",
                        "transaction.abort.timed.out.transaction.cleanup.interval.ms=200"])
    run_java(txn_classpath, "expiry", b.bootstrap, "java-expiry")
    assert "transactional id expired" in b.log_text()


def test_exactly_once_across_a_sigkill_of_the_transforming_process(broker):
    total = 20_000
    create_topic(broker.bootstrap, "eos-in", 2)
    create_topic(broker.bootstrap, "eos-out", 2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(total):
        p.produce("eos-in", value=b"%06d" % i, partition=i % 2)
    assert p.flush(60) == 0
    cmd = [sys.executable, str(TXN_DIR / "eos_transform.py"), broker.bootstrap,
           "eos-in", "eos-out", "eos-1", "15"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    commits = 0
    for line in first.stdout:
        commits += line.startswith("committed")
        if commits == 20:
            break
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert commits == 20, "the transformer committed 20 transactions before it was killed"
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    out = read_all(broker.bootstrap, "eos-out", 2, "read_committed", total)
    assert len(out) == total, f"{len(out)} outputs for {total} inputs"
    assert sorted(out) == sorted("T%06d" % i for i in range(total))


def test_a_killed_producers_transaction_is_aborted_after_its_timeout(broker_factory):
    b = broker_factory(["transaction.abort.timed.out.transaction.cleanup.interval.ms=200"])
    create_topic(b.bootstrap, "tx-timeout", 2)
    opener = subprocess.Popen(
        [sys.executable, str(TXN_DIR / "open_transaction.py"), b.bootstrap, "tx-timeout",
         "tx-killed", "300", "3000"], stdout=subprocess.PIPE, text=True)
    assert opener.stdout.readline().strip() == "open"
    opener.send_signal(signal.SIGKILL)
    opener.wait()
    after = Producer({"bootstrap.servers": b.bootstrap})
    send(after, "tx-timeout", "after", 50, 2)
    assert after.flush(60) == 0
    started = time.time()
    seen = read_all(b.bootstrap, "tx-timeout", 2, "read_committed", 50, idle_s=1.0)
    assert count(seen, "after") == 50 and count(seen, "open") == 0, seen[:5]
    # The coordinator aborted it: not before its 3 s timeout could have passed.
    assert "aborting a transaction past its timeout" in b.log_text()
    assert time.time() - started < 50
    # Its producer id was fenced: a new instance starts a fresh epoch and works.
    p = txn_producer(b.bootstrap, "tx-killed")
    p.begin_transaction()
    send(p, "tx-timeout", "next", 10, 2)
    p.commit_transaction(60)
    seen = read_all(b.bootstrap, "tx-timeout", 2, "read_committed", 60, idle_s=1.0)
    assert (count(seen, "after"), count(seen, "next"), count(seen, "open")) == (50, 10, 0)


def test_a_broker_sigkill_mid_transaction(broker):
    create_topic(broker.bootstrap, "tx-crash", 2)
    p = txn_producer(broker.bootstrap, "tx-crash")
    p.begin_transaction()
    send(p, "tx-crash", "c", 1000, 2)
    p.commit_transaction(60)
    # Open when the broker dies: the restarted broker holds its state (coordinator and
    # partitions), read_committed consumers wait at its start, and it commits.
    p.begin_transaction()
    send(p, "tx-crash", "o", 400, 2)
    p.flush(60)
    broker.restart(signal.SIGKILL)
    assert high_watermarks(broker.bootstrap, "tx-crash", 2, "read_committed") == 1000 + 2
    p.commit_transaction(60)
    assert high_watermarks(broker.bootstrap, "tx-crash", 2, "read_committed") == 1400 + 4
    # Open again at a crash, and its producer gone: the next instance of the id
    # aborts it.
    p.begin_transaction()
    send(p, "tx-crash", "x", 300, 2)
    p.flush(60)
    broker.restart(signal.SIGKILL)
    del p
    q = txn_producer(broker.bootstrap, "tx-crash")
    q.begin_transaction()
    send(q, "tx-crash", "n", 100, 2)
    q.commit_transaction(60)
    seen = read_all(broker.bootstrap, "tx-crash", 2, "read_committed", 1500)
    assert sorted(seen) == sorted([f"c{i}" for i in range(1000)] + [f"o{i}" for i in range(400)]
                                  + [f"n{i}" for i in range(100)])
    assert high_watermarks(broker.bootstrap, "tx-crash", 2, "read_committed") == 1800 + 8


def test_offsets_of_an_open_transaction_are_unstable_to_read_committed_consumers(broker):
    from confluent_kafka import KafkaException
    create_topic(broker.bootstrap, "tx-offsets", 1)
    group = "tx-offsets-group"
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    metadata = c.consumer_group_metadata()
    p = txn_producer(broker.bootstrap, "tx-offsets")
    p.begin_transaction()
    send(p, "tx-offsets", "x", 10, 1)
    p.send_offsets_to_transaction([TopicPartition("tx-offsets", 0, 7)], metadata, 30)
    # OffsetFetch with require_stable (librdkafka's read_committed consumer):
    # UNSTABLE_OFFSET_COMMIT while the transaction holds the offset, so it waits.
    with pytest.raises(KafkaException):
        c.committed([TopicPartition("tx-offsets", 0)], timeout=3)
    p.commit_transaction(60)
    [tp] = c.committed([TopicPartition("tx-offsets", 0)], timeout=10)
    assert tp.offset == 7 and tp.error is None
    c.close()
