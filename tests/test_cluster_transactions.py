"""Transactions on a 3-broker cluster with RF=3 (min.insync.replicas=2): a Java
transactional producer commits transactions one after another while the broker of
its transaction coordinator, or separately of a data partition's leader, is
SIGKILLed (and started again). Every committed transaction is visible exactly once
to a read_committed consumer, no aborted record ever is, and the producer goes on as
the Java client documents (`JavaTxnCheck stream`)."""
import signal
import subprocess
import time

from cluster import wait_until
from test_cluster import cluster_factory, create  # noqa: F401 (fixture)
from test_transactions import read_all, txn_classpath  # noqa: F401 (fixture)

RECORDS = 300
TOPIC_PARTITIONS = 3


def java_hash(s):
    """Java's String.hashCode, as Kafka places a transactional id."""
    h = 0
    data = s.encode("utf-16-be")
    for k in range(0, len(data), 2):
        h = (h * 31 + int.from_bytes(data[k:k + 2], "big")) & 0xFFFFFFFF
    return h


def coordinator_of(cluster, txn_id, via):
    md = cluster.metadata(via)
    parts = md.topics["__transaction_state"].partitions
    return parts[(java_hash(txn_id) & 0x7FFFFFFF) % len(parts)].leader


def stream_with_a_kill(cluster, classpath, topic, txn_id, pick_victim):
    """Runs the Java stream; after 5 commits SIGKILLs the node `pick_victim()` names,
    starts it again 8 s later; returns ({outcome: [transaction numbers]}, victim)."""
    bootstrap = ",".join(cluster.bootstrap(i) for i in range(len(cluster.nodes)))
    java = subprocess.Popen(
        ["java", "-cp", classpath, "JavaTxnCheck", "stream", bootstrap, topic, txn_id, "35",
         str(RECORDS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outcomes = {"committed": [], "aborted": [], "unknown": [], "after_kill": None}
    victim = None
    killed_at = None
    for line in java.stdout:
        words = line.split()
        if words and words[0] in outcomes:
            outcomes[words[0]].append(int(words[1]))
        if victim is None and len(outcomes["committed"]) == 5:
            victim = pick_victim()
            cluster.kill(victim)
            killed_at = time.time()
            outcomes["after_kill"] = int(words[1]) + 1
        if killed_at and time.time() - killed_at > 8 and cluster.nodes[victim].proc.poll() is not None:
            outcomes["survivors_coordinator"] = coordinator_of(cluster, txn_id, (victim + 1) % 3)
            cluster.nodes[victim].start()
    java.wait(timeout=300)
    assert java.returncode == 0, java.stderr.read()[-3000:]
    if cluster.nodes[victim].proc.poll() is not None:
        cluster.nodes[victim].start()
    return outcomes, victim


def check_exactly_once(cluster, topic, outcomes):
    committed = outcomes["committed"]
    assert len(committed) >= 10, f"only {len(committed)} transactions committed: {outcomes}"
    # Transactions committed after the kill show the producer went on.
    assert max(committed) >= outcomes["after_kill"] + 3, outcomes
    wait_until("every node running and in the ISRs", lambda: all(
        len(p.isrs) == 3 for p in cluster.metadata(0).topics[topic].partitions.values()), 60)
    expect_at_least = len(committed) * RECORDS
    seen = read_all(cluster.bootstrap(0), topic, TOPIC_PARTITIONS, "read_committed",
                    expect_at_least, idle_s=3.0, limit_s=120)
    by_txn = {}
    for v in seen:
        n, i = v.split("-")
        by_txn.setdefault(int(n), []).append(int(i))
    assert len(seen) == len(set(seen)), "a record was read twice"
    for n in committed:
        assert sorted(by_txn.get(n, [])) == list(range(RECORDS)), f"committed transaction {n}"
    print(f"outcomes: {len(committed)} committed, aborted {outcomes['aborted']}, "
          f"unknown {outcomes['unknown']}, kill before transaction {outcomes['after_kill']}")
    for n in outcomes["aborted"]:
        assert n not in by_txn, f"aborted transaction {n} is visible"
    for n in outcomes["unknown"]:
        assert len(by_txn.get(n, [])) in (0, RECORDS), f"transaction {n} is partly visible"
    known = set(committed) | set(outcomes["unknown"])
    assert set(by_txn) <= known, f"records of transactions never committed: {set(by_txn) - known}"


def test_killing_the_transaction_coordinators_broker(cluster_factory, txn_classpath):  # noqa: F811
    c = cluster_factory(3, ["min.insync.replicas=2"])
    create(c.bootstrap(0), "txc", TOPIC_PARTITIONS, rf=3, cluster=c)
    outcomes, victim = stream_with_a_kill(
        c, txn_classpath, "txc", "txn-coord", lambda: coordinator_of(c, "txn-coord", 0))
    # The id's coordinator moved to a surviving broker while the victim was down.
    assert outcomes.get("survivors_coordinator") not in (None, -1, victim), outcomes
    check_exactly_once(c, "txc", outcomes)


def test_killing_a_data_partitions_leader(cluster_factory, txn_classpath):  # noqa: F811
    c = cluster_factory(3, ["min.insync.replicas=2"])
    create(c.bootstrap(0), "txd", TOPIC_PARTITIONS, rf=3, cluster=c)

    def a_data_leader_that_does_not_coordinate():
        coordinator = coordinator_of(c, "txn-data", 0)
        md = c.metadata(0)
        leaders = {p.leader for p in md.topics["txd"].partitions.values()}
        return min(leaders - {coordinator})

    outcomes, _ = stream_with_a_kill(c, txn_classpath, "txd", "txn-data",
                                     a_data_leader_that_does_not_coordinate)
    check_exactly_once(c, "txd", outcomes)


def test_a_new_coordinator_finishes_a_commit_whose_marker_could_not_be_written(cluster_factory):  # noqa: F811
    """A commit is answered once PrepareCommit is stored; a partition whose leader is
    down cannot take its marker yet. The coordinator's broker then dies too: the new
    coordinator finds the transaction preparing, writes the markers once the
    partition is back, and completes it; read_committed consumers see all of it.
    (Five nodes, so that the quorum outlives two.)"""
    from confluent_kafka import Producer
    c = cluster_factory(5)
    txn_id = "tx-resume"
    p = Producer({"bootstrap.servers": ",".join(c.bootstrap(i) for i in range(5)),
                  "transactional.id": txn_id, "linger.ms": 5})
    p.init_transactions(60)
    coordinator = coordinator_of(c, txn_id, 0)
    create(c.bootstrap(0), "tx-resume", 5, rf=1, cluster=c)
    leaders = {pid: part.leader for pid, part in c.metadata(0).topics["tx-resume"].partitions.items()}
    down, other = [n for n in range(5) if n != coordinator][:2]
    to_down = next(q for q, l in leaders.items() if l == down)
    to_other = next(q for q, l in leaders.items() if l == other)
    p.begin_transaction()
    for i in range(200):
        p.produce("tx-resume", value=f"r{i}".encode(), partition=to_down if i % 2 else to_other)
    assert p.flush(60) == 0
    c.kill(down)
    wait_until("the downed node's partition to have no leader", lambda: c.metadata(other).topics[
        "tx-resume"].partitions[to_down].leader == -1, 30)
    p.commit_transaction(60)
    c.kill(coordinator)
    wait_until("a new coordinator", lambda: coordinator_of(c, txn_id, other) not in
               (-1, coordinator, down), 60)
    successor = coordinator_of(c, txn_id, other)
    wait_until("the new coordinator to resume the transaction", lambda: "resuming an ending "
               "transaction" in c.nodes[successor].log_text(), 30)
    # Meanwhile the marker on the live partition is written: its half is visible.
    meanwhile = read_all(c.bootstrap(other), "tx-resume", 5, "read_committed", 100,
                         idle_s=1.0, limit_s=20)
    assert sorted(meanwhile) == sorted(f"r{i}" for i in range(0, 200, 2))
    c.nodes[down].start()
    c.nodes[coordinator].start()
    seen = read_all(c.bootstrap(other), "tx-resume", 5, "read_committed", 200, idle_s=2.0)
    assert sorted(seen) == sorted(f"r{i}" for i in range(200))
