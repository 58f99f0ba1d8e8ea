"""Replication on real brokers: three ringlog nodes, topics with three replicas.
Followers copy their leaders with Kafka's replica fetch; acks=all waits until every
in-sync replica holds a batch; after a leader dies another in-sync replica leads, and
the dead one, restarted, catches up. The replicas' segment files are compared byte
for byte."""
import hashlib
import re
import signal
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import partition_view, wait_until
from test_cluster import cluster_factory, create  # noqa: F401 (a fixture)

PARTITIONS = 3


def payload(i):
    return b"%012d|" % i + bytes((i * 7 + k) % 251 for k in range(100))


def produce(bootstrap, numbers, acked):
    """Idempotent, acks=all; records number n to partition n % PARTITIONS. Every
    record must be acknowledged: `acked` gets n -> (partition, offset)."""
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[int(msg.value()[:12])] = (msg.partition(), msg.offset())

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5, "message.timeout.ms": 120_000})
    for n in numbers:
        while True:
            try:
                p.produce("replicated", payload(n), partition=n % PARTITIONS,
                          on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(150) == 0, "records left unsent"
    assert not errors, errors[:3]


def check_against_acked(at, acked):
    """`at`: (partition, offset) -> record number, of everything read. 0 reordered, 0
    duplicated (a record number at one offset only), 0 lost, each acknowledged record
    where it was acknowledged."""
    for q in range(PARTITIONS):
        numbers = [at[k] for k in sorted(k for k in at if k[0] == q)]
        assert numbers == sorted(numbers), f"partition {q}: out of order"
        assert len(set(numbers)) == len(numbers), f"partition {q}: a duplicate"
    where = {n: k for k, n in at.items()}
    lost = [n for n in acked if n not in where]
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:5]}"
    moved = [n for n, k in acked.items() if where[n] != k]
    assert not moved, f"records not where they were acknowledged, e.g. {moved[:5]}"


def read_back(bootstrap, acked):
    """Every record of every partition, once, in order, where it was acknowledged."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.time()}",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    ends = {q: c.get_watermark_offsets(TopicPartition("replicated", q), timeout=30)[1]
            for q in range(PARTITIONS)}
    c.assign([TopicPartition("replicated", q, 0) for q in range(PARTITIONS)])
    got = {q: [] for q in range(PARTITIONS)}
    done = {q for q in range(PARTITIONS) if ends[q] == 0}
    deadline = time.time() + 120
    while len(done) < PARTITIONS:
        assert time.time() < deadline, "reading back timed out"
        for m in c.consume(5000, 1.0):
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                done.add(m.partition())
                continue
            got[m.partition()].append((m.offset(), int(m.value()[:12]), m.value()))
            if m.offset() + 1 >= ends[m.partition()]:
                done.add(m.partition())
    c.close()
    at = {}
    for q, records in got.items():
        for offset, n, value in records:
            assert value == payload(n) and n % PARTITIONS == q, (q, offset)
            assert (q, offset) not in at, f"partition {q}: offset {offset} read twice"
            at[(q, offset)] = n
    check_against_acked(at, acked)
    return sum(ends.values())


def segment_digests(cluster, node, partition):
    """The node's segment files of a partition: name -> sha256 of the contents."""
    d = cluster.nodes[node].data_dir / f"replicated-{partition}"
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.glob("*.log"))}


def wait_for_identical_replicas(cluster, timeout=60):
    def identical():
        return all(
            len({str(segment_digests(cluster, n, q)) for n in range(3)}) == 1
            for q in range(PARTITIONS))
    wait_until("every replica to hold the same bytes", identical, timeout)


def test_followers_copy_their_leaders_and_a_dead_leader_loses_nothing(cluster_factory):  # noqa: F811
    c = cluster_factory(3)
    create(c.bootstrap(0), "replicated", PARTITIONS, rf=3, cluster=c)
    acked = {}
    produce(c.bootstrap(0), range(0, 6000), acked)
    assert read_back(c.bootstrap(1), acked) == 6000
    wait_for_identical_replicas(c)

    # The leader of partition 0 dies; a follower in the ISR takes over once the dead
    # broker is fenced, and acks=all produce goes on with the two left.
    leader = partition_view(c.metadata(1), "replicated")[0][0]
    c.kill(leader, signal.SIGKILL)
    survivor = next(i for i in range(3) if i != leader)
    produce(c.bootstrap(survivor), range(6000, 9000), acked)
    view = partition_view(c.metadata(survivor), "replicated")
    assert view[0][0] != leader and leader not in view[0][2], view
    assert read_back(c.bootstrap(survivor), acked) == 9000

    # Restarted, it follows again and catches up, byte for byte.
    c.nodes[leader].start()
    c.wait_for_brokers({0, 1, 2})
    wait_for_identical_replicas(c)
    assert read_back(c.bootstrap(leader), acked) == 9000


