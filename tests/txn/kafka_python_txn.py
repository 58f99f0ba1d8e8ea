"""kafka-python's own transaction code against ringlog: commits 500 records ("c"),
aborts 300 ("a"), commits 100 ("d") with group "kp-eos"'s offset 5 for partition 0
(send_offsets_to_transaction); then a kafka-python read_committed consumer reads the
topic from the start. Prints "consumed C A D" and "offset O".

    python kafka_python_txn.py BOOTSTRAP TOPIC
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

bootstrap, topic = sys.argv[1:3]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(topic, 2, 1)])
p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="kp-txn")
p.init_transactions()


def send(prefix, n):
    for i in range(n):
        p.send(topic, value=f"{prefix}{i}".encode(), partition=i % 2)


p.begin_transaction()
send("c", 500)
p.commit_transaction()
p.begin_transaction()
send("a", 300)
p.flush()
p.abort_transaction()
p.begin_transaction()
send("d", 100)
p.send_offsets_to_transaction({TopicPartition(topic, 0): OffsetAndMetadata(5, "", -1)}, "kp-eos")
p.commit_transaction()
p.close()

offsets = admin.list_group_offsets({"kp-eos": None})["kp-eos"]
print("offset", offsets[TopicPartition(topic, 0)].offset, flush=True)

c = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                  auto_offset_reset="earliest", enable_auto_commit=False)
c.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
counts = {"c": 0, "a": 0, "d": 0}
deadline = time.time() + 30
quiet = 0
while time.time() < deadline and quiet < 4:
    batch = c.poll(timeout_ms=500)
    if not batch:
        quiet += counts["c"] + counts["d"] >= 600
        continue
    quiet = 0
    for records in batch.values():
        for r in records:
            counts[r.value.decode()[0]] += 1
c.close()
print("consumed", counts["c"], counts["a"], counts["d"], flush=True)
