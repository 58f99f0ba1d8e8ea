"""Old Kafka clients, speaking old request versions, against ringlog.

Each test starts its broker with RUST_LOG=ringlog=debug, so that the log names every
request as `request api="X" version=N`; each test then asserts that the client really
sent the old versions it is here for (a newer client library would otherwise make the
test silently pointless). When ringlog refuses a version it logs
`unsupported version N of X` and closes the connection; every failure message below
lists those lines.

Sarama: Debian's golang-github-shopify-sarama-dev (1.22.1), built offline in GOPATH
mode from tests/sarama/oldgroup (see that file for the request versions it sends):
    apt-get install golang-go golang-github-shopify-sarama-dev   (and gcc, for cgo)
    GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off go build ...

kafka-python 3.0.12 with `api_version=V` skips version discovery's result and, for
each request, sends min(its own newest version, the newest version Kafka V served),
from the table BROKER_API_VERSIONS in kafka/protocol/broker_version_data.py. It
still sends ApiVersions first when V served it (0.10.0 and later). From that table:

  api_version  Produce Fetch ListOffsets Metadata OffsetCommit OffsetFetch FindCoord JoinGroup SyncGroup Heartbeat LeaveGroup CreateTopics DeleteTopics ApiVersions
  (0, 8, 1)    0       0     0           0        0            0           -         -         -         -         -          -            -            -
  (0, 8, 2)    0       0     0           0        1            1           0         -         -         -         -          -            -            -
  (0, 9)       1       1     0           0        2            1           0         0         0         0         0          -            -            -
  (0, 10, 0)   2       2     0           1        2            1           0         0         0         0         0          -            -            0
  (0, 10, 1)   2       3     1           2        2            1           0         1         0         0         0          0            0            0
  (0, 10, 2)   2       3     1           2        2            2           0         1         0         0         0          1            0            0
  (0, 11)      3       5     2           4        3            3           1         2         1         1         1          2            1            1

ringlog stores only message format 2, so it serves Produce from v3 and Fetch from v4
(Kafka 4.0's floor, KIP-896): an old client produces and fetches at (0, 11). Older
api_versions are used where no Produce or Fetch is needed: a consumer-group member
that pauses its partitions as they are assigned (it joins, reads positions and end
offsets, and commits without fetching), a standalone committer, and the admin client.
"""
import os
import pathlib
import re
import shutil
import subprocess
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import UnsupportedVersionError
from kafka.structs import OffsetAndMetadata

from records import value

ROOT = pathlib.Path(__file__).resolve().parent.parent
SARAMA_SRC = ROOT / "tests" / "sarama" / "oldgroup"
DEBUG = {"RUST_LOG": "ringlog=debug"}
NEW = (0, 11)  # the oldest api_version whose Produce and Fetch ringlog serves
PARTS = 3
PER_PARTITION = 30
TOTAL = PARTS * PER_PARTITION
STEP_MS = 15_000  # bound on any one blocking client call
TEST_DEADLINE_S = 120
JOIN_TIMEOUT_S = 45  # the broker delays a new group's first rebalance by 3 s


def sent_versions(broker):
    """{(api name, version)} of every request the broker logged (needs RUST_LOG debug)."""
    return set((api, int(v)) for api, v in
               re.findall(r'request api="(\w+)" version=(\d+)', broker.log_text()))


def refused(broker):
    """The broker's 'unsupported version N of X' lines, deduplicated, in order."""
    return list(dict.fromkeys(re.findall(r"unsupported version \d+ of \w+", broker.log_text())))


def diagnose(broker):
    lines = refused(broker)
    return ("\nringlog refused: " + "; ".join(lines)) if lines else "\nringlog refused no version"


def assert_sent(broker, expected):
    sent = sent_versions(broker)
    assert sent, f"no `request api=... version=...` debug lines in {broker.log_path}"
    # A refused request is not logged as a request: count the refusals as sent too.
    sent |= {(api, int(v)) for v, api in
             re.findall(r"unsupported version (\d+) of (\w+)", broker.log_text())}
    missing = sorted(set(expected) - sent)
    assert not missing, f"the client never sent {missing}; it sent {sorted(sent)}"


