"""Several ringlog nodes as one cluster: one controller quorum (Raft), brokers that
register and heartbeat, partitions led across brokers, clients on any broker, and
what happens when nodes die and come back. Real processes on loopback, real clients
(librdkafka, the Java client, kafka-python)."""
import signal
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from cluster import SESSION_MS, Cluster, partition_view, wait_until
from test_java_client import java_classpath, run_java  # noqa: F401 (a fixture)


@pytest.fixture
def cluster_factory(tmp_path):
    clusters = []

    def make(n, overrides=(), racks=None):
        c = Cluster(tmp_path / f"cluster-{len(clusters)}", n, overrides, racks)
        clusters.append(c)
        c.start()
        return c

    yield make
    for c in clusters:
        c.stop()


def value(topic, i):
    return f"{topic}-{i:06d}-".encode() + bytes([i % 251]) * (i % 97)


def produce_to_partitions(bootstrap, topic, n, partitions):
    """n records, record i to partition i % partitions; every one acknowledged."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    failed = []
    for i in range(n):
        p.produce(topic, value(topic, i), partition=i % partitions,
                  on_delivery=lambda err, _m: err and failed.append(err))
        p.poll(0)
    assert p.flush(60) == 0, "records left unsent"
    assert not failed, failed[:3]


def consume_partitions(bootstrap, topic, n, partitions, timeout=60):
    """Reads every partition from the start; checks each record's bytes and order."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}-{time.time()}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, q, 0) for q in range(partitions)])
    next_index = list(range(partitions))
    seen = 0
    deadline = time.time() + timeout
    try:
        while seen < n:
            assert time.time() < deadline, f"consumed {seen} of {n}"
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, m.error()
            q = m.partition()
            assert m.value() == value(topic, next_index[q]), (q, m.offset())
            next_index[q] += partitions
            seen += 1
    finally:
        c.close()
    assert seen == n


