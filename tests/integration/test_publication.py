"""Atomic publication: a file appears, on this node and on every node sharing
the backing store, only when complete; one copy survives concurrent writers;
crashes leave nothing partial; backing-store errors reach the writer."""

import errno
import mmap
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import Mount, block_data, block_name, is_mounted, unmount

WRITER = r"""
import os, sys
path, size = sys.argv[1], int(sys.argv[2])
data = bytes.fromhex(sys.argv[3]) * (size // (len(sys.argv[3]) // 2))
fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
os.write(fd, data[: size // 2])
print("half", flush=True)
sys.stdin.readline()
os.write(fd, data[size // 2 :])
os.close(fd)
print("done", flush=True)
sys.stdin.readline()
"""


def staging_files(backing):
    return os.listdir(backing / ".kvfs-state" / "staging")


def bucket_path(backing, ns, name):
    return backing / ns / ".kvfs-blocks" / name[:3].lower() / name


def stat_from_other_process(path):
    r = subprocess.run(["stat", "-c", "%s", str(path)], capture_output=True, text=True)
    return r.returncode == 0


def test_half_written_block_is_invisible(kvfs):
    ns = kvfs.mnt / "ns"
    ns.mkdir()
    name = block_name(42)
    size = 1 << 20
    w = subprocess.Popen([sys.executable, "-c", WRITER, str(ns / name), str(size), "ab" * 8],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert w.stdout.readline().strip() == "half"
        # Not visible to other processes, nor in the backing store's final place.
        assert not os.path.exists(ns / name)
        assert not stat_from_other_process(ns / name)
        assert name not in os.listdir(ns)
        assert not bucket_path(kvfs.backing, "ns", name).exists()
        assert len(staging_files(kvfs.backing)) == 1
        w.stdin.write("\n")
        w.stdin.flush()
        assert w.stdout.readline().strip() == "done"
        # Visible at once after close(), even to a process that saw the miss.
        assert os.path.exists(ns / name)
        assert stat_from_other_process(ns / name)
        assert (ns / name).read_bytes() == bytes.fromhex("ab" * 8) * (size // 8)
        assert staging_files(kvfs.backing) == []
    finally:
        w.stdin.close()
        w.wait(timeout=10)


def test_concurrent_writers_one_copy(kvfs):
    name = block_name(7)
    size = 256 * 1024
    n = 8
    contents = [block_data(f"{name}-writer{i}", size) for i in range(n)]
    barrier = threading.Barrier(n)
    errors = []

    def writer(i):
        try:
            barrier.wait()
            with open(kvfs.mnt / name, "wb") as f:
                for off in range(0, size, 65536):
                    f.write(contents[i][off : off + 65536])
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    data = (kvfs.mnt / name).read_bytes()
    assert data in contents  # whole, and exactly one writer's
    assert bucket_path(kvfs.backing, "", name).read_bytes() == data
    assert os.listdir(kvfs.mnt) == [".kvfs", name]
    assert staging_files(kvfs.backing) == []
    # Writers that created the name (it did not exist when they opened it):
    # the first complete copy wins, the others are discarded. A writer that
    # opened it after a publication replaced it (O_TRUNC of a visible block),
    # which also leaves one writer's whole copy.
    s = kvfs.stats()
    assert s["blocks_published"] >= 1
    assert s["blocks_published"] + s["publish_conflicts"] == n


def test_readers_never_see_partial_blocks(kvfs):
    names = [block_name(i) for i in range(40)]
    size = 512 * 1024
    stop = threading.Event()
    bad = []
    reads = [0]

    def reader():
        while not stop.is_set():
            for nm in names:
                try:
                    with open(kvfs.mnt / nm, "rb") as f:
                        got = f.read()
                except FileNotFoundError:
                    continue
                reads[0] += 1
                if got != block_data(nm, size):
                    bad.append((nm, len(got)))

    rs = [threading.Thread(target=reader) for _ in range(2)]
    for r in rs:
        r.start()
    for nm in names:
        with open(kvfs.mnt / nm, "wb") as f:
            data = block_data(nm, size)
            for off in range(0, size, 32768):
                f.write(data[off : off + 32768])
    stop.set()
    for r in rs:
        r.join()
    assert bad == []
    assert reads[0] > 0


def test_two_daemons_share_one_backing_store(mount_factory, backing):
    a = mount_factory(backing, "a", options=["negative_timeout=0.5"])
    b = mount_factory(backing, "b", options=["negative_timeout=0.5"])
    (a.mnt / "ns").mkdir()
    name = block_name(11)
    assert not os.path.exists(b.mnt / "ns" / name)  # B caches the miss
    t0 = time.time()
    (a.mnt / "ns" / name).write_bytes(block_data(name, 100000))
    while not os.path.exists(b.mnt / "ns" / name):
        assert time.time() - t0 < 5, "block published on A never seen on B"
        time.sleep(0.05)
    assert (b.mnt / "ns" / name).read_bytes() == block_data(name, 100000)

    # Writers on both daemons at once: one complete copy, seen by both.
    name2 = block_name(12)
    size = 1 << 20
    contents = [block_data(f"{name2}-{i}", size) for i in range(4)]
    procs = []
    for i, m in enumerate([a, b, a, b]):
        code = (
            "import sys;d=open(sys.argv[2],'rb').read();f=open(sys.argv[1],'wb');"
            "[f.write(d[o:o+65536]) for o in range(0,len(d),65536)];f.close()"
        )
        src = backing.parent / f"content{i}"
        src.write_bytes(contents[i])
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(m.mnt / "ns" / name2),
                                       str(src)]))
    for p in procs:
        assert p.wait(timeout=60) == 0
    got_a = (a.mnt / "ns" / name2).read_bytes()
    time.sleep(0.6)
    got_b = (b.mnt / "ns" / name2).read_bytes()
    assert got_a in contents and got_b == got_a
    assert bucket_path(backing, "ns", name2).read_bytes() == got_a
    assert staging_files(backing) == []
    # As in test_concurrent_writers_one_copy: discarded or replacing.
    sa, sb = a.stats(), b.stats()
    assert sa["blocks_published"] + sb["blocks_published"] >= 2
    assert (sa["blocks_published"] + sb["blocks_published"] + sa["publish_conflicts"] +
            sb["publish_conflicts"]) == 5