class run_checked:
    """Context manager: re-raises any failure inside as an AssertionError that also
    lists the versions ringlog refused, so a failing test says what to implement."""

    def __init__(self, broker, what):
        self.broker, self.what = broker, what
        self.clients = []

    def __enter__(self):
        return self

    def track(self, client):
        """Closes `client` should the block fail (so it stops reconnecting)."""
        self.clients.append(client)
        return client

    def __exit__(self, typ, exc, tb):
        if exc is None:
            return False
        for c in self.clients:
            try:
                c.close(timeout_ms=1000) if isinstance(c, KafkaConsumer) else c.close()
            except Exception:
                pass
        raise AssertionError(f"{self.what}: {typ.__name__}: {exc}{diagnose(self.broker)}") from exc


def deadline(seconds=TEST_DEADLINE_S):
    end = time.time() + seconds

    def check(what):
        assert time.time() < end, f"gave up after {seconds}s: {what}"
    return check


def admin(broker, api_version):
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, api_version=api_version,
                            request_timeout_ms=STEP_MS, client_id=f"old-admin-{api_version}")


def create_topic(broker, topic, api_version=NEW):
    a = admin(broker, api_version)
    try:
        a.create_topics({topic: {"num_partitions": PARTS, "replication_factor": 1}})
    finally:
        a.close()


