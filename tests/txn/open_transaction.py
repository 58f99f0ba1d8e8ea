"""Begins a transaction with confluent-kafka, sends N records to TOPIC (round robin over
its partitions), flushes them, prints "open" and waits to be killed.

    python open_transaction.py BOOTSTRAP TOPIC TRANSACTIONAL_ID N TIMEOUT_MS
"""
import sys
import time

from confluent_kafka import Producer

bootstrap, topic, txn_id, n, timeout_ms = sys.argv[1:6]
p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 5,
              "transaction.timeout.ms": int(timeout_ms)})
p.init_transactions(60)
p.begin_transaction()
for i in range(int(n)):
    p.produce(topic, value=b"open-%d" % i)
p.flush(60)
print("open", flush=True)
time.sleep(600)
