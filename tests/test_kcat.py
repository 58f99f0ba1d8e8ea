"""kcat (librdkafka's command-line client), as an operator would use it."""
import subprocess


def kcat(*args, stdin=None):
    out = subprocess.run(["kcat", *args], input=stdin, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode()


def test_kcat_lists_the_broker_and_round_trips_records(broker):
    b = broker.bootstrap
    listing = kcat("-L", "-b", b)
    assert f"broker 0 at {b} (controller)" in listing
    lines = "".join(f"key{i}:value {i}\n" for i in range(50)).encode()
    kcat("-P", "-b", b, "-t", "kc", "-K:", "-H", "origin=kcat", stdin=lines)
    assert 'topic "kc" with 1 partitions' in kcat("-L", "-b", b, "-t", "kc")
    out = kcat("-C", "-b", b, "-t", "kc", "-e", "-q", "-f", "%k|%s|%o|%h\n")
    assert out.splitlines() == [f"key{i}|value {i}|{i}|origin=kcat" for i in range(50)]
    # Each codec kcat can produce with.
    for codec in ["gzip", "snappy", "lz4", "zstd"]:
        kcat("-P", "-b", b, "-t", f"kc-{codec}", "-z", codec, stdin=b"one\ntwo\n")
        assert kcat("-C", "-b", b, "-t", f"kc-{codec}", "-e", "-q").split() == ["one", "two"]
    # Offsets by time: every record is newer than 1000 ms since the epoch.
    assert "kc [0] offset 0" in kcat("-Q", "-b", b, "-t", "kc:0:1000")