def test_o_trunc_on_published_files(kvfs):
    blk = kvfs.mnt / block_name(1)
    blk.write_bytes(b"first")
    blk.write_bytes(b"second")  # O_TRUNC of a visible block replaces it
    assert blk.read_bytes() == b"second"
    f = kvfs.mnt / "notes.txt"
    f.write_text("v1")
    f.write_text("v2")  # other files: the last writer wins
    assert f.read_text() == "v2"
    assert (kvfs.backing / "notes.txt").read_text() == "v2"
    assert staging_files(kvfs.backing) == []


def test_o_excl_non_block_loses_with_eexist(kvfs):
    p = kvfs.mnt / "lock.txt"
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    p2 = subprocess.run([sys.executable, "-c", f"open({str(p)!r},'w').write('other')"])
    assert p2.returncode == 0
    os.write(fd, b"mine")
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EEXIST
    assert p.read_text() == "other"


def _o_direct_works(directory):
    """vLLM's probe: write one aligned page with O_DIRECT, then remove it."""
    path = os.path.join(directory, "odirect-probe")
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644)
    except OSError as e:
        return e.errno
    page = mmap.mmap(-1, 4096)
    try:
        os.write(fd, page)
    except OSError as e:
        os.close(fd)
        os.unlink(path)
        return e.errno
    os.close(fd)
    os.unlink(path)
    return 0


@pytest.mark.parametrize("where", ["tmp", "shm"])
def test_o_direct_matches_backing(mount_factory, tmp_path, where):
    if where == "shm":
        backing = tmp_path / "b"
        import tempfile
        backing = __import__("pathlib").Path(tempfile.mkdtemp(dir="/dev/shm"))
    else:
        backing = tmp_path / "b"
        backing.mkdir()
    try:
        m = mount_factory(backing)
        native = _o_direct_works(str(backing))
        through = _o_direct_works(str(m.mnt))
        assert through == native
        if native == 0:
            buf = mmap.mmap(-1, 1 << 20)
            buf.write(block_data("odirect", 1 << 20))
            p = m.mnt / block_name(99)
            fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644)
            assert os.write(fd, buf) == 1 << 20
            os.close(fd)
            rbuf = mmap.mmap(-1, 1 << 20)
            fd = os.open(p, os.O_RDONLY | os.O_DIRECT)
            assert os.readv(fd, [rbuf]) == 1 << 20
            os.close(fd)
            assert bytes(rbuf) == block_data("odirect", 1 << 20)
    finally:
        if where == "shm":
            m.stop()
            import shutil
            shutil.rmtree(backing)


