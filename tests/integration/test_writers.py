"""Writers that do not finish: a file is published only when its writer
completed it (its close(), after writes that all succeeded). Killed writers,
writers that leave without closing, that unlink their own file or whose
writes fail publish nothing and free their space at once; a published block
never changes under a reader; and the POSIX behaviour kvfs's rules allow
(fstat after unlink, the client's umask, O_TRUNC replacement, errnos). Every
test runs on both data paths (the suite is run once per mode)."""

import errno
import mmap
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from conftest import block_data, block_name

# A writer process: creates PATH, writes HALF bytes of the block's content,
# reports, then does what its last argument says once told to go on.
WRITER = r"""
import os, sys, signal
sys.path.insert(0, sys.argv[4])
from conftest import block_data
path, size, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = block_data(os.path.basename(path), size)
fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
os.write(fd, data[: size // 3])
print("partial", flush=True)
sys.stdin.readline()
if how == "exit":          # leave without closing: the kernel closes for us
    os._exit(0)
if how == "segv":
    os.kill(os.getpid(), signal.SIGSEGV)
if how == "unlink":
    os.unlink(path)
    os.write(fd, data[size // 3 :])
    os.close(fd)
    print("closed", flush=True)
    sys.exit(0)
os.write(fd, data[size // 3 :])
os.close(fd)
print("closed", flush=True)
"""

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def start_writer(path, size, how):
    w = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(size), how, TESTS_DIR],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert w.stdout.readline().strip() == "partial"
    return w


def staging(kvfs):
    return os.listdir(kvfs.backing / ".kvfs-state" / "staging")


def published(kvfs, ns, name):
    return (kvfs.backing / ns / ".kvfs-blocks" / name[:3].lower() / name).exists()


def store_block(path, size):
    with open(path, "wb") as f:
        f.write(block_data(os.path.basename(str(path)), size))


def assert_whole(path, size):
    with open(path, "rb") as f:
        assert f.read() == block_data(os.path.basename(str(path)), size)


@pytest.mark.parametrize("how", ["sigkill", "segv", "exit"])
def test_writer_that_dies_publishes_nothing(kvfs, how):
    """Item 1: a writer killed after a third of a 1 MB block (SIGKILL, a
    crash) or leaving without close() publishes nothing; its space is freed
    at once and the next writer of the name publishes normally."""
    ns = kvfs.mnt / "ns"
    ns.mkdir()
    name, size = block_name(1), 1 << 20
    w = start_writer(ns / name, size, how)
    if how == "sigkill":
        w.kill()
    else:
        w.stdin.write("go\n")
        w.stdin.flush()
    w.wait(timeout=10)
    assert w.returncode != 0 or how == "exit"
    assert not os.path.exists(ns / name)
    assert not published(kvfs, "ns", name)
    assert staging(kvfs) == []  # freed before the writer's exit finished
    assert kvfs.stats()["writes_aborted"] == 1
    store_block(ns / name, size)
    assert_whole(ns / name, size)


def test_plain_file_of_a_writer_that_exits_is_published(kvfs):
    """A non-block file written by a program that exits normally without
    closing (a shell redirect) is published, as on any filesystem."""
    path = kvfs.mnt / "log.txt"
    w = start_writer(path, 3000, "exit")
    w.stdin.write("go\n")
    w.stdin.flush()
    w.wait(timeout=10)
    assert path.read_bytes() == block_data("log.txt", 3000)[:1000]
    r = subprocess.run(["sh", "-c", f"echo hello > {kvfs.mnt}/redirect.txt"])
    assert r.returncode == 0
    assert (kvfs.mnt / "redirect.txt").read_text() == "hello\n"


def test_plain_file_of_a_killed_writer_is_not_published(kvfs):
    path = kvfs.mnt / "log.txt"
    w = start_writer(path, 3000, "sigkill")
    w.kill()
    w.wait(timeout=10)
    assert not path.exists()
    assert staging(kvfs) == []


