"""libkvfs (through its Python binding) on a real kvfs mount and on a plain
directory: round trips, the error of each kind of bad file, a hung backing
store failing the job instead of hanging it, and two engines racing."""

import errno
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "client" / "python"))
import kvfs as kv  # noqa: E402

from conftest import block_name  # noqa: E402

LAYOUT = kv.Layout(4, 16, 2, 32, "bf16", 2)  # 4 layers, 2 GPU blocks per file: 32 KiB
HEADER = kv.HEADER_SIZE


@pytest.fixture(scope="module", autouse=True)
def _libs():
    os.environ.setdefault("KVFS_LIB_DIR", str(Path(__file__).resolve().parents[2] / "build" / "lib"))


def payload(name, size=LAYOUT.payload_bytes):
    seed = name.encode() * (size // len(name) + 1)
    return bytearray(seed[:size])


def round_trip(root, names, **kw):
    with kv.Engine(root, LAYOUT, io_threads=3, **kw) as e:
        bufs = [payload(n) for n in names]
        j = e.store(names, bufs)
        assert j.wait(30) and j.results() == [0] * len(names), j.failed()
        out = [bytearray(LAYOUT.payload_bytes) for _ in names]
        j = e.load(names, out)
        assert j.wait(30) and j.results() == [0] * len(names), j.failed()
        assert out == bufs
        assert e.exists(names + ["ns/" + block_name(999)]) == [True] * len(names) + [False]
        j = e.store(names[:2], bufs[:2])  # stored already
        assert j.wait(30) and j.results() == [kv.EXISTED] * 2
        return e.writes_direct


def test_round_trip_through_kvfs(kvfs):
    names = [f"model_x/r0/{block_name(i)}" for i in range(24)]
    assert round_trip(kvfs.mnt, names) is True  # writes final names; kvfs publishes
    for n in names:
        b = Path(n).name
        f = kvfs.backing / "model_x" / "r0" / ".kvfs-blocks" / b[:3] / b
        assert f.stat().st_size == HEADER + LAYOUT.payload_bytes
    assert kvfs.stats()["blocks_published"] == len(names)
    assert os.listdir(kvfs.backing / ".kvfs-state" / "staging") == []


def test_round_trip_on_plain_directory(tmp_path):
    names = [f"ns/{block_name(i)}" for i in range(10)]
    assert round_trip(tmp_path, names) is False  # temp name + link
    assert sorted(os.listdir(tmp_path / "ns")) == sorted(Path(n).name for n in names)


def _bucket(backing, name):
    return backing / "ns" / ".kvfs-blocks" / name[:3] / name


def test_each_bad_file_has_its_own_error(kvfs):
    names = [f"ns/{block_name(i)}" for i in range(4)]
    with kv.Engine(kvfs.mnt, LAYOUT) as e:
        j = e.store(names, [payload(n) for n in names])
        assert j.wait(30) and j.results() == [0] * 4
    # Damage the published files behind kvfs's back, in the backing store.
    b = [Path(n).name for n in names]
    p = _bucket(kvfs.backing, b[0])
    data = bytearray(p.read_bytes())
    data[HEADER + 100] ^= 0xFF
    p.write_bytes(data)  # a flipped byte
    os.truncate(_bucket(kvfs.backing, b[1]), HEADER + 10)  # a truncated file
    other = kv.Layout(4, 16, 4, 16, "bf16", 2)  # same size, different layout
    with kv.Engine(kvfs.mnt, LAYOUT) as e:
        sentinel = [bytearray(b"\x5a" * LAYOUT.payload_bytes) for _ in range(3)]
        j = e.load([names[0], names[1], "ns/" + block_name(77)], sentinel)
        assert j.wait(30)
        assert j.results() == [kv.E_CORRUPT, kv.E_SHORT, -errno.ENOENT]
        assert all(s == b"\x5a" * LAYOUT.payload_bytes for s in sentinel)  # untouched
        assert [f[2] for f in j.failed()][0] == "block payload does not match its checksum"
    with kv.Engine(kvfs.mnt, other) as e:
        j = e.load([names[2]], [bytearray(other.payload_bytes)])
        assert j.wait(30) and j.results() == [kv.E_LAYOUT]


def test_hung_backing_store_fails_the_job(kvfs):
    names = [f"ns/{block_name(i)}" for i in range(3)]
    with kv.Engine(kvfs.mnt, LAYOUT, io_threads=2, timeout=0.5) as e:
        j = e.store(names, [payload(n) for n in names])
        assert j.wait(30) and j.results() == [0] * 3
        # Freeze the daemon: every request on the mount now hangs.
        kvfs.freeze()
        try:
            t0 = time.time()
            out = [bytearray(LAYOUT.payload_bytes) for _ in range(3)]
            lj = e.load([f"ns/{block_name(i)}" for i in range(10, 13)], out)
            assert lj.wait(10)
            assert lj.results() == [-errno.ETIMEDOUT] * 3
            assert e.exists(["ns/" + block_name(50)]) == [-errno.ETIMEDOUT]
            assert time.time() - t0 < 5
            assert e.stats()["timeouts"] >= 4
        finally:
            kvfs.proc.send_signal(signal.SIGCONT)
        lj.free()
    # Once the store answers again, the mount works as before.
    assert os.path.exists(kvfs.mnt / "ns" / Path(names[0]).name)


def test_two_engines_race_for_the_same_blocks(mount_factory, backing):
    a = mount_factory(backing, "a")
    b = mount_factory(backing, "b")
    names = [f"ns/{block_name(i)}" for i in range(30)]
    results = {}

    def run(tag, root):
        with kv.Engine(root, LAYOUT, io_threads=2) as e:
            j = e.store(names, [payload(n) for n in names])
            assert j.wait(60)
            results[tag] = j.results()

    ts = [threading.Thread(target=run, args=(t, m.mnt)) for t, m in (("a", a), ("b", b))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i in range(len(names)):
        assert sorted([results["a"][i], results["b"][i]]) in ([0, kv.EXISTED], [0, 0]), i
    with kv.Engine(b.mnt, LAYOUT) as e:
        out = [bytearray(LAYOUT.payload_bytes) for _ in names]
        j = e.load(names, out)
        assert j.wait(60) and j.results() == [0] * len(names)
        assert out == [payload(n) for n in names]