def test_sigkill_during_writes(kvfs_bin, backing, tmp_path):
    m = Mount(kvfs_bin, backing, tmp_path / "m", ["staging_grace=1"]).start()
    ns = m.mnt / "ns"
    ns.mkdir()
    size = 1 << 20
    done = [block_name(i) for i in range(10)]
    for nm in done:
        (ns / nm).write_bytes(block_data(nm, size))
    victim = block_name(100)
    w = subprocess.Popen([sys.executable, "-c", WRITER, str(ns / victim), str(size), "cd" * 8],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert w.stdout.readline().strip() == "half"
        m.kill(signal.SIGKILL)
    finally:
        w.kill()
        w.wait()
        unmount(m.mnt)
        m.stop()
    assert not is_mounted(m.mnt)
    # Nothing partial in any final place; the half block is staging debris.
    assert not bucket_path(backing, "ns", victim).exists()
    for nm in done:
        assert bucket_path(backing, "ns", nm).read_bytes() == block_data(nm, size)
    assert len(staging_files(backing)) == 1
    time.sleep(1.2)
    m2 = Mount(kvfs_bin, backing, tmp_path / "m", ["staging_grace=1"]).start()
    try:
        deadline = time.time() + 5
        while staging_files(backing) and time.time() < deadline:
            time.sleep(0.05)
        assert staging_files(backing) == []
        assert m2.stats()["staging_collected"] == 1
        assert sorted(os.listdir(m2.mnt / "ns")) == sorted(done)
        for nm in done:
            assert (m2.mnt / "ns" / nm).read_bytes() == block_data(nm, size)
    finally:
        m2.stop()


def test_staging_of_active_writers_survives_restart(kvfs_bin, backing, tmp_path):
    """Another node's in-flight write is younger than the grace period and is
    left alone by a daemon starting up."""
    a = Mount(kvfs_bin, backing, tmp_path / "a").start()
    name = block_name(5)
    w = subprocess.Popen([sys.executable, "-c", WRITER, str(a.mnt / name), str(1 << 16), "ee"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert w.stdout.readline().strip() == "half"
        b = Mount(kvfs_bin, backing, tmp_path / "b").start()
        time.sleep(0.3)
        assert len(staging_files(backing)) == 1
        assert b.stats()["staging_collected"] == 0
        w.stdin.write("\n")
        w.stdin.flush()
        assert w.stdout.readline().strip() == "done"
        assert (b.mnt / name).read_bytes() == b"\xee" * (1 << 16)
        b.stop()
    finally:
        w.stdin.close()
        w.wait()
        a.stop()


@pytest.fixture
def small_tmpfs(tmpfs_factory):
    return tmpfs_factory("4m")


def test_backing_store_full(mount_factory, small_tmpfs):
    m = mount_factory(small_tmpfs)
    name = block_name(1)
    with pytest.raises(OSError) as e:
        with open(m.mnt / name, "wb") as f:
            f.write(block_data(name, 8 << 20))
    assert e.value.errno == errno.ENOSPC
    assert not os.path.exists(m.mnt / name)
    assert not bucket_path(small_tmpfs, "", name).exists()
    assert staging_files(small_tmpfs) == []
    # The space is reclaimed and the daemon goes on serving.
    assert os.statvfs(m.mnt).f_bfree * os.statvfs(m.mnt).f_frsize > 3 << 20
    small = block_name(2)
    (m.mnt / small).write_bytes(b"fits")
    assert (m.mnt / small).read_bytes() == b"fits"
    assert m.stats()["errors"] >= 1


def test_durable_option(mount_factory, backing):
    m = mount_factory(backing, options=["durable"])
    name = block_name(3)
    (m.mnt / name).write_bytes(block_data(name, 65536))
    assert bucket_path(backing, "", name).read_bytes() == block_data(name, 65536)


def test_writer_sees_and_renames_its_file_before_close(kvfs):
    """The llm-d fs backend renames its temp file while its stream is still
    open. The writing process sees its own unpublished file and may rename it;
    the file is published under the new name at close, and no other process
    sees either name before that."""
    d = kvfs.mnt / "ns"
    d.mkdir()
    name = block_name(21)
    data = block_data(name, 1 << 20)
    tmp = d / (name + "_4242.tmp")
    f = open(tmp, "wb", buffering=0)
    try:
        f.write(data[: len(data) // 2])
        assert os.path.exists(tmp)  # this process sees its own file
        assert os.stat(tmp).st_size == len(data) // 2
        assert not stat_from_other_process(tmp)
        other = subprocess.run([sys.executable, "-c",
                                f"import os; os.rename({str(tmp)!r}, {str(d / 'x')!r})"],
                               capture_output=True, text=True)
        assert other.returncode != 0 and "FileNotFoundError" in other.stderr
        f.write(data[len(data) // 2:])
        os.rename(tmp, d / name)  # stream still open
        assert not os.path.exists(tmp)
        assert os.path.exists(d / name)
        assert not stat_from_other_process(d / name)
        assert os.listdir(d) == []
        assert not bucket_path(kvfs.backing, "ns", name).exists()
    finally:
        f.close()
    assert stat_from_other_process(d / name)
    assert (d / name).read_bytes() == data
    assert bucket_path(kvfs.backing, "ns", name).read_bytes() == data
    assert os.listdir(d) == [name]
    assert staging_files(kvfs.backing) == []
