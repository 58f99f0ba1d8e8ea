"""Topics deleted while clients still use them (librdkafka, through confluent-kafka).

Kafka's rules, which ringlog follows: DeleteTopics is done once the topic is gone from
the metadata (its files go later); Produce never creates a topic (it answers
UNKNOWN_TOPIC_OR_PARTITION, KafkaApis.handleProduceRequest); only Metadata that names
the topic and allows creation does (AutoTopicCreationManager), which librdkafka
producers allow and consumers do not (`allow.auto.create.topics`). So with
auto-creation on, a producer that still has the topic brings it back, as it would on
Kafka; with it off, nothing does.
"""
import os
import re
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

CHURN_SECONDS = 12
CHURN_ROUNDS_MAX = 400
SETTLE_TIMEOUT_S = 30


def open_fds(pid):
    """The broker's open descriptors, as (sockets, other targets)."""
    sockets, others = 0, []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:"):
            sockets += 1
        else:
            others.append(target)
    return sockets, sorted(others)


def wait_until(what, done, timeout=SETTLE_TIMEOUT_S):
    deadline = time.time() + timeout
    while not done():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class ProduceLoop:
    """Produces to `topics` on a thread of its own until stopped; counts outcomes."""

    def __init__(self, bootstrap, topics, client_id):
        self.producer = Producer({"bootstrap.servers": bootstrap, "client.id": client_id,
                                  "linger.ms": 2, "acks": 1, "message.timeout.ms": 5000})
        self.topics = topics
        self.delivered = 0
        self.failed = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def on_delivery(self, err, _msg):
        if err is None:
            self.delivered += 1
        else:
            self.failed[err.name()] = self.failed.get(err.name(), 0) + 1

    def run(self):
        i = 0
        while not self.stop.is_set():
            topic = self.topics[i % len(self.topics)]
            try:
                self.producer.produce(topic, value=b"x" * 100, on_delivery=self.on_delivery)
            except (BufferError, KafkaException):
                time.sleep(0.01)
            i += 1
            if i % 100 == 0:
                self.producer.poll(0.001)
        self.producer.flush(10)

    def finish(self):
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "producer thread did not stop"


def test_topics_deleted_and_recreated_under_produce_load_leak_nothing(broker):
    topics = [f"churn-{k}" for k in range(4)]
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    pid = broker.proc.pid
    sockets_before, files_before = open_fds(pid)
    for f in admin.create_topics([NewTopic(t, 4, 1) for t in topics]).values():
        f.result(timeout=30)
    loops = [ProduceLoop(broker.bootstrap, topics, f"churn-producer-{n}") for n in range(2)]
    rounds = 0
    started = time.time()
    while time.time() - started < CHURN_SECONDS and rounds < CHURN_ROUNDS_MAX:
        topic = topics[rounds % len(topics)]
        admin.delete_topics([topic])[topic].result(timeout=30)
        # A producer's Metadata may bring the topic back first (auto-creation is on).
        try:
            admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(timeout=30)
        except KafkaException as e:
            assert e.args[0].name() == "TOPIC_ALREADY_EXISTS", e
        rounds += 1
    for loop in loops:
        loop.finish()
    delivered = sum(loop.delivered for loop in loops)
    print(f"\n{rounds} delete/create rounds in {time.time() - started:.1f} s; "
          f"{delivered} records delivered, failures {[loop.failed for loop in loops]}")
    assert rounds >= 5 and delivered > 0
    del loops
    for f in admin.delete_topics(topics).values():
        f.result(timeout=30)
    assert broker.proc.poll() is None, "the broker died"
    # Every partition's files closed and unlinked; only the admin's sockets remain.
    wait_until("the broker's files to close",
               lambda: open_fds(pid)[1] == files_before)
    wait_until("the producers' connections to close",
               lambda: open_fds(pid)[0] <= sockets_before + 2)
    wait_until("deleted partitions to be removed",
               lambda: not [e for e in os.listdir(broker.data_dir) if e.startswith("churn-")])


def log_events(broker, topic):
    """The broker's log lines about `topic`, as (event, client) in order."""
    events = []
    for line in broker.log_text().splitlines():
        if "auto-creating topics" in line and f'"{topic}"' in line:
            client = re.search(r'client="([^"]*)"', line)
            events.append(("auto-create", client.group(1) if client else None))
        elif re.search(rf"created topic topic={re.escape(topic)} ", line):
            events.append(("created", None))
        elif re.search(rf"deleted topic topic={re.escape(topic)} ", line):
            events.append(("deleted", None))
    return events


def delete_under_a_producer_and_a_regex_consumer(broker, topic):
    """Deletes `topic` while a producer and a regex-subscribed consumer use it; returns
    the producer's delivery failures by error name."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(timeout=30)
    loop = ProduceLoop(broker.bootstrap, [topic], "churn-producer")
    c = Consumer({"bootstrap.servers": broker.bootstrap, "client.id": "regex-consumer",
                  "group.id": "regex-group", "auto.offset.reset": "earliest",
                  "topic.metadata.refresh.interval.ms": 500})
    c.subscribe(["^regex-.*"])
    try:
        deadline = time.time() + 60
        seen = 0
        while seen < 100:
            assert time.time() < deadline, f"consumed {seen} records before the deadline"
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                seen += 1
        admin.delete_topics([topic])[topic].result(timeout=30)
        end = time.time() + 5
        while time.time() < end:
            c.poll(0.2)
    finally:
        loop.finish()
        c.close()
    return loop.failed


def test_a_deleted_topic_comes_back_only_through_a_producers_metadata(broker):
    topic = "regex-auto"
    delete_under_a_producer_and_a_regex_consumer(broker, topic)
    events = log_events(broker, topic)
    assert events[0] == ("created", None) and ("deleted", None) in events, events
    # Whatever came back came from the producer's Metadata, never from the consumer
    # or a Produce request: each creation follows an auto-create the producer asked for.
    # (An auto-create may be logged before "deleted topic": it asked once the topic was
    # gone from the metadata, and waited for the deletion's last step.)
    after = events[1:]
    askers = {client for event, client in after if event == "auto-create"}
    assert askers <= {"churn-producer"}, events
    for k, (event, _) in enumerate(after):
        if event == "created":
            assert ("auto-create", "churn-producer") in after[:k], events
    print(f"\nafter the delete: {after}")


def test_without_auto_creation_a_deleted_topic_stays_deleted(broker_factory):
    broker = broker_factory(["auto.create.topics.enable=false"])
    topic = "regex-stays"
    failed = delete_under_a_producer_and_a_regex_consumer(broker, topic)
    events = log_events(broker, topic)
    assert events[-1] == ("deleted", None), events
    assert [e for e in events if e[0] == "created"] == [("created", None)], events
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert topic not in admin.list_topics(timeout=10).topics
    # The producer's records for the deleted topic failed instead of landing anywhere.
    assert failed, "no delivery failed after the delete"
    print(f"\nproducer failures after the delete: {failed}")
