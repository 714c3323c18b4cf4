"""The durable InfluxDB spool: chunks kept oldest first, sized, read once, shared by several workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streams.spool import Spool

ROOT = Path(__file__).resolve().parents[2]


def test_append_keeps_each_chunk_as_its_own_file_oldest_first(tmp_path):
    spool = Spool(tmp_path / "a" / "spool", max_bytes=1 << 20)  # parents are made
    bodies = [f"reading,sensor_id=s{i} value={i} {1_764_000_000_000 + i}".encode() for i in range(50)]
    for body in bodies:
        spool.append(body)
    segments = spool.segments()
    assert len(segments) == 50 and all(p.suffix == ".lp" for p in segments)
    assert [Spool.read(p) for p in segments] == bodies  # append order, whatever the clock's resolution
    assert not list(spool.directory.glob(".*.tmp"))  # renamed into place, nothing half-written left


def test_size_full_read_and_done(tmp_path):
    spool = Spool(tmp_path, max_bytes=100)
    assert spool.segments() == [] and spool.size() == 0 and not spool.full() and not spool.holding()
    (spool.directory / ".half-written.tmp").write_bytes(b"z")  # not a chunk yet
    assert not spool.holding()
    spool.append(b"x" * 60)
    assert spool.holding()
    assert spool.size() == 60 and not spool.full()
    spool.append(b"y" * 40)
    assert spool.size() == 100 and spool.full()  # at the limit counts as full
    first, second = spool.segments()
    assert Spool.read(first) == b"x" * 60
    Spool.done(first)
    assert spool.segments() == [second] and spool.size() == 40 and not spool.full()
    Spool.done(first)  # twice: nothing to do, no error
    assert Spool.read(first) is None
    Spool.done(second)
    assert spool.segments() == [] and spool.size() == 0 and not spool.holding()


def test_an_empty_chunk_is_kept_and_read_back_as_empty_not_gone(tmp_path):
    spool = Spool(tmp_path, max_bytes=10)
    spool.append(b"")
    (segment,) = spool.segments()
    assert Spool.read(segment) == b""  # empty bytes, not None ("already sent")


def test_a_half_written_chunk_is_not_a_segment(tmp_path):
    """A worker killed inside `append` leaves only its `.tmp`: never sent, never counted."""
    spool = Spool(tmp_path, max_bytes=10)
    (tmp_path / ".00000000000000000001-99-00000000.tmp").write_bytes(b"half a li")
    assert spool.segments() == [] and spool.size() == 0 and not spool.full()
    spool.append(b"whole")
    assert [Spool.read(p) for p in spool.segments()] == [b"whole"]


def test_a_new_spool_object_finds_what_an_earlier_one_left(tmp_path):
    """A restarted worker: the chunks survive the object (and the process) that wrote them."""
    Spool(tmp_path, max_bytes=1 << 20).append(b"before the restart")
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert [Spool.read(p) for p in again.segments()] == [b"before the restart"]


def test_two_spools_on_one_directory_see_one_queue_in_time_order(tmp_path):
    a, b = Spool(tmp_path, max_bytes=1 << 20), Spool(tmp_path, max_bytes=1 << 20)
    order = []
    for i in range(20):
        who = a if i % 3 else b
        body = f"{'a' if who is a else 'b'}{i}".encode()
        who.append(body)
        order.append(body)
    assert a.segments() == b.segments()
    assert [Spool.read(p) for p in a.segments()] == order
    assert a.size() == b.size() == sum(map(len, order))


def test_another_worker_process_appends_to_the_same_directory(tmp_path):
    """Names carry the pid: two processes never write over each other's chunks, and the queue stays in time order."""
    mine = Spool(tmp_path, max_bytes=1 << 20)
    mine.append(b"mine-1")
    code = (
        "import sys; from pathlib import Path; from streams.spool import Spool; "
        "s = Spool(Path(sys.argv[1]), 1 << 20); [s.append(b'other-%d' % i) for i in range(5)]"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, check=True, timeout=60)
    mine.append(b"mine-2")
    got = [Spool.read(p) for p in mine.segments()]
    assert got == [b"mine-1", *(b"other-%d" % i for i in range(5)), b"mine-2"]
    assert len({p.name.split("-")[1] for p in mine.segments()}) == 2  # two writers' pids


def test_a_segment_another_worker_sent_between_listing_and_reading(tmp_path):
    a, b = Spool(tmp_path, max_bytes=1 << 20), Spool(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        a.append(b"chunk %d" % i)
    listed = a.segments()
    # the other worker drains the oldest one while we hold our listing
    assert Spool.read(b.segments()[0]) == b"chunk 0"
    Spool.done(b.segments()[0])
    assert Spool.read(listed[0]) is None  # gone: skip it, do not send it again
    Spool.done(listed[0])  # nor fail on it
    assert [Spool.read(p) for p in listed[1:]] == [b"chunk 1", b"chunk 2"]
    assert a.size() == b.size() == len(b"chunk 1") + len(b"chunk 2")


def test_size_tolerates_a_segment_removed_while_it_counts(tmp_path, monkeypatch):
    spool = Spool(tmp_path, max_bytes=10)
    spool.append(b"12345")
    spool.append(b"678")
    listed = spool.segments()
    Spool.done(listed[0])  # removed after `segments()` listed it, before `stat()`
    monkeypatch.setattr(spool, "segments", lambda: listed)
    assert spool.size() == 3 and not spool.full()


def test_full_spool_on_a_shared_directory_counts_every_workers_chunks(tmp_path):
    a, b = Spool(tmp_path, max_bytes=10), Spool(tmp_path, max_bytes=10)
    a.append(b"123456")
    assert not a.full() and not b.full()
    b.append(b"7890")
    assert a.full() and b.full()  # the limit is the directory's, whoever wrote
    Spool.done(a.segments()[0])
    assert not a.full() and b.size() == 4