def test_a_new_partition_does_not_wait_out_a_parked_replica_fetch(cluster_factory):  # noqa: F811
    # A follower's fetch waits at the leader up to replica.fetch.wait.max.ms; here a
    # minute, longer than the producer will wait. The fetchers from nodes 1 and 2 to
    # node 0 are parked on "first" when "second" appears: they must start a round
    # with its partitions at once, or its acks=all produce cannot be acknowledged.
    c = cluster_factory(3, overrides=["replica.fetch.wait.max.ms=60000"])
    acked = {}
    for topic in ("first", "second"):
        admin = AdminClient({"bootstrap.servers": c.bootstrap(0)})
        new = NewTopic(topic, 1, replica_assignment=[[0, 1, 2]])
        admin.create_topics([new])[topic].result(30)
        wait_until(f"every node to know {topic}",
                   lambda: all(topic in c.metadata(i).topics for i in range(3)), 30)
        p = Producer({"bootstrap.servers": c.bootstrap(0), "acks": "all",
                      "message.timeout.ms": 30_000})
        p.produce(topic, b"one", on_delivery=lambda err, msg: acked.__setitem__(
            msg.topic(), err or msg.offset()))
        assert p.flush(40) == 0
    assert acked == {"first": 0, "second": 0}, acked


def test_lagging_followers_leave_the_isr_and_min_insync_refuses_acks_all(cluster_factory):  # noqa: F811
    """Five brokers (the quorum keeps three when two stop), a partition on 0, 1, 2 with
    min.insync.replicas=2. Both followers stop (SIGSTOP: not fenced, just silent);
    acks=1 goes on, and once they have lagged for replica.lag.time.max.ms the leader
    takes them out of the ISR: acks=all is refused with NOT_ENOUGH_REPLICAS. They resume: they catch up, join the
    ISR again, and nothing acknowledged is lost."""
    from confluent_kafka.admin import AdminClient, NewTopic
    c = cluster_factory(5, ["broker.session.timeout.ms=60000", "replica.lag.time.max.ms=1500",
                            "min.insync.replicas=2"])
    admin = AdminClient({"bootstrap.servers": c.bootstrap(0)})
    for f in admin.create_topics([NewTopic("isr", num_partitions=1, replica_assignment=[[0, 1, 2]])]).values():
        f.result(30)
    wait_until("every node to know the topic",
               lambda: all("isr" in c.metadata(i).topics for i in c.running()))

    def send(acks, values):
        p = Producer({"bootstrap.servers": c.bootstrap(3), "acks": acks, "retries": 0,
                      "linger.ms": 0, "message.timeout.ms": 20_000})
        results = []
        for v in values:
            p.produce("isr", v, partition=0,
                      on_delivery=lambda err, m: results.append(err.name() if err else m.offset()))
        p.flush(30)
        return results

    def isr():
        return sorted(partition_view(c.metadata(3), "isr")[0][2])

    acked = send("all", [b"a-%d" % i for i in range(100)])
    assert all(isinstance(r, int) for r in acked), acked[:3]
    for follower in (1, 2):
        c.nodes[follower].proc.send_signal(signal.SIGSTOP)
    try:
        # acks=1 goes on; the followers fall behind it (an idle follower that holds
        # all the leader has is in sync, as in Kafka), and leave the ISR.
        one = send("1", [b"b-%d" % i for i in range(10)])
        assert all(isinstance(r, int) for r in one), one
        wait_until("the ISR to shrink to the leader", lambda: isr() == [0], 30)
        assert send("all", [b"refused"]) == ["NOT_ENOUGH_REPLICAS"]
    finally:
        for follower in (1, 2):
            c.nodes[follower].proc.send_signal(signal.SIGCONT)
    wait_until("the followers to rejoin the ISR", lambda: isr() == [0, 1, 2], 60)
    again = send("all", [b"c-%d" % i for i in range(100)])
    assert all(isinstance(r, int) for r in again), again[:3]

    # Every record acknowledged with acks=all is there, on every replica.
    cons = Consumer({"bootstrap.servers": c.bootstrap(4), "group.id": "isr-check",
                     "enable.auto.commit": False})
    cons.assign([TopicPartition("isr", 0, 0)])
    got = []
    deadline = time.time() + 60
    while len(got) < 210 and time.time() < deadline:
        m = cons.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    cons.close()
    assert got == [b"a-%d" % i for i in range(100)] + [b"b-%d" % i for i in range(10)] + [
        b"c-%d" % i for i in range(100)]

    def digests(node):
        d = c.nodes[node].data_dir / "isr-0"
        return [hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.glob("*.log"))]
    wait_until("the replicas to match", lambda: digests(0) == digests(1) == digests(2))


