"""The replication rows of scripts/bench.py: acks=all produce on a local 3-node
cluster (three ringlog processes on the broker CPUs, loopback), to an RF=3 topic with
min.insync.replicas=2 and, in the same run and on the same nodes, to an RF=1 topic.
Node 0 leads every partition of both (replica lists start with it), so `ringlog perf`
talks to one broker and the followers' work is all replication.

Reported beside the usual columns: replication bytes (what the followers' segment
files hold of the topic once the nodes have stopped cleanly) and follower CPU-s per GB produced; then the
same two topics at 50 % of the RF=3 maximum rate, for their acknowledgement p99.
"""

import os
import shutil
import subprocess
import tempfile
import time

import bench

NAMES = ("rf1-acksall-1k-p8", "rf3-acksall-1k-p8",
         "rf1-acksall-1k-p8-50pct", "rf3-acksall-1k-p8-50pct")
NODES = 3


class Cluster:
    """Three combined ringlog nodes (broker and controller) on loopback."""

    def __init__(self, a, mode):
        self.workdir = tempfile.mkdtemp(prefix="ringlog-bench-cluster-", dir=a.workdir)
        ports = [bench.free_port() for _ in range(NODES)]
        controllers = [bench.free_port() for _ in range(NODES)]
        voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in enumerate(controllers))
        props = os.path.join(bench.ROOT, "tuning", "ringlog.properties")
        self.nodes = []
        for i in range(NODES):
            cmd = [bench.RINGLOG, "serve", props,
                   "--override", f"node.id={i}",
                   "--override", f"listeners=PLAINTEXT://127.0.0.1:{ports[i]},"
                                 f"CONTROLLER://127.0.0.1:{controllers[i]}",
                   "--override", f"controller.quorum.voters={voters}",
                   "--override", f"log.dirs={self.workdir}/node-{i}",
                   "--override", f"ringlog.log.write.mode={mode}"]
            if a.broker_cpus:
                cmd += ["--override", f"ringlog.cpus={bench.cpu_list(a.broker_cpus)}"]
            for o in a.override:
                cmd += ["--override", o]
            logf = open(os.path.join(self.workdir, f"node-{i}.log"), "w")
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                    preexec_fn=bench.pinned_to(a.broker_cpus))
            self.nodes.append(bench.Broker(f"node-{i}", f"127.0.0.1:{ports[i]}", proc=proc))
        for node in self.nodes:
            bench.wait_for_port(int(node.bootstrap.rsplit(":", 1)[1]), node.proc)
        self.wait_for_brokers()
        bench.log(f"== 3-node ringlog cluster started ({mode}), node 0 at {self.nodes[0].bootstrap}")

    def wait_for_brokers(self, seconds=60):
        from confluent_kafka.admin import AdminClient
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                md = AdminClient({"bootstrap.servers": self.nodes[0].bootstrap}).list_topics(timeout=5)
                if len(md.brokers) == NODES:
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise SystemExit("the 3-node cluster did not form")

    def create(self, topic, partitions, replicas, configs):
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": self.nodes[0].bootstrap})
        assignment = [list(range(replicas))] * partitions
        new = NewTopic(topic, num_partitions=partitions, replica_assignment=assignment, config=dict(
            c.split("=", 1) for c in configs))
        for f in admin.create_topics([new], operation_timeout=30).values():
            f.result(60)
        # Every node applies the topic on its own, soon after.
        deadline = time.time() + 30
        while time.time() < deadline:
            if all(topic in AdminClient({"bootstrap.servers": n.bootstrap}).list_topics(
                    timeout=5).topics for n in self.nodes):
                return
            time.sleep(0.1)

    def follower_log_bytes(self, topic):
        total = 0
        for i in range(1, NODES):
            for d in os.listdir(os.path.join(self.workdir, f"node-{i}")):
                if d.startswith(topic + "-"):
                    path = os.path.join(self.workdir, f"node-{i}", d)
                    total += sum(os.path.getsize(os.path.join(path, f))
                                 for f in os.listdir(path) if f.endswith(".log"))
        return total

    def stop(self):
        """Stops every node cleanly (which trims preallocated space past each log's
        end, so file sizes are data sizes); the files stay until `remove`."""
        for node in self.nodes:
            node.stop()

    def remove(self):
        shutil.rmtree(self.workdir, ignore_errors=True)