def produce(broker, topic):
    """PER_PARTITION records to each partition: record i goes to partition i % PARTS."""
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, api_version=NEW, acks="all",
                      request_timeout_ms=STEP_MS, client_id="old-producer")
    try:
        futures = [p.send(topic, key=b"k%d" % i, value=value(i), partition=i % PARTS)
                   for i in range(TOTAL)]
        p.flush(timeout=STEP_MS / 1000)
        for i, f in enumerate(futures):
            md = f.get(timeout=STEP_MS / 1000)
            assert (md.partition, md.offset) == (i % PARTS, i // PARTS), f"record {i} stored at {md}"
    finally:
        p.close(timeout=STEP_MS / 1000)


def group_consumer(broker, group, api_version, topics=(), **extra):
    return KafkaConsumer(*topics, bootstrap_servers=broker.bootstrap, group_id=group,
                         api_version=api_version, enable_auto_commit=False,
                         auto_offset_reset="earliest", request_timeout_ms=STEP_MS,
                         session_timeout_ms=10_000, max_poll_interval_ms=10_000,
                         heartbeat_interval_ms=1_000, client_id=f"old-consumer-{api_version}",
                         **extra)


def consume_from(consumer, topic, first_offset, check_deadline):
    """Polls until every partition has delivered offsets first_offset..PER_PARTITION-1,
    each once, in order, with the bytes produced there."""
    next_offset = {p: first_offset for p in range(PARTS)}
    while any(o < PER_PARTITION for o in next_offset.values()):
        check_deadline(f"consumed up to {next_offset}")
        for tp, msgs in consumer.poll(timeout_ms=500).items():
            assert tp.topic == topic
            for m in msgs:
                p = tp.partition
                assert m.offset == next_offset[p], (
                    f"partition {p}: offset {m.offset}, expected {next_offset[p]}")
                assert m.value == value(m.offset * PARTS + p), f"partition {p} offset {m.offset}: wrong bytes"
                next_offset[p] += 1
    assert next_offset == {p: PER_PARTITION for p in range(PARTS)}


# ---------------------------------------------------------------------------- Sarama

def build_sarama(tmp_path):
    go = shutil.which("go")
    assert go, ("no `go` on PATH: apt-get install golang-go golang-github-shopify-sarama-dev")
    assert pathlib.Path("/usr/share/gocode/src/github.com/Shopify/sarama").is_dir(), (
        "no Sarama sources: apt-get install golang-github-shopify-sarama-dev")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": "/usr/share/gocode", "GOFLAGS": "",
           "GOPROXY": "off", "GOTOOLCHAIN": "local", "CGO_ENABLED": "1",
           "CGO_CFLAGS": "-g -O2 -Wno-deprecated-declarations"}
    if not (env.get("GOCACHE") or env.get("XDG_CACHE_HOME") or env.get("HOME")):
        env["GOCACHE"] = str(tmp_path / "go-cache")
    out = tmp_path / "oldgroup"
    r = subprocess.run([go, "build", "-o", str(out), "."], cwd=SARAMA_SRC, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"go build of {SARAMA_SRC} failed:\n{r.stdout}\n{r.stderr}"
    return out


def test_sarama_1_22_consumer_group_at_kafka_2_1(broker_factory, tmp_path):
    """Sarama 1.22 with Version=V2_1_0_0: CreateTopics v2, Produce v3, Metadata v5,
    FindCoordinator v0, JoinGroup v1, SyncGroup v0, Heartbeat v0, OffsetFetch v1,
    ListOffsets v1, Fetch v4, OffsetCommit v1 (Sarama's default, no retention time),
    LeaveGroup v0, DescribeGroups v0, ListGroups v0, DeleteTopics v1; no ApiVersions."""
    binary = build_sarama(tmp_path)
    broker = broker_factory(env=DEBUG)
    cmd = [str(binary), "-bootstrap", broker.bootstrap, "-topic", "sarama-old",
           "-group", "sarama-old-group", "-count", str(TOTAL), "-partitions", str(PARTS),
           "-version", "2.1.0", "-timeout", "90s"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"oldgroup hung past 150s:\n{e.stderr}{diagnose(broker)}")
    assert r.returncode == 0 and r.stdout.startswith("OK"), (
        f"oldgroup exited {r.returncode}:\n{r.stdout}\n{r.stderr[-4000:]}{diagnose(broker)}")
    assert refused(broker) == []
    assert_sent(broker, [("Metadata", 5), ("CreateTopics", 2), ("Produce", 3),
                         ("FindCoordinator", 0), ("JoinGroup", 1), ("SyncGroup", 0),
                         ("OffsetFetch", 1), ("ListOffsets", 1), ("Fetch", 4),
                         ("OffsetCommit", 1), ("LeaveGroup", 0), ("DescribeGroups", 0),
                         ("ListGroups", 0), ("DeleteTopics", 1)])


# ---------------------------------------------------------------------- kafka-python

def test_kafka_python_0_11_round_trip_in_a_group(broker_factory):
    """api_version=(0, 11) throughout: CreateTopics v2, Produce v3, Metadata v4,
    FindCoordinator v1, JoinGroup v2, SyncGroup v1, OffsetFetch v3, ListOffsets v2,
    Fetch v5, OffsetCommit v3, LeaveGroup v1, DeleteTopics v1, ApiVersions v1."""
    broker = broker_factory(env=DEBUG)
    topic, group = "kp-old-0-11", "kp-old-0-11-group"
    check_deadline = deadline()
    with run_checked(broker, "kafka-python (0, 11) round trip") as run:
        create_topic(broker, topic, NEW)
        produce(broker, topic)
        c = run.track(group_consumer(broker, group, NEW, [topic]))
        consume_from(c, topic, 0, check_deadline)
        assert {tp.partition for tp in c.assignment()} == set(range(PARTS))
        c.commit(timeout_ms=STEP_MS)
        tps = [TopicPartition(topic, p) for p in range(PARTS)]
        assert [c.committed(tp, timeout_ms=STEP_MS) for tp in tps] == [PER_PARTITION] * PARTS
        c.close(autocommit=False, timeout_ms=STEP_MS)
        # A new member of the group starts at the committed offsets: nothing left.
        c = run.track(group_consumer(broker, group, NEW, [topic]))
        while {tp.partition for tp in c.assignment()} != set(range(PARTS)):
            check_deadline("second member's assignment")
            assert c.poll(timeout_ms=500) == {}
        assert c.poll(timeout_ms=1000) == {}
        assert [c.position(tp, timeout_ms=STEP_MS) for tp in tps] == [PER_PARTITION] * PARTS
        c.close(autocommit=False, timeout_ms=STEP_MS)
        a = run.track(admin(broker, NEW))
        a.delete_topics([topic])
        a.close()
    assert refused(broker) == []
    assert_sent(broker, [("ApiVersions", 1), ("CreateTopics", 2), ("Produce", 3), ("Metadata", 4),
                         ("FindCoordinator", 1), ("JoinGroup", 2), ("SyncGroup", 1),
                         ("OffsetFetch", 3), ("ListOffsets", 2), ("Fetch", 5),
                         ("OffsetCommit", 3), ("LeaveGroup", 1), ("DeleteTopics", 1)])


class PauseOnAssign(ConsumerRebalanceListener):
    """Pauses every partition as it is assigned, so that the member never fetches
    (Fetch v0-3 would be refused: ringlog has no message format 0/1)."""

    def __init__(self, consumer):
        self.consumer = consumer
        self.assigned = set()

    def on_partitions_revoked(self, revoked):
        self.assigned -= set(revoked)

    def on_partitions_assigned(self, assigned):
        self.assigned |= set(assigned)
        self.consumer.pause(*assigned)


OLD_GROUP_VERSIONS = {
    (0, 10, 1): [("ApiVersions", 0), ("Metadata", 2), ("FindCoordinator", 0), ("JoinGroup", 1),
                 ("SyncGroup", 0), ("OffsetFetch", 1), ("ListOffsets", 1), ("OffsetCommit", 2),
                 ("LeaveGroup", 0)],
    (0, 10, 0): [("ApiVersions", 0), ("Metadata", 1), ("FindCoordinator", 0), ("JoinGroup", 0),
                 ("SyncGroup", 0), ("OffsetFetch", 1), ("ListOffsets", 0), ("OffsetCommit", 2),
                 ("LeaveGroup", 0)],
    (0, 9): [("Metadata", 0), ("FindCoordinator", 0), ("JoinGroup", 0), ("SyncGroup", 0),
             ("OffsetFetch", 1), ("ListOffsets", 0), ("OffsetCommit", 2), ("LeaveGroup", 0)],
}


@pytest.mark.parametrize("api_version", list(OLD_GROUP_VERSIONS), ids=lambda v: ".".join(map(str, v)))
def test_kafka_python_old_group_member_commits_and_a_new_member_resumes(broker_factory, api_version):
    """An old member joins the group, reads its positions (no committed offset: reset
    to the earliest) and the end offsets, commits offset 10 of each partition as a
    member of the generation, reads them back, and leaves; an (0, 11) member of the
    same group then consumes exactly offsets 10..29 of every partition."""
    broker = broker_factory(env=DEBUG)
    tag = "-".join(map(str, api_version))
    topic, group = f"kp-old-group-{tag}", f"kp-old-group-{tag}"
    tps = [TopicPartition(topic, p) for p in range(PARTS)]
    half = 10
    check_deadline = deadline()
    with run_checked(broker, f"kafka-python {api_version} group member") as run:
        create_topic(broker, topic, NEW)
        produce(broker, topic)
        old = run.track(group_consumer(broker, group, api_version))
        listener = PauseOnAssign(old)
        old.subscribe([topic], listener=listener)
        join_deadline = deadline(JOIN_TIMEOUT_S)
        while listener.assigned != set(tps):
            join_deadline(f"old member's assignment: {listener.assigned}")
            assert old.poll(timeout_ms=500) == {}, "a paused member fetched records"
        assert [old.position(tp, timeout_ms=STEP_MS) for tp in tps] == [0] * PARTS
        assert old.beginning_offsets(tps, timeout_ms=STEP_MS) == {tp: 0 for tp in tps}
        assert old.end_offsets(tps, timeout_ms=STEP_MS) == {tp: PER_PARTITION for tp in tps}
        old.commit({tp: OffsetAndMetadata(half, f"old-{tag}", -1) for tp in tps}, timeout_ms=STEP_MS)
        assert [old.committed(tp, timeout_ms=STEP_MS) for tp in tps] == [half] * PARTS
        old.close(autocommit=False, timeout_ms=STEP_MS)

        new = run.track(group_consumer(broker, group, NEW, [topic]))
        consume_from(new, topic, half, check_deadline)
        new.commit(timeout_ms=STEP_MS)
        assert [new.committed(tp, timeout_ms=STEP_MS) for tp in tps] == [PER_PARTITION] * PARTS
        new.close(autocommit=False, timeout_ms=STEP_MS)
    assert refused(broker) == []
    assert_sent(broker, OLD_GROUP_VERSIONS[api_version])


def test_kafka_python_oldest_standalone_offset_commit(broker_factory):
    """A consumer with assigned partitions (no group membership) at (0, 8, 2) commits
    offsets with metadata and reads them back (OffsetCommit v1 / OffsetFetch v1).
    Offsets committed with v1 are kept in Kafka, so an (0, 11) consumer of the group
    (OffsetFetch v3) reads them too."""
    api_version = (0, 8, 2)
    broker = broker_factory(env=DEBUG)
    tag = "-".join(map(str, api_version))
    topic, group = f"kp-standalone-{tag}", f"kp-standalone-{tag}"
    tps = [TopicPartition(topic, p) for p in range(PARTS)]
    with run_checked(broker, f"kafka-python {api_version} standalone commit") as run:
        create_topic(broker, topic, NEW)
        produce(broker, topic)
        c = run.track(KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                                    api_version=api_version, enable_auto_commit=False,
                                    request_timeout_ms=STEP_MS, client_id=f"old-committer-{tag}"))
        c.assign(tps)
        c.commit({tp: OffsetAndMetadata(7 + tp.partition, f"m{tp.partition}", -1) for tp in tps},
                 timeout_ms=STEP_MS)
        got = [c.committed(tp, metadata=True, timeout_ms=STEP_MS) for tp in tps]
        assert [(m.offset, m.metadata) for m in got] == [(7 + p, f"m{p}") for p in range(PARTS)]
        c.close(autocommit=False, timeout_ms=STEP_MS)
        n = run.track(KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                                    api_version=NEW, enable_auto_commit=False,
                                    request_timeout_ms=STEP_MS))
        assert [n.committed(tp, timeout_ms=STEP_MS) for tp in tps] == [7 + p for p in range(PARTS)]
        n.close(autocommit=False, timeout_ms=STEP_MS)
    assert refused(broker) == []
    assert_sent(broker, [("Metadata", 0), ("FindCoordinator", 0), ("OffsetCommit", 1),
                         ("OffsetFetch", 1)])


