"""Crash safety: an idempotent producer (acks=all) writes while the broker, with
log.flush.interval.messages=1, is SIGKILLed at random moments. After every restart,
every acknowledged record is present exactly once, in order, byte-exact, and the
consumer (which checks CRCs) never receives a corrupt batch."""
import json
import random
import signal
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from records import value
from test_librdkafka import create_topic

CYCLES = 20
PARTITIONS = 4
RECORDS_PER_SECOND = 5_000  # bounded load: the checks re-read everything each cycle


class Writer(threading.Thread):
    """Produces numbered records to partition n % PARTITIONS until stopped."""

    def __init__(self, bootstrap, topic):
        super().__init__(daemon=True)
        self.topic = topic
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "message.timeout.ms": 300_000,  # ride out the broker's restarts
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
        })
        self.acked = {}  # record number -> (partition, offset)
        self.errors = []
        self.sent = 0
        self.stopping = threading.Event()

    def on_delivery(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.acked[int(msg.value()[:12])] = (msg.partition(), msg.offset())

    def run(self):
        interval = 1.0 / RECORDS_PER_SECOND
        while not self.stopping.is_set():
            n = self.sent
            try:
                self.producer.produce(self.topic, value=value(n), partition=n % PARTITIONS,
                                      on_delivery=self.on_delivery)
                self.sent += 1
            except BufferError:
                pass
            self.producer.poll(0)
            time.sleep(interval)

    def wait_for_more_acks(self, count, what):
        """Waits (bounded) until `count` more records are acknowledged than now."""
        target = len(self.acked) + count
        deadline = time.time() + 30
        while len(self.acked) < target:
            assert time.time() < deadline, f"{what}: the producer made no progress"
            time.sleep(0.02)

    def finish(self):
        self.stopping.set()
        self.join()
        assert self.producer.flush(120) == 0


def read_all(bootstrap, topic):
    """Every record in the log, per partition, as (offset, record number, bytes)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-check", "enable.auto.commit": False,
                  "check.crcs": True, "enable.partition.eof": True})
    ends = {q: c.get_watermark_offsets(TopicPartition(topic, q), timeout=30)[1] for q in range(PARTITIONS)}
    c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in range(PARTITIONS)])
    got = {q: [] for q in range(PARTITIONS)}
    done = {q for q in range(PARTITIONS) if ends[q] == 0}
    deadline = time.time() + 120
    while len(done) < PARTITIONS:
        assert time.time() < deadline, "reading back timed out"
        for m in c.consume(5000, 1.0):
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, f"consumer error: {m.error()}"
                if m.offset() >= ends[m.partition()]:
                    done.add(m.partition())
                continue
            if m.offset() < ends[m.partition()]:
                got[m.partition()].append((m.offset(), int(m.value()[:12]), m.value()))
            if m.offset() + 1 >= ends[m.partition()]:
                done.add(m.partition())
    c.close()
    return got


def check(bootstrap, topic, acked):
    got = read_all(bootstrap, topic)
    where = {}
    for q, records in got.items():
        numbers = [n for _, n, _ in records]
        assert numbers == sorted(numbers), f"partition {q}: records out of order"
        assert len(set(numbers)) == len(numbers), f"partition {q}: a record is present twice"
        for offset, n, payload in records:
            assert n % PARTITIONS == q and payload == value(n), f"partition {q} offset {offset}: wrong bytes"
            where[n] = (q, offset)
    lost = [n for n in acked if n not in where]
    assert not lost, f"{len(lost)} acknowledged records missing, e.g. {sorted(lost)[:5]}"
    moved = [n for n, at in acked.items() if where[n] != at]
    assert not moved, f"acknowledged records at other offsets than acknowledged, e.g. {moved[:5]}"
    return sum(len(r) for r in got.values())


def test_acknowledged_records_survive_random_sigkills(broker_factory):
    broker = broker_factory(["log.flush.interval.messages=1"])
    topic = "crash"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    writer = Writer(broker.bootstrap, topic)
    writer.start()
    rng = random.Random(2026)
    try:
        for cycle in range(CYCLES):
            # Kill while the producer is writing: first wait (bounded) until records
            # are being acknowledged again after the last restart.
            before = len(writer.acked)
            writer.wait_for_more_acks(200, f"cycle {cycle}")
            time.sleep(rng.uniform(0.1, 0.8))
            broker.stop(signal.SIGKILL)
            acked = dict(writer.acked)  # nothing can be acknowledged while it is down
            broker.start()
            stored = check(broker.bootstrap, topic, acked)
            assert not writer.errors, f"cycle {cycle}: delivery errors {writer.errors[:3]}"
            print(f"cycle {cycle}: {len(acked) - before} acknowledged this cycle, "
                  f"{len(acked)} in all, {stored} stored")
    finally:
        writer.finish()
    assert not writer.errors, writer.errors[:3]
    assert len(writer.acked) == writer.sent, "every record sent was finally acknowledged"
    assert check(broker.bootstrap, topic, writer.acked) == writer.sent, "each exactly once"


def test_sigterm_under_load_restarts_without_a_scan_and_loses_nothing(broker_factory):
    """A clean shutdown while an idempotent producer writes (default flush policy):
    appends in flight finish or are refused as retriable (NOT_LEADER_OR_FOLLOWER),
    every partition is flushed and recorded, and the next start skips the scan. SIGINT
    (the second cycle) does the same."""
    broker = broker_factory()
    topic = "sigterm"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    writer = Writer(broker.bootstrap, topic)
    writer.start()
    try:
        for cycle in range(3):
            writer.wait_for_more_acks(500, f"cycle {cycle}")
            assert broker.stop(signal.SIGINT if cycle == 1 else signal.SIGTERM) == 0
            acked = dict(writer.acked)
            broker.start()
            log = broker.log_text().split("==== start")[-1]
            assert "the last shutdown was clean" in log, log
            assert "opened_by=CleanShutdown" in log, log
            assert "opened_by=FullScan" not in log and "opened_by=RecoveryPoint" not in log, log
            check(broker.bootstrap, topic, acked)
            assert not writer.errors, f"cycle {cycle}: delivery errors {writer.errors[:3]}"
    finally:
        writer.finish()
    assert not writer.errors, writer.errors[:3]
    assert check(broker.bootstrap, topic, writer.acked) == writer.sent, "each exactly once"


def test_a_second_signal_forces_exit_and_the_next_start_scans(broker_factory):
    """SIGTERM then SIGINT at once: the second ends the process without waiting for
    the clean shutdown (exit 1, no marker), so the next start scans, and keeps every
    acknowledged record."""
    broker = broker_factory()
    topic = "second-signal"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    writer = Writer(broker.bootstrap, topic)
    writer.start()
    try:
        writer.wait_for_more_acks(500, "before the signals")
        broker.proc.send_signal(signal.SIGTERM)
        broker.proc.send_signal(signal.SIGINT)
        assert broker.proc.wait(timeout=60) == 1
        assert "second signal: exiting now" in broker.log_text()
        acked = dict(writer.acked)
        broker.start()
        log = broker.log_text().split("==== start")[-1]
        assert "the last shutdown was clean" not in log, log
        check(broker.bootstrap, topic, acked)
    finally:
        writer.finish()


def test_a_crash_start_validates_only_what_follows_the_recovery_point(broker_factory):
    """Recovery points taken often (every 200 ms, and at each roll of small segments),
    default flush policy, SIGKILL at random moments: each start resumes every partition
    from its recovery point, and the acknowledged records written past it are there,
    once, at their offsets (a process crash keeps what reached the page cache, which is
    what acks=all promises without a flush policy). A torn write past the point is cut
    back to the last whole batch, as a full scan cuts it."""
    broker = broker_factory(["log.flush.offset.checkpoint.interval.ms=200",
                             "log.segment.bytes=262144"])
    topic = "recovery-point"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    writer = Writer(broker.bootstrap, topic)
    writer.start()
    rng = random.Random(27)
    past_points = 0
    try:
        for cycle in range(6):
            writer.wait_for_more_acks(1_000, f"cycle {cycle}")
            time.sleep(rng.uniform(0.05, 0.4))
            broker.stop(signal.SIGKILL)
            acked = dict(writer.acked)
            points = {}
            for q in range(PARTITIONS):
                point = broker.data_dir / f"{topic}-{q}" / "recovery-point.json"
                assert point.exists(), f"cycle {cycle}: partition {q} has no recovery point"
                points[q] = json.loads(point.read_text())["end_offset"]
            past_points += sum(1 for q, offset in acked.values() if offset >= points[q])
            if cycle % 2 == 1:
                # A torn write: the start of a batch past the point, its rest lost.
                active = sorted((broker.data_dir / f"{topic}-0").glob("*.log"))[-1]
                with open(active, "rb") as f:
                    head = f.read(200)
                with open(active, "ab") as f:
                    f.write(head)
            broker.start()
            log = broker.log_text().split("==== start")[-1]
            assert log.count("recovered from the recovery point") >= PARTITIONS, log
            assert "opened_by=FullScan" not in log, log
            if cycle % 2 == 1:
                assert "recovery truncated" in log, log
            check(broker.bootstrap, topic, acked)
            assert not writer.errors, f"cycle {cycle}: delivery errors {writer.errors[:3]}"
    finally:
        writer.finish()
    assert past_points > 0, "no acknowledged record lay past a recovery point at a kill"
    assert not writer.errors, writer.errors[:3]
    assert check(broker.bootstrap, topic, writer.acked) == writer.sent, "each exactly once"
