"""scripts/bench.py and `ringlog perf` against a real broker: a short run of a few
workloads must complete, and what the load generator says it produced must be what
its consumers read back (so its throughput figures count real, delivered records)."""
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def quick_bench(tmp_path, workloads):
    """scripts/bench.py --quick on a buffered ringlog with `workloads`: its output and
    its JSON report."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--modes", "buffered",
           "--workdir", str(tmp_path), "--json", str(out), "--workloads", workloads]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout, json.loads(out.read_text())


def test_a_quick_bench_run_reports_delivered_records(tmp_path):
    stdout, report = quick_bench(
        tmp_path, "produce-1k-acks1-p8,consume-1k-p8-cached,latency-1k-p8-25pct,"
        "produce-1k-acksall-fsync-p8,latency-1k-p8-fsync-50pct")
    assert "produce-1k-acks1-p8" in stdout
    probe = report["probe"]
    assert probe["loopback_mb_per_s"] > 0 and probe["disk_write_mb_per_s"] > 0
    assert probe["fdatasync_us"]["count"] == 500
    # Broker and load generators on disjoint CPUs (the default placement), where
    # there are two CPUs to split.
    placement = report["placement"]
    if len(os.sched_getaffinity(0)) > 1:
        broker, load = set(placement["broker_cpus"]), set(placement["load_generator_cpus"])
        assert broker and load and broker.isdisjoint(load)
        assert "placement: broker on CPUs" in stdout
    rows = report["runs"]["ringlog-buffered"]
    produced = rows["produce-1k-acks1-p8"]["result"]["produce"]
    assert produced["records"] > 0 and produced["failed_requests"] == 0
    assert rows["produce-1k-acks1-p8"]["broker_cpu_seconds"] > 0
    # The host's stolen CPU time over the workload, a fraction of all CPU time.
    assert 0 <= rows["produce-1k-acks1-p8"]["host_steal_fraction"] < 1
    consumed = rows["consume-1k-p8-cached"]["result"]["consume"]
    assert consumed["records"] > 0
    e2e = rows["latency-1k-p8-25pct"]["result"]
    # Every record acknowledged at the fixed rate reached the tailing consumer, and
    # each one was timed.
    assert e2e["produce"]["failed_requests"] == 0
    assert e2e["consume"]["records"] == e2e["produce"]["records"] > 0
    assert e2e["e2e_latency_us"]["count"] == e2e["produce"]["records"]
    assert "disk_fdatasync_under_load_us" not in e2e
    # With fsync per batch, the disk's own fdatasync latency was sampled (200 a second)
    # while the workload ran, and its probe file went with its directory.
    synced = rows["latency-1k-p8-fsync-50pct"]["result"]
    assert synced["consume"]["records"] == synced["produce"]["records"] > 0
    disk = synced["disk_fdatasync_under_load_us"]
    assert disk["count"] >= 100 and disk["p50"] > 0
    assert "the disk's own fdatasync meanwhile" in stdout
    assert not list(tmp_path.glob("**/probe-sync-under-load.tmp"))


def test_the_small_batch_check_measures_both_placements(tmp_path):
    """librdkafka's small batches at ringlog's default placement and at the split
    one: each round delivered records and the broker's CPU per million was measured."""
    stdout, report = quick_bench(tmp_path, "librdkafka-small-batch")
    assert "small batches from librdkafka, by placement" in stdout
    check = report["runs"]["small-batch-placement"]
    wanted = {"ringlog-default"} | ({"ringlog-split"} if len(os.sched_getaffinity(0)) > 1 else set())
    assert set(check) == wanted
    for name, figures in check.items():
        assert len(figures["rounds"]) == 3, name
        for r in figures["rounds"]:
            assert r["records_per_s"] > 0 and r["failed_records"] == 0, (name, r)
            assert r["cpu_s_per_m_records"] > 0, (name, r)
        assert figures["median_cpu_s_per_m_records"] > 0


def test_the_fetch_session_check_compares_a_consumer_with_and_without_sessions(tmp_path):
    """A kafka-python consumer of 1,000 partitions with and without fetch sessions: every
    round fetched and received records, the broker kept the session through many
    incremental fetches in the rounds that asked for one, and none in the others."""
    stdout, report = quick_bench(tmp_path, "fetch-sessions")
    assert "a consumer of 1000 partitions" in stdout
    check = report["runs"]["fetch-sessions"]
    assert set(check) == {"with sessions", "without sessions"}
    for name, figures in check.items():
        assert len(figures["rounds"]) == 3, name
        for r in figures["rounds"]:
            assert r["fetches_per_s"] > 0 and r["records"] > 0, (name, r)
            assert r["broker_cpu_s_per_s"] > 0, (name, r)
            if name == "with sessions":
                assert r["session_epoch"] > 10, r
            else:
                assert r["session_epoch"] == 0, r
        assert figures["median_broker_cpu_s_per_s"] > 0
