"""With default_permissions (on by default as root), the backing files' owners
and modes govern access through the mount, files a user creates are theirs in
the backing store, and an unprivileged user reaches nothing outside it."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import Mount, block_name

NOBODY = 65534


@pytest.fixture
def world(kvfs_bin):
    """A mount an unprivileged user can reach (pytest's own tmp is root-only)."""
    top = Path(tempfile.mkdtemp(prefix="kvfs-perm-", dir="/tmp"))
    os.chmod(top, 0o755)
    (top / "backing").mkdir()
    m = Mount(kvfs_bin, top / "backing", top / "mnt").start()
    os.chmod(m.mnt, 0o755)
    try:
        yield m
    finally:
        m.stop()
        shutil.rmtree(top)


def as_nobody(code):
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return r


def errno_as_nobody(op):
    r = as_nobody(f"""
import os, errno
try:
    {op}
    print("ok")
except OSError as e:
    print(errno.errorcode[e.errno])
""")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_modes_and_owners_govern_access(world):
    m = world.mnt
    with open(m / "mounted-as-root", "w"):
        pass
    (m / "public").write_text("public")
    (m / "secret").write_text("secret")
    os.chmod(m / "secret", 0o600)
    (m / "private").mkdir(mode=0o700)
    (m / "shared").mkdir()
    os.chmod(m / "shared", 0o777)
    blk = block_name(1)
    (m / blk).write_bytes(b"block")
    assert errno_as_nobody(f"open({str(m / 'public')!r}).read()") == "ok"
    assert errno_as_nobody(f"open({str(m / 'secret')!r}).read()") == "EACCES"
    assert errno_as_nobody(f"os.listdir({str(m / 'private')!r})") == "EACCES"
    assert errno_as_nobody(f"open({str(m / 'private' / 'x')!r}, 'w')") == "EACCES"
    assert errno_as_nobody(f"open({str(m / 'public')!r}, 'w')") == "EACCES"
    assert errno_as_nobody(f"os.unlink({str(m / blk)!r})") == "EACCES"
    assert errno_as_nobody(f"open({str(m / 'newfile')!r}, 'w')") == "EACCES"  # root's 0755 root dir
    # A file the user creates is the user's, in the backing store too.
    assert errno_as_nobody(f"open({str(m / 'shared' / 'mine.txt')!r}, 'w').write('x')") == "ok"
    assert os.stat(world.backing / "shared" / "mine.txt").st_uid == NOBODY
    assert os.stat(m / "shared" / "mine.txt").st_uid == NOBODY
    assert errno_as_nobody(f"os.mkdir({str(m / 'shared' / 'd')!r})") == "ok"
    assert os.stat(world.backing / "shared" / "d").st_uid == NOBODY
    # The control directory is readable by everyone and writable by no one.
    assert errno_as_nobody(f"open({str(m / '.kvfs' / 'stats')!r}).read()") == "ok"
    assert errno_as_nobody(f"open({str(m / '.kvfs' / 'stats')!r}, 'w')") in ("EACCES", "EROFS")
    assert (world.backing / "secret").read_text() == "secret"


def test_no_way_out_of_the_backing_directory(world):
    m = world.mnt
    outside = world.backing.parent / "outside"
    outside.mkdir()
    (outside / "data").write_text("outside")
    os.symlink(outside, world.backing / "escape")  # planted in the store
    os.symlink("/etc/passwd", world.backing / "passwd")
    # Planted links are links through the mount, which the client's kernel
    # follows in its own namespace with its own rights; the daemon reads
    # them and never follows one.
    assert os.readlink(m / "escape") == str(outside)
    assert os.readlink(m / "passwd") == "/etc/passwd"
    assert errno_as_nobody(f"os.stat({str(m / '.kvfs-state')!r})") == "ENOENT"
