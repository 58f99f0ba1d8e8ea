"""Storage faults injected into a real broker (RINGLOG_FAULTS: short writes, EIO, ENOSPC
at seeded random) while an idempotent librdkafka producer writes: failed appends are
cut back and answered KAFKA_STORAGE_ERROR, the client retries, and in the end every
record is present exactly once, in order, byte-exact."""
import re
import signal

from confluent_kafka import Producer

from records import value
from test_crash import PARTITIONS, check
from test_librdkafka import create_topic

RECORDS = 20_000


def test_injected_write_faults_lose_and_duplicate_nothing(broker_factory):
    broker = broker_factory(env={"RINGLOG_FAULTS": "seed=11,short_write=0.2,eio=0.05,enospc=0.05"})
    create_topic(broker.bootstrap, "faulty", PARTITIONS)
    acked, errors = {}, []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[int(msg.value()[:12])] = (msg.partition(), msg.offset())

    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 1, "batch.size": 16384,  # many small batches: many writes to fault
                  "message.timeout.ms": 120_000, "retry.backoff.ms": 10})
    for n in range(RECORDS):
        while True:
            try:
                p.produce("faulty", value=value(n), partition=n % PARTITIONS, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(120) == 0
    assert errors == [], errors[:3]
    assert len(acked) == RECORDS
    assert check(broker.bootstrap, "faulty", acked) == RECORDS, "each record exactly once"
    # The faults really happened, and the broker says how it answered them.
    assert broker.stop(signal.SIGTERM) == 0
    log = broker.log_text()
    injected = sum(int(n) for n in re.findall(r"faults_injected=(\d+)", log))
    assert injected > 0, "no fault was injected"
    assert "fault injection is ON" in log
    broker.start()
    assert check(broker.bootstrap, "faulty", acked) == RECORDS, "and after a restart"


def test_injected_read_faults_fail_fetches_never_serve_bad_bytes(broker_factory):
    """Reads that fail with EIO (a third of them) fail their fetch with
    KAFKA_STORAGE_ERROR; the partition stays online, the consumer retries, and reads
    every record once, in order, byte-exact."""
    # No tail cache, so that reads go to the files in either write mode.
    broker = broker_factory(["ringlog.tail.cache.bytes=0"],
                            env={"RINGLOG_FAULTS": "seed=3,read_eio=0.3"})
    create_topic(broker.bootstrap, "unreadable", PARTITIONS)
    acked = {}

    def on_delivery(err, msg):
        assert err is None, err
        acked[int(msg.value()[:12])] = (msg.partition(), msg.offset())

    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                  "acks": "all", "linger.ms": 5})
    for n in range(RECORDS):
        while True:
            try:
                p.produce("unreadable", value=value(n), partition=n % PARTITIONS,
                          on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(60) == 0 and len(acked) == RECORDS
    assert check(broker.bootstrap, "unreadable", acked) == RECORDS
    assert broker.stop(signal.SIGTERM) == 0
    log = broker.log_text()
    assert sum(int(n) for n in re.findall(r"faults_injected=(\d+)", log)) > 0, "no read failed"
