"""Small batches from a real client, by placement: broker CPU per million records.

The client is librdkafka through confluent-kafka as a new user would run it (one
`produce()` per 100-byte record, `linger.ms=5`, 8 partitions, acks=1), so requests
carry ~8 batches of a few hundred records. Measured:

- `default`: the broker at its defaults (a shard on every CPU) with the client on the
  same CPUs, unpinned — what a user gets on a machine shared with clients;
- `split`: the broker on the first half of the CPUs (ringlog.cpus), the client on the
  rest — the bench's placement;
- with --compare, the peer (tansu) unpinned beside the client, as `default`.

Each runs ROUNDS times, alternating, a fresh topic each time; the median broker
CPU-s per M records is compared. Called by scripts/bench.py.
"""

import argparse
import os
import statistics

from bench import librdkafka_produce, log, start_ringlog, start_tansu, delete_topic

NAMES = ["librdkafka-small-batch"]
ROUNDS = 3
WORKLOAD = dict(record=100, acks=1, partitions=8)


def placements(a, every_cpu):
    """(name, broker starter, broker CPUs, client CPUs) for each measured placement."""
    half = max(1, len(every_cpu) // 2)
    # "Default": the broker may use every CPU. The bench itself runs pinned to the load
    # generators' CPUs, and a child inherits that: a broker left unpinned would see
    # (and ringlog.cpus=all would mean) only those.
    out = [("ringlog-default", lambda: start_ringlog(_with(a, broker_cpus=every_cpu)), None,
            every_cpu)]
    if len(every_cpu) > 1:
        broker_cpus, client_cpus = every_cpu[:half], every_cpu[half:]
        out.append(("ringlog-split", lambda: start_ringlog(_with(a, broker_cpus=broker_cpus)),
                    broker_cpus, client_cpus))
    if a.compare:
        out.append(("tansu-memory-default",
                    lambda: start_tansu(_with(a, broker_cpus=every_cpu, peer_storage="memory")),
                    None, every_cpu))
    return out


def _with(a, **changes):
    return argparse.Namespace(**dict(vars(a), **changes))


def run(a, every_cpu):
    """{placement: {"rounds": [...], "median_cpu_s_per_m_records": x}}."""
    seconds = a.seconds
    wanted = placements(a, every_cpu)
    brokers = {}
    own_cpus = os.sched_getaffinity(0)
    figures = {name: [] for name, *_ in wanted}
    try:
        for name, start, _, _ in wanted:
            brokers[name] = start()
        for r in range(ROUNDS):
            for name, _, _, client_cpus in wanted:
                b = brokers[name]
                topic = f"bench-small-batch-{r}"
                log(f"== {name}: small batches, round {r + 1} of {ROUNDS}")
                # librdkafka's threads take the affinity of the thread that creates them.
                os.sched_setaffinity(0, client_cpus)
                try:
                    cpu0 = b.cpu_seconds()
                    got = librdkafka_produce(b, topic, dict(WORKLOAD, seconds=seconds))["produce"]
                    cpu = b.cpu_seconds() - cpu0
                finally:
                    os.sched_setaffinity(0, own_cpus)
                delete_topic(b, topic)
                per_m = cpu / (got["records"] / 1e6) if got["records"] else None
                figures[name].append({"cpu_s_per_m_records": per_m,
                                      "records_per_s": got["records_per_s"],
                                      "failed_records": got["failed_records"]})
                log(f"   {got['records_per_s']:,.0f} records/s, broker {per_m:.3f} CPU-s/M records")
    finally:
        for b in brokers.values():
            b.stop()
    out = {}
    for name, rounds in figures.items():
        per_m = [f["cpu_s_per_m_records"] for f in rounds if f["cpu_s_per_m_records"]]
        out[name] = {"rounds": rounds, "median_cpu_s_per_m_records":
                     statistics.median(per_m) if per_m else None}
    return out


def print_summary(out):
    print("\n## small batches from librdkafka, by placement (broker CPU-s per M records; "
          f"{ROUNDS} rounds each, alternating)")
    print(f"{'placement':28} {'records/s':>24} {'CPU-s/M each round':>28} {'median':>8}")
    for name, f in out.items():
        rates = ", ".join(f"{r['records_per_s']:,.0f}" for r in f["rounds"])
        each = ", ".join(f"{r['cpu_s_per_m_records']:.3f}" for r in f["rounds"]
                         if r["cpu_s_per_m_records"])
        median = f["median_cpu_s_per_m_records"]
        print(f"{name:28} {rates:>24} {each:>28} {median:8.3f}" if median else f"{name:28} -")
    mine = out.get("ringlog-default", {}).get("median_cpu_s_per_m_records")
    for name, f in out.items():
        other = f["median_cpu_s_per_m_records"]
        if mine and other and name != "ringlog-default":
            print(f"ringlog-default / {name}: {mine / other:.2f}")
