"""Consumer groups (Kafka's classic protocol) through librdkafka and its admin client."""
import time

import pytest
from confluent_kafka import (Consumer, ConsumerGroupTopicPartitions, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

# Kafka's defaults (3 s initial delay, 5 s KIP-848 heartbeats) would only slow the tests.
FAST_GROUPS = ["group.initial.rebalance.delay.ms=0", "group.consumer.heartbeat.interval.ms=500"]
DEADLINE_S = 60


def create_topic(bootstrap, name, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(timeout=30)
    return admin


def produce(bootstrap, topic, partitions, start, count):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(start, start + count):
        p.produce(topic, value=str(i).encode(), partition=i % partitions)
    assert p.flush(30) == 0


OPEN_MEMBERS = []


@pytest.fixture(autouse=True)
def close_members_before_the_broker_stops(broker_factory):
    """A failed test must not leave consumers behind: closing them after the broker
    is gone would hang the run."""
    yield
    while OPEN_MEMBERS:
        OPEN_MEMBERS.pop().close()


class Member:
    """A group member that records every assignment change and what it processed."""

    def __init__(self, bootstrap, group, topic, **conf):
        OPEN_MEMBERS.append(self)
        self.closed = False
        self.cooperative = conf.get("partition.assignment.strategy") == "cooperative-sticky"
        self.events = []
        self.processed = []
        self.failed_commits = []
        # Session and heartbeat timing belong to the broker with KIP-848.
        classic = {} if conf.get("group.protocol") == "consumer" else {
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "on_commit": self.on_commit,
            **classic,
            **conf,
        })
        self.consumer.subscribe(
            [topic],
            on_assign=lambda c, ps: self.events.append(("assign", sorted(p.partition for p in ps))),
            on_revoke=lambda c, ps: self.events.append(("revoke", sorted(p.partition for p in ps))),
        )

    def poll(self, timeout=0.05):
        """Processes what one fetch returns, then commits its position (asynchronously: members share
        this thread, and a synchronous commit queued behind its own JoinGroup would
        block the others from rejoining). A commit may fail while the group rebalances
        (REBALANCE_IN_PROGRESS, as Kafka answers): the record then comes again to
        whoever owns its partition next (at least once)."""
        got = [m for m in self.consumer.consume(100, timeout) if not m.error()]
        if not got:
            return
        self.processed.extend(int(m.value()) for m in got)
        self.consumer.commit(asynchronous=True)

    def on_commit(self, err, partitions):
        if err is not None:
            self.failed_commits.append(err.name())

    def commit_positions(self):
        """Commits what it has consumed, without waiting (see `poll`)."""
        try:
            self.consumer.commit(asynchronous=True)
        except KafkaException:
            pass  # nothing consumed yet: nothing to commit

    def partitions(self):
        return sorted(tp.partition for tp in self.consumer.assignment())

    def close(self):
        """Closes the consumer. A cooperative member first unsubscribes and serves its
        revocation in consume(): closing with the revocation pending made librdkafka
        serve it inside close(), where it waited forever (once in a CI rehearsal:
        rd_kafka_consumer_close -> rebalance_cb -> rd_kafka_assign, the broker already
        showing the group empty). The other members close directly: the eager ones,
        among them the static members, which must not leave (KIP-345)."""
        if not self.closed:
            self.closed = True
            if not self.cooperative:
                self.consumer.close()
                return
            self.consumer.unsubscribe()
            deadline = time.time() + 10
            while self.consumer.assignment() and time.time() < deadline:
                self.consumer.consume(100, 0.05)
            self.consumer.close()


def poll_until(members, done, what):
    deadline = time.time() + DEADLINE_S
    while not done():
        assert time.time() < deadline, f"timed out waiting for {what}"
        for m in members:
            m.poll()


def committed_offsets(bootstrap, group):
    """The group's committed offsets, through the admin client (OffsetFetch)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    found = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    return sorted((tp.partition, tp.offset) for tp in found.result(timeout=10).topic_partitions)


def commit_until(bootstrap, group, members, expected):
    """Members keep committing their positions until the group's offsets are `expected`."""
    def done():
        for m in members:
            m.commit_positions()
        return committed_offsets(bootstrap, group) == expected
    poll_until(members, done, f"committed offsets {expected}")


def balanced(members, total):
    parts = [m.partitions() for m in members]
    flat = sorted(p for ps in parts for p in ps)
    sizes = sorted(len(ps) for ps in parts)
    return flat == list(range(total)) and sizes[-1] - sizes[0] <= 1


@pytest.mark.parametrize("protocol,strategy", [
    ("classic", "range"), ("classic", "roundrobin"), ("classic", "cooperative-sticky"),
    # KIP-848: the broker assigns.
    ("consumer", "uniform"), ("consumer", "range"),
])
def test_members_share_partitions_and_rebalance_when_one_leaves_and_one_joins(
        broker_factory, protocol, strategy):
    b = broker_factory(FAST_GROUPS)
    create_topic(b.bootstrap, "shared", 12)
    produce(b.bootstrap, "shared", 12, 0, 600)
    group = f"g-{protocol}-{strategy}"
    if protocol == "classic":
        conf = {"partition.assignment.strategy": strategy}
    else:
        conf = {"group.protocol": "consumer", "group.remote.assignor": strategy}
    members = [Member(b.bootstrap, group, "shared", **conf) for _ in range(3)]
    poll_until(members, lambda: balanced(members, 12), "3 members to share 12 partitions")
    assert [len(m.partitions()) for m in members] == [4, 4, 4]
    poll_until(members, lambda: sum(len(m.processed) for m in members) >= 200, "some progress")
    # One leaves (LeaveGroup): the other two take over its partitions.
    leaver = members.pop()
    leaver.close()
    produce(b.bootstrap, "shared", 12, 600, 300)
    poll_until(members, lambda: balanced(members, 12), "2 members to share 12 partitions")
    assert [len(m.partitions()) for m in members] == [6, 6]
    # One joins: three again.
    members.append(Member(b.bootstrap, group, "shared", **conf))
    produce(b.bootstrap, "shared", 12, 900, 300)
    poll_until(members, lambda: balanced(members, 12) and len(members[2].partitions()) == 4,
               "3 members to share 12 partitions again")
    everyone = members + [leaver]
    poll_until(members, lambda: set(range(1200)) <= {r for m in everyone for r in m.processed},
               "every record to be processed")
    # At least once, none skipped; and the committed offsets are at the end.
    processed = [r for m in everyone for r in m.processed]
    assert set(processed) == set(range(1200))
    commit_until(b.bootstrap, group, members, [(p, 100) for p in range(12)])
    failed = {name for m in everyone for name in m.failed_commits}
    assert failed <= {"REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID"}, failed
    if protocol == "consumer":
        # ConsumerGroupDescribe: what kafka-consumer-groups --describe shows.
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
        assert desc.state.name == "STABLE", desc.state
        assert sorted(len(m.assignment.topic_partitions) for m in desc.members) == [4, 4, 4]
    for m in members:
        m.close()


def test_committed_offsets_survive_a_sigkill_restart(broker_factory):
    b = broker_factory(FAST_GROUPS)
    create_topic(b.bootstrap, "durable", 4)
    produce(b.bootstrap, "durable", 4, 0, 400)
    m = Member(b.bootstrap, "keeper", "durable")
    poll_until([m], lambda: len(m.processed) >= 150, "150 records or more")
    m.close()
    before = committed_offsets(b.bootstrap, "keeper")
    assert sum(o for _, o in before) == len(m.processed)
    b.restart(__import__("signal").SIGKILL)
    again = Member(b.bootstrap, "keeper", "durable")
    poll_until([again], lambda: len(m.processed) + len(again.processed) >= 400, "the rest")
    # It resumed where the group had committed: nothing before was read twice.
    assert sorted(m.processed + again.processed) == list(range(400))
    commit_until(b.bootstrap, "keeper", [again], [(p, 100) for p in range(4)])
    again.close()


def test_a_static_member_restarted_within_its_session_timeout_causes_no_rebalance(broker_factory):
    b = broker_factory(FAST_GROUPS)
    create_topic(b.bootstrap, "statics", 4)
    conf = {"session.timeout.ms": 20000}
    one = Member(b.bootstrap, "static-group", "statics", **{"group.instance.id": "one"}, **conf)
    two = Member(b.bootstrap, "static-group", "statics", **{"group.instance.id": "two"}, **conf)
    poll_until([one, two], lambda: balanced([one, two], 4), "2 static members to share 4 partitions")
    kept = two.partitions()
    events_before = list(one.events)
    # A static member's close sends no LeaveGroup (KIP-345); it comes back at once.
    two.close()
    two = Member(b.bootstrap, "static-group", "statics", **{"group.instance.id": "two"}, **conf)
    poll_until([one, two], lambda: two.partitions() == kept, "the restarted member's old partitions")
    for _ in range(40):
        one.poll()
        two.poll()
    assert one.events == events_before, "the other member saw a rebalance"
    assert two.partitions() == kept
    one.close()
    two.close()


def test_two_groups_each_see_every_record(broker_factory):
    b = broker_factory(FAST_GROUPS)
    create_topic(b.bootstrap, "fanout", 6)
    produce(b.bootstrap, "fanout", 6, 0, 600)
    a = [Member(b.bootstrap, "group-a", "fanout") for _ in range(2)]
    c = [Member(b.bootstrap, "group-b", "fanout") for _ in range(3)]
    everyone = a + c
    poll_until(everyone, lambda: {r for m in a for r in m.processed} == set(range(600))
               and {r for m in c for r in m.processed} == set(range(600)), "both groups to read all")
    for m in everyone:
        m.close()


def test_admin_lists_and_describes_groups_and_their_offsets(broker_factory):
    b = broker_factory(FAST_GROUPS)
    admin = create_topic(b.bootstrap, "described", 3)
    produce(b.bootstrap, "described", 3, 0, 30)
    m = Member(b.bootstrap, "watched", "described", **{"client.id": "watcher"})
    poll_until([m], lambda: len(m.processed) == 30, "30 records")
    listed = admin.list_consumer_groups().result(timeout=10)
    states = {g.group_id: g.state.name for g in listed.valid}
    assert states.get("watched") == "STABLE", states
    desc = admin.describe_consumer_groups(["watched"])["watched"].result(timeout=10)
    assert desc.state.name == "STABLE"
    assert desc.partition_assignor == "range"
    assert len(desc.members) == 1
    member = desc.members[0]
    assert member.client_id == "watcher"
    assert member.host == "/127.0.0.1"
    assert sorted(tp.partition for tp in member.assignment.topic_partitions) == [0, 1, 2]
    # The member commits asynchronously: wait (bounded) for its last commit to land.
    expected = [("described", 0, 10), ("described", 1, 10), ("described", 2, 10)]
    deadline = time.time() + DEADLINE_S
    while True:
        offsets = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions("watched")])["watched"].result(timeout=10)
        got = sorted((tp.topic, tp.partition, tp.offset) for tp in offsets.topic_partitions)
        if got == expected or time.time() > deadline:
            break
        m.poll()
    assert got == expected
    # A group with members cannot be deleted; once empty it can.
    res = admin.delete_consumer_groups(["watched"])["watched"]
    with pytest.raises(Exception, match="NON_EMPTY_GROUP"):
        res.result(timeout=10)
    m.close()
    # Empty now: an admin tool may set offsets (a commit with generation -1).
    deadline = time.time() + DEADLINE_S
    while True:
        try:
            admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
                "watched", [TopicPartition("described", 0, 5)])])["watched"].result(timeout=10)
            break
        except Exception as e:  # the leave may still be completing the rebalance
            assert time.time() < deadline, e
            time.sleep(0.2)
    offsets = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions("watched")])["watched"].result(timeout=10)
    assert sorted((tp.partition, tp.offset) for tp in offsets.topic_partitions) == [
        (0, 5), (1, 10), (2, 10)]
    deadline = time.time() + DEADLINE_S
    while True:
        try:
            admin.delete_consumer_groups(["watched"])["watched"].result(timeout=10)
            break
        except Exception as e:  # the leave may still be completing the rebalance
            assert time.time() < deadline, e
            time.sleep(0.2)
    listed = admin.list_consumer_groups().result(timeout=10)
    assert "watched" not in {g.group_id for g in listed.valid}