class VerifyingGroup:
    """A consumer group member reading `replicated` for the length of a test, auto
    committing, through kills of any broker (its coordinator's too). Re-delivery of
    an offset after a rebalance or a coordinator move is allowed (at least once); a
    different record at an offset already seen is not."""

    def __init__(self, bootstrap):
        import threading
        self.at = {}  # (partition, offset) -> record number
        self.problems = []
        self.stop = threading.Event()
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "verifier",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": True,
                                  "auto.commit.interval.ms": 1000, "session.timeout.ms": 10_000})
        self.consumer.subscribe(["replicated"])
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            for m in self.consumer.consume(1000, 0.5):
                if m.error():
                    continue  # transport errors while brokers die; librdkafka retries
                n = int(m.value()[:12])
                if m.value() != payload(n):
                    self.problems.append(("corrupt", m.partition(), m.offset()))
                if self.at.setdefault((m.partition(), m.offset()), n) != n:
                    self.problems.append(("changed", m.partition(), m.offset()))
        self.consumer.close()

    def wait_for(self, ends, timeout=120):
        """Until it has read every partition up to `ends`; then stops."""
        def read_all():
            have = {}
            for q, o in list(self.at):
                have[q] = max(have.get(q, -1), o)
            return all(have.get(q, -1) + 1 >= e for q, e in ends.items() if e > 0)
        try:
            wait_until("the verifying group to read everything", read_all, timeout)
        finally:
            self.stop.set()
            self.thread.join()

    def verify(self, acked):
        """0 lost, 0 duplicated, 0 reordered: every acknowledged record where it was
        acknowledged, each record number at one offset only, ascending by offset."""
        assert not self.problems, self.problems[:5]
        check_against_acked(self.at, acked)


