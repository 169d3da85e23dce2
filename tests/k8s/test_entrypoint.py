"""k8s/entrypoint.sh against a real kvfs daemon: it mounts and serves, its
probe tells a serving mount from a missing, stale or hung one, `stop`
unmounts (lazily when busy), `run` clears the stale mount a killed daemon
leaves behind, and a second `run` (the surge pod of an upgrade) takes a live
daemon's mount over while the old pod leaves it alone. Every mount is
detached in teardown."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import block_data, block_name, is_mounted

ENTRYPOINT = Path(__file__).resolve().parents[2] / "k8s" / "entrypoint.sh"


class Node:
    """The container's view: a backing directory, a mount point, the entrypoint."""

    def __init__(self, tmp_path, kvfs_bin, passthrough):
        self.backing = tmp_path / "backing"
        self.mnt = tmp_path / "mnt"
        self.backing.mkdir()
        opts = f"passthrough={passthrough}"
        self.env = dict(os.environ, KVFS_BACKING=str(self.backing), KVFS_MOUNT=str(self.mnt),
                        KVFS_OPTIONS=opts, KVFS_BIN=kvfs_bin, KVFS_PROBE_TIMEOUT="2",
                        KVFS_STATE=str(tmp_path / "handed-over"))
        self.procs = []
        self.log = tmp_path / "entrypoint.log"

    def sh(self, *args, timeout=30, **env):
        return subprocess.run(["sh", str(ENTRYPOINT), *args], env=dict(self.env, **env),
                              capture_output=True, text=True, timeout=timeout)

    def start(self, **env):
        logf = open(self.log, "a")
        p = subprocess.Popen(["sh", str(ENTRYPOINT), "run"], env=dict(self.env, **env),
                             stdout=logf, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def wait_ready(self, p, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert p.poll() is None, f"entrypoint exited: {self.log.read_text()}"
            if self.sh("probe").returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError("mount never became ready")

    @staticmethod
    def daemon_pid(p, timeout=10):
        """The kvfs daemon the entrypoint process P runs as its child."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
            except OSError:
                kids = []
            if kids:
                return int(kids[0])
            time.sleep(0.05)
        raise AssertionError("the entrypoint runs no daemon")

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        assert not is_mounted(self.mnt)


@pytest.fixture
def node(tmp_path, kvfs_bin, passthrough):
    n = Node(tmp_path, kvfs_bin, passthrough)
    yield n
    n.cleanup()


def put(mnt, i):
    n = block_name(i)
    (mnt / "ns").mkdir(exist_ok=True)
    (mnt / "ns" / n).write_bytes(block_data(n, 65536))
    return n


def test_run_probe_stop(node):
    assert node.sh("probe").returncode != 0, "probe passed with nothing mounted"
    p = node.start()
    node.wait_ready(p)
    n = put(node.mnt, 1)
    assert (node.mnt / "ns" / n).read_bytes() == block_data(n, 65536)
    r = node.sh("stop")
    assert r.returncode == 0, r.stderr
    assert p.wait(timeout=10) == 0, "the daemon did not exit cleanly after the unmount"
    assert not is_mounted(node.mnt)
    assert node.sh("probe").returncode != 0
    assert node.sh("stop").returncode == 0, "stop with nothing mounted must succeed"


def test_stop_detaches_a_busy_mount(node):
    p = node.start()
    node.wait_ready(p)
    n = put(node.mnt, 2)
    with open(node.mnt / "ns" / n, "rb") as held:  # a vLLM pod still reading
        r = node.sh("stop")
        assert r.returncode == 0, r.stderr
        assert "busy" in r.stderr
        assert not is_mounted(node.mnt)
        assert held.read(16) == block_data(n, 65536)[:16]
    assert p.wait(timeout=10) == 0


def test_run_clears_the_stale_mount_of_a_killed_daemon(node):
    p = node.start()
    node.wait_ready(p)
    n = put(node.mnt, 3)
    os.kill(node.daemon_pid(p), signal.SIGKILL)
    assert p.wait(timeout=10) != 0
    assert is_mounted(node.mnt), "expected a stale mount"
    with pytest.raises(OSError):
        os.stat(node.mnt / "ns")
    assert node.sh("probe").returncode != 0
    p2 = node.start()
    node.wait_ready(p2)
    assert "detaching a stale kvfs mount" in node.log.read_text()
    assert (node.mnt / "ns" / n).read_bytes() == block_data(n, 65536)
    assert node.sh("stop").returncode == 0
    assert p2.wait(timeout=10) == 0


def test_probe_fails_on_a_hung_daemon_instead_of_hanging(node):
    p = node.start()
    node.wait_ready(p)
    daemon = node.daemon_pid(p)
    os.kill(daemon, signal.SIGSTOP)
    try:
        t0 = time.time()
        r = node.sh("probe", timeout=20)
        assert r.returncode != 0
        assert time.time() - t0 < 10
    finally:
        os.kill(daemon, signal.SIGCONT)


def test_upgrade_takes_the_live_mount_over_and_the_old_pod_leaves_it(node, tmp_path):
    old = node.start()
    node.wait_ready(old)
    n = put(node.mnt, 5)
    held = open(node.mnt / "ns" / n, "rb")  # a vLLM pod reading through the upgrade
    first = held.read(100)
    new_state = str(tmp_path / "handed-over-new")
    new = node.start(KVFS_STATE=new_state)  # the surge pod
    deadline = time.time() + 20
    while "waiting for this pod to be stopped" not in node.log.read_text():
        assert time.time() < deadline, node.log.read_text()
        assert new.poll() is None, node.log.read_text()
        time.sleep(0.05)
    assert "taking it over" in node.log.read_text()
    assert old.poll() is None, "the old container must stay up until its pod is deleted"
    # The DaemonSet deletes the old pod: preStop, then SIGTERM.
    r = node.sh("stop")
    assert r.returncode == 0 and "leaving it mounted" in r.stderr, r.stderr
    old.send_signal(signal.SIGTERM)
    assert old.wait(timeout=10) == 0
    assert is_mounted(node.mnt) and node.sh("probe").returncode == 0
    assert first + held.read() == block_data(n, 65536)
    held.close()
    n2 = put(node.mnt, 6)
    assert (node.mnt / "ns" / n2).read_bytes() == block_data(n2, 65536)
    # The new pod is the one that unmounts.
    r = node.sh("stop", KVFS_STATE=new_state)
    assert r.returncode == 0, r.stderr
    assert new.wait(timeout=10) == 0
    assert not is_mounted(node.mnt)


def test_bad_configuration_fails_with_a_message(node, tmp_path):
    r = node.sh("run", KVFS_BACKING=str(tmp_path / "missing"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = node.sh("run", KVFS_OPTIONS="capacity=lots")
    assert r.returncode != 0 and "capacity" in r.stderr
    assert not is_mounted(node.mnt)
    r = node.sh("restart")
    assert r.returncode == 2 and "usage" in r.stderr


def test_the_shipped_options_are_accepted(node, kvfs_bin):
    """kvfs.env's options, as the DaemonSet passes them (another port)."""
    line = next(l for l in (ENTRYPOINT.parent / "kvfs.env").read_text().splitlines()
                if l.startswith("KVFS_OPTIONS="))
    opts = line.split("=", 1)[1].replace("0.0.0.0:9464", "127.0.0.1:19464")
    p = node.start(KVFS_OPTIONS=opts)
    node.wait_ready(p)
    stats = (node.mnt / ".kvfs" / "stats").read_text()
    assert "capacity_bytes 0\n" not in stats, "capacity=90% was not applied"
    assert node.sh("stop").returncode == 0
    assert p.wait(timeout=10) == 0