def test_unlink_of_own_unpublished_file_aborts_it(kvfs):
    """Item 2: unlink() of one's own unpublished file succeeds, and its
    close() then publishes nothing."""
    ns = kvfs.mnt / "ns"
    ns.mkdir()
    name, size = block_name(2), 1 << 20
    w = start_writer(ns / name, size, "unlink")
    w.stdin.write("go\n")
    w.stdin.flush()
    assert w.stdout.readline().strip() == "closed"
    assert w.wait(timeout=10) == 0
    assert not os.path.exists(ns / name)
    assert not published(kvfs, "ns", name)
    assert staging(kvfs) == []
    store_block(ns / name, size)
    assert_whole(ns / name, size)


def test_unlink_in_the_same_thread_then_write_again(kvfs):
    fd = os.open(kvfs.mnt / "a.txt", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"x" * 100)
    os.unlink(kvfs.mnt / "a.txt")
    assert os.write(fd, b"y" * 100) == 100  # as to an unlinked local file
    assert os.fstat(fd).st_nlink == 0
    os.close(fd)
    assert not (kvfs.mnt / "a.txt").exists()
    with pytest.raises(FileNotFoundError):
        os.unlink(kvfs.mnt / "a.txt")


@pytest.fixture
def small_store(tmpfs_factory):
    """A 32 MiB tmpfs as backing store."""
    return tmpfs_factory("32m")


def test_enospc_race_publishes_only_whole_blocks(mount_factory, small_store):
    """Item 3: two writers fill the store together; one's write fails with
    ENOSPC and Python's `with` closes the file anyway; its space is freed,
    and the other's close() must not publish a block cut short."""
    kvfs = mount_factory(small_store)
    ns = kvfs.mnt / "ns"
    ns.mkdir()
    size = 24 << 20
    names = [block_name(10), block_name(11)]
    results = {}

    def write(name):
        data = block_data(name, size)
        try:
            with open(ns / name, "wb") as f:
                for off in range(0, size, 1 << 20):
                    f.write(data[off:off + (1 << 20)])
                    f.flush()
            results[name] = "ok"
        except OSError as e:
            results[name] = e.errno

    threads = [threading.Thread(target=write, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errno.ENOSPC in results.values(), results
    for name in names:
        if results[name] == "ok":
            assert_whole(ns / name, size)
        else:
            assert not os.path.exists(ns / name)
    assert staging(kvfs) == []


def test_enospc_then_space_freed_before_close(mount_factory, small_store):
    """Item 3: a write fails with ENOSPC, an unrelated file is deleted, and
    the writer closes: nothing is published, close() reports the error."""
    kvfs = mount_factory(small_store)
    ns = kvfs.mnt / "ns"
    ns.mkdir()
    filler = kvfs.mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (20 << 20))
    name, size = block_name(12), 16 << 20
    data = block_data(name, size)
    fd = os.open(ns / name, os.O_CREAT | os.O_WRONLY, 0o644)
    failed = None
    for off in range(0, size, 1 << 20):
        try:
            os.write(fd, data[off:off + (1 << 20)])
        except OSError as e:
            failed = e.errno
            break
    assert failed == errno.ENOSPC
    # Failed for good: not even its writer sees it any more.
    assert not os.path.exists(ns / name)
    os.unlink(filler)
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.ENOSPC
    assert not os.path.exists(ns / name)
    assert staging(kvfs) == []
    store_block(ns / name, size)
    assert_whole(ns / name, size)


def test_shared_mapping_kept_past_publication_cannot_change_the_block(kvfs):
    """Item 4: writes through a MAP_SHARED mapping made before the
    publishing close() are part of the block (close() writes them back);
    writes through it after the close never reach any reader."""
    ns = kvfs.mnt / "ns"
    ns.mkdir()
    name = block_name(3)
    fd = os.open(ns / name, os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"a" * 8192)
    m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    m[0:4] = b"bbbb"
    os.close(fd)  # publishes, the mapping's pages written back first
    want = b"bbbb" + b"a" * 8188
    assert (ns / name).read_bytes() == want
    m[4:8] = b"cccc"
    with pytest.raises(OSError):
        m.flush()  # written back: refused
    for _ in range(2):
        r = subprocess.run(["cat", str(ns / name)], capture_output=True)
        assert r.stdout == want
        assert (ns / name).read_bytes() == want
        with open(ns / name, "rb") as f:
            rm = mmap.mmap(f.fileno(), 0, mmap.MAP_SHARED, mmap.PROT_READ)
            assert rm[:] == want
            rm.close()
    m.close()
    assert (ns / name).read_bytes() == want


def test_writes_through_a_kept_descriptor_after_publication_fail(kvfs):
    """A dup()ed descriptor kept past the publishing close() cannot change
    the published block."""
    ns = kvfs.mnt / "ns"
    ns.mkdir()
    name = block_name(4)
    fd = os.open(ns / name, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"a" * 4096)
    kept = os.dup(fd)
    os.close(fd)  # publishes
    assert (ns / name).read_bytes() == b"a" * 4096
    with pytest.raises(OSError) as e:
        os.pwrite(kept, b"b" * 10, 0)
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError):
        os.ftruncate(kept, 10)
    os.close(kept)
    assert (ns / name).read_bytes() == b"a" * 4096