def produce_row(cluster, name, replicas, o, a):
    topic = f"bench-{name}-{os.getpid()}-{int(time.time())}"
    configs = bench.retention_configs(o["partitions"], a.topic_gb)
    if replicas > 1:
        configs.append("min.insync.replicas=2")
    cluster.create(topic, o["partitions"], replicas, configs)
    bench.log(f"== 3-node cluster: {name}")
    leader = cluster.nodes[0]
    cpu0 = [n.cpu_seconds() for n in cluster.nodes]
    args = ["produce", "--bootstrap", leader.bootstrap, "--topic", topic,
            "--partitions", o["partitions"], "--record-bytes", o["record"],
            "--acks", -1, "--seconds", o["seconds"]]
    if o.get("rate"):
        args += ["--rate", o["rate"]]
    r = bench.perf(args, 600)
    cpu = [n.cpu_seconds() - c for n, c in zip(cluster.nodes, cpu0)]
    main = r["produce"]
    gb = main["bytes"] / 1e9
    row = {
        "kind": "produce",
        "options": dict(o, replicas=replicas),
        "result": r,
        "broker_cpu_seconds": sum(cpu),
        "broker_cpu_s_per_gb": sum(cpu) / gb if gb else None,
        "broker_cpu_s_per_m_records": sum(cpu) / (main["records"] / 1e6) if main["records"] else None,
        "broker_rss_mb": sum(n.rss_mb()[0] or 0 for n in cluster.nodes),
        "leader_cpu_seconds": cpu[0],
        "follower_cpu_seconds": sum(cpu[1:]),
        "follower_cpu_s_per_gb": sum(cpu[1:]) / gb if gb else None,
        "topic": topic,
    }
    bench.log(f"   {bench.fmt_row(name, row)}; followers {bench.n(row['follower_cpu_s_per_gb'], 2)} CPU-s/GB")
    return row


def run(a, selected):
    """The rows named in `selected` (None: all) on a fresh 3-node cluster."""
    modes = a.modes.split(",")
    mode = "direct" if "direct" in modes else modes[0]
    s = a.seconds
    base = dict(record=bench.KIB, partitions=8, seconds=s)
    wanted = [n for n in NAMES if selected is None or n in selected]
    rows = {}
    cluster = Cluster(a, mode)
    try:
        for name in wanted:
            replicas = 3 if name.startswith("rf3") else 1
            o = dict(base)
            if name.endswith("50pct"):
                top = (rows.get("rf3-acksall-1k-p8") or {}).get("result", {}).get("produce")
                if not top:
                    bench.log(f"== {name}: skipped (rf3-acksall-1k-p8 has no result)")
                    continue
                o["rate"] = max(1.0, top["records_per_s"] * 0.5)
            try:
                rows[name] = produce_row(cluster, name, replicas, o, a)
            except Exception as e:
                bench.log(f"   {name} failed: {e}")
                rows[name] = None
    finally:
        cluster.stop()
        try:
            for row in rows.values():
                if row:
                    row["replication_bytes"] = cluster.follower_log_bytes(row.pop("topic"))
        finally:
            cluster.remove()
    return f"ringlog-3-nodes-{mode}", rows


def print_summary(rows):
    """Replication figures and the issue's targets, from one run."""
    def get(name):
        return rows.get(name) or None
    print("\nreplication (3 nodes, node 0 leads, acks=all):")
    for name in NAMES:
        row = get(name)
        if row:
            print(f"  {name:28} followers {bench.n(row['follower_cpu_s_per_gb'], 2)} CPU-s/GB, "
                  f"replicated {bench.n(row['replication_bytes'] / 1e6)} MB")
    one, three = get("rf1-acksall-1k-p8"), get("rf3-acksall-1k-p8")
    if one and three:
        ratio = three["result"]["produce"]["mb_per_s"] / one["result"]["produce"]["mb_per_s"]
        print(f"  RF=3 / RF=1 produce MB/s: {ratio:.2f} (target >= 0.33)")
    one, three = get("rf1-acksall-1k-p8-50pct"), get("rf3-acksall-1k-p8-50pct")
    if one and three:
        p1 = one["result"]["produce"]["ack_latency_us"]["p99"]
        p3 = three["result"]["produce"]["ack_latency_us"]["p99"]
        print(f"  at 50 % of the RF=3 maximum: ack p99 RF=3 {p3 / 1000:.2f} ms, RF=1 "
              f"{p1 / 1000:.2f} ms, ratio {p3 / max(p1, 1):.2f} (target <= 3)")
