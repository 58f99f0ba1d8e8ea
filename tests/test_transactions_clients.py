"""Transactions with the clients that have their own transaction code: kafka-python,
KafkaJS (tests/js, installed by scripts/test.sh) and kcat's transactional producer
(librdkafka). Each commits, aborts and commits again; read_committed consumers see
exactly the committed records."""
import subprocess
import sys

from conftest import ROOT
from test_transactions import count, read_all

JS_DIR = ROOT / "tests" / "js"
TXN_DIR = ROOT / "tests" / "txn"


def parse(stdout):
    """The "consumed C A D" and "offset O" lines of a client program."""
    out = {}
    for line in stdout.splitlines():
        words = line.split()
        if words and words[0] in ("consumed", "offset"):
            out[words[0]] = [int(w) for w in words[1:]]
    return out


def check_client_run(broker, topic, stdout):
    found = parse(stdout)
    assert found.get("consumed") == [500, 0, 100], stdout
    assert found.get("offset") == [5], stdout
    seen = read_all(broker.bootstrap, topic, 2, "read_committed", 600)
    assert (count(seen, "c"), count(seen, "a"), count(seen, "d")) == (500, 0, 100)
    everything = read_all(broker.bootstrap, topic, 2, "read_uncommitted", 900)
    assert (count(everything, "c"), count(everything, "a"), count(everything, "d")) == (500, 300, 100)


def test_kafka_python_transactions(broker):
    out = subprocess.run([sys.executable, str(TXN_DIR / "kafka_python_txn.py"), broker.bootstrap,
                          "kp-txn"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    check_client_run(broker, "kp-txn", out.stdout)


def test_kafkajs_transactions(broker):
    out = subprocess.run(["node", str(JS_DIR / "txn.js"), broker.bootstrap, "kjs-txn"],
                         capture_output=True, text=True, timeout=180, cwd=JS_DIR)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    check_client_run(broker, "kjs-txn", out.stdout)


def kcat_produce(broker, topic, lines, *extra, check=True):
    return subprocess.run(["kcat", "-P", "-b", broker.bootstrap, "-t", topic, "-p", "0",
                           "-X", "transactional.id=kcat-txn", *extra],
                          input="".join(f"{l}\n" for l in lines), capture_output=True,
                          text=True, timeout=120, check=check)


def kcat_consume(broker, topic, isolation):
    out = subprocess.run(["kcat", "-C", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-o",
                          "beginning", "-e", "-q", "-X", f"isolation.level={isolation}"],
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.split()


def test_kcat_transactional_producer(broker):
    from test_librdkafka import create_topic
    create_topic(broker.bootstrap, "kcat-txn", 1)
    kcat_produce(broker, "kcat-txn", [f"c{i}" for i in range(1000)])
    # A transaction that cannot commit (a record larger than the topic allows) is
    # aborted by kcat: none of it is committed.
    failed = kcat_produce(broker, "kcat-txn", ["a0", "x" * 2_000_000, "a2"], check=False)
    assert failed.returncode != 0
    kcat_produce(broker, "kcat-txn", [f"d{i}" for i in range(200)])
    committed = kcat_consume(broker, "kcat-txn", "read_committed")
    assert committed == [f"c{i}" for i in range(1000)] + [f"d{i}" for i in range(200)]
