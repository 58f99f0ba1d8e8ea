// The Apache Kafka Java client's transactions against ringlog. Driven by
// tests/test_transactions.py:
//   commit-abort BOOTSTRAP TOPIC   a transactional producer commits, aborts and commits
//                                  again over 4 partitions; read_committed consumers see
//                                  exactly the committed records (no aborted, no control
//                                  records), read_uncommitted ones see every data record;
//                                  end offsets per isolation level; the admin client lists
//                                  and describes the transaction and the producers
//   fence BOOTSTRAP TOPIC          a second producer with the same transactional.id fences
//                                  the first: its open transaction is aborted and its next
//                                  commit fails with ProducerFencedException
//   stream BOOTSTRAP TOPIC ID SECONDS RECORDS
//                                  transactions one after another for SECONDS, each sending
//                                  RECORDS records ("<n>-<i>", to partition i % 3) and
//                                  committing; errors are handled as the Java client's
//                                  documentation says (abortable: abort; fatal: a new
//                                  producer; commit timed out: commit again). Prints
//                                  "committed n", "aborted n" or "unknown n" per transaction
//   expiry BOOTSTRAP TOPIC         a transactional id whose last transaction ended is
//                                  forgotten after transactional.id.expiration.ms: the
//                                  admin client then gets TransactionalIdNotFoundException
//   produce-open BOOTSTRAP TOPIC ID N
//                                  begins a transaction, sends N records, flushes, prints
//                                  "open" and waits to be killed
// Exits non-zero, with the reason on stderr, on the first mismatch.

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class JavaTxnCheck {
    static final int PARTITIONS = 4;

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static KafkaProducer<byte[], byte[]> txnProducer(String bootstrap, String id) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("transactional.id", id);
        p.put("linger.ms", "5");
        p.put("transaction.timeout.ms", "60000");
        return new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
    }

    static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static void send(KafkaProducer<byte[], byte[]> p, String topic, String prefix, int n) {
        for (int i = 0; i < n; i++) {
            p.send(new ProducerRecord<>(topic, i % PARTITIONS, null, bytes(prefix + i)));
        }
    }

    /** Every record of TOPIC's partitions from the start, until `expect` are read. */
    static List<String> readAll(String bootstrap, String topic, String isolation, int expect) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("enable.auto.commit", "false");
        p.put("isolation.level", isolation);
        List<String> seen = new ArrayList<>();
        try (KafkaConsumer<byte[], byte[]> c =
                new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<TopicPartition> parts = new ArrayList<>();
            for (int q = 0; q < PARTITIONS; q++) parts.add(new TopicPartition(topic, q));
            c.assign(parts);
            c.seekToBeginning(parts);
            long deadline = System.currentTimeMillis() + 30_000;
            while (seen.size() < expect && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
                    seen.add(new String(r.value(), StandardCharsets.UTF_8));
                }
            }
            // Nothing more arrives (no control record, no aborted record late).
            for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofSeconds(2))) {
                seen.add(new String(r.value(), StandardCharsets.UTF_8));
            }
            Map<TopicPartition, Long> ends = c.endOffsets(parts);
            long end = 0;
            for (long e : ends.values()) end += e;
            seen.add("end=" + end);
        }
        return seen;
    }

    static long count(List<String> seen, String prefix) {
        return seen.stream().filter(s -> s.startsWith(prefix)).count();
    }

    static void commitAbort(String bootstrap, String topic) throws Exception {
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", bootstrap))) {
            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get();
        }
        try (KafkaProducer<byte[], byte[]> p = txnProducer(bootstrap, "java-txn")) {
            p.initTransactions();
            p.beginTransaction();
            send(p, topic, "c", 4000);
            p.commitTransaction();
            p.beginTransaction();
            send(p, topic, "a", 2000);
            p.flush();
            // While it is open: the admin client sees it and its producer.
            try (Admin admin = Admin.create(Map.of("bootstrap.servers", bootstrap))) {
                TransactionDescription d =
                        admin.describeTransactions(List.of("java-txn")).description("java-txn").get();
                check(d.state() == TransactionState.ONGOING, "state " + d.state());
                check(d.topicPartitions().size() == PARTITIONS, "partitions " + d.topicPartitions());
                Collection<TransactionListing> listed = admin.listTransactions().all().get();
                check(listed.stream().anyMatch(l -> l.transactionalId().equals("java-txn")
                        && l.state() == TransactionState.ONGOING), "listed " + listed);
                TopicPartition tp0 = new TopicPartition(topic, 0);
                List<ProducerState> producers =
                        admin.describeProducers(List.of(tp0)).partitionResult(tp0).get().activeProducers();
                check(producers.size() == 1 && producers.get(0).currentTransactionStartOffset().isPresent(),
                        "producers " + producers);
            }
            p.abortTransaction();
            p.beginTransaction();
            send(p, topic, "d", 1000);
            p.commitTransaction();
        }
        List<String> committed = readAll(bootstrap, topic, "read_committed", 5000);
        check(count(committed, "a") == 0, "read_committed saw " + count(committed, "a") + " aborted records");
        check(count(committed, "c") == 4000 && count(committed, "d") == 1000,
                "read_committed saw c=" + count(committed, "c") + " d=" + count(committed, "d"));
        check(new HashSet<>(committed).size() == committed.size(), "duplicates in read_committed");
        List<String> all = readAll(bootstrap, topic, "read_uncommitted", 7000);
        check(count(all, "a") == 2000 && count(all, "c") == 4000 && count(all, "d") == 1000,
                "read_uncommitted saw a=" + count(all, "a") + " c=" + count(all, "c") + " d=" + count(all, "d"));
        // 7000 records and 3 markers on each of 4 partitions: the log ends at 7012 in all,
        // for both isolation levels once nothing is open.
        check(committed.contains("end=7012") && all.contains("end=7012"),
                "end offsets " + committed.get(committed.size() - 1) + " " + all.get(all.size() - 1));
        System.out.println("ok commit-abort");
    }

    static void fence(String bootstrap, String topic) throws Exception {
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", bootstrap))) {
            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get();
        }
        KafkaProducer<byte[], byte[]> first = txnProducer(bootstrap, "java-fence");
        first.initTransactions();
        first.beginTransaction();
        send(first, topic, "z", 100);
        first.flush();
        try (KafkaProducer<byte[], byte[]> second = txnProducer(bootstrap, "java-fence")) {
            second.initTransactions();
            second.beginTransaction();
            send(second, topic, "s", 100);
            second.commitTransaction();
        }
        boolean fenced = false;
        try {
            send(first, topic, "z", 1);
            first.commitTransaction();
        } catch (ProducerFencedException | InvalidProducerEpochException e) {
            fenced = true;
        } catch (KafkaException e) {
            fenced = e.getCause() instanceof ProducerFencedException
                    || e.getCause() instanceof InvalidProducerEpochException;
            if (!fenced) throw e;
        }
        first.close(Duration.ZERO);
        check(fenced, "the first producer committed after being fenced");
        List<String> committed = readAll(bootstrap, topic, "read_committed", 100);
        check(count(committed, "z") == 0 && count(committed, "s") == 100,
                "read_committed saw z=" + count(committed, "z") + " s=" + count(committed, "s"));
        System.out.println("ok fence");
    }

    static void produceOpen(String bootstrap, String topic, String id, int n) throws Exception {
        KafkaProducer<byte[], byte[]> p = txnProducer(bootstrap, id);
        p.initTransactions();
        p.beginTransaction();
        send(p, topic, "open", n);
        p.flush();
        System.out.println("open");
        System.out.flush();
        Thread.sleep(600_000);
    }

    static boolean fatal(Exception e) {
        return e instanceof ProducerFencedException
                || e instanceof org.apache.kafka.common.errors.OutOfOrderSequenceException
                || e instanceof org.apache.kafka.common.errors.AuthorizationException
                || e instanceof org.apache.kafka.common.errors.UnsupportedVersionException
                || e instanceof IllegalStateException;
    }

    static void stream(String bootstrap, String topic, String id, int seconds, int records) throws Exception {
        long end = System.currentTimeMillis() + seconds * 1000L;
        KafkaProducer<byte[], byte[]> p = null;
        for (int n = 0; System.currentTimeMillis() < end; n++) {
            try {
                if (p == null) {
                    p = txnProducer(bootstrap, id);
                    p.initTransactions();
                }
                p.beginTransaction();
                for (int i = 0; i < records; i++) {
                    p.send(new ProducerRecord<>(topic, i % 3, null, bytes(n + "-" + i)));
                }
                String outcome = "committed";
                for (int attempt = 0; ; attempt++) {
                    try {
                        p.commitTransaction();
                        break;
                    } catch (org.apache.kafka.common.errors.TimeoutException e) {
                        // The outcome is not known yet: committing again is allowed.
                        if (attempt == 5) throw e;
                    }
                }
                System.out.println(outcome + " " + n);
            } catch (Exception e) {
                if (p != null && !fatal(e) && !(e instanceof org.apache.kafka.common.errors.TimeoutException)) {
                    try {
                        p.abortTransaction();
                        System.out.println("aborted " + n);
                        continue;
                    } catch (Exception abortFailed) {
                        // Fall through: a new producer.
                    }
                }
                System.out.println("unknown " + n + " " + e);
                if (p != null) p.close(Duration.ZERO);
                p = null;
            }
            System.out.flush();
        }
        if (p != null) p.close();
        System.out.println("ok stream");
    }

    static void expiry(String bootstrap, String topic) throws Exception {
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", bootstrap))) {
            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get();
            try (KafkaProducer<byte[], byte[]> p = txnProducer(bootstrap, "java-expiry")) {
                p.initTransactions();
                p.beginTransaction();
                send(p, topic, "e", 10);
                p.commitTransaction();
            }
            TransactionDescription d =
                    admin.describeTransactions(List.of("java-expiry")).description("java-expiry").get();
            check(d.state() == TransactionState.COMPLETE_COMMIT, "state " + d.state());
            long deadline = System.currentTimeMillis() + 30_000;
            while (true) {
                check(System.currentTimeMillis() < deadline, "the id did not expire");
                try {
                    admin.describeTransactions(List.of("java-expiry")).description("java-expiry").get();
                } catch (java.util.concurrent.ExecutionException e) {
                    check(e.getCause() instanceof org.apache.kafka.common.errors.TransactionalIdNotFoundException,
                            "unexpected " + e.getCause());
                    break;
                }
                Thread.sleep(200);
            }
        }
        System.out.println("ok expiry");
    }

    public static void main(String[] args) throws Exception {
        switch (args[0]) {
            case "commit-abort" -> commitAbort(args[1], args[2]);
            case "fence" -> fence(args[1], args[2]);
            case "expiry" -> expiry(args[1], args[2]);
            case "stream" -> stream(args[1], args[2], args[3], Integer.parseInt(args[4]), Integer.parseInt(args[5]));
            case "produce-open" -> produceOpen(args[1], args[2], args[3], Integer.parseInt(args[4]));
            default -> throw new IllegalArgumentException(args[0]);
        }
    }
}
