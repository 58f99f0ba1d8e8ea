"""Several real `ringlog` processes on loopback, in combined mode (broker and
controller): one controller quorum, one cluster. Each node gets its own client and
controller port, log directory and one CPU (of those the machine has)."""
import os
import re
import signal
import time

from confluent_kafka.admin import AdminClient

from conftest import Broker, free_port

# Short sessions, so that a killed broker is fenced within the tests' patience.
SESSION_MS = 3000
HEARTBEAT_MS = 500


class Cluster:
    def __init__(self, root, n, overrides=(), racks=None):
        self.ports = [free_port() for _ in range(n)]
        self.controller_ports = [free_port() for _ in range(n)]
        voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in enumerate(self.controller_ports))
        cpus = os.cpu_count() or 1
        root.mkdir(parents=True, exist_ok=True)
        self.nodes = []
        for i in range(n):
            b = Broker(root / f"node-{i}", [
                f"node.id={i}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.ports[i]},"
                f"CONTROLLER://127.0.0.1:{self.controller_ports[i]}",
                f"controller.quorum.voters={voters}",
                f"ringlog.cpus={i % cpus}",
                f"broker.session.timeout.ms={SESSION_MS}",
                f"broker.heartbeat.interval.ms={HEARTBEAT_MS}",
                *([f"broker.rack={racks[i]}"] if racks else []),
                *overrides,
            ])
            b.port = self.ports[i]
            b.log_path = root / f"node-{i}.log"
            self.nodes.append(b)

    def start(self):
        for b in self.nodes:
            b.start()
        self.wait_for_brokers(set(range(len(self.nodes))))

    def bootstrap(self, i):
        return self.nodes[i].bootstrap

    def running(self):
        return [i for i, b in enumerate(self.nodes) if b.proc and b.proc.poll() is None]

    def metadata(self, i, timeout=10):
        return AdminClient({"bootstrap.servers": self.bootstrap(i)}).list_topics(timeout=timeout)

    def wait_for_brokers(self, expected, timeout=60):
        """Until every running node lists exactly `expected` brokers and a controller."""
        def agreed():
            for i in self.running():
                md = self.metadata(i)
                if set(md.brokers) != expected or md.controller_id < 0:
                    return False
            return True
        wait_until(f"brokers {sorted(expected)} on every node", agreed, timeout)

    def active_controller(self):
        """The running node that last took the lead of the quorum (highest term), from
        the nodes' logs. (Metadata names the broker answering, as Kafka's brokers do.)"""
        best = (-1, None)
        for i in self.running():
            for m in re.finditer(r"this node leads the metadata quorum term=(\d+)",
                                 self.nodes[i].log_text()):
                best = max(best, (int(m.group(1)), i))
        return best[1]

    def kill(self, i, sig=signal.SIGKILL):
        return self.nodes[i].stop(sig)

    def stop(self):
        """Stops every node with SIGTERM; asserts each stopped cleanly, without a panic."""
        for b in self.nodes:
            if b.proc and b.proc.poll() is None:
                b.proc.send_signal(signal.SIGCONT)  # a test that failed mid-SIGSTOP
            status = b.stop(signal.SIGTERM)
            assert status in (0, None, -9), f"ringlog exited with {status}:\n{b.log_tail()}"
            assert "panicked" not in b.log_text(), b.log_tail()


def wait_until(what, check, timeout=60, every=0.2):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception as e:  # a node going away mid-check: look again
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


def partition_view(md, topic):
    """{partition: (leader, replicas, isr, error name or None)} of one Metadata answer."""
    return {
        p.id: (p.leader, list(p.replicas), list(p.isrs), p.error.name() if p.error else None)
        for p in md.topics[topic].partitions.values()
    }
