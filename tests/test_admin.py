"""Admin APIs that change or describe the cluster, through confluent-kafka's
AdminClient (librdkafka), on one node: CreatePartitions, DescribeCluster, and
describing and altering topic and dynamic broker configs. (Three
nodes: tests/test_cluster.py.)"""
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic


def grow(admin, topic, count, validate_only=False):
    f = admin.create_partitions([NewPartitions(topic, count)], validate_only=validate_only)[topic]
    return f.result(timeout=30)


def refusal(admin, topic, count):
    with pytest.raises(KafkaException) as e:
        grow(admin, topic, count)
    err = e.value.args[0]
    return err.name(), err.str()


def read_all(bootstrap, topic, partitions, expected):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{topic}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, q, 0) for q in partitions])
    got = []
    for _ in range(200):
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append((m.partition(), m.value()))
        if len(got) == expected:
            break
    c.close()
    return sorted(got)


def test_create_partitions_keeps_existing_data_and_answers_as_kafka(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic("grow", 2, 1)]).values():
        f.result(timeout=30)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(20):
        p.produce("grow", b"old-%d" % i, partition=i % 2)
    assert p.flush(30) == 0

    grow(admin, "grow", 3, validate_only=True)
    assert len(admin.list_topics("grow", timeout=10).topics["grow"].partitions) == 2
    grow(admin, "grow", 5)
    assert len(admin.list_topics("grow", timeout=10).topics["grow"].partitions) == 5
    # The old partitions' records are all there, byte for byte.
    assert read_all(broker.bootstrap, "grow", [0, 1], 20) == sorted(
        (i % 2, b"old-%d" % i) for i in range(20))
    # The new ones take records (a new producer: the old one's metadata knows 2).
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce("grow", b"new", partition=4)
    assert p.flush(30) == 0
    assert read_all(broker.bootstrap, "grow", [4], 1) == [(4, b"new")]

    # Kafka's errors and messages (ReplicationControlManager.createPartitions).
    assert refusal(admin, "grow", 3) == (
        "INVALID_PARTITIONS", "The topic grow currently has 5 partition(s); 3 would not be an increase.")
    assert refusal(admin, "grow", 5) == ("INVALID_PARTITIONS", "Topic already has 5 partition(s).")
    # (librdkafka names error 3 UNKNOWN_TOPIC_OR_PART.)
    assert refusal(admin, "no-such-topic", 2)[0] == "UNKNOWN_TOPIC_OR_PART"
    with pytest.raises(KafkaException) as e:
        admin.create_partitions([NewPartitions("grow", 7, [[0]])])["grow"].result(timeout=30)
    assert e.value.args[0].str() == (
        "Attempted to add 2 additional partition(s), but only 1 assignment(s) were specified.")
    # Still there after a restart (the partitions are quorum records).
    broker.restart(__import__("signal").SIGTERM)
    assert len(admin.list_topics("grow", timeout=10).topics["grow"].partitions) == 5