@pytest.mark.parametrize("how", ["unlink", "replace"])
def test_fstat_and_mmap_after_the_name_went(kvfs, how):
    """Item 5: fstat() and mmap() of an open block keep working after its
    name is unlinked or replaced (nlink 0, as on ext4)."""
    ns = kvfs.mnt / "ns"
    ns.mkdir()
    name, size = block_name(5), 64 << 10
    store_block(ns / name, size)
    fd = os.open(ns / name, os.O_RDONLY)
    if how == "unlink":
        os.unlink(ns / name)
    else:
        with open(ns / name, "wb") as f:
            f.write(b"new" * 100)
    st = os.fstat(fd)
    assert st.st_size == size
    if how == "unlink":
        assert st.st_nlink == 0
    m = mmap.mmap(fd, 0, mmap.MAP_PRIVATE, mmap.PROT_READ)
    assert m[:] == block_data(name, size)
    m.close()
    os.close(fd)


def test_modes_are_the_clients(mount_factory, backing):
    """Item 6: the client's umask applies, the daemon's never."""
    old = os.umask(0o077)  # the daemon starts under a strict umask
    try:
        kvfs = mount_factory(backing)
    finally:
        os.umask(old)
    old = os.umask(0)
    try:
        os.mkdir(kvfs.mnt / "shared", 0o777)
        fd = os.open(kvfs.mnt / "shared" / "f.txt", os.O_CREAT | os.O_WRONLY, 0o666)
        os.write(fd, b"x")
        os.close(fd)
        os.umask(0o022)
        os.mkdir(kvfs.mnt / "mine", 0o777)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(kvfs.mnt / "shared").st_mode) == 0o777
    assert stat.S_IMODE(os.stat(kvfs.mnt / "shared" / "f.txt").st_mode) == 0o666
    assert stat.S_IMODE(os.stat(kvfs.mnt / "mine").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(backing / "shared").st_mode) == 0o777


def test_small_errnos_as_a_local_filesystem(kvfs):
    """Item 7."""
    ns = kvfs.mnt / "ns"
    ns.mkdir()
    name = block_name(6)
    store_block(ns / name, 4096)
    fd = os.open(ns / name, os.O_RDONLY | os.O_APPEND)
    assert len(os.read(fd, 8192)) == 4096
    os.close(fd)
    fd = os.open(kvfs.mnt / "f.txt", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"x")
    with pytest.raises(OSError) as e:
        os.ftruncate(fd, -1)
    assert e.value.errno == errno.EINVAL
    os.close(fd)
    # A symlink or FIFO planted inside a bucket is refused, not hidden.
    bucket = kvfs.backing / "ns" / ".kvfs-blocks"
    for i, plant in enumerate([lambda p: os.symlink("/etc/passwd", p), os.mkfifo]):
        n = block_name(100 + i)
        (bucket / n[:3]).mkdir(parents=True, exist_ok=True)
        plant(bucket / n[:3] / n)
        with pytest.raises(OSError) as e:
            os.stat(ns / n)
        assert e.value.errno == errno.EPERM


