"""The data path: kernel passthrough when the kernel and privileges allow it,
the daemon path otherwise, the same bytes either way, and the mode reported in
the log, stats and metrics."""

import ctypes
import os
import subprocess
import time

import pytest

from conftest import DATA_MODE, block_data, block_name


def test_mode_reported_everywhere(kvfs, passthrough):
    stats = kvfs.stats()
    assert stats["data_mode"] == DATA_MODE[passthrough]
    assert stats["data_mode_reason"]
    metrics = (kvfs.mnt / ".kvfs" / "metrics").read_text()
    assert f'data_mode="{DATA_MODE[passthrough]}"' in metrics
    assert f"data path: {DATA_MODE[passthrough]}" in kvfs.log()


def test_reads_reach_the_daemon_only_without_passthrough(kvfs, passthrough):
    """Passthrough serves reads; writes always go through the daemon, the
    only place where a failed write can be seen (see test_writers)."""
    ns = kvfs.mnt / "ns"
    ns.mkdir()
    names = [block_name(i) for i in range(4)]
    size = 4 << 20
    for n in names:
        (ns / n).write_bytes(block_data(n, size))
    after_write = kvfs.stats()
    for n in names:
        assert (ns / n).read_bytes() == block_data(n, size)
    after_read = kvfs.stats()
    reads = after_read["read_requests"] - after_write["read_requests"]
    assert after_write["write_requests"] >= len(names) * 4  # 1 MiB requests at most
    if passthrough == "off":
        assert reads >= len(names) * 4
        assert after_read["passthrough_opens"] == 0
    else:
        assert reads == 0
        assert after_read["bytes_read"] == 0
        assert after_read["passthrough_opens"] >= len(names)
    assert after_read["bytes_written"] == len(names) * size


def test_writes_in_pieces_ask_for_capabilities_once(kvfs, passthrough):
    """Writes in pieces cost no GETXATTR round trip per write() (the kernel
    asked for security.capability before each passthrough write; writes now
    go through the daemon with direct I/O, where it does not ask)."""
    assert "nosuid" in kvfs.mount_options()
    before = kvfs.stats()["getxattr_requests"]
    names = [block_name(300 + i) for i in range(3)]
    piece = b"p" * (64 << 10)
    for n in names:
        fd = os.open(kvfs.mnt / n, os.O_CREAT | os.O_WRONLY, 0o644)
        for i in range(16):
            assert os.pwrite(fd, piece, i * len(piece)) == len(piece)
        os.close(fd)
    asked = kvfs.stats()["getxattr_requests"] - before
    assert asked <= len(names), asked
    for n in names:
        assert (kvfs.mnt / n).read_bytes() == piece * 16


def test_same_bytes_in_every_mode(mount_factory, backing):
    """One backing store written in one mode and read back in the others."""
    names = [block_name(i) for i in range(6)]
    sizes = [0, 1, 4095, 4096, 1 << 20, (3 << 20) + 123]
    m = mount_factory(backing, "w", options=["passthrough=off"])
    for n, s in zip(names[:3], sizes[:3]):
        (m.mnt / n).write_bytes(block_data(n, s))
    m2 = mount_factory(backing, "w2", options=["passthrough=auto"])
    for n, s in zip(names[3:], sizes[3:]):
        (m2.mnt / n).write_bytes(block_data(n, s))
    for mode in ["auto", "reads", "off"]:
        r = mount_factory(backing, f"r-{mode}", options=[f"passthrough={mode}"])
        for n, s in zip(names, sizes):
            assert (r.mnt / n).read_bytes() == block_data(n, s), (mode, n)


def test_reader_while_writer_still_open(kvfs):
    """The writer's close publishes; a reader can open the block before the
    writer's last descriptor is released (one backing file per inode)."""
    p = kvfs.mnt / block_name(77)
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"x" * 100000)
    fd2 = os.dup(fd)
    os.close(fd)  # publishes
    assert p.read_bytes() == b"x" * 100000
    with open(p, "rb") as f:
        assert f.read() == b"x" * 100000
    os.close(fd2)
    assert p.read_bytes() == b"x" * 100000


def test_truncating_reopen_while_readers_hold_it(kvfs):
    p = kvfs.mnt / "notes.txt"
    p.write_text("version one")
    with open(p, "rb") as reader:
        with open(p, "wb") as w:  # O_TRUNC stages a new version
            w.write(b"version two")
        assert reader.read() == b"version one"  # the old file stays whole
    assert p.read_text() == "version two"


def test_mmap_read(kvfs):
    import mmap

    p = kvfs.mnt / block_name(5)
    p.write_bytes(block_data("m", 1 << 20))
    with open(p, "rb") as f:
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
            assert mm[:] == block_data("m", 1 << 20)


def _mount_dev_fuse(mnt):
    """Mounts a FUSE connection at MNT the way a supervisor would, returning
    the /dev/fuse descriptor to hand to the daemon as /dev/fd/N."""
    fd = os.open("/dev/fuse", os.O_RDWR)
    libc = ctypes.CDLL(None, use_errno=True)
    opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions"
    if libc.mount(b"kvfs", os.fsencode(mnt), b"fuse.kvfs", 0, opts.encode()) != 0:
        e = ctypes.get_errno()
        os.close(fd)
        raise OSError(e, os.strerror(e))
    return fd


def test_automatic_fallback_without_cap_sys_admin(kvfs_bin, backing, tmp_path):
    """The daemon runs without CAP_SYS_ADMIN (a supervisor mounted for it):
    the kernel refuses passthrough, and kvfs falls back by itself, says why,
    and serves the same bytes."""
    mnt = tmp_path / "m"
    mnt.mkdir()
    fd = _mount_dev_fuse(mnt)
    log = open(tmp_path / "log", "wb")
    proc = subprocess.Popen(
        ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", kvfs_bin, "-f",
         "-o", "passthrough=auto", str(backing), f"/dev/fd/{fd}"],
        pass_fds=[fd], stdout=log, stderr=subprocess.STDOUT)
    os.close(fd)
    try:
        deadline = time.time() + 10
        while not (mnt / ".kvfs" / "stats").exists():
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "log").read_text()
            time.sleep(0.05)
        stats = dict(l.split(" ", 1) for l in (mnt / ".kvfs" / "stats").read_text().splitlines())
        assert stats["data_mode"] == "daemon-direct-io"
        assert "CAP_SYS_ADMIN" in stats["data_mode_reason"]
        n = block_name(1)
        (mnt / n).write_bytes(block_data(n, 2 << 20))
        assert (mnt / n).read_bytes() == block_data(n, 2 << 20)
        assert (backing / ".kvfs-blocks" / n[:3] / n).read_bytes() == block_data(n, 2 << 20)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert "data path: daemon-direct-io" in (tmp_path / "log").read_text()