def test_leader_kill_rounds_lose_duplicate_and_reorder_nothing(cluster_factory):  # noqa: F811
    """An idempotent acks=all producer and a verifying consumer group run while the
    leader of a partition is killed (SIGKILL) and restarted: four rounds, each on the
    leader of the next partition, at the default heartbeat and session settings. The
    group finds every acknowledged record once, in order, where it was acknowledged,
    and the replicas end byte-identical. Prints each round's failover time: from the
    kill to the first acknowledgement of a record of that partition sent after it."""
    import threading
    c = cluster_factory(3, ["min.insync.replicas=2", "broker.session.timeout.ms=9000",
                            "broker.heartbeat.interval.ms=2000"])
    create(c.bootstrap(0), "replicated", PARTITIONS, rf=3, cluster=c)
    everyone = ",".join(c.bootstrap(i) for i in range(3))
    acked, sent_at, acks_at = {}, {}, {q: [] for q in range(PARTITIONS)}
    errors, stop = [], threading.Event()

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            n = int(msg.value()[:12])
            acked[n] = (msg.partition(), msg.offset())
            acks_at[msg.partition()].append((sent_at[n], time.time()))

    def resumed_after(q, t):
        """When partition q first acknowledged a record sent after `t`."""
        return next((acked_at for sent, acked_at in list(acks_at[q]) if sent > t), None)

    def write():
        p = Producer({"bootstrap.servers": everyone, "acks": "all", "enable.idempotence": True,
                      "linger.ms": 5, "message.timeout.ms": 120_000})
        n = 0
        deadline = time.time() + 300
        while not stop.is_set() and n < 200_000 and time.time() < deadline:
            try:
                sent_at[n] = time.time()
                p.produce("replicated", payload(n), partition=n % PARTITIONS, on_delivery=on_delivery)
                n += 1
            except BufferError:
                p.poll(0.01)
            if n % 100 == 0:
                p.poll(0)
                time.sleep(0.005)
        p.flush(150)

    verifier = VerifyingGroup(everyone)
    writer = threading.Thread(target=write)
    writer.start()
    failovers = []
    try:
        for r in range(4):
            q = r % PARTITIONS
            before = len(acked)
            wait_until("acknowledgements", lambda: len(acked) > before + 500, 60)
            leader = partition_view(c.metadata(c.running()[0]), "replicated")[q][0]
            killed_at = time.time()
            c.kill(leader, signal.SIGKILL)
            wait_until(f"partition {q} to take acks again",
                       lambda: resumed_after(q, killed_at) is not None, 60, every=0.05)
            failovers.append(resumed_after(q, killed_at) - killed_at)
            c.nodes[leader].start()
            wait_until("the restarted broker back in every ISR", lambda: all(
                sorted(v[2]) == [0, 1, 2]
                for v in partition_view(c.metadata(leader), "replicated").values()), 90)
    finally:
        stop.set()
        writer.join()
        ends = {}
        try:
            looker = Consumer({"bootstrap.servers": everyone, "group.id": "ends"})
            ends = {q: looker.get_watermark_offsets(TopicPartition("replicated", q), timeout=30)[1]
                    for q in range(PARTITIONS)}
            looker.close()
        finally:
            verifier.wait_for(ends)
    ordered = sorted(failovers)
    print("failover seconds (kill -> first ack of the partition), session 9000 ms, heartbeat 2000 ms:",
          ", ".join("%.2f" % f for f in failovers),
          "median %.2f max %.2f" % ((ordered[1] + ordered[2]) / 2, max(failovers)))
    assert not errors, errors[:3]
    verifier.verify(acked)
    assert len(verifier.at) == sum(ends.values()) == len(acked)
    total = read_back(c.bootstrap(0), acked)
    assert total == len(acked), (total, len(acked))
    wait_for_identical_replicas(c, 90)


def test_a_clean_stop_moves_leaderships_first(cluster_factory):  # noqa: F811
    """SIGTERM to the leader of partition 0 while an idempotent acks=all producer runs:
    before it stops serving, the controller fences it and its leaderships move to
    in-sync followers (controlled shutdown), so the producer sees no error and loses
    nothing."""
    import threading
    c = cluster_factory(3, ["min.insync.replicas=2"])
    create(c.bootstrap(0), "replicated", PARTITIONS, rf=3, cluster=c)
    acked, errors, stop = {}, [], threading.Event()
    sent_at, acks_at = {}, []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            n = int(msg.value()[:12])
            acked[n] = (msg.partition(), msg.offset())
            acks_at.append((sent_at[n], time.time()))

    def write():
        p = Producer({"bootstrap.servers": ",".join(c.bootstrap(i) for i in range(3)),
                      "acks": "all", "enable.idempotence": True, "linger.ms": 5})
        n = 0
        deadline = time.time() + 120
        while not stop.is_set() and n < 100_000 and time.time() < deadline:
            try:
                sent_at[n] = time.time()
                p.produce("replicated", payload(n), partition=n % PARTITIONS, on_delivery=on_delivery)
                n += 1
            except BufferError:
                p.poll(0.01)
            if n % 100 == 0:
                p.poll(0)
                time.sleep(0.005)
        p.flush(60)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until("acknowledgements", lambda: len(acked) > 2000, 60)
        leader = partition_view(c.metadata(0), "replicated")[0][0]
        stopped_at = time.time()
        assert c.kill(leader, signal.SIGTERM) == 0
        stopped_in = time.time() - stopped_at
        wait_until("acks of records sent after the stop",
                   lambda: any(sent > stopped_at + stopped_in for sent, _ in acks_at), 30)
        others = [i for i in range(3) if i != leader]
        view = partition_view(c.metadata(others[0]), "replicated")
        assert all(v[0] in others and leader not in v[2] for v in view.values()), view
    finally:
        stop.set()
        writer.join()
    assert not errors, errors[:3]
    assert "controlled shutdown: this broker leads nothing now" in c.nodes[leader].log_text()
    print("clean stop of the leader took %.2f s" % stopped_in)
    assert read_back(c.bootstrap(others[0]), acked) == len(acked)


