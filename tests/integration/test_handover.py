"""Replacing the daemon of a live mount (kvfs --takeover): the mount stays,
open files and cached names stay valid, processes using it see no error, and
a takeover that cannot happen leaves the running daemon serving."""

import errno
import os
import subprocess
import threading
import time

import pytest

from conftest import block_data, block_name, is_mounted

SIZE = 256 * 1024


def sock_opt(tmp_path):
    return f"handover_socket={tmp_path / 'handover.sock'}"


def staging(backing):
    return os.listdir(backing / ".kvfs-state" / "staging")


class Load:
    """Readers and writers of blocks that check every byte and record every
    error; they run until stopped."""

    def __init__(self, ns, stored, threads=4):
        self.ns, self.stored = ns, stored
        self.errors, self.reads, self.writes = [], 0, 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(t,)) for t in range(threads)]

    def run(self, t):
        i = 0
        while not self.stop.is_set():
            try:
                if t % 2:
                    name = block_name(f"load-{t}-{i}")
                    with open(self.ns / name, "wb") as f:
                        f.write(block_data(name, SIZE))
                    with self.lock:
                        self.stored.append(name)
                        self.writes += 1
                else:
                    with self.lock:
                        name = self.stored[i % len(self.stored)]
                    with open(self.ns / name, "rb") as f:
                        got = f.read()
                    if got != block_data(name, SIZE):
                        raise AssertionError(f"wrong content in {name}")
                    with self.lock:
                        self.reads += 1
                    os.listdir(self.ns)
            except Exception as e:  # every error counts, ENOTCONN above all
                self.errors.append(repr(e))
            i += 1

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


# With spin_us, one reader is polling for the next request instead of
# sleeping in read(); the pause must stop it just the same.
@pytest.mark.parametrize("spin", [0, 200])
def test_takeover_under_load_keeps_open_files_and_loses_nothing(mount_factory, backing, tmp_path,
                                                                 spin):
    m = mount_factory(backing, options=[sock_opt(tmp_path), f"spin_us={spin}", f"spin_write_us={spin * 10}"])
    ns = m.mnt / "model" / "rank0"
    ns.mkdir(parents=True)
    stored = []
    for i in range(8):
        name = block_name(f"pre-{i}")
        (ns / name).write_bytes(block_data(name, SIZE))
        stored.append(name)
    before = m.stats()

    # Held across the takeovers: a reader halfway through a block, a writer
    # halfway through an unpublished one, a directory stream halfway through
    # a listing, and a process whose working directory is in the mount.
    reader = open(ns / stored[0], "rb")
    first_half = reader.read(SIZE // 2)
    wname = block_name("held-writer")
    wdata = block_data(wname, SIZE)
    writer = open(ns / wname, "wb")
    writer.write(wdata[: SIZE // 2])
    writer.flush()
    dirstream = os.scandir(ns)
    seen = [next(dirstream).name for _ in range(3)]
    shell = subprocess.Popen(["sh", "-c", "read x; ls -a; cat ../rank0/" + stored[1] + " | wc -c"],
                             cwd=ns, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    olds = []
    with Load(ns, stored) as load:
        time.sleep(0.5)
        for k in range(3):
            # The last successor runs with other options: a restart to change them.
            opts = m.options + (["capacity=1G", "log_level=debug"] if k == 2 else [])
            rc, old = m.takeover(opts)
            assert rc == 0, m.log()[-3000:]
            olds.append(old)
            time.sleep(0.5)
    assert load.errors == [], load.errors[:5]
    assert load.reads > 0 and load.writes > 0
    assert olds == [0, 0, 0], "each predecessor exits cleanly once it has handed over"
    assert m.log().count("handover: took over") == 3
    assert is_mounted(m.mnt)

    # The held files go on as if nothing happened.
    assert reader.read() == block_data(stored[0], SIZE)[SIZE // 2:]
    assert first_half == block_data(stored[0], SIZE)[: SIZE // 2]
    reader.close()
    # An unfinished block stays invisible to everyone but its writer.
    assert subprocess.run(["test", "-e", str(ns / wname)]).returncode == 1
    assert not list(backing.rglob(wname))
    writer.write(wdata[SIZE // 2:])
    writer.close()
    assert (ns / wname).read_bytes() == wdata
    rest = [e.name for e in dirstream]
    dirstream.close()
    assert set(stored[:8]) <= set(seen + rest)
    out, _ = shell.communicate("go\n", timeout=30)
    assert shell.returncode == 0
    assert stored[2] in out and out.split()[-1] == str(SIZE)

    # Every block is there with its content; counters carried over; the new
    # options are in force.
    for name in stored + [wname]:
        assert (ns / name).read_bytes() == block_data(name, SIZE), name
    after = m.stats()
    assert after["blocks_published"] >= before["blocks_published"] + load.writes + 1
    assert after["capacity_bytes"] == 1 << 30
    m.stop()
    assert not is_mounted(m.mnt)
    assert staging(backing) == []
    assert not (tmp_path / "handover.sock").exists()


def test_refused_takeover_leaves_the_daemon_serving(mount_factory, backing, tmp_path):
    m = mount_factory(backing, options=[sock_opt(tmp_path)])
    name = block_name("kept")
    (m.mnt / name).write_bytes(block_data(name, 4096))
    other = tmp_path / "other-backing"
    other.mkdir()
    cmd = [m.kvfs_bin, "--takeover", "-o", sock_opt(tmp_path), str(other), str(m.mnt)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "refused" in r.stderr and str(backing) in r.stderr, r.stderr
    assert m.proc.poll() is None
    assert (m.mnt / name).read_bytes() == block_data(name, 4096)
    name2 = block_name("after")
    (m.mnt / name2).write_bytes(b"x" * 100)
    assert (m.mnt / name2).read_bytes() == b"x" * 100


def test_takeover_without_a_daemon_fails_clearly(kvfs_bin, backing, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([kvfs_bin, "--takeover", "-o", sock_opt(tmp_path), str(backing), str(mnt)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "no daemon to take over" in r.stderr, r.stderr
    assert not is_mounted(mnt)


def test_only_root_or_the_daemons_user_may_take_over(mount_factory, backing, tmp_path):
    m = mount_factory(backing, options=[sock_opt(tmp_path)])
    os.chmod(tmp_path, 0o755)
    sock = tmp_path / "handover.sock"
    assert (os.stat(sock).st_mode & 0o777) == 0o600
    nobody = 65534
    r = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
                        m.kvfs_bin, "--takeover", "-o", sock_opt(tmp_path), str(backing),
                        str(m.mnt)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert m.proc.poll() is None and is_mounted(m.mnt)
    assert os.listdir(m.mnt) is not None


def test_handover_socket_none_refuses_takeover(mount_factory, backing, tmp_path):
    m = mount_factory(backing, options=["handover_socket=none"])
    r = subprocess.run([m.kvfs_bin, "--takeover", "-o", sock_opt(tmp_path), str(backing),
                        str(m.mnt)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert m.proc.poll() is None
    assert "a successor can take over" not in m.log()


def test_default_socket_is_derived_from_the_mountpoint(mount_factory, backing):
    """As root with no option: /run/kvfs/handover-HASH.sock, found again by a
    plain `kvfs --takeover BACKING MOUNTPOINT`."""
    m = mount_factory(backing)
    assert "/run/kvfs/handover-" in m.log()
    rc, old = m.takeover()
    assert (rc, old) == (0, 0), m.log()[-2000:]
    assert os.listdir(m.mnt) is not None