def test_o_trunc_replaces_a_published_block(kvfs):
    """O_TRUNC of a published block replaces it atomically at close: later
    readers get the new bytes, a reader holding the old file keeps its
    bytes, and no reader ever sees a mix."""
    ns = kvfs.mnt / "ns"
    ns.mkdir()
    name = block_name(7)
    (ns / name).write_bytes(b"old!" * 1024)
    held = open(ns / name, "rb")
    f = open(ns / name, "wb")
    f.write(b"new!" * 512)
    assert (ns / name).read_bytes() == b"old!" * 1024  # until the close
    f.close()
    assert (ns / name).read_bytes() == b"new!" * 512
    assert held.read() == b"old!" * 1024
    held.close()
    # A new block (no name when opened): the first complete copy still wins.
    other = block_name(8)
    a = open(ns / other, "wb")
    a.write(b"A" * 100)
    opened = []  # another thread: the name is not its own unpublished file
    t = threading.Thread(target=lambda: opened.append(open(ns / other, "wb")))
    t.start()
    t.join()
    opened[0].write(b"B" * 100)
    a.close()
    opened[0].close()
    assert (ns / other).read_bytes() == b"A" * 100


def test_writer_in_an_unseen_pid_namespace(mount_factory, backing, tmp_path):
    """A writer the daemon cannot see (the daemon in another pid namespace)
    is refused by default, since its death could not be told from its
    close(); unseen_writers=trust accepts it."""
    unshare = ["unshare", "--pid", "--fork", "--kill-child"]
    kvfs = mount_factory(backing, wrapper=unshare)
    with pytest.raises(PermissionError):
        (kvfs.mnt / "f.txt").write_bytes(b"x")
    assert "pid namespace" in kvfs.log()
    assert not (backing / "f.txt").exists()
    other = tmp_path / "backing2"
    other.mkdir()
    trusted = mount_factory(other, name="mnt2", options=["unseen_writers=trust"], wrapper=unshare)
    (trusted.mnt / "f.txt").write_bytes(b"x")
    assert (trusted.mnt / "f.txt").read_bytes() == b"x"


CRASHER = r"""
import os, sys, time
sys.path.insert(0, sys.argv[3])
from conftest import block_data, block_name
ns, seed = sys.argv[1], int(sys.argv[2])
names = [block_name(seed * 1000 + k) for k in range(8)]
blocks = [block_data(n, 256 << 10) for n in names]  # made before the clock starts
print("ready", flush=True)
for name, data in zip(names, blocks):
    fd = os.open(os.path.join(ns, name), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    for off in range(0, len(data), 16 << 10):
        os.write(fd, data[off:off + (16 << 10)])
        time.sleep(0.002)  # a writer that takes its time: a kill lands mid-block
    os.close(fd)
    print(name, flush=True)
"""