def test_unclean_election_only_when_enabled_and_its_loss_is_counted(cluster_factory):  # noqa: F811
    """Two topics on replicas 0 and 1, one with unclean.leader.election.enable. Broker 1
    stops (SIGSTOP) and leaves the ISRs; records acknowledged with acks=all then live
    on broker 0 only; broker 0 dies (SIGKILL); broker 1 resumes. The clean topic stays
    offline until 0 returns, with nothing lost; the unclean one is led by 1 at once and
    loses exactly what only 0 held, as Kafka documents. 0 returns, truncates its
    divergent tail, and both replicas match."""
    from confluent_kafka.admin import AdminClient, NewTopic
    c = cluster_factory(5, ["replica.lag.time.max.ms=1500"])
    admin = AdminClient({"bootstrap.servers": c.bootstrap(4)})
    topics = [NewTopic("clean", num_partitions=1, replica_assignment=[[0, 1]]),
              NewTopic("unclean", num_partitions=1, replica_assignment=[[0, 1]],
                       config={"unclean.leader.election.enable": "true"})]
    for f in admin.create_topics(topics).values():
        f.result(30)
    wait_until("every node to know the topics", lambda: all(
        {"clean", "unclean"} <= set(c.metadata(i).topics) for i in c.running()))

    def send(topic, values, acks="all"):
        p = Producer({"bootstrap.servers": c.bootstrap(4), "acks": acks, "retries": 0,
                      "message.timeout.ms": 20_000})
        results = []
        for v in values:
            p.produce(topic, v, partition=0,
                      on_delivery=lambda err, m: results.append(err.name() if err else m.offset()))
        p.flush(30)
        assert all(isinstance(r, int) for r in results), results[:3]

    def state(topic):
        return partition_view(c.metadata(4), topic)[0]

    def read(topic, expected):
        cons = Consumer({"bootstrap.servers": c.bootstrap(4), "group.id": f"read-{time.time()}",
                         "enable.auto.commit": False})
        cons.assign([TopicPartition(topic, 0, 0)])
        got, deadline = [], time.time() + 30
        while len(got) < expected and time.time() < deadline:
            m = cons.poll(0.3)
            if m is not None and m.error() is None:
                got.append(m.value())
        time.sleep(1)  # and nothing more
        while (m := cons.poll(0.2)) is not None:
            if m.error() is None:
                got.append(m.value())
        cons.close()
        return got

    first = [b"in-sync-%d" % i for i in range(50)]
    alone = [b"leader-only-%d" % i for i in range(50)]
    for t in ("clean", "unclean"):
        send(t, first)
    c.nodes[1].proc.send_signal(signal.SIGSTOP)
    wait_until("broker 1 out of both ISRs", lambda: all(state(t)[2] == [0] for t in ("clean", "unclean")), 30)
    for t in ("clean", "unclean"):
        send(t, alone)  # acks=all: the ISR is broker 0 alone
    c.kill(0, signal.SIGKILL)
    wait_until("both offline", lambda: all(state(t)[0] == -1 for t in ("clean", "unclean")), 30)
    c.nodes[1].proc.send_signal(signal.SIGCONT)
    wait_until("the unclean topic led by broker 1", lambda: state("unclean")[0] == 1, 30)
    assert state("clean")[0] == -1, "the clean topic waits for its last in-sync replica"
    survived = read("unclean", len(first))
    lost = len(first) + len(alone) - len(survived)
    print(f"unclean election: {lost} acknowledged records lost (those only broker 0 held)")
    assert survived == first and lost == len(alone)

    c.nodes[0].start()
    wait_until("the clean topic back with broker 0", lambda: state("clean")[0] == 0, 60)
    assert read("clean", 100) == first + alone, "nothing lost without unclean election"
    wait_until("broker 0's unclean replica cut back to the leader's",
               lambda: "diverged from the leader's; truncated" in c.nodes[0].log_text(), 60)

    def digests(node):
        d = c.nodes[node].data_dir / "unclean-0"
        return [hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.glob("*.log"))]
    wait_until("the unclean topic's replicas to match", lambda: digests(0) == digests(1), 60)