def test_kafka_python_0_8_1_zookeeper_offsets_get_unsupported_version(broker_factory):
    """At (0, 8, 1) kafka-python commits and fetches offsets with OffsetCommit v0 and
    OffsetFetch v0, which kept offsets in ZooKeeper: Kafka 3.9 in KRaft mode advertises
    them and answers UNSUPPORTED_VERSION (35) for every partition, and so does ringlog
    (a well-formed answer: the connection stays open)."""
    broker = broker_factory(env=DEBUG)
    topic, group = "kp-standalone-0-8-1", "kp-standalone-0-8-1"
    tps = [TopicPartition(topic, p) for p in range(PARTS)]
    create_topic(broker, topic, NEW)
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, api_version=(0, 8, 1),
                      enable_auto_commit=False, request_timeout_ms=STEP_MS,
                      client_id="old-committer-0-8-1")
    try:
        c.assign(tps)
        with pytest.raises(UnsupportedVersionError):
            c.commit({tp: OffsetAndMetadata(7, "m", -1) for tp in tps}, timeout_ms=STEP_MS)
        with pytest.raises(UnsupportedVersionError):
            c.committed(tps[0], timeout_ms=STEP_MS)
    finally:
        c.close(autocommit=False, timeout_ms=STEP_MS)
    assert refused(broker) == []
    assert_sent(broker, [("Metadata", 0), ("OffsetCommit", 0), ("OffsetFetch", 0)])