def test_writers_killed_at_random_under_readers(kvfs):
    """Crash consistency: writer processes are SIGKILLed at random points,
    mostly in the middle of a block, while other threads read; every block
    anyone sees is whole, and every block whose close() returned is present
    and whole."""
    ns = kvfs.mnt / "ns"
    ns.mkdir()
    size = 256 << 10
    stop = time.time() + 6
    done = threading.Event()
    acked = set()
    bad = []
    reads = [0]

    def reader():
        rng = random.Random(7)
        while not done.is_set():
            names = os.listdir(ns)
            if not names:
                continue
            name = rng.choice(names)
            try:
                with open(ns / name, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            reads[0] += 1
            if data != block_data(name, size):
                bad.append((name, len(data)))

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    seed = 0
    killed_mid_block = 0
    # 6 s, longer on a slow machine until some writers finished blocks.
    while time.time() < stop or (len(acked) < 3 and time.time() < stop + 60):
        seed += 1
        w = subprocess.Popen([sys.executable, "-c", CRASHER, str(ns), str(seed), TESTS_DIR],
                             stdout=subprocess.PIPE, text=True)
        assert w.stdout.readline().strip() == "ready"
        # Most die within their first blocks; every fourth lives to finish all.
        life = (1.0, 1.5) if seed % 4 == 0 else (0.01, 0.25)
        time.sleep(random.Random(seed).uniform(*life))
        w.kill()
        out, _ = w.communicate()
        finished = out.split()
        acked.update(finished)
        killed_mid_block += len(finished) < 8
    done.set()
    for t in readers:
        t.join()
    assert not bad, bad[:5]
    assert acked, "no writer finished a block"
    assert killed_mid_block > 0
    for name in acked:
        assert_whole(ns / name, size)
    # Nothing else is visible but whole blocks either.
    for name in os.listdir(ns):
        assert (ns / name).read_bytes() == block_data(name, size), name
    assert staging(kvfs) == []


def test_symlinks_through_the_mount(kvfs):
    """symlink() and readlink() work and are stored as links in the backing
    store; the daemon never follows one (the client's kernel does)."""
    ns = kvfs.mnt / "ns"
    ns.mkdir()
    (ns / "target.txt").write_text("t")
    os.symlink("target.txt", ns / "link")
    assert os.readlink(ns / "link") == "target.txt"
    assert stat.S_ISLNK(os.lstat(ns / "link").st_mode)
    assert (ns / "link").read_text() == "t"  # followed by the client
    assert os.readlink(kvfs.backing / "ns" / "link") == "target.txt"
    assert sorted(os.listdir(ns)) == ["link", "target.txt"]
    with pytest.raises(FileExistsError):
        os.symlink("x", ns / "link")
    # A link with a block's name, and a loop (vLLM's tests plant one).
    name = block_name(9)
    os.symlink(name + ".loop", ns / name)
    os.symlink(name, ns / (name + ".loop"))
    with pytest.raises(OSError) as e:
        open(ns / name, "rb")
    assert e.value.errno == errno.ELOOP
    assert os.path.lexists(ns / name)
    os.unlink(ns / name)
    os.unlink(ns / (name + ".loop"))
    store_block(ns / name, 1000)
    assert_whole(ns / name, 1000)
    os.rename(ns / "link", ns / "link2")
    assert os.readlink(ns / "link2") == "target.txt"
    os.unlink(ns / "link2")
    assert sorted(os.listdir(ns)) == [name, "target.txt"]
    assert sorted(os.listdir(kvfs.backing / "ns")) == [".kvfs-blocks", "target.txt"]


THREADED = r"""
import os, sys, threading
path = sys.argv[1]
fds = []
def opener():  # opens and writes part of the block, then this thread ends
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"x" * 100000)
    fds.append(fd)
t = threading.Thread(target=opener)
t.start()
t.join()
os._exit(0)  # the process leaves without closing; the opening thread is gone
"""


def test_block_of_a_process_whose_opening_thread_ended_first(kvfs):
    """The opener is recognised by its process: a process that exits
    without closing a block another of its threads opened publishes nothing."""
    path = kvfs.mnt / block_name(20)
    subprocess.run([sys.executable, "-c", THREADED, str(path)], check=True, timeout=30)
    assert not path.exists()
    assert staging(kvfs) == []


FORKER = r"""
import os, signal, sys
path, child_end = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
os.write(fd, b"a" * 50000)
pid = os.fork()
if pid == 0:  # the child holds the descriptor and ends
    if child_end == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(0)
os.waitpid(pid, 0)
os.write(fd, b"b" * 50000) if child_end == "exit" else None
try:
    os.close(fd)
    print("closed")
except OSError as e:
    print("close failed", e.errno)
"""


@pytest.mark.parametrize("child_end", ["exit", "kill"])
def test_forked_child_holding_the_descriptor(kvfs, child_end):
    """A child that inherited the descriptor and exits normally changes
    nothing: the parent's close() publishes. A child that is killed may
    have been halfway through a write: nothing is published, and the
    parent's close() says so (EIO)."""
    path = kvfs.mnt / block_name(21 if child_end == "exit" else 22)
    r = subprocess.run([sys.executable, "-c", FORKER, str(path), child_end],
                       capture_output=True, text=True, timeout=30)
    if child_end == "exit":
        assert r.stdout.strip() == "closed", r
        assert path.read_bytes() == b"a" * 50000 + b"b" * 50000
    else:
        assert r.stdout.strip() == f"close failed {errno.EIO}", r
        assert not path.exists()
    assert staging(kvfs) == []