def test_a_group_keeps_its_committed_offsets_when_its_coordinator_dies(cluster_factory):  # noqa: F811
    """`__consumer_offsets` has three replicas (offsets.topic.replication.factor), and a
    commit is answered once every in-sync replica holds it. A group commits through
    its coordinator, whose broker is then SIGKILLed: the new leader of the group's
    partition coordinates it, with every committed offset, and the group resumes
    exactly where it committed."""
    from confluent_kafka.admin import AdminClient
    c = cluster_factory(3)
    create(c.bootstrap(0), "replicated", PARTITIONS, rf=3, cluster=c)
    acked = {}
    produce(c.bootstrap(0), range(0, 3000), acked)
    everyone = ",".join(c.bootstrap(i) for i in range(3))
    group = "keeps-its-offsets"
    tps = [TopicPartition("replicated", q) for q in range(PARTITIONS)]

    def member(bootstrap):
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                             "session.timeout.ms": 6000})
        consumer.subscribe(["replicated"])
        return consumer

    first = member(everyone)
    seen = 0
    deadline = time.time() + 60
    while seen < 1500:
        assert time.time() < deadline, "consuming timed out"
        for m in first.consume(500, 1.0):
            assert not m.error(), m.error()
            seen += 1
    first.commit(asynchronous=False)
    committed = {tp.partition: tp.offset for tp in first.committed(tps, timeout=30)}
    # A partition with nothing consumed has no committed offset (-1001).
    assert sum(max(o, 0) for o in committed.values()) == seen, (committed, seen)
    first.close()

    offsets_view = partition_view(c.metadata(0), "__consumer_offsets")
    assert all(len(v[1]) == 3 for v in offsets_view.values()), offsets_view
    admin = AdminClient({"bootstrap.servers": everyone})
    coordinator = admin.describe_consumer_groups([group])[group].result(timeout=30).coordinator.id
    c.kill(coordinator, signal.SIGKILL)
    survivors = ",".join(c.bootstrap(i) for i in range(3) if i != coordinator)

    second = member(survivors)
    found = {}

    def offsets_back():
        found.update({tp.partition: tp.offset for tp in second.committed(tps, timeout=10)})
        return found == committed
    wait_until("the committed offsets from the new coordinator", offsets_back, 60)
    admin = AdminClient({"bootstrap.servers": survivors})  # kept alive for its future
    moved_to = admin.describe_consumer_groups([group])[group].result(timeout=30).coordinator.id
    assert moved_to != coordinator

    # The group resumes where it committed: nothing before, everything after.
    first_offsets, remaining = {}, 3000 - seen
    deadline = time.time() + 90
    while remaining > 0:
        assert time.time() < deadline, f"resuming timed out with {remaining} left"
        for m in second.consume(500, 1.0):
            assert not m.error(), m.error()
            first_offsets.setdefault(m.partition(), m.offset())
            remaining -= 1
    second.close()
    assert all(first_offsets[q] == max(committed[q], 0) for q in first_offsets), \
        (first_offsets, committed)


def create_one_partition(c, replicas):
    """Creates "replicated" with one partition on `replicas` (the first preferred),
    known to every node; returns the admin client used."""
    admin = AdminClient({"bootstrap.servers": c.bootstrap(0)})
    admin.create_topics([NewTopic("replicated", 1, replica_assignment=[replicas])])[
        "replicated"].result(30)
    wait_until("every node to know the topic",
               lambda: all("replicated" in c.metadata(i).topics for i in range(3)), 30)
    return admin


