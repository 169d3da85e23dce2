"""Every bad input gets a clear errno, is logged at debug level, and leaves
the backing store unchanged."""

import ctypes
import errno
import os
import stat
import subprocess
import time

import pytest

from conftest import block_name


def errno_of(fn, *args):
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0


def backing_snapshot(backing):
    out = {}
    for root, dirs, files in os.walk(backing):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, backing)] = fh.read()
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), backing) + "/"] = None
    return out


@pytest.fixture
def dbg(mount_factory, backing):
    return mount_factory(backing, options=["log_level=debug"])


def test_name_too_long(dbg):
    long = "x" * 256
    before = backing_snapshot(dbg.backing)
    assert errno_of(open, dbg.mnt / long, "wb") == errno.ENAMETOOLONG
    assert errno_of(os.mkdir, dbg.mnt / long) == errno.ENAMETOOLONG
    assert errno_of(os.stat, dbg.mnt / long) == errno.ENAMETOOLONG
    assert backing_snapshot(dbg.backing) == before
    ok = "y" * 255
    (dbg.mnt / ok).write_text("fits")
    assert (dbg.mnt / ok).read_text() == "fits"


def test_reserved_names(dbg):
    before = backing_snapshot(dbg.backing)
    assert errno_of(os.mkdir, dbg.mnt / ".kvfs-x") == errno.EPERM
    assert errno_of(open, dbg.mnt / ".kvfs-state", "wb") == errno.EPERM
    assert errno_of(os.stat, dbg.mnt / ".kvfs-state") == errno.ENOENT
    (dbg.mnt / "ns").mkdir()
    (dbg.mnt / "ns" / block_name(1)).write_bytes(b"b")
    assert errno_of(os.stat, dbg.mnt / "ns" / ".kvfs-blocks") == errno.ENOENT
    assert errno_of(os.listdir, dbg.mnt / "ns" / ".kvfs-blocks") == errno.ENOENT
    assert errno_of(open, dbg.mnt / "ns" / ".kvfs-blocks", "wb") == errno.EPERM
    assert errno_of(os.unlink, dbg.mnt / "ns" / ".kvfs-blocks") == errno.ENOENT
    assert os.listdir(dbg.mnt / "ns") == [block_name(1)]
    after = backing_snapshot(dbg.backing)
    assert {k: v for k, v in after.items() if k in before} == before
    assert "reserved" in dbg.log()