def test_group_membership_survives_a_broker_restart_without_a_rebalance(broker_factory):
    b = broker_factory(FAST_GROUPS)
    create_topic(b.bootstrap, "kept", 4)
    conf = {"session.timeout.ms": 20000}
    members = [Member(b.bootstrap, "stays", "kept", **conf) for _ in range(2)]
    poll_until(members, lambda: balanced(members, 4), "2 members to share 4 partitions")
    events = [list(m.events) for m in members]
    # The group's membership was stored with the rebalance; after a crash the
    # coordinator restores it, and the members' heartbeats carry on.
    b.restart(__import__("signal").SIGKILL)
    produce(b.bootstrap, "kept", 4, 0, 40)
    poll_until(members, lambda: sorted(r for m in members for r in m.processed) == list(range(40)),
               "the records produced after the restart")
    assert [m.events for m in members] == events, "a rebalance happened"


def test_consumer_protocol_members_rejoin_after_a_broker_restart(broker_factory):
    """KIP-848 membership is not stored: after a crash the members are unknown, rejoin
    with epoch 0, and go on from the committed offsets."""
    b = broker_factory(FAST_GROUPS)
    create_topic(b.bootstrap, "rejoin", 4)
    produce(b.bootstrap, "rejoin", 4, 0, 40)
    conf = {"group.protocol": "consumer"}
    members = [Member(b.bootstrap, "kip848", "rejoin", **conf) for _ in range(2)]
    poll_until(members, lambda: balanced(members, 4), "2 members to share 4 partitions")
    poll_until(members, lambda: len({r for m in members for r in m.processed}) == 40, "40 records")
    commit_until(b.bootstrap, "kip848", members, [(p, 10) for p in range(4)])
    b.restart(__import__("signal").SIGKILL)
    produce(b.bootstrap, "rejoin", 4, 40, 40)
    poll_until(members, lambda: len({r for m in members for r in m.processed}) == 80
               and balanced(members, 4), "the records produced after the restart")
    # Committed offsets held: nothing from before the restart came again.
    assert sorted(r for m in members for r in m.processed) == list(range(80))
