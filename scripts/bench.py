#!/usr/bin/env python3
"""Runs the named workloads against a broker and prints a table (and writes JSON).

Called by scripts/bench.sh, which builds ringlog and the Python client first. The
load comes from `ringlog perf` (the project's own generator) and, for the
`librdkafka-*` workloads, from librdkafka through confluent-kafka. Broker CPU and RSS
come from /proc of the broker process, so they need its pid: known when this script
starts the broker, else given with --broker-pid.
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# RINGLOG_BIN: another build to measure (e.g. the previous commit's, for a before/after).
RINGLOG = os.environ.get("RINGLOG_BIN") or os.path.join(ROOT, "target", "release", "ringlog")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TANSU_VERSION = "0.6.0"
TANSU_ROOT = os.path.join(ROOT, "target", "peers", "tansu")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --- the workloads -----------------------------------------------------------------

KIB = 1024


def workloads(a):
    """(name, kind, options). `seconds` is per workload; the headline produce runs
    for --long-seconds. Rates of the latency workloads are fractions of a maximum
    measured earlier in the same run."""
    s, long_s = a.seconds, a.long_seconds
    w = [
        ("produce-1k-acks1-p8", "produce", dict(record=KIB, acks=1, partitions=8, seconds=long_s)),
        ("produce-1k-acks1-p1", "produce", dict(record=KIB, acks=1, partitions=1, seconds=s)),
        ("produce-1k-acks1-p64", "produce", dict(record=KIB, acks=1, partitions=64, seconds=s)),
        ("produce-1k-acksall-p8", "produce", dict(record=KIB, acks=-1, partitions=8, seconds=s)),
        ("produce-1k-acksall-fsync-p8", "produce",
         dict(record=KIB, acks=-1, partitions=8, seconds=s, fsync=True)),
        ("produce-100b-acks1-p8", "produce", dict(record=100, acks=1, partitions=8, seconds=s)),
        ("produce-100b-acks1-p1", "produce", dict(record=100, acks=1, partitions=1, seconds=s)),
        ("produce-100b-acks1-p64", "produce", dict(record=100, acks=1, partitions=64, seconds=s)),
        ("produce-100b-acksall-p8", "produce", dict(record=100, acks=-1, partitions=8, seconds=s)),
        ("consume-1k-p8-cached", "consume", dict(record=KIB, partitions=8, fill_seconds=a.fill_seconds)),
        # The same fetches with isolation_level READ_COMMITTED: bounded by the last
        # stable offset, with the aborted-transaction list from the index.
        ("consume-1k-p8-cached-read-committed", "consume",
         dict(record=KIB, partitions=8, fill_seconds=a.fill_seconds, read_committed=True)),
        ("consume-1k-p8-caught-up", "e2e", dict(record=KIB, acks=1, partitions=8, seconds=s, rate=0)),
    ]
    for pct in (25, 50, 75):
        w.append((f"latency-1k-p8-{pct}pct", "e2e",
                  dict(record=KIB, acks=1, partitions=8, seconds=s,
                       rate_of=("produce-1k-acks1-p8", pct / 100))))
    w.append(("latency-1k-p8-fsync-50pct", "e2e",
              dict(record=KIB, acks=-1, partitions=8, seconds=s, fsync=True,
                   rate_of=("produce-1k-acksall-fsync-p8", 0.5))))
    w.append(("librdkafka-produce-100b-acks1-p8", "librdkafka",
              dict(record=100, acks=1, partitions=8, seconds=s)))
    return w


# --- a broker under test ----------------------------------------------------------


def placement(a, cpus):
    """(broker CPUs, load-generator CPUs), disjoint: the first half of `cpus` (those
    this script may use; at least one) run the broker, the rest the load generators. On a
    machine with few CPUs the two would otherwise preempt each other: on the 2-vCPU
    development VM, a 2-shard broker beside an unpinned generator spent twice the CPU
    per GB (cross-shard wake-ups) and its e2e p99 at 465 MB/s was 19-71 ms, against
    1.0-2.3 ms for one shard on CPU 0 with the generator on CPU 1 (tuning/README.md).
    None where CPUs are shared (--placement shared, one CPU, or --bootstrap)."""
    if a.placement == "shared" or a.bootstrap or len(cpus) < 2:
        return None
    half = max(1, len(cpus) // 2)
    return cpus[:half], cpus[half:]


def cpu_list(cpus):
    return ",".join(str(c) for c in cpus)


def placement_text(a):
    if a.broker_cpus:
        return (f"broker on CPUs {cpu_list(a.broker_cpus)}, load generators on CPUs "
                f"{cpu_list(a.load_cpus)}")
    return "broker and load generators share every CPU"


def pinned_to(cpus):
    """A Popen preexec_fn that moves the child onto `cpus` (None: leave it)."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the broker exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on port {port} after {seconds} s")