def create(bootstrap, name, partitions, rf=1, timeout=30, cluster=None):
    """Creates a topic; with `cluster`, waits until every running node knows it (each
    applies the records on its own, soon after the controller answers)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, partitions, rf)], request_timeout=timeout).values():
        f.result(timeout=timeout + 5)
    if cluster is not None:
        wait_until(f"every node to know {name}",
                   lambda: all(name in cluster.metadata(i).topics for i in cluster.running()), 30)


def topic_id(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    described = admin.describe_topics(TopicCollection([topic]))[topic].result(30)
    return str(described.topic_id)


def test_three_nodes_serve_one_topic_from_any_broker(cluster_factory, java_classpath):  # noqa: F811
    c = cluster_factory(3)
    # Created through one broker (which forwards it to the active controller).
    create(c.bootstrap(1), "spread", 12)
    # Every node applies the records on its own (as Kafka's brokers, soon after).
    wait_until("every node to know the topic",
               lambda: all("spread" in c.metadata(i).topics for i in range(3)), 30)
    views = [partition_view(c.metadata(i), "spread") for i in range(3)]
    assert views[0] == views[1] == views[2], views
    leaders = {leader for leader, _, _, _ in views[0].values()}
    assert leaders == {0, 1, 2}, views[0]
    ids = {c.metadata(i).cluster_id for i in range(3)}
    assert len(ids) == 1, ids
    # A live broker is named as the controller (it forwards), as Kafka's do; which
    # broker librdkafka asked is its choice (tests/cluster_wire.rs checks each one).
    assert {c.metadata(i).controller_id for i in range(3)} <= {0, 1, 2}

    # librdkafka: produced through node 0, consumed through node 2.
    produce_to_partitions(c.bootstrap(0), "spread", 2400, 12)
    consume_partitions(c.bootstrap(2), "spread", 2400, 12)

    # The Java client: through node 1, then node 2.
    create(c.bootstrap(2), "spread-java", 12, cluster=c)
    run_java(java_classpath, "produce", c.bootstrap(1), "spread-java", "24000", "12")
    run_java(java_classpath, "verify", c.bootstrap(2), "spread-java", "24000", "12")
    run_java(java_classpath, "admin-cluster", c.bootstrap(0), "java-grow", "3")
    run_java(java_classpath, "broker-configs", c.bootstrap(1), "java-dynamic")

    # kafka-python: through node 2, read back through node 0.
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTopicPartition
    create(c.bootstrap(0), "spread-kp", 12, cluster=c)
    p = KafkaProducer(bootstrap_servers=c.bootstrap(2), acks="all")
    for f in [p.send("spread-kp", value("spread-kp", i), partition=i % 12) for i in range(1200)]:
        f.get(timeout=30)
    p.close()
    kc = KafkaConsumer(bootstrap_servers=c.bootstrap(0), enable_auto_commit=False,
                       consumer_timeout_ms=10_000)
    kc.assign([KTopicPartition("spread-kp", q) for q in range(12)])
    kc.seek_to_beginning()
    got = {}
    for m in kc:
        got[(m.partition, m.offset)] = m.value
        if len(got) == 1200:
            break
    kc.close()
    assert len(got) == 1200
    for i in range(1200):
        assert got[(i % 12, i // 12)] == value("spread-kp", i)

    # CreatePartitions through a broker that is not the active controller (it
    # forwards); the old partitions' data stays readable. DescribeCluster everywhere.
    ctl = c.active_controller()
    other = next(i for i in range(3) if i != ctl)
    grower = AdminClient({"bootstrap.servers": c.bootstrap(other)})
    grower.create_partitions([NewPartitions("spread", 15)])["spread"].result(timeout=30)
    wait_until("every node to know 15 partitions", lambda: all(
        len(partition_view(c.metadata(i), "spread")) == 15 for i in range(3)), 30)
    view = partition_view(c.metadata(ctl), "spread")
    assert {view[q][0] for q in (12, 13, 14)} == {0, 1, 2}, view
    consume_partitions(c.bootstrap(ctl), "spread", 2400, 12)
    for i in range(3):
        describer = AdminClient({"bootstrap.servers": c.bootstrap(i)})
        d = describer.describe_cluster().result(30)
        assert sorted(n.id for n in d.nodes) == [0, 1, 2] and d.controller.id in (0, 1, 2)


def test_killed_active_controller_is_replaced(cluster_factory):
    racks = ["east", "west", "west"]
    c = cluster_factory(3, racks=racks)
    # Rack-aware placement: every partition's two replicas span both racks.
    create(c.bootstrap(0), "racked", 6, rf=2, cluster=c)
    for q, (leader, replicas, _, _) in partition_view(c.metadata(0), "racked").items():
        assert {racks[b] for b in replicas} == {"east", "west"}, (q, replicas)
    described = AdminClient({"bootstrap.servers": c.bootstrap(1)})
    nodes = described.describe_cluster().result(30).nodes
    assert sorted((n.id, n.rack) for n in nodes) == [(0, "east"), (1, "west"), (2, "west")]
    controller = c.active_controller()
    survivor = next(i for i in range(3) if i != controller)
    killed_at = time.time()
    c.kill(controller)
    n = 0
    while True:
        n += 1
        assert time.time() - killed_at < 30, "no CreateTopics succeeded within 30 s"
        try:
            create(c.bootstrap(survivor), f"after-kill-{n}", 1, timeout=5)
            break
        except KafkaException:
            time.sleep(0.1)
    took = time.time() - killed_at
    print(f"\nkill of the active controller to the first CreateTopics that succeeds: {took:.2f} s")
    assert c.active_controller() not in (None, controller)


def test_a_frozen_active_controller_fences_only_itself(cluster_factory):
    """SIGSTOP of the active controller: it accepts connections and answers nothing.
    The others elect a new controller and must keep their sessions with it: a
    heartbeat stuck on the frozen one may not outlast broker.session.timeout.ms
    (3000 ms here), or the new controller fences every broker. Only the frozen one is
    fenced."""
    c = cluster_factory(3)
    controller = c.active_controller()
    others = {i for i in range(3) if i != controller}
    c.nodes[controller].proc.send_signal(signal.SIGSTOP)
    try:
        first = min(others)
        wait_until("the frozen controller fenced", lambda: set(c.metadata(first).brokers) == others, 30)
        time.sleep(6)  # two more sessions: nobody else may be fenced meanwhile
        assert set(c.metadata(first).brokers) == others
        for i in others:
            text = c.nodes[i].log_text()
            fenced = [f"fenced a broker whose heartbeats stopped broker={j}" in text for j in others]
            assert not any(fenced), f"node {i} fenced a live broker"
    finally:
        c.nodes[controller].proc.send_signal(signal.SIGCONT)


def test_killed_broker_is_fenced_and_returns_with_its_data(cluster_factory):
    c = cluster_factory(3)
    create(c.bootstrap(0), "held", 6, cluster=c)
    produce_to_partitions(c.bootstrap(0), "held", 600, 6)
    controller = c.active_controller()
    victim = next(i for i in range(3) if i != controller)
    watcher = next(i for i in range(3) if i not in (victim,))
    c.kill(victim)
    started = time.time()

    def fenced():
        md = c.metadata(watcher)
        view = partition_view(md, "held")
        mine = [v for v in view.values() if v[1] == [victim]]
        return (victim not in md.brokers and mine
                and all(v[0] == -1 and v[3] == "LEADER_NOT_AVAILABLE" for v in mine))
    wait_until("the killed broker to be fenced and its partitions offline", fenced, 30)
    print(f"\nkilled broker fenced after {time.time() - started:.1f} s "
          f"(broker.session.timeout.ms={SESSION_MS})")
    # The other partitions keep serving.
    view = partition_view(c.metadata(watcher), "held")
    alive = [q for q, v in view.items() if v[0] not in (-1, victim)]
    assert alive, view
    p = Producer({"bootstrap.servers": c.bootstrap(watcher)})
    p.produce("held", b"still", partition=alive[0])
    assert p.flush(30) == 0

    c.nodes[victim].start()
    c.wait_for_brokers({0, 1, 2})
    wait_until("its partitions led again", lambda: all(
        v[0] >= 0 for v in partition_view(c.metadata(watcher), "held").values()), 30)
    # Everything produced before the kill is there, byte for byte.
    cons = Consumer({"bootstrap.servers": c.bootstrap(watcher), "group.id": "held-check",
                     "enable.auto.commit": False})
    mine = [q for q, v in partition_view(c.metadata(watcher), "held").items() if v[0] == victim]
    cons.assign([TopicPartition("held", q, 0) for q in mine])
    got = {}
    deadline = time.time() + 30
    while len(got) < 100 * len(mine) and time.time() < deadline:
        m = cons.poll(0.5)
        if m is not None and m.error() is None:
            got[(m.partition(), m.offset())] = m.value()
    cons.close()
    assert len(got) == 100 * len(mine), len(got)
    for (q, off), v in got.items():
        assert v == value("held", off * 6 + q)


def test_every_node_restarted_keeps_topics_ids_assignments_and_offsets(cluster_factory):
    c = cluster_factory(3)
    create(c.bootstrap(0), "kept", 6, cluster=c)
    produce_to_partitions(c.bootstrap(1), "kept", 60, 6)
    cons = Consumer({"bootstrap.servers": c.bootstrap(2), "group.id": "kept-group",
                     "enable.auto.commit": False})
    offsets = [TopicPartition("kept", q, 7 + q) for q in range(6)]
    cons.commit(offsets=offsets, asynchronous=False)
    cons.close()
    # A config changed through a broker that forwards it to the active controller.
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
    alterer = AdminClient({"bootstrap.servers": c.bootstrap(2)})
    res = ConfigResource(ResourceType.TOPIC, "kept", incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)])
    alterer.incremental_alter_configs([res])[res].result(timeout=30)
    before = c.metadata(0)
    view_before = partition_view(before, "kept")
    ids_before = topic_id(c.bootstrap(0), "kept")

    for i in range(3):
        assert c.kill(i, signal.SIGTERM) == 0
    for b in c.nodes:
        b.start()
    c.wait_for_brokers({0, 1, 2})
    after = c.metadata(1)
    assert after.cluster_id == before.cluster_id
    assert partition_view(after, "kept") == view_before
    assert topic_id(c.bootstrap(1), "kept") == ids_before
    describer = AdminClient({"bootstrap.servers": c.bootstrap(0)})
    topic = ConfigResource(ResourceType.TOPIC, "kept")
    assert describer.describe_configs([topic])[topic].result(30)["retention.ms"].value == "7200000"
    cons = Consumer({"bootstrap.servers": c.bootstrap(0), "group.id": "kept-group"})
    committed = cons.committed([TopicPartition("kept", q) for q in range(6)], timeout=30)
    cons.close()
    assert [tp.offset for tp in committed] == [7 + q for q in range(6)]
    consume_partitions(c.bootstrap(2), "kept", 60, 6)


def test_five_voters_survive_two_losses_and_refuse_at_three(cluster_factory):
    c = cluster_factory(5)
    controller = c.active_controller()
    # Lose two, the active controller among them.
    dead = [controller, next(i for i in range(5) if i != controller)]
    for i in dead:
        c.kill(i)
    alive = [i for i in range(5) if i not in dead]
    create(c.bootstrap(alive[0]), "with-three", 2, timeout=30)
    # Lose a third: no majority. Changes are refused with an error, not applied.
    c.kill(alive[0])
    rest = alive[1:]
    admin = AdminClient({"bootstrap.servers": c.bootstrap(rest[0])})
    started = time.time()
    f = admin.create_topics([NewTopic("with-two", 1, 1)], request_timeout=40)["with-two"]
    with pytest.raises(KafkaException) as refused:
        f.result(timeout=60)
    code = refused.value.args[0].name()
    print(f"\nwithout a majority, CreateTopics failed after {time.time() - started:.1f} s: {code}")
    assert code in ("NOT_CONTROLLER", "REQUEST_TIMED_OUT"), code
    for i in rest:
        assert "with-two" not in c.metadata(i).topics


def test_scripts_cluster_sh_starts_and_stops_a_local_cluster(tmp_path):
    import os
    import socket
    import subprocess

    from conftest import BIN, ROOT

    def free(port):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                return False
    base = next(b for b in range(21000, 40000, 7)
                if all(free(b + i) and free(b + 10000 + i) for i in range(3)))
    env = {**os.environ, "RINGLOG_BIN": BIN, "RINGLOG_CLUSTER_DIR": str(tmp_path / "c"),
           "RINGLOG_CLUSTER_PORT": str(base)}
    script = str(ROOT / "scripts" / "cluster.sh")
    try:
        out = subprocess.run([script, "start", "3"], env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert f"bootstrap: 127.0.0.1:{base},127.0.0.1:{base + 1},127.0.0.1:{base + 2}" in out.stdout
        md = AdminClient({"bootstrap.servers": f"127.0.0.1:{base + 2}"}).list_topics(timeout=30)
        assert set(md.brokers) == {0, 1, 2}
    finally:
        out = subprocess.run([script, "stop"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "stopped" in out.stdout
    status = subprocess.run([script, "status"], env=env, capture_output=True, text=True)
    assert "running" not in status.stdout