def test_describe_cluster_names_the_cluster_and_its_broker(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    described = admin.describe_cluster().result(timeout=30)
    md = admin.list_topics(timeout=10)
    assert described.cluster_id == md.cluster_id and len(described.cluster_id) == 22
    assert [n.id for n in described.nodes] == [0]
    assert (described.nodes[0].host, described.nodes[0].port) == ("127.0.0.1", broker.port)
    assert described.controller.id == 0


def test_describe_configs_reports_values_sources_and_synonyms(broker_factory):
    from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType
    b = broker_factory(["log.retention.hours=1"])
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for f in admin.create_topics([NewTopic("configured", 1, 1,
                                           config={"retention.bytes": "12345"})]).values():
        f.result(timeout=30)
    topic = ConfigResource(ResourceType.TOPIC, "configured")
    # (librdkafka always asks for synonyms.)
    entries = admin.describe_configs([topic])[topic].result(timeout=30)
    assert len(entries) == 25 and "segment.bytes" in entries and "min.insync.replicas" in entries
    own = entries["retention.bytes"]
    assert (own.value, own.source, own.is_default) == (
        "12345", ConfigSource.DYNAMIC_TOPIC_CONFIG.value, False)
    assert [(s.name, s.value, s.source) for s in own.synonyms.values()] == [
        ("retention.bytes", "12345", ConfigSource.DYNAMIC_TOPIC_CONFIG.value),
        ("log.retention.bytes", "-1", ConfigSource.DEFAULT_CONFIG.value)]
    # From the broker's setting, as the value it takes effect as.
    broker_set = entries["retention.ms"]
    assert (broker_set.value, broker_set.source) == (
        "3600000", ConfigSource.STATIC_BROKER_CONFIG.value)
    assert [s.name for s in broker_set.synonyms.values()] == ["log.retention.hours", "log.retention.ms"]
    default = entries["cleanup.policy"]
    assert (default.value, default.source, default.is_default) == (
        "delete", ConfigSource.DEFAULT_CONFIG.value, True)

    broker = ConfigResource(ResourceType.BROKER, "0")
    settings = admin.describe_configs([broker])[broker].result(timeout=30)
    hours = settings["log.retention.hours"]
    assert (hours.value, hours.source, hours.is_read_only) == (
        "1", ConfigSource.STATIC_BROKER_CONFIG.value, False)
    partitions = settings["num.partitions"]
    assert (partitions.source, partitions.is_read_only) == (ConfigSource.DEFAULT_CONFIG.value, True)

    missing = ConfigResource(ResourceType.TOPIC, "no-such-topic")
    with pytest.raises(KafkaException) as e:
        admin.describe_configs([missing])[missing].result(timeout=30)
    assert e.value.args[0].name() == "UNKNOWN_TOPIC_OR_PART"


def test_incremental_alter_configs_each_op_takes_effect_and_survives_a_restart(broker):
    import signal

    from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource,
                                       ConfigSource, ResourceType)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic("tuned", 1, 1,
                                           config={"retention.ms": "86400000"})]).values():
        f.result(timeout=30)
    res = ConfigResource(ResourceType.TOPIC, "tuned")

    def alter(*ops, validate_only=False):
        r = ConfigResource(ResourceType.TOPIC, "tuned", incremental_configs=[
            ConfigEntry(name, value, incremental_operation=op) for name, value, op in ops])
        return admin.incremental_alter_configs([r], validate_only=validate_only)[r].result(30)

    def described():
        return admin.describe_configs([res])[res].result(timeout=30)

    alter(("max.message.bytes", "2000", AlterConfigOpType.SET),
          ("retention.ms", None, AlterConfigOpType.DELETE),
          ("cleanup.policy", "compact", AlterConfigOpType.APPEND))
    d = described()
    assert (d["max.message.bytes"].value, d["max.message.bytes"].source) == (
        "2000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    assert d["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert d["cleanup.policy"].value == "delete,compact"
    alter(("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT))
    assert described()["cleanup.policy"].value == "compact"
    alter(("segment.ms", "1000", AlterConfigOpType.SET), validate_only=True)
    assert described()["segment.ms"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value

    # Refusals, as Kafka words them.
    for ops, message in [
        ((("retention.ms", "5", AlterConfigOpType.APPEND),),
         "Can't APPEND to key retention.ms because its type is not LIST."),
        ((("retention.ms", "soon", AlterConfigOpType.SET),),
         "Invalid value soon for configuration retention.ms: Not a number of type LONG"),
        ((("no.such.config", "1", AlterConfigOpType.SET),), "Unknown topic config name: no.such.config"),
    ]:
        with pytest.raises(KafkaException) as e:
            alter(*ops)
        assert (e.value.args[0].name(), e.value.args[0].str()) == ("INVALID_CONFIG", message)

    # In effect at once: the open log now refuses batches over 2000 bytes.
    p = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 1_000_000})
    failed = []
    p.produce("tuned", b"x" * 5000, on_delivery=lambda err, _m: failed.append(err))
    p.flush(30)
    assert failed and failed[0] is not None and failed[0].name() == "MSG_SIZE_TOO_LARGE", failed

    # AlterConfigs (not incremental) replaces the whole set.
    legacy = ConfigResource(ResourceType.TOPIC, "tuned", set_config={"flush.ms": "10"})
    admin.alter_configs([legacy])[legacy].result(timeout=30)
    d = described()
    assert d["flush.ms"].value == "10" and d["max.message.bytes"].value == "1048588"

    broker.restart(signal.SIGTERM)
    d = described()
    assert (d["flush.ms"].value, d["flush.ms"].source) == ("10", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)


def test_dynamic_broker_configs_take_effect_at_once_and_survive_a_restart(broker_factory):
    import signal

    from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource,
                                       ConfigSource, ResourceType)
    b = broker_factory(["message.max.bytes=100000"])
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for f in admin.create_topics([NewTopic("plain", 1, 1)]).values():
        f.result(timeout=30)
    me = ConfigResource(ResourceType.BROKER, "0")
    topic = ConfigResource(ResourceType.TOPIC, "plain")

    def alter(name, *ops):
        r = ConfigResource(ResourceType.BROKER, name, incremental_configs=[
            ConfigEntry(k, v, incremental_operation=op) for k, v, op in ops])
        return admin.incremental_alter_configs([r])[r].result(30)

    def describe(res):
        return admin.describe_configs([res])[res].result(timeout=30)

    def produce(size):
        p = Producer({"bootstrap.servers": b.bootstrap, "message.max.bytes": 1_000_000})
        errors = []
        p.produce("plain", b"x" * size, on_delivery=lambda err, _m: errors.append(err))
        p.flush(30)
        return errors[0].name() if errors[0] else "OK"

    before = describe(me)
    assert (before["message.max.bytes"].is_read_only, before["num.partitions"].is_read_only) == (
        False, True)
    assert produce(5000) == "OK"

    # This broker's own value (the cluster-wide defaults, resource "", are checked
    # through the Java client in test_java_admin_dynamic_broker_configs: librdkafka and
    # kafka-python refuse an empty broker name).
    alter("0", ("message.max.bytes", "2000", AlterConfigOpType.SET))
    assert produce(5000) == "MSG_SIZE_TOO_LARGE"
    d = describe(me)["message.max.bytes"]
    assert (d.value, d.source) == ("2000", ConfigSource.DYNAMIC_BROKER_CONFIG.value)
    t = describe(topic)["max.message.bytes"]
    assert (t.value, t.source) == ("2000", ConfigSource.DYNAMIC_BROKER_CONFIG.value)
    alter("0", ("message.max.bytes", "20000", AlterConfigOpType.SET))
    assert produce(5000) == "OK"

    # Refusals, as Kafka's brokers answer them; nothing is applied.
    for name, ops, expected in [
        ("0", [("num.partitions", "3", AlterConfigOpType.SET)],
         ("INVALID_REQUEST", "Cannot update these configs dynamically: Set(num.partitions)")),
        ("0", [("message.max.bytes", "big", AlterConfigOpType.SET)], ("INVALID_REQUEST", None)),
        ("0", [("num.io.threads", "4", AlterConfigOpType.SET)],
         ("INVALID_CONFIG", "Unknown broker config name: num.io.threads")),
    ]:
        with pytest.raises(KafkaException) as e:
            alter(name, *ops)
        err = e.value.args[0]
        assert err.name() == expected[0], err
        assert expected[1] is None or err.str() == expected[1], err
    assert describe(me)["message.max.bytes"].value == "20000"

    # Kept across a restart (they are quorum records); DELETE goes back to the static one.
    b.restart(signal.SIGTERM)
    assert describe(me)["message.max.bytes"].value == "20000"
    alter("0", ("message.max.bytes", "3000", AlterConfigOpType.SET))
    assert produce(5000) == "MSG_SIZE_TOO_LARGE"
    alter("0", ("message.max.bytes", None, AlterConfigOpType.DELETE))
    assert produce(5000) == "OK"
    d = describe(me)["message.max.bytes"]
    assert (d.value, d.source) == ("100000", ConfigSource.STATIC_BROKER_CONFIG.value)