class Broker:
    """A broker process this script started (or only a pid, with --bootstrap)."""

    def __init__(self, name, bootstrap, proc=None, pid=None, workdir=None):
        self.name, self.bootstrap, self.proc, self.workdir = name, bootstrap, proc, workdir
        self.pid = proc.pid if proc else pid

    def cpu_seconds(self):
        if not self.pid:
            return None
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mb(self):
        if not self.pid:
            return None, None
        rss = hwm = None
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024
        return rss, hwm

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_ringlog(a, mode=None):
    workdir = tempfile.mkdtemp(prefix="ringlog-bench-", dir=a.workdir)
    port = free_port()
    props = os.path.join(ROOT, "tuning", "ringlog.properties")
    cmd = [RINGLOG, "serve", props,
           "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
           "--override", f"log.dirs={workdir}/data"]
    if mode:
        cmd += ["--override", f"ringlog.log.write.mode={mode}"]
    if a.broker_cpus:
        cmd += ["--override", f"ringlog.cpus={cpu_list(a.broker_cpus)}"]
    for o in a.override:
        cmd += ["--override", o]
    logf = open(os.path.join(workdir, "broker.log"), "w")
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                            preexec_fn=pinned_to(a.broker_cpus))
    wait_for_port(port, proc)
    log(f"== ringlog started (pid {proc.pid}, {' '.join(cmd[2:])})")
    return Broker(f"ringlog-{mode}" if mode else "ringlog", f"127.0.0.1:{port}", proc=proc,
                  workdir=workdir)


def install_tansu():
    binary = os.path.join(TANSU_ROOT, "bin", "tansu")
    if os.path.exists(binary):
        return binary
    log(f"== installing the peer broker: tansu {TANSU_VERSION} from crates.io (once; slow)")
    subprocess.run(["cargo", "install", "--locked", "--root", TANSU_ROOT, "tansu",
                    "--version", TANSU_VERSION, "--no-default-features",
                    "--features", "libsql,dynostore"], check=True)
    return binary


def start_tansu(a):
    binary = install_tansu()
    workdir = tempfile.mkdtemp(prefix="tansu-bench-", dir=a.workdir)
    port = free_port()
    # tansu resolves a sqlite path against its working directory (workdir).
    storage = {"sqlite": "sqlite://tansu.db", "memory": "memory://tansu/"}[a.peer_storage]
    cmd = [binary, "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
           "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
           "--storage-engine", storage]
    logf = open(os.path.join(workdir, "broker.log"), "w")
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=workdir,
                            env=dict(os.environ, RUST_LOG="warn"),
                            preexec_fn=pinned_to(a.broker_cpus))
    wait_for_port(port, proc)
    log(f"== tansu started (pid {proc.pid}, storage {storage})")
    return Broker(f"tansu-{a.peer_storage}", f"127.0.0.1:{port}", proc=proc, workdir=workdir)


# --- running one workload ---------------------------------------------------------


def perf(args, timeout):
    cmd = [RINGLOG, "perf"] + [str(x) for x in args]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"ringlog perf failed ({p.returncode})")
    return json.loads(p.stdout)


