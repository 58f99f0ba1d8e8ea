"""Consume-transform-produce with confluent-kafka, exactly once: reads SRC
(read_committed, group "eos-SRC"), writes b"T" + value to DST at the same partition, and
commits the consumed offsets in the same transaction. Prints "committed N" after each
transaction; exits after IDLE_S seconds without input.

    python eos_transform.py BOOTSTRAP SRC DST TRANSACTIONAL_ID IDLE_S
"""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer

bootstrap, src, dst, txn_id, idle_s = sys.argv[1:6]
consumer = Consumer({
    "bootstrap.servers": bootstrap, "group.id": f"eos-{src}",
    "auto.offset.reset": "earliest", "isolation.level": "read_committed",
    "enable.auto.commit": False, "session.timeout.ms": 6000,
})
producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 5})
producer.init_transactions(60)
consumer.subscribe([src])
last_input = time.time()
while time.time() - last_input < float(idle_s):
    msgs = consumer.consume(200, 0.5)
    if not msgs:
        continue
    last_input = time.time()
    producer.begin_transaction()
    for m in msgs:
        if m.error():
            raise KafkaException(m.error())
        producer.produce(dst, value=b"T" + m.value(), partition=m.partition())
    producer.send_offsets_to_transaction(
        consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 60)
    producer.commit_transaction(60)
    print("committed", len(msgs), flush=True)
print("done", flush=True)
