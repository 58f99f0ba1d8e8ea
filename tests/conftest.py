"""Starts the real `ringlog` binary on loopback for the client tests.

The binary is target/release/ringlog unless RINGLOG_BIN says otherwise; scripts/test.sh
builds it first. Each test gets its own broker, port and log directory.
"""
import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = os.environ.get("RINGLOG_BIN", str(ROOT / "target" / "release" / "ringlog"))
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, data_dir, overrides=(), env=None):
        self.data_dir = pathlib.Path(data_dir)
        self.env = env
        self.port = free_port()
        self.overrides = list(overrides)
        self.proc = None
        self.log_path = self.data_dir.parent / f"ringlog-{self.port}.log"
        self.starts = 0

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        args = [
            BIN, "serve",
            "--override", f"listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "--override", f"log.dirs={self.data_dir}",
        ]
        # The storage tests run once per write mode (see scripts/test.sh).
        if os.environ.get("RINGLOG_TEST_WRITE_MODE"):
            args += ["--override", f"ringlog.log.write.mode={os.environ['RINGLOG_TEST_WRITE_MODE']}"]
        for o in self.overrides:
            args += ["--override", o]
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"==== start #{self.starts}\n")
        log.flush()
        env = {**os.environ, **self.env} if self.env else None
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + START_TIMEOUT_S
        marker = f"==== start #{self.starts}\n"
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ringlog exited with {self.proc.returncode}:\n{self.log_tail()}")
            text = self.log_path.read_text()
            if "ringlog is serving" in text[text.rfind(marker):]:
                return
            time.sleep(0.05)
        raise RuntimeError(f"ringlog did not start within {START_TIMEOUT_S}s:\n{self.log_tail()}")

    def stop(self, sig=signal.SIGTERM):
        """Stops the broker with `sig` and returns its exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"ringlog ignored {sig!r} for {STOP_TIMEOUT_S}s:\n{self.log_tail()}")

    def restart(self, sig):
        status = self.stop(sig)
        self.start()
        return status

    def cpu_seconds(self):
        """User + system CPU time the running broker has used so far."""
        fields = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_text(self):
        return self.log_path.read_text() if self.log_path.exists() else ""

    def log_tail(self, lines=40):
        return "\n".join(self.log_text().splitlines()[-lines:])


@pytest.fixture
def broker_factory(tmp_path):
    brokers = []

    def make(overrides=(), env=None):
        b = Broker(tmp_path / f"data-{len(brokers)}", overrides, env)
        b.start()
        brokers.append(b)
        return b

    yield make
    for b in brokers:
        status = b.stop(signal.SIGTERM)
        assert status in (0, None), f"ringlog exited with {status} on SIGTERM:\n{b.log_tail()}"
        assert "panicked" not in b.log_text(), b.log_tail()


@pytest.fixture
def broker(broker_factory):
    return broker_factory()