OLD_ADMIN_VERSIONS = {
    (0, 10, 1): [("ApiVersions", 0), ("Metadata", 2), ("CreateTopics", 0), ("DeleteTopics", 0)],
    (0, 10, 2): [("ApiVersions", 0), ("Metadata", 2), ("CreateTopics", 1), ("DeleteTopics", 0)],
}


@pytest.mark.parametrize("api_version", list(OLD_ADMIN_VERSIONS), ids=lambda v: ".".join(map(str, v)))
def test_kafka_python_old_admin_creates_and_deletes_topics(broker_factory, api_version):
    """KafkaAdminClient at (0, 10, 1): CreateTopics v0, DeleteTopics v0, Metadata v2;
    at (0, 10, 2): CreateTopics v1 (also validate_only, which creates nothing)."""
    broker = broker_factory(env=DEBUG)
    tag = "-".join(map(str, api_version))
    topic = f"kp-old-admin-{tag}"
    check_deadline = deadline()
    with run_checked(broker, f"kafka-python {api_version} admin") as run:
        a = run.track(admin(broker, api_version))
        if api_version >= (0, 10, 2):
            a.create_topics({topic + "-dry": {"num_partitions": PARTS, "replication_factor": 1}},
                            validate_only=True)
        a.create_topics({topic: {"num_partitions": PARTS, "replication_factor": 1}})
        [desc] = a.describe_topics([topic])
        assert desc["error_code"] == 0, desc
        assert sorted(p["partition_index"] for p in desc["partitions"]) == list(range(PARTS))
        assert all(p["leader_id"] == 0 for p in desc["partitions"]), desc
        names = a.list_topics()
        assert topic in names and topic + "-dry" not in names, names
        produce(broker, topic)
        a.delete_topics([topic])
        while topic in a.list_topics():
            check_deadline(f"{topic} still listed after DeleteTopics")
            time.sleep(0.2)
        a.close()
    assert refused(broker) == []
    assert_sent(broker, OLD_ADMIN_VERSIONS[api_version])
