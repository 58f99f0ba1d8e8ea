// KafkaJS's own transaction code against ringlog. Driven by
// tests/test_transactions_clients.py:
//   node txn.js BOOTSTRAP TOPIC
// A transactional producer commits 500 records ("c"), aborts 300 ("a"), then commits
// 100 ("d") together with group "kafkajs-eos"'s offset 5 for partition 0
// (sendOffsets); a KafkaJS consumer (read_committed, its default) then reads the
// topic from the start. Prints "consumed C A D" and "offset O" for the test to check.
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic] = process.argv.slice(2);
const kafka = new Kafka({ brokers: [bootstrap], clientId: 'kafkajs-txn', logLevel: logLevel.ERROR });

function records(prefix, n) {
  return [...Array(n).keys()].map((i) => ({ value: `${prefix}${i}`, partition: i % 2 }));
}

async function main() {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 2, replicationFactor: 1 }] });

  const producer = kafka.producer({ transactionalId: 'kafkajs-txn', maxInFlightRequests: 1, idempotent: true });
  await producer.connect();
  let tx = await producer.transaction();
  await tx.send({ topic, messages: records('c', 500) });
  await tx.commit();
  tx = await producer.transaction();
  await tx.send({ topic, messages: records('a', 300) });
  await tx.abort();
  tx = await producer.transaction();
  await tx.send({ topic, messages: records('d', 100) });
  await tx.sendOffsets({
    consumerGroupId: 'kafkajs-eos',
    topics: [{ topic, partitions: [{ partition: 0, offset: '5' }] }],
  });
  await tx.commit();
  await producer.disconnect();

  const offsets = await admin.fetchOffsets({ groupId: 'kafkajs-eos', topics: [topic] });
  const p0 = offsets[0].partitions.find((p) => p.partition === 0);
  console.log(`offset ${p0.offset}`);
  await admin.disconnect();

  const consumer = kafka.consumer({ groupId: 'kafkajs-reader', readUncommitted: false });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const counts = { c: 0, a: 0, d: 0 };
  await new Promise((resolve, reject) => {
    const deadline = setTimeout(() => resolve(), 30000);
    consumer
      .run({
        eachMessage: async ({ message }) => {
          const v = message.value.toString();
          counts[v[0]] = (counts[v[0]] || 0) + 1;
          if (counts.c + counts.d >= 600) {
            // Anything aborted would have come before the last committed record.
            clearTimeout(deadline);
            setTimeout(resolve, 1000);
          }
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  console.log(`consumed ${counts.c} ${counts.a} ${counts.d}`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