def test_planted_symlinks_do_not_escape(dbg, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    ns = dbg.backing / "ns"
    ns.mkdir()
    os.symlink(outside / "secret", ns / "evil")
    os.symlink(outside, ns / "evildir")
    os.symlink(outside, ns / ".kvfs-blocks")  # the fan-out dir itself replaced by a link
    m = dbg.mnt / "ns"
    # Links in a directory are links through the mount: the client's kernel
    # follows them, in the client's namespace with the client's rights, as
    # on any filesystem. The daemon never follows one.
    assert sorted(os.listdir(m)) == ["evil", "evildir"]
    assert stat.S_ISLNK(os.lstat(m / "evil").st_mode)
    assert os.readlink(m / "evil") == str(outside / "secret")
    assert os.readlink(m / "evildir") == str(outside)
    # The fan-out directory replaced by a link is not followed.
    name = block_name(3)
    assert errno_of(os.stat, m / name) == errno.EPERM
    # Storing a block there fails at close() and writes nothing outside.
    with pytest.raises(OSError) as e:
        with open(m / name, "wb") as f:
            f.write(b"payload")
    assert e.value.errno == errno.EPERM
    assert sorted(os.listdir(outside)) == ["secret"]
    assert os.listdir(dbg.backing / ".kvfs-state" / "staging") == []
    assert "refusing" in dbg.log()


def test_control_directory_is_read_only(dbg):
    ctl = dbg.mnt / ".kvfs"
    assert errno_of(open, ctl / "stats", "wb") == errno.EROFS
    assert errno_of(open, ctl / "stats", "ab") == errno.EROFS
    assert errno_of(open, ctl / "new", "wb") == errno.EROFS
    assert errno_of(os.mkdir, ctl / "d") == errno.EROFS
    assert errno_of(os.unlink, ctl / "stats") == errno.EROFS
    assert errno_of(os.rmdir, ctl) == errno.EROFS
    assert errno_of(os.rename, ctl / "stats", ctl / "x") == errno.EROFS
    assert errno_of(os.rename, ctl, dbg.mnt / "elsewhere") == errno.EROFS
    assert errno_of(os.chmod, ctl / "stats", 0o666) == errno.EROFS
    assert errno_of(os.setxattr, ctl / "stats", "user.x", b"1") == errno.EROFS
    assert errno_of(os.mkdir, dbg.mnt / ".kvfs") == errno.EEXIST
    assert (ctl / "stats").read_text().startswith("version")


def test_published_files_are_immutable(dbg):
    p = dbg.mnt / block_name(4)
    p.write_bytes(b"published")
    f = dbg.mnt / "file.txt"
    f.write_text("published")
    before = backing_snapshot(dbg.backing)
    for path in (p, f):
        assert errno_of(os.open, path, os.O_WRONLY) == errno.EPERM
        assert errno_of(os.open, path, os.O_RDWR) == errno.EPERM
        assert errno_of(os.open, path, os.O_WRONLY | os.O_APPEND) == errno.EPERM
        assert errno_of(os.truncate, path, 0) == errno.EPERM
        assert errno_of(os.truncate, path, 3) == errno.EPERM
    assert backing_snapshot(dbg.backing) == before
    assert p.read_bytes() == b"published"
    assert "immutable" in dbg.log()


def test_writes_after_publishing_close(dbg):
    p = dbg.mnt / block_name(8)
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    fd2 = os.dup(fd)
    os.write(fd, b"part one")
    os.close(fd)  # the writer's close publishes
    assert p.read_bytes() == b"part one"
    # Writes go through the daemon on every data path: refused.
    assert errno_of(os.write, fd2, b"more") == errno.EPERM
    os.close(fd2)
    assert p.read_bytes() == b"part one"


@pytest.mark.parametrize("name", ["notes.txt", block_name(9)])
def test_utime_after_publishing_close_is_not_a_write(dbg, name):
    """A utime() or chmod() after the publishing close() is no write: the file
    stays published when its last descriptor closes. Regression: it was
    withdrawn whenever the asynchronous RELEASE came after the utime(), as in
    cp -p or touch."""
    p = dbg.mnt / name
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"data")
    fd2 = os.dup(fd)  # holds the file open past the publishing close
    os.close(fd)
    os.utime(p, (1000000000, 1000000000))
    os.chmod(p, 0o600)
    os.close(fd2)
    time.sleep(0.2)  # RELEASE is asynchronous
    assert p.read_bytes() == b"data"
    st = os.stat(p)
    assert st.st_mtime == 1000000000 and st.st_mode & 0o777 == 0o600
    assert "written after it was published" not in dbg.log()
    assert dbg.stats()["publish_errors"] == 0


def test_links_and_special_files_refused(dbg):
    (dbg.mnt / "t.txt").write_text("t")
    before = backing_snapshot(dbg.backing)
    assert errno_of(os.link, dbg.mnt / "t.txt", dbg.mnt / "h") == errno.EPERM
    assert errno_of(os.mkfifo, dbg.mnt / "fifo") == errno.EPERM
    assert errno_of(os.mknod, dbg.mnt / "node") == errno.EPERM
    assert backing_snapshot(dbg.backing) == before


def _renameat2(a, b, flags):
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), flags)
    return 0 if rc == 0 else ctypes.get_errno()


def test_rename_flags(dbg):
    (dbg.mnt / "a.txt").write_text("a")
    (dbg.mnt / "b.txt").write_text("b")
    assert _renameat2(dbg.mnt / "a.txt", dbg.mnt / "b.txt", 2) == errno.EINVAL  # EXCHANGE
    assert _renameat2(dbg.mnt / "a.txt", dbg.mnt / "b.txt", 1) == errno.EEXIST  # NOREPLACE
    assert (dbg.mnt / "a.txt").read_text() == "a" and (dbg.mnt / "b.txt").read_text() == "b"
    assert _renameat2(dbg.mnt / "a.txt", dbg.mnt / "c.txt", 1) == 0
    assert (dbg.mnt / "c.txt").read_text() == "a" and not (dbg.mnt / "a.txt").exists()