def retention_configs(partitions, topic_gb):
    """Kafka's retention.bytes (per partition: its share of `topic_gb`) and a segment
    size that lets retention act while a workload runs: a 60 s produce at 1 GB/s
    would otherwise need 60 GB of free disk."""
    per_partition = max(256 << 20, int(topic_gb * (1 << 30)) // partitions)
    segment = max(64 << 20, min(1 << 30, per_partition // 4))
    return [f"retention.bytes={per_partition}", f"segment.bytes={segment}"]


def topic_args(broker, topic, o, topic_gb):
    args = ["--bootstrap", broker.bootstrap, "--topic", topic,
            "--partitions", o["partitions"], "--record-bytes", o["record"],
            "--acks", o["acks"], "--seconds", o["seconds"]]
    configs = retention_configs(o["partitions"], topic_gb)
    if o.get("fsync"):
        configs.append("flush.messages=1")
    for c in configs:
        args += ["--topic-config", c]
    return args


REMOVAL_WAIT_S = 120


def delete_topic(broker, topic):
    try:
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for f in admin.delete_topics([topic], operation_timeout=30).values():
            f.result(60)
    except Exception as e:  # the next workload uses a new topic anyway
        log(f"   (deleting {topic} failed: {e})")
    wait_for_removal(broker)


def wait_for_removal(broker):
    """ringlog answers DeleteTopics once the topic's directories are renamed (as
    Kafka does) and removes them soon after, off its shards; removing gigabytes
    (freeing extents and page cache) would overlap the next workload. When the bench
    started the broker, it waits until no renamed directory is left."""
    data = os.path.join(broker.workdir, "data") if broker.workdir else None
    if not data or not os.path.isdir(data):
        return
    deadline = time.time() + REMOVAL_WAIT_S
    while any(e.endswith(".deleted") for e in os.listdir(data)):
        if time.time() > deadline:
            log(f"   (deleted data still in {data} after {REMOVAL_WAIT_S} s)")
            return
        time.sleep(0.05)


def librdkafka_produce(broker, topic, o):
    """librdkafka through confluent-kafka: the rate a real client reaches."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic(topic, o["partitions"], 1)]).values():
        try:
            f.result(60)
        except Exception as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": str(o["acks"]),
                  "linger.ms": 5, "batch.size": 1 << 20, "queue.buffering.max.messages": 1000000,
                  "queue.buffering.max.kbytes": 1 << 20, "enable.idempotence": False})
    value = os.urandom(o["record"])
    acked = [0, 0]

    def on_delivery(err, msg):
        if err is None:
            acked[0] += 1
        else:
            acked[1] += 1

    started = time.time()
    deadline = started + o["seconds"]
    sent = 0
    while time.time() < deadline:
        for _ in range(10000):
            try:
                p.produce(topic, value, partition=sent % o["partitions"], on_delivery=on_delivery)
                sent += 1
            except BufferError:
                p.poll(0.001)
        p.poll(0)
    p.flush(60)
    secs = time.time() - started
    return {"produce": {"records": acked[0], "failed_records": acked[1],
                        "bytes": acked[0] * o["record"], "seconds": secs,
                        "records_per_s": acked[0] / secs,
                        "mb_per_s": acked[0] * o["record"] / secs / 1e6}}


def host_cpu_ticks():
    """(steal, total) CPU ticks of the whole machine so far, from /proc/stat: the time
    a hypervisor gave our vCPUs to someone else, against all time (None where absent)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: within user]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_fraction(before, after):
    if not before or not after or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def run_workload(broker, name, kind, o, results, a):
    topic = f"bench-{name}-{os.getpid()}-{int(time.time())}"
    if "rate_of" in o:
        base, frac = o["rate_of"]
        got = results.get(base, {}).get("result", {}).get("produce")
        if not got:
            log(f"== {name}: skipped ({base} has no result)")
            return None
        o = dict(o, rate=max(1.0, got["records_per_s"] * frac))
    log(f"== {broker.name}: {name}")
    timeout = 600
    if kind == "consume":
        fill = dict(o, acks=1, seconds=o["fill_seconds"])
        perf(["produce"] + topic_args(broker, topic, fill, a.topic_gb), timeout)
    cpu0 = broker.cpu_seconds()
    host0 = host_cpu_ticks()
    if kind == "produce":
        r = perf(["produce"] + topic_args(broker, topic, o, a.topic_gb), timeout)
    elif kind == "consume":
        r = perf(["consume", "--bootstrap", broker.bootstrap, "--topic", topic,
                  "--consumers", 2, "--seconds", 60]
                 + (["--read-committed"] if o.get("read_committed") else []), timeout)
    elif kind == "e2e":
        args = ["e2e"] + topic_args(broker, topic, o, a.topic_gb) + ["--rate", o["rate"], "--producers", 2]
        probe_dir = None
        if o.get("fsync"):
            # The disk's own fdatasync latency under this same load, for comparison.
            probe_dir = tempfile.mkdtemp(prefix="ringlog-sync-probe-",
                                         dir=broker.workdir or a.workdir)
            args += ["--disk-sync-probe", probe_dir]
        try:
            r = perf(args, timeout)
        finally:
            if probe_dir:
                shutil.rmtree(probe_dir, ignore_errors=True)
    else:
        r = librdkafka_produce(broker, topic, o)
    cpu1 = broker.cpu_seconds()
    steal = steal_fraction(host0, host_cpu_ticks())
    rss, hwm = broker.rss_mb()
    if not a.keep_topics:
        delete_topic(broker, topic)
    main = r.get("consume") if kind == "consume" else r.get("produce")
    cpu = None if cpu0 is None else cpu1 - cpu0
    row = {
        "kind": kind,
        "options": {k: v for k, v in o.items() if k != "rate_of"},
        "result": r,
        "broker_cpu_seconds": cpu,
        "broker_cpu_s_per_gb": cpu / (main["bytes"] / 1e9) if cpu is not None and main["bytes"] else None,
        "broker_cpu_s_per_m_records": cpu / (main["records"] / 1e6) if cpu is not None and main["records"] else None,
        "broker_rss_mb": rss,
        "broker_peak_rss_mb": hwm,
        # A VM's stolen time: a slow host, not a slow broker (0 on bare metal).
        "host_steal_fraction": steal,
    }
    if kind == "e2e":
        row["consume_mb_per_s"] = r["consume"]["mb_per_s"]
    log(f"   {fmt_row(name, row)}")
    return row


# --- output -----------------------------------------------------------------------


def n(x, digits=0):
    if x is None:
        return "-"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def main_figures(row):
    r = row["result"]
    main = r.get("consume") if row["kind"] == "consume" else r.get("produce")
    lat = r.get("e2e_latency_us") or (r.get("produce") or {}).get("ack_latency_us")
    return main, lat


def fmt_row(name, row):
    main, lat = main_figures(row)
    lat_s = "-" if not lat or not lat.get("count") else \
        f"{lat['p50']/1000:.2f}/{lat['p99']/1000:.2f}/{lat['p999']/1000:.2f}/{lat['max']/1000:.2f}"
    extra = ""
    if row["kind"] == "e2e":
        extra = f" consumed {n(row['consume_mb_per_s'])} MB/s"
        disk = row["result"].get("disk_fdatasync_under_load_us")
        if disk and disk.get("count"):
            extra += (f"; the disk's own fdatasync meanwhile p50/p99 "
                      f"{disk['p50']/1000:.2f}/{disk['p99']/1000:.2f} ms")
    if row.get("host_steal_fraction"):
        extra += f"; host steal {row['host_steal_fraction'] * 100:.0f} %"
    return (f"{name:36} {n(main['records_per_s']):>12} {n(main['mb_per_s']):>8} "
            f"{n(row['broker_cpu_s_per_gb'], 2):>8} {n(row['broker_cpu_s_per_m_records'], 3):>8} "
            f"{n(row['broker_rss_mb']):>7} {lat_s:>24}{extra}")


HEADER = (f"{'workload':36} {'records/s':>12} {'MB/s':>8} {'CPU-s/GB':>8} {'CPU-s/M':>8} "
          f"{'RSS MB':>7} {'latency ms p50/p99/p99.9/max':>24}")


def print_table(name, rows, probe, facts, a):
    print(f"\n## {name}")
    print(f"placement: {placement_text(a)}")
    if probe:
        f = probe["fdatasync_us"]
        print(f"machine: loopback {n(probe['loopback_mb_per_s'])} MB/s, O_DIRECT 1 MiB writes "
              f"{n(probe['disk_write_mb_per_s'])} MB/s, fdatasync p50/p99 "
              f"{f['p50']/1000:.2f}/{f['p99']/1000:.2f} ms; TCP {facts['tcp_congestion_control']}, "
              f"qdisc {facts['default_qdisc']}")
        if facts.get("free_page_reporting"):
            print("memory: the host takes back what this guest frees (free page reporting): "
                  "buffered rows that write past the recently freed memory (~4 GB here) "
                  "pay a host fault per page (tuning/README.md)")
        st = probe.get("cpu_stalls")
        if st:
            print(f"CPU stalls (a busy loop per CPU, {st['seconds_per_cpu']:.0f} s each): "
                  f"{st['gaps_over_1ms']} gaps > 1 ms, {st['gaps_over_10ms']} > 10 ms, "
                  f"longest {st['max_gap_us']/1000:.1f} ms, {st['stalled_fraction']*100:.1f} % of the time "
                  f"stalled: no latency percentile can beat these")
    print(HEADER)
    for wname, row in rows.items():
        if row:
            print(fmt_row(wname, row))


def print_compare(names, runs):
    a, b = names
    print(f"\n## side by side ({a} vs {b}, same run, same machine)")
    print(f"{'workload':36} {a+' MB/s':>14} {b+' MB/s':>14} {'ratio':>7} "
          f"{a+' CPU-s/M':>14} {b+' CPU-s/M':>14} {a+' p99 ms':>12} {b+' p99 ms':>12}")
    for w in runs[a]:
        ra, rb = runs[a].get(w), runs[b].get(w)
        if not ra or not rb:
            continue
        ma, la = main_figures(ra)
        mb, lb = main_figures(rb)
        ratio = ma["mb_per_s"] / mb["mb_per_s"] if mb["mb_per_s"] else None
        p99 = lambda l: f"{l['p99']/1000:.2f}" if l and l.get("count") else "-"
        print(f"{w:36} {n(ma['mb_per_s']):>14} {n(mb['mb_per_s']):>14} {n(ratio, 1):>7} "
              f"{n(ra['broker_cpu_s_per_m_records'], 3):>14} {n(rb['broker_cpu_s_per_m_records'], 3):>14} "
              f"{p99(la):>12} {p99(lb):>12}")


def machine():
    info = {"kernel": platform.release(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["memory_gb"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    info["free_page_reporting"] = free_page_reporting()
    # TCP pacing changes what a fetch costs (tuning/README.md, "TCP pacing").
    for key, path in (("tcp_congestion_control", "net/ipv4/tcp_congestion_control"),
                      ("default_qdisc", "net/core/default_qdisc")):
        try:
            with open(f"/proc/sys/{path}") as f:
                info[key] = f.read().strip()
        except OSError:
            info[key] = "unknown"
    return info


def free_page_reporting():
    """Whether a virtio balloon hands the memory this guest frees back to the host
    (feature bit 5, as `ringlog tune --check` reads it): then buffered-mode rows pay
    a host fault per new page-cache page once the recently freed memory is used up
    (tuning/README.md, "What fresh memory costs on this VM")."""
    root = "/sys/bus/virtio/devices"
    try:
        devices = os.listdir(root)
    except OSError:
        return False
    for d in devices:
        try:
            if not os.readlink(f"{root}/{d}/driver").endswith("virtio_balloon"):
                continue
            with open(f"{root}/{d}/features") as f:
                if f.read()[5:6] == "1":
                    return True
        except OSError:
            continue
    return False


def run_all(broker, a):
    results = {}
    selected = set(a.workloads.split(",")) if a.workloads else None
    for name, kind, o in workloads(a):
        if selected and name not in selected:
            continue
        try:
            results[name] = run_workload(broker, name, kind, o, results, a)
        except Exception as e:
            log(f"   {name} failed: {e}")
            results[name] = None
    return results


def zero_copy_check(a):
    """Broker CPU per fetched GB with and without sendfile: two ringlog brokers (one
    with ringlog.fetch.zero.copy=false) hold the same backlog (4 GB; 1 GB with
    --quick); each is read three times, alternately, and the medians are compared."""
    brokers = []
    try:
        for zero_copy in ("true", "false"):
            b = start_ringlog(argparse.Namespace(**dict(vars(a), override=a.override + [
                f"ringlog.fetch.zero.copy={zero_copy}"])))
            b.name = "zero-copy" if zero_copy == "true" else "copying"
            brokers.append(b)
        topic = "bench-zero-copy-check"
        # The same backlog in both (a size, not a time: the second fill runs while the
        # first one's pages are written back, and would hold less).
        fill = dict(record=KIB, acks=1, partitions=8, seconds=120)
        fill_bytes = int(1e9 if a.quick else 4e9)
        for b in brokers:
            perf(["produce"] + topic_args(b, topic, fill, a.topic_gb)
                 + ["--max-bytes", fill_bytes], 600)
        figures = {b.name: [] for b in brokers}
        for _ in range(3):
            for b in brokers:
                cpu0 = b.cpu_seconds()
                r = perf(["consume", "--bootstrap", b.bootstrap, "--topic", topic,
                          "--consumers", 2, "--seconds", 60], 600)["consume"]
                cpu = b.cpu_seconds() - cpu0
                figures[b.name].append((cpu / (r["bytes"] / 1e9), r["mb_per_s"]))
        out = {}
        for name, runs in figures.items():
            runs.sort()
            out[name] = {"cpu_s_per_gb": [c for c, _ in runs], "mb_per_s": [m for _, m in runs],
                         "median_cpu_s_per_gb": runs[1][0]}
        return out
    finally:
        for b in brokers:
            b.stop()


class KeepAwake:
    """One SCHED_IDLE busy loop per CPU for the duration of the run (`--keep-awake`).
    Waking a halted virtual CPU takes milliseconds at the tail on some VMs (a 1 ms
    sleep overshot by 3.2 ms at p99.9 here, by 0.14 ms with these loops running); the
    loops keep the CPUs out of idle, as idle=poll does on a tuned host, and take no
    guest CPU time from other threads. Off by default: on this machine's VM the busy
    vCPUs slowed the disk (its own fdatasync p99 9-19 ms with the loops, 1-3 ms
    without, under the same fsync workload) and every latency row measured worse
    (tuning/README.md)."""

    def __init__(self, cpus):
        self.cpus, self.procs = cpus, []

    def __enter__(self):
        for cpu in self.cpus:
            self.procs.append(subprocess.Popen(
                ["chrt", "-i", "0", "taskset", "-c", str(cpu), "sh", "-c", "while :; do :; done"]))
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", help="run against this endpoint instead of starting ringlog")
    p.add_argument("--broker-pid", type=int, help="with --bootstrap: its pid, for CPU and RSS")
    p.add_argument("--compare", action="store_true",
                   help=f"also start tansu {TANSU_VERSION} (installed from crates.io) and compare")
    p.add_argument("--peer-storage", choices=["sqlite", "memory"], default="sqlite")
    p.add_argument("--modes", default="buffered,direct",
                   help="ringlog write modes to run, each a full pass (ringlog.log.write.mode)")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--long-seconds", type=float, default=60, help="the headline produce workload")
    p.add_argument("--fill-seconds", type=float, default=4, help="filling the consume backlog")
    p.add_argument("--quick", action="store_true", help="2 s workloads (a smoke run)")
    p.add_argument("--workloads", help="comma-separated names (default: all, and the zero-copy check)")
    p.add_argument("--override", action="append", default=[], help="ringlog setting KEY=VALUE")
    p.add_argument("--keep-topics", action="store_true")
    p.add_argument("--topic-gb", type=float, default=16,
                   help="each workload's topic keeps at most this much (retention.bytes), "
                        "so long runs fit the disk")
    p.add_argument("--keep-awake", action="store_true",
                   help="run a SCHED_IDLE busy loop per CPU (see KeepAwake); off by default: "
                        "on this kind of VM it made the disk's fdatasync p99 several times worse")
    p.add_argument("--placement", choices=["split", "shared"], default="split",
                   help="split: brokers on the first half of the CPUs, load generators on "
                        "the rest (see placement()); shared: everything on every CPU")
    p.add_argument("--workdir", default=None, help="where broker data goes (default: $TMPDIR)")
    p.add_argument("--json", default=None, help="where to write the results")
    a = p.parse_args()
    if a.quick:
        a.seconds = a.long_seconds = 2
        a.fill_seconds = 1
    started = datetime.datetime.now(datetime.timezone.utc)

    probe_dir = tempfile.mkdtemp(prefix="ringlog-probe-", dir=a.workdir)
    try:
        log("== probing this machine (loopback TCP, O_DIRECT writes, fdatasync)")
        probe = perf(["probe", "--dir", probe_dir, "--seconds", 1 if a.quick else 2], 120)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)

    # After the probe, which measures every CPU: brokers started from here on run on
    # their CPUs, and this process, the generators it starts and librdkafka's threads
    # on the others.
    every_cpu = sorted(os.sched_getaffinity(0))
    a.every_cpu = every_cpu
    split = placement(a, every_cpu)
    a.broker_cpus, a.load_cpus = split if split else (None, None)
    if a.load_cpus:
        os.sched_setaffinity(0, a.load_cpus)
    log(f"== placement: {placement_text(a)}")

    keep_awake = KeepAwake(every_cpu) if a.keep_awake else contextlib.nullcontext()
    with keep_awake:
        runs, zero_copy = run_brokers(a)
    report(a, started, probe, runs, zero_copy)


def run_brokers(a):
    runs = {}
    brokers = []
    if a.bootstrap:
        brokers.append(lambda: Broker("endpoint", a.bootstrap, pid=a.broker_pid))
    else:
        for mode in a.modes.split(","):
            brokers.append(lambda mode=mode: start_ringlog(a, mode))
    if a.compare:
        brokers.append(lambda: start_tansu(a))
    selected = set(a.workloads.split(",")) if a.workloads else None
    single = {name for name, _, _ in workloads(a)}
    if selected is not None and not selected & single:
        brokers = []  # only replication rows were asked for
    for make in brokers:
        broker = make()
        try:
            runs[broker.name] = run_all(broker, a)
        finally:
            broker.stop()

    # Replication: acks=all on a local 3-node cluster, RF=3 beside RF=1.
    import bench_replication
    if not a.bootstrap and (selected is None or selected & set(bench_replication.NAMES)):
        name, rows = bench_replication.run(a, selected)
        runs[name] = rows

    # Small batches from librdkafka at the default and the split placement.
    import bench_small_batch
    if not a.bootstrap and (selected is None or selected & set(bench_small_batch.NAMES)):
        runs["small-batch-placement"] = bench_small_batch.run(a, a.every_cpu)

    # A consumer of 1,000 partitions, few with data: with and without fetch sessions.
    import bench_fetch_sessions
    if not a.bootstrap and (selected is None or selected & set(bench_fetch_sessions.NAMES)):
        runs["fetch-sessions"] = bench_fetch_sessions.run(a, lambda: start_ringlog(a))

    zero_copy = None
    if not a.bootstrap and not a.workloads:
        log("== zero-copy check: consume with and without sendfile, alternately")
        zero_copy = zero_copy_check(a)
    return runs, zero_copy


def report(a, started, probe, runs, zero_copy):
    facts = machine()
    for name, rows in runs.items():
        if name == "small-batch-placement":
            import bench_small_batch
            bench_small_batch.print_summary(rows)
            continue
        if name == "fetch-sessions":
            import bench_fetch_sessions
            bench_fetch_sessions.print_summary(rows)
            continue
        print_table(name, rows, probe, facts, a)
    if zero_copy:
        z, c = zero_copy["zero-copy"], zero_copy["copying"]
        print(f"\nfetch from the page cache, broker CPU-s per GB (3 rounds each, alternating): "
              f"sendfile {', '.join(f'{x:.2f}' for x in z['cpu_s_per_gb'])}; "
              f"copying {', '.join(f'{x:.2f}' for x in c['cpu_s_per_gb'])}; "
              f"median ratio {z['median_cpu_s_per_gb'] / c['median_cpu_s_per_gb']:.2f}")
    names = list(runs)
    for name in names:
        if name.startswith("ringlog-3-nodes"):
            import bench_replication
            bench_replication.print_summary(runs[name])
    peer = [n for n in names if n.startswith("tansu")]
    for mine in [n for n in names if n.startswith("ringlog") and not n.startswith("ringlog-3-nodes")]:
        for other in peer:
            print_compare([mine, other], runs)
    limit = min(probe["loopback_mb_per_s"], probe["disk_write_mb_per_s"])
    print(f"\nmin(loopback, disk) = {n(limit)} MB/s; 50 % of it = {n(limit / 2)} MB/s")

    out = a.json or os.path.join(ROOT, "target", "bench",
                                 f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"started": started.isoformat(), "command": sys.argv, "machine": facts,
                   "cpus_kept_awake": a.keep_awake,
                   "placement": {"broker_cpus": a.broker_cpus, "load_generator_cpus": a.load_cpus},
                   "probe": probe, "runs": runs, "zero_copy_check": zero_copy}, f, indent=1)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