def read_partition_0(bootstrap, count):
    """{(0, offset): record number} of partition 0 read from its start, until `count`
    records (or 60 s)."""
    cons = Consumer({"bootstrap.servers": bootstrap, "group.id": "check",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    cons.assign([TopicPartition("replicated", 0, 0)])
    at = {}
    deadline = time.time() + 60
    while len(at) < count and time.time() < deadline:
        for m in cons.consume(1000, 1.0):
            assert not m.error(), m.error()
            at[(0, m.offset())] = int(m.value()[:12])
    cons.close()
    return at


def kill_and_restart_preferred_leader(c, acked):
    """SIGKILLs the leader of partition 0 (its preferred replica), produces while it is
    down, restarts it, and waits until it is back in partition 0's ISR on every node.
    Returns it."""
    preferred = partition_view(c.metadata(0), "replicated")[0][1][0]
    assert partition_view(c.metadata(0), "replicated")[0][0] == preferred
    c.kill(preferred, signal.SIGKILL)
    survivor = next(i for i in range(3) if i != preferred)
    produce(c.bootstrap(survivor), range(3000, 6000), acked)
    c.nodes[preferred].start()
    c.wait_for_brokers({0, 1, 2})
    wait_until("the restarted broker back in the ISR", lambda: all(
        preferred in partition_view(c.metadata(i), "replicated")[0][2] for i in range(3)), 60)
    return preferred


def test_elect_leaders_returns_a_leadership_to_its_preferred_replica(cluster_factory):  # noqa: F811
    """With auto.leader.rebalance.enable=false, a restarted preferred replica stays a
    follower until ElectLeaders (confluent-kafka's elect_leaders) asks for it; the
    answers per partition are Kafka's, and nothing acknowledged is lost on the way."""
    from confluent_kafka import ElectionType
    c = cluster_factory(3, overrides=["auto.leader.rebalance.enable=false"])
    create(c.bootstrap(0), "replicated", PARTITIONS, rf=3, cluster=c)
    acked = {}
    produce(c.bootstrap(0), range(0, 3000), acked)
    preferred = kill_and_restart_preferred_leader(c, acked)
    assert partition_view(c.metadata(preferred), "replicated")[0][0] != preferred

    admin = AdminClient({"bootstrap.servers": c.bootstrap(preferred)})

    def elect(kind, partitions):
        tps = [TopicPartition(t, p) for t, p in partitions]
        got = admin.elect_leaders(kind, tps).result(30)
        return {(tp.topic, tp.partition): (e.code() if e else None)
                for tp, e in got.items()}

    asked = [("replicated", p) for p in range(PARTITIONS)] + [("replicated", 9)]
    assert elect(ElectionType.PREFERRED, asked) == {
        ("replicated", 0): None,
        ("replicated", 1): KafkaError.ELECTION_NOT_NEEDED,
        ("replicated", 2): KafkaError.ELECTION_NOT_NEEDED,
        ("replicated", 9): KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
    wait_until("partition 0 led by its preferred replica on every node", lambda: all(
        partition_view(c.metadata(i), "replicated")[0][0] == preferred for i in range(3)), 30)
    # Every partition has a leader: an unclean election is not needed anywhere.
    assert elect(ElectionType.UNCLEAN, asked[:1]) == {
        ("replicated", 0): KafkaError.ELECTION_NOT_NEEDED}
    # Asked for every partition: those that needed nothing are left out.
    assert admin.elect_leaders(ElectionType.PREFERRED, None).result(30) == {}

    produce(c.bootstrap(preferred), range(6000, 9000), acked)
    assert read_back(c.bootstrap(preferred), acked) == 9000
    wait_for_identical_replicas(c)


def test_leaderships_return_to_preferred_replicas_by_themselves(cluster_factory):  # noqa: F811
    """auto.leader.rebalance.enable (on by default), checked every second here: once the
    restarted preferred replica is in sync again, it leads again without being asked."""
    c = cluster_factory(3, overrides=["leader.imbalance.check.interval.seconds=1"])
    create(c.bootstrap(0), "replicated", PARTITIONS, rf=3, cluster=c)
    acked = {}
    produce(c.bootstrap(0), range(0, 3000), acked)
    preferred = kill_and_restart_preferred_leader(c, acked)
    wait_until("partition 0 led by its preferred replica again", lambda: all(
        partition_view(c.metadata(i), "replicated")[0][0] == preferred for i in range(3)), 30)
    produce(c.bootstrap(preferred), range(6000, 9000), acked)
    assert read_back(c.bootstrap(preferred), acked) == 9000


def test_a_follower_behind_the_leaders_log_start_starts_over_there(cluster_factory):  # noqa: F811
    """A follower is down while its leader deletes records (DeleteRecords) past the
    follower's log end: back, it cannot fetch what lies between, so it empties its log
    and copies from the leader's log start (Kafka's truncateFullyAndStartAt), and
    rejoins the ISR. Later DeleteRecords move its log start too. Made leader again
    (it is the preferred replica), it serves exactly what was acknowledged from the
    log start on."""
    from confluent_kafka import ElectionType
    c = cluster_factory(3, overrides=["auto.leader.rebalance.enable=false"])
    admin = create_one_partition(c, [2, 0, 1])
    acked = {}
    produce_one = lambda numbers: produce(c.bootstrap(0), [n * PARTITIONS for n in numbers], acked)  # noqa: E731
    produce_one(range(0, 1000))
    c.kill(2, signal.SIGKILL)
    wait_until("broker 2 out of the ISR", lambda: 2 not in partition_view(
        c.metadata(0), "replicated")[0][2], 30)
    produce_one(range(1000, 3000))

    def delete_before(offset):
        got = admin.delete_records([TopicPartition("replicated", 0, offset)])
        for f in got.values():
            assert f.result(30).low_watermark == offset
    delete_before(2000)

    c.nodes[2].start()
    c.wait_for_brokers({0, 1, 2})
    wait_until("broker 2 back in the ISR", lambda: 2 in partition_view(
        c.metadata(0), "replicated")[0][2], 60)
    # Its old segment is gone; the new one starts at the leader's first batch (which
    # may begin before 2000: the log start can fall inside a batch).
    d = c.nodes[2].data_dir / "replicated-0"
    segments = sorted(int(f.name[:-4]) for f in d.glob("*.log"))
    assert len(segments) == 1 and 1000 <= segments[0] <= 2000, segments
    assert "emptied the log to start at the leader's log start" in c.nodes[2].log_text()
    start_file = d / "log-start-offset"
    wait_until("broker 2's log start at the leader's", lambda: (
        start_file.exists() and start_file.read_text().strip() == "2000"), 30)

    produce_one(range(3000, 3500))
    delete_before(2500)
    wait_until("broker 2's log start following the leader's", lambda: (
        start_file.read_text().strip() == "2500"), 30)

    # Broker 2 leads again: from 2500 on, everything acknowledged, where it was.
    got = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("replicated", 0)]).result(30)
    assert list(got.values()) == [None], got
    wait_until("broker 2 leading", lambda: partition_view(
        c.metadata(2), "replicated")[0][0] == 2, 30)
    kept = {n: at for n, at in acked.items() if at[1] >= 2500}
    at = read_partition_0(c.bootstrap(2), len(kept))
    assert min(o for _, o in at) == 2500
    check_against_acked(at, kept)


def test_a_crashed_node_starts_at_its_checkpointed_high_watermark(cluster_factory):  # noqa: F811
    """Every node writes its partitions' high watermarks to replication-offset-checkpoint
    (every 200 ms here). All three crash; two come back: each starts the partition's
    high watermark at the checkpointed 3000, not at its log start (where a restarted
    leader would hide acknowledged records from consumers until its followers
    fetch), and consumers read every acknowledged record."""
    c = cluster_factory(3, overrides=["replica.high.watermark.checkpoint.interval.ms=200"])
    create_one_partition(c, [0, 1, 2])
    acked = {}
    produce(c.bootstrap(0), [n * PARTITIONS for n in range(3000)], acked)

    def checkpointed(i):
        f = c.nodes[i].data_dir / "replication-offset-checkpoint"
        # "<topic id> <partition> <high watermark>" lines, one topic here.
        return f.exists() and [ln.split()[1:] for ln in f.read_text().splitlines()[1:]] == [
            ["0", "3000"]]
    wait_until("the high watermark checkpointed on every node",
               lambda: all(checkpointed(i) for i in range(3)), 30)
    for i in (2, 1, 0):
        c.kill(i, signal.SIGKILL)
    for i in (0, 1):
        c.nodes[i].start()
        assert re.search(r"the high watermark starts from the checkpoint .*replicated-0 "
                         r"checkpointed=3000 high_watermark=3000", c.nodes[i].log_text()), i
    at = read_partition_0(f"{c.bootstrap(0)},{c.bootstrap(1)}", 3000)
    check_against_acked(at, acked)
