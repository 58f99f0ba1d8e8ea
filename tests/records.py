"""Deterministic record contents, so a consumer can check every byte without keeping
what was produced in memory."""

PARTITIONS = 8
VALUE_SIZE = 100


_PATTERN = bytes(k % 251 for k in range(512))
_TAIL = VALUE_SIZE - 13


def value(i):
    """The 100-byte value of record number i: its number, then a slice of a byte
    pattern that starts at a place depending on i (cheap to make and to check)."""
    start = (i * 7) % 251
    return b"%012d|" % i + _PATTERN[start:start + _TAIL]


class PerPartitionOrder:
    """Checks that partition p receives records p, p+8, p+16, ... in order, byte-exact,
    at contiguous offsets from 0."""

    def __init__(self, total, partitions=PARTITIONS):
        self.total = total
        self.partitions = partitions
        self.next_index = list(range(partitions))
        self.next_offset = [0] * partitions
        self.seen = 0

    def expected_count(self, p):
        return len(range(p, self.total, self.partitions))

    def check(self, partition, offset, payload):
        i = self.next_index[partition]
        assert i < self.total, f"partition {partition}: unexpected extra record at offset {offset}"
        assert offset == self.next_offset[partition], (
            f"partition {partition}: offset {offset}, expected {self.next_offset[partition]}")
        assert payload == value(i), f"partition {partition} offset {offset}: wrong bytes (record {i})"
        self.next_index[partition] += self.partitions
        self.next_offset[partition] += 1
        self.seen += 1

    def complete(self):
        return self.seen == self.total

    def assert_complete(self):
        for p in range(self.partitions):
            assert self.next_offset[p] == self.expected_count(p), (
                f"partition {p}: got {self.next_offset[p]} records, expected {self.expected_count(p)}")
        assert self.seen == self.total
