// The Apache Kafka Java client against ringlog. Driven by tests/test_java_client.py:
//   produce BOOTSTRAP TOPIC N     idempotent producer, acks=all, record i -> partition i % 8
//   verify  BOOTSTRAP TOPIC N     consumes every partition from the beginning, checks bytes and order
//   codecs  BOOTSTRAP             keys, headers, timestamps in every codec; admin and ListOffsets
//   topic-ids BOOTSTRAP           the admin client describes topics by id (Metadata v12, null names)
//   group   BOOTSTRAP TOPIC N PROTOCOL
//                                 three consumers of one group (group.protocol=PROTOCOL) share
//                                 TOPIC's 8 partitions, commit, survive one leaving; the admin
//                                 client then shows the group and its committed offsets
//   admin-cluster BOOTSTRAP TOPIC BROKERS
//                                 CreatePartitions, DescribeCluster, topic configs
//   broker-configs BOOTSTRAP TOPIC
//                                 dynamic broker configs: the cluster-wide default and one
//                                 broker's own value reach every broker and take effect at once
// Exits non-zero, with the reason on stderr, on the first mismatch.

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.Future;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicCollection;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.errors.InvalidReplicationFactorException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicIdException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class JavaClientCheck {
    static final int PARTITIONS = 8;
    static final byte[] PATTERN = new byte[512];
    static { for (int k = 0; k < 512; k++) PATTERN[k] = (byte) (k % 251); }

    /** Same bytes as tests/records.py value(i). */
    static byte[] value(long i) {
        byte[] head = String.format("%012d|", i).getBytes(StandardCharsets.US_ASCII);
        byte[] out = new byte[100];
        System.arraycopy(head, 0, out, 0, 13);
        int start = (int) ((i * 7) % 251);
        System.arraycopy(PATTERN, start, out, 13, 87);
        return out;
    }

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static Properties base(String bootstrap) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        return p;
    }

    static KafkaProducer<byte[], byte[]> producer(String bootstrap, String codec) {
        Properties p = base(bootstrap);
        p.put("acks", "all");
        p.put("enable.idempotence", "true");
        p.put("compression.type", codec);
        p.put("linger.ms", "5");
        p.put("batch.size", String.valueOf(256 * 1024));
        return new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
    }

    static KafkaConsumer<byte[], byte[]> consumer(String bootstrap) {
        Properties p = base(bootstrap);
        p.put("enable.auto.commit", "false");
        p.put("auto.offset.reset", "none");
        p.put("max.poll.records", "10000");
        return new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer());
    }

    static void produce(String bootstrap, String topic, int n, int partitions) throws Exception {
        try (KafkaProducer<byte[], byte[]> p = producer(bootstrap, "none")) {
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                acks.add(p.send(new ProducerRecord<>(topic, i % partitions, null, value(i))));
            }
            p.flush();
            for (Future<RecordMetadata> f : acks) f.get();
        }
    }

    static void verify(String bootstrap, String topic, int n, int partitions) {
        long[] nextIndex = new long[partitions];
        long[] nextOffset = new long[partitions];
        for (int q = 0; q < partitions; q++) nextIndex[q] = q;
        long seen = 0;
        long deadline = System.currentTimeMillis() + 300_000;
        try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap)) {
            List<TopicPartition> parts = new ArrayList<>();
            for (int q = 0; q < partitions; q++) parts.add(new TopicPartition(topic, q));
            c.assign(parts);
            c.seekToBeginning(parts);
            while (seen < n) {
                check(System.currentTimeMillis() < deadline, "consumed " + seen + " of " + n);
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofSeconds(1))) {
                    int q = r.partition();
                    check(r.offset() == nextOffset[q], "partition " + q + ": offset " + r.offset() + ", expected " + nextOffset[q]);
                    check(Arrays.equals(r.value(), value(nextIndex[q])), "partition " + q + " offset " + r.offset() + ": wrong bytes");
                    nextIndex[q] += partitions;
                    nextOffset[q]++;
                    seen++;
                }
            }
        }
        check(seen == n, "saw " + seen + " records, expected " + n);
    }

    static void codecs(String bootstrap) throws Exception {
        try (Admin admin = Admin.create(base(bootstrap))) {
            admin.createTopics(List.of(new NewTopic("java-admin", 2, (short) 1))).all().get();
            try {
                admin.createTopics(List.of(new NewTopic("java-admin", 2, (short) 1))).all().get();
                check(false, "duplicate topic accepted");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof TopicExistsException, "duplicate: " + e.getCause());
            }
            try {
                admin.createTopics(List.of(new NewTopic("java-rf3", 1, (short) 3))).all().get();
                check(false, "replication factor 3 accepted");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof InvalidReplicationFactorException, "rf3: " + e.getCause());
            }
            check(admin.listTopics().names().get().contains("java-admin"), "listTopics");
            admin.deleteTopics(List.of("java-admin")).all().get();
            check(!admin.listTopics().names().get().contains("java-admin"), "deleted topic still listed");
            List<NewTopic> codecTopics = new ArrayList<>();
            for (String codec : List.of("none", "gzip", "snappy", "lz4", "zstd")) codecTopics.add(new NewTopic("java-" + codec, 3, (short) 1));
            admin.createTopics(codecTopics).all().get();
        }
        long base = 1_700_000_000_000L;
        for (String codec : List.of("none", "gzip", "snappy", "lz4", "zstd")) {
            String topic = "java-" + codec;
            int n = 3000;
            try (KafkaProducer<byte[], byte[]> p = producer(bootstrap, codec)) {
                List<Future<RecordMetadata>> acks = new ArrayList<>();
                for (int i = 0; i < n; i++) {
                    byte[] key = i % 3 == 0 ? null : ("key-" + i).getBytes(StandardCharsets.UTF_8);
                    ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, i % 3, base + i, key, value(i));
                    if (i % 2 == 1) {
                        r.headers().add("h1", ("v-" + i).getBytes(StandardCharsets.UTF_8));
                        r.headers().add("empty", new byte[0]);
                    }
                    acks.add(p.send(r));
                }
                p.flush();
                for (Future<RecordMetadata> f : acks) f.get();
            }
            int seen = 0;
            long[] next = {0, 1, 2};
            try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap)) {
                List<TopicPartition> parts = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1), new TopicPartition(topic, 2));
                c.assign(parts);
                c.seekToBeginning(parts);
                long deadline = System.currentTimeMillis() + 60_000;
                while (seen < n) {
                    check(System.currentTimeMillis() < deadline, codec + ": consumed " + seen);
                    for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofSeconds(1))) {
                        long i = next[r.partition()];
                        next[r.partition()] += 3;
                        String where = codec + " record " + i;
                        byte[] key = i % 3 == 0 ? null : ("key-" + i).getBytes(StandardCharsets.UTF_8);
                        check(Arrays.equals(r.key(), key), where + ": key");
                        check(Arrays.equals(r.value(), value(i)), where + ": value");
                        check(r.timestamp() == base + i, where + ": timestamp");
                        Header[] hs = r.headers().toArray();
                        check(hs.length == (i % 2 == 1 ? 2 : 0), where + ": header count");
                        if (hs.length == 2) {
                            check(hs[0].key().equals("h1") && Arrays.equals(hs[0].value(), ("v-" + i).getBytes(StandardCharsets.UTF_8)), where + ": header h1");
                            check(hs[1].key().equals("empty") && hs[1].value().length == 0, where + ": header empty");
                        }
                        seen++;
                    }
                }
                TopicPartition p0 = new TopicPartition(topic, 0);
                Map<TopicPartition, OffsetAndTimestamp> byTime = c.offsetsForTimes(Map.of(p0, base + 30));
                check(byTime.get(p0).offset() == 10, codec + ": offsetsForTimes gave " + byTime.get(p0));
                check(c.endOffsets(List.of(p0)).get(p0) == 1000, codec + ": endOffsets");
            }
        }
        try (Admin admin = Admin.create(base(bootstrap))) {
            TopicPartition p0 = new TopicPartition("java-zstd", 0);
            ListOffsetsResult.ListOffsetsResultInfo max = admin.listOffsets(Map.of(p0, OffsetSpec.maxTimestamp())).partitionResult(p0).get();
            check(max.offset() == 999 && max.timestamp() == base + 2997, "max timestamp: " + max);
        }
    }

    /** Describes topics by id, as describeTopics(TopicCollection.ofTopicIds(..)) asks. */
    static void topicIds(String bootstrap) throws Exception {
        try (Admin admin = Admin.create(base(bootstrap))) {
            admin.createTopics(List.of(new NewTopic("java-by-id-a", 3, (short) 1),
                                       new NewTopic("java-by-id-b", 1, (short) 1))).all().get();
            Map<String, TopicDescription> byName = admin.describeTopics(List.of("java-by-id-a", "java-by-id-b")).allTopicNames().get();
            Uuid a = byName.get("java-by-id-a").topicId();
            Uuid b = byName.get("java-by-id-b").topicId();
            check(!a.equals(Uuid.ZERO_UUID) && !b.equals(Uuid.ZERO_UUID) && !a.equals(b), "ids by name: " + a + ", " + b);
            Map<Uuid, TopicDescription> byId = admin.describeTopics(TopicCollection.ofTopicIds(List.of(a, b))).allTopicIds().get();
            TopicDescription da = byId.get(a);
            TopicDescription db = byId.get(b);
            check(da.name().equals("java-by-id-a") && da.topicId().equals(a), "by id a: " + da);
            check(db.name().equals("java-by-id-b") && db.topicId().equals(b), "by id b: " + db);
            check(da.partitions().size() == 3 && db.partitions().size() == 1, "partitions: " + da + ", " + db);
            for (int i = 0; i < 3; i++) {
                check(da.partitions().get(i).partition() == i && da.partitions().get(i).leader() != null, "partition " + i + ": " + da);
            }
            Uuid unknown = Uuid.randomUuid();
            try {
                admin.describeTopics(TopicCollection.ofTopicIds(List.of(unknown))).allTopicIds().get();
                check(false, "an unknown topic id was described");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof UnknownTopicIdException, "unknown id: " + e.getCause());
            }
            admin.deleteTopics(TopicCollection.ofTopicIds(List.of(b))).all().get();
            try {
                admin.describeTopics(TopicCollection.ofTopicIds(List.of(b))).allTopicIds().get();
                check(false, "a deleted topic was described by id");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof UnknownTopicIdException, "deleted id: " + e.getCause());
            }
        }
    }

    /** One member of a group, polling on its own thread until told to stop. */
    static final class Member implements Runnable {
        final KafkaConsumer<byte[], byte[]> consumer;
        final Set<Long> processed;
        final AtomicBoolean stop = new AtomicBoolean();
        volatile Set<Integer> assigned = Set.of();
        volatile Throwable failure;
        final Thread thread = new Thread(this);

        Member(String bootstrap, String group, String topic, String protocol, Set<Long> processed) {
            Properties p = base(bootstrap);
            p.put("group.id", group);
            p.put("group.protocol", protocol);
            p.put("enable.auto.commit", "false");
            p.put("auto.offset.reset", "earliest");
            if (protocol.equals("classic")) {
                p.put("session.timeout.ms", "10000");
                p.put("heartbeat.interval.ms", "500");
            }
            consumer = new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer());
            this.processed = processed;
            consumer.subscribe(List.of(topic));
            thread.start();
        }

        public void run() {
            try {
                while (!stop.get()) {
                    ConsumerRecords<byte[], byte[]> got = consumer.poll(Duration.ofMillis(100));
                    for (ConsumerRecord<byte[], byte[]> r : got) {
                        processed.add(Long.parseLong(new String(r.value(), 0, 12, StandardCharsets.US_ASCII)));
                    }
                    Set<Integer> now = new TreeSet<>();
                    for (TopicPartition tp : consumer.assignment()) now.add(tp.partition());
                    assigned = now;
                    if (!got.isEmpty()) {
                        try {
                            consumer.commitSync();
                        } catch (org.apache.kafka.common.errors.RebalanceInProgressException
                                 | CommitFailedException e) {
                            // At least once: the records come again to the next owner.
                        }
                    }
                }
                consumer.commitSync();
            } catch (Throwable t) {
                failure = t;
            } finally {
                consumer.close();
            }
        }

        void finish() throws InterruptedException {
            stop.set(true);
            thread.join(60_000);
            if (failure != null) throw new AssertionError("member failed", failure);
        }
    }

    static void waitFor(String what, java.util.function.BooleanSupplier done) throws InterruptedException {
        long deadline = System.currentTimeMillis() + 120_000;
        while (!done.getAsBoolean()) {
            check(System.currentTimeMillis() < deadline, "timed out waiting for " + what);
            Thread.sleep(50);
        }
    }

    static void group(String bootstrap, String topic, int n, String protocol) throws Exception {
        String group = "java-" + protocol;
        Set<Long> processed = ConcurrentHashMap.newKeySet();
        List<Member> members = new ArrayList<>();
        for (int k = 0; k < 3; k++) members.add(new Member(bootstrap, group, topic, protocol, processed));
        java.util.function.BooleanSupplier shared = () -> {
            Set<Integer> all = new TreeSet<>();
            int total = 0;
            for (Member m : members) {
                if (m.assigned.isEmpty()) return false;
                all.addAll(m.assigned);
                total += m.assigned.size();
            }
            return all.size() == PARTITIONS && total == PARTITIONS;
        };
        waitFor("3 members to share " + PARTITIONS + " partitions", shared);
        Member leaver = members.remove(2);
        leaver.finish();
        waitFor("2 members to share " + PARTITIONS + " partitions", shared);
        waitFor("every record", () -> processed.size() == n);
        for (Member m : members) m.finish();
        try (Admin admin = Admin.create(base(bootstrap))) {
            Map<TopicPartition, OffsetAndMetadata> committed =
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            long sum = 0;
            for (OffsetAndMetadata o : committed.values()) sum += o.offset();
            check(committed.size() == PARTITIONS && sum == n, "committed offsets: " + committed);
            // OffsetDelete on the now empty group: one partition's offset goes.
            TopicPartition first = new TopicPartition(topic, 0);
            admin.deleteConsumerGroupOffsets(group, Set.of(first)).all().get();
            Map<TopicPartition, OffsetAndMetadata> left =
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            check(left.size() == PARTITIONS - 1 && !left.containsKey(first), "after OffsetDelete: " + left);
            boolean listed = false;
            for (GroupListing g : admin.listGroups().all().get()) listed |= g.groupId().equals(group);
            check(listed, "group not listed");
        }
    }

    /// CreatePartitions and DescribeCluster through the admin client: `brokers` is how
    /// many the cluster has (the one bootstrapped names itself as the controller).
    static void adminCluster(String bootstrap, String topic, int brokers) throws Exception {
        try (Admin admin = Admin.create(base(bootstrap))) {
            admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all().get();
            try (KafkaProducer<byte[], byte[]> p = producer(bootstrap, "none")) {
                for (int i = 0; i < 10; i++) p.send(new ProducerRecord<>(topic, i % 2, null, value(i))).get();
            }
            admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(4))).all().get();
            waitFor("4 partitions to be described", () -> {
                try {
                    return admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions().size() == 4;
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            try {
                admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all().get();
                check(false, "a decrease was accepted");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof org.apache.kafka.common.errors.InvalidPartitionsException
                    && e.getCause().getMessage().equals("The topic " + topic + " currently has 4 partition(s); 3 would not be an increase."),
                    "decrease: " + e.getCause());
            }
            DescribeClusterResult cluster = admin.describeCluster();
            check(cluster.nodes().get().size() == brokers, "nodes: " + cluster.nodes().get());
            check(cluster.controller().get() != null, "no controller");
            check(cluster.clusterId().get().length() == 22, "cluster id: " + cluster.clusterId().get());
            // Topic configs with sources; every broker's settings (each describes itself).
            org.apache.kafka.common.config.ConfigResource res = new org.apache.kafka.common.config.ConfigResource(
                org.apache.kafka.common.config.ConfigResource.Type.TOPIC, topic);
            Config configs = admin.describeConfigs(List.of(res)).all().get().get(res);
            check(configs.entries().size() == 25, "topic configs: " + configs.entries().size());
            admin.incrementalAlterConfigs(Map.of(res, List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", "3600000"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.APPEND)))).all().get();
            // Each broker applies the change on its own, soon after the controller
            // answers (as Kafka's), and describeConfigs may ask any of them.
            waitFor("SET and APPEND to be described", () -> {
                Config c = describe(admin, res);
                ConfigEntry retention = c.get("retention.ms");
                return retention.value().equals("3600000")
                    && retention.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG
                    && c.get("cleanup.policy").value().equals("delete,compact");
            });
            admin.incrementalAlterConfigs(Map.of(res, List.of(
                new AlterConfigOp(new ConfigEntry("cleanup.policy", ""), AlterConfigOp.OpType.DELETE)))).all().get();
            waitFor("DELETE to be described", () ->
                describe(admin, res).get("cleanup.policy").source() == ConfigEntry.ConfigSource.DEFAULT_CONFIG);
            configs = describe(admin, res);
            ConfigEntry policy = configs.get("cleanup.policy");
            check(policy.value().equals("delete") && policy.source() == ConfigEntry.ConfigSource.DEFAULT_CONFIG
                && policy.type() == ConfigEntry.ConfigType.LIST, "cleanup.policy: " + policy);
            for (org.apache.kafka.common.Node n : cluster.nodes().get()) {
                org.apache.kafka.common.config.ConfigResource b = new org.apache.kafka.common.config.ConfigResource(
                    org.apache.kafka.common.config.ConfigResource.Type.BROKER, n.idString());
                ConfigEntry id = admin.describeConfigs(List.of(b)).all().get().get(b).get("node.id");
                check(id != null && id.value().equals(n.idString()) && id.isReadOnly(), "broker " + n.id() + " node.id: " + id);
            }
        }
        // The old partitions' records are still there.
        verify(bootstrap, topic, 10, 2);
    }

    /// Sends one record of `size` bytes with a new producer; the error's class, or "ok".
    static String sendOne(String bootstrap, String topic, int size) throws Exception {
        try (KafkaProducer<byte[], byte[]> p = producer(bootstrap, "none")) {
            p.send(new ProducerRecord<>(topic, 0, null, new byte[size])).get();
            return "ok";
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName();
        }
    }

    /// Dynamic broker configs through the admin client: the cluster-wide default
    /// (resource "", as kafka-configs.sh --entity-default) reaches every broker; the
    /// leader's own value beats it; DELETE goes back. Produce follows each change.
    static void brokerConfigs(String bootstrap, String topic) throws Exception {
        var broker = org.apache.kafka.common.config.ConfigResource.Type.BROKER;
        var set = AlterConfigOp.OpType.SET;
        var delete = AlterConfigOp.OpType.DELETE;
        try (Admin admin = Admin.create(base(bootstrap))) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
            check(sendOne(bootstrap, topic, 5000).equals("ok"), "before any change");
            var defaults = new org.apache.kafka.common.config.ConfigResource(broker, "");
            admin.incrementalAlterConfigs(Map.of(defaults, List.of(
                new AlterConfigOp(new ConfigEntry("message.max.bytes", "3000"), set),
                new AlterConfigOp(new ConfigEntry("log.retention.ms", "3600000"), set)))).all().get();
            Collection<org.apache.kafka.common.Node> nodes = admin.describeCluster().nodes().get();
            for (org.apache.kafka.common.Node n : nodes) {
                var b = new org.apache.kafka.common.config.ConfigResource(broker, n.idString());
                waitFor("broker " + n.id() + " to take the default", () ->
                    describe(admin, b).get("message.max.bytes").source()
                        == ConfigEntry.ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG);
                var options = new DescribeConfigsOptions().includeSynonyms(true);
                ConfigEntry e = admin.describeConfigs(List.of(b), options).all().get().get(b).get("message.max.bytes");
                List<ConfigEntry.ConfigSource> sources = new ArrayList<>();
                for (ConfigEntry.ConfigSynonym y : e.synonyms()) sources.add(y.source());
                check(e.value().equals("3000") && !e.isReadOnly()
                    && sources.equals(List.of(ConfigEntry.ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG,
                                              ConfigEntry.ConfigSource.DEFAULT_CONFIG)),
                    "broker " + n.id() + ": " + e);
            }
            Config listed = describe(admin, defaults);
            check(listed.entries().size() == 2 && listed.get("log.retention.ms").value().equals("3600000")
                && listed.get("log.retention.ms").source() == ConfigEntry.ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG,
                "defaults: " + listed);
            String refused = sendOne(bootstrap, topic, 5000);
            check(refused.equals("RecordTooLargeException"), "over the default: " + refused);

            int leader = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic)
                .partitions().get(0).leader().id();
            var own = new org.apache.kafka.common.config.ConfigResource(broker, String.valueOf(leader));
            admin.incrementalAlterConfigs(Map.of(own, List.of(
                new AlterConfigOp(new ConfigEntry("message.max.bytes", "20000"), set)))).all().get();
            waitFor("the leader's own value", () ->
                describe(admin, own).get("message.max.bytes").source() == ConfigEntry.ConfigSource.DYNAMIC_BROKER_CONFIG);
            check(sendOne(bootstrap, topic, 5000).equals("ok"), "under the leader's own value");

            try {
                admin.incrementalAlterConfigs(Map.of(defaults, List.of(
                    new AlterConfigOp(new ConfigEntry("num.partitions", "3"), set)))).all().get();
                check(false, "a static setting was altered");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof org.apache.kafka.common.errors.InvalidRequestException,
                    "static setting: " + e.getCause());
            }

            admin.incrementalAlterConfigs(Map.of(
                own, List.of(new AlterConfigOp(new ConfigEntry("message.max.bytes", ""), delete)),
                defaults, List.of(new AlterConfigOp(new ConfigEntry("message.max.bytes", ""), delete),
                                  new AlterConfigOp(new ConfigEntry("log.retention.ms", ""), delete))))
                .all().get();
            for (org.apache.kafka.common.Node n : nodes) {
                var b = new org.apache.kafka.common.config.ConfigResource(broker, n.idString());
                waitFor("broker " + n.id() + " back to its default", () ->
                    describe(admin, b).get("message.max.bytes").source() == ConfigEntry.ConfigSource.DEFAULT_CONFIG);
            }
            check(describe(admin, defaults).entries().isEmpty(), "defaults left");
            check(sendOne(bootstrap, topic, 5000).equals("ok"), "after DELETE");
        }
    }

    static Config describe(Admin admin, org.apache.kafka.common.config.ConfigResource res) {
        try {
            return admin.describeConfigs(List.of(res)).all().get().get(res);
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    static int partitionsArg(String[] args) {
        return args.length > 4 ? Integer.parseInt(args[4]) : PARTITIONS;
    }

    public static void main(String[] args) throws Exception {
        switch (args[0]) {
            // An optional fifth argument: the topic's partition count (default 8).
            case "admin-cluster" -> adminCluster(args[1], args[2], Integer.parseInt(args[3]));
            case "broker-configs" -> brokerConfigs(args[1], args[2]);
            case "produce" -> produce(args[1], args[2], Integer.parseInt(args[3]), partitionsArg(args));
            case "verify" -> verify(args[1], args[2], Integer.parseInt(args[3]), partitionsArg(args));
            case "codecs" -> codecs(args[1]);
            case "topic-ids" -> topicIds(args[1]);
            case "group" -> group(args[1], args[2], Integer.parseInt(args[3]), args[4]);
            default -> throw new IllegalArgumentException(args[0]);
        }
        System.out.println("ok " + args[0]);
    }
}
