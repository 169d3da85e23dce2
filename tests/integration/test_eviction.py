"""Capacity and eviction: usage brought under the low watermark by removing the
least recently accessed blocks, open blocks never removed, ENOSPC when no room
can be made, one evicting node at a time through the lease (and a takeover when
it dies), readers racing eviction getting whole blocks or ENOENT."""

import errno
import os
import threading
import time

import pytest

from conftest import block_data, block_name

MB = 1 << 20
CAP = ["capacity=8M", "evict_high=90", "evict_low=50", "atime_interval=0"]


def put(mnt, i, size=MB, ns="ns"):
    n = block_name(i)
    (mnt / ns).mkdir(exist_ok=True)
    (mnt / ns / n).write_bytes(block_data(n, size))
    return n


def wait_for(cond, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def blocks_in(backing, ns="ns"):
    out = set()
    root = backing / ns / ".kvfs-blocks"
    if root.exists():
        for b in root.iterdir():
            out.update(p.name for p in b.iterdir())
    return out


def test_usage_falls_under_low_watermark_and_recent_blocks_survive(mount_factory, backing):
    m = mount_factory(backing, options=CAP)
    old = [put(m.mnt, i) for i in range(6)]  # 6 of 8 MiB: under the 90% mark
    time.sleep(1.1)  # access times have one-second resolution
    for n in old[:2]:  # read two of them: they become more recent than the rest
        assert (m.mnt / "ns" / n).read_bytes() == block_data(n, MB)
    time.sleep(1.1)
    new = [put(m.mnt, i) for i in range(6, 8)]  # 8 MiB: over the mark
    assert wait_for(lambda: m.stats()["blocks_evicted"] >= 4 and m.stats()["usage_bytes"] <= 4 * MB)
    left = blocks_in(backing)
    assert left == set(old[:2]) | set(new), "the four unread old blocks go, the rest stay"
    for n in left:  # what is left is whole
        assert (m.mnt / "ns" / n).read_bytes() == block_data(n, MB)
    for n in old[2:]:
        assert not os.path.exists(m.mnt / "ns" / n)
    s = m.stats()
    assert s["eviction_runs"] >= 1 and s["bytes_evicted"] == s["blocks_evicted"] * MB
    assert s["capacity_bytes"] == 8 * MB and s["evict_low_pct"] == 50
    assert s["usage_bytes"] == 4 * MB


def test_open_blocks_are_never_evicted(mount_factory, backing):
    m = mount_factory(backing, options=CAP)
    first = put(m.mnt, 0)
    with open(m.mnt / "ns" / first, "rb") as held:
        time.sleep(1.1)
        for i in range(1, 12):
            put(m.mnt, i)
        assert wait_for(lambda: m.stats()["blocks_evicted"] >= 4)
        assert first in blocks_in(backing)  # the oldest, but open here
        assert held.read() == block_data(first, MB)


def test_enospc_when_no_room_can_be_made(mount_factory, backing):
    m = mount_factory(backing, options=["capacity=3M", "evict_high=90", "evict_low=70"])
    a = put(m.mnt, 0, 2 * MB)
    with open(m.mnt / "ns" / a, "rb"):  # the only block is open: nothing can go
        b = block_name(1)
        with pytest.raises(OSError) as e:
            with open(m.mnt / "ns" / b, "wb") as f:
                f.write(block_data(b, 2 * MB))
        assert e.value.errno == errno.ENOSPC
        assert not os.path.exists(m.mnt / "ns" / b)
        assert b not in blocks_in(backing)
    assert os.listdir(backing / ".kvfs-state" / "staging") == []
    # Once the block is closed, eviction can make room and the write succeeds.
    (m.mnt / "ns" / b).write_bytes(block_data(b, 2 * MB))
    assert wait_for(lambda: b in blocks_in(backing))


def test_blocks_present_at_start_are_indexed(mount_factory, backing):
    m = mount_factory(backing, "plain")
    for i in range(10):
        put(m.mnt, i)
    m.stop()
    c = mount_factory(backing, "capped", options=CAP)
    assert wait_for(lambda: c.stats()["scans"] >= 1 and c.stats()["usage_bytes"] <= 4 * MB)
    assert len(blocks_in(backing)) == 4


def _fake_lease(backing, holder, expires_ms):
    state = backing / ".kvfs-state"
    (state / "lease.tmp").write_text(f"holder {holder}\nexpires {expires_ms}\n")
    os.replace(state / "lease.tmp", state / "evict.lease")


def test_lease_one_evictor_at_a_time_and_takeover(mount_factory, backing):
    """Another node holding a live lease keeps this one from evicting; once that
    lease expires (its holder died), this node takes it over and evicts."""
    m = mount_factory(backing, options=CAP + ["evict_lease_ttl=2"])
    _fake_lease(backing, "othernode.4242", int(time.time() * 1000) + 600000)
    for i in range(8):
        put(m.mnt, i)
    time.sleep(3)
    s = m.stats()
    assert s["blocks_evicted"] == 0 and s["usage_bytes"] == 8 * MB
    assert s["lease_holder"] == "othernode.4242"
    # The other node dies: its lease is left to expire.
    _fake_lease(backing, "othernode.4242", int(time.time() * 1000) - 1)
    assert wait_for(lambda: m.stats()["blocks_evicted"] >= 4, timeout=20)
    assert m.stats()["usage_bytes"] <= 4 * MB
    # Done evicting, it gives the lease up for whichever node needs it next.
    assert wait_for(lambda: m.stats()["lease_holder"] == "none")
    assert not (backing / ".kvfs-state" / "evict.lease").exists()


def test_two_daemons_one_evicts(mount_factory, backing):
    a = mount_factory(backing, "a", options=CAP)
    b = mount_factory(backing, "b", options=CAP)
    for i in range(8):
        put(a.mnt, i)
    assert wait_for(lambda: a.stats()["blocks_evicted"] >= 4)
    time.sleep(2)
    assert b.stats()["blocks_evicted"] == 0  # no second pass over the same usage
    assert len(blocks_in(backing)) == 4
    assert a.stats()["eviction_runs"] >= 1


def test_readers_racing_eviction_get_whole_blocks_or_enoent(mount_factory, backing):
    m = mount_factory(backing, options=CAP)
    names = [block_name(i) for i in range(40)]
    stop = threading.Event()
    bad, reads, misses = [], [0], [0]

    def reader():
        k = 0
        while not stop.is_set():
            n = names[k % len(names)]
            k += 7
            try:
                got = (m.mnt / "ns" / n).read_bytes()
            except FileNotFoundError:
                misses[0] += 1
                continue
            reads[0] += 1
            if got != block_data(n, 512 * 1024):
                bad.append((n, len(got)))

    (m.mnt / "ns").mkdir()
    ts = [threading.Thread(target=reader) for _ in range(2)]
    for t in ts:
        t.start()
    for round_ in range(3):
        for n in names:
            p = m.mnt / "ns" / n
            if not os.path.exists(p):
                try:
                    p.write_bytes(block_data(n, 512 * 1024))
                except FileExistsError:
                    pass
        time.sleep(0.5)
    stop.set()
    for t in ts:
        t.join()
    assert bad == []
    assert reads[0] > 0 and m.stats()["blocks_evicted"] > 0
