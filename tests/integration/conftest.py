"""Fixtures for integration tests on a real kvfs mount.

Every mount made here is unmounted in teardown, whatever the test did: the
daemon is asked to stop with fusermount3 -u, then lazily detached and killed if
it does not go away. Tests run as root with /dev/fuse (as CI does)."""

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--kvfs-bin", default=None, help="path to the kvfs daemon")
    parser.addoption("--kvfs-passthrough", default="auto", choices=["auto", "reads", "off"],
                     help="data path every mount uses unless a test sets its own")
    parser.addoption("--kvfs-faults", action="store_true",
                     help="the daemon was built with -DKVFS_FAULT_INJECTION=ON")


DATA_MODE = {"auto": "passthrough", "reads": "passthrough", "off": "daemon-direct-io"}


@pytest.fixture(scope="session")
def passthrough(request):
    """The -o passthrough= policy this run tests."""
    return request.config.getoption("--kvfs-passthrough")


@pytest.fixture(scope="session", autouse=True)
def _data_mode(passthrough):
    Mount.default_passthrough = passthrough


@pytest.fixture(scope="session")
def kvfs_bin(request):
    path = request.config.getoption("--kvfs-bin") or os.environ.get("KVFS_BIN")
    if not path:
        path = str(Path(__file__).resolve().parents[2] / "build" / "bin" / "kvfs")
    assert os.access(path, os.X_OK), f"kvfs binary not found at {path}"
    return path


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == path:
                return True
    return False


def abort_connection(path):
    """Aborts the FUSE connection of the mount at PATH, as an operator does
    with `echo 1 > /sys/fs/fuse/connections/N/abort`: every request waiting
    for the daemon fails. A daemon SIGKILLed while one of its threads waits
    in the kernel to invalidate an entry (for the directory lock a client
    holds while it waits for that very daemon) cannot exit until then."""
    path = os.path.realpath(path)
    minor = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == path:
                minor = fields[2].split(":")[1]
    if minor is None:
        return
    ctl = Path("/sys/fs/fuse/connections")
    if not (ctl / minor).exists():
        _run_quiet(["mount", "-t", "fusectl", "fusectl", str(ctl)])
    try:
        (ctl / minor / "abort").write_text("1")
    except OSError:
        pass


def _run_quiet(cmd):
    try:
        return subprocess.run(cmd, capture_output=True).returncode
    except FileNotFoundError:  # e.g. no fusermount3 where libfuse is not installed
        return 127


def unmount(path):
    """Unmounts PATH; returns True if it had to be forced."""
    if not is_mounted(path):
        return False
    path = str(path)
    if _run_quiet(["fusermount3", "-u", path]) == 0 or _run_quiet(["umount", path]) == 0:
        return False
    if _run_quiet(["fusermount3", "-uz", path]) != 0:
        _run_quiet(["umount", "-l", path])
    return True


class Mount:
    """One running kvfs daemon (foreground, -f) and its mountpoint."""

    default_passthrough = "auto"

    def __init__(self, kvfs_bin, backing, mnt, options=(), log=None, env=None, wrapper=()):
        self.kvfs_bin = kvfs_bin
        self.backing = Path(backing)
        self.mnt = Path(mnt)
        self.options = list(options) + ["spin_us=50", "spin_write_us=5000"]
        if not any(o.startswith("passthrough=") for o in self.options):
            self.options.append(f"passthrough={Mount.default_passthrough}")
        self.log_path = Path(log) if log else self.mnt.parent / (self.mnt.name + ".log")
        self.env = env  # extra environment variables for the daemon
        self.wrapper = list(wrapper)  # a command the daemon runs under (e.g. unshare)
        self.proc = None

    def start(self, timeout=10.0):
        self.mnt.mkdir(parents=True, exist_ok=True)
        cmd = self.wrapper + [self.kvfs_bin, "-f"]
        if self.options:
            cmd += ["-o", ",".join(self.options)]
        cmd += [str(self.backing), str(self.mnt)]
        self.logf = open(self.log_path, "ab")
        env = dict(os.environ, **self.env) if self.env else None
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kvfs exited with {self.proc.returncode}: {self.log()}")
            if is_mounted(self.mnt) and (self.mnt / ".kvfs" / "stats").exists():
                return self
            time.sleep(0.02)
        raise RuntimeError(f"kvfs did not mount within {timeout}s: {self.log()}")

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def mount_options(self):
        """The mount's options as /proc/self/mounts lists them."""
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if fields[1] == str(self.mnt):
                return fields[3].split(",")
        raise AssertionError(f"{self.mnt} is not mounted")

    def stats(self):
        out = {}
        for line in (self.mnt / ".kvfs" / "stats").read_text().splitlines():
            key, _, value = line.partition(" ")
            out[key] = int(value) if value.isdigit() else value
        return out

    def takeover(self, options=None, env=None, timeout=30.0):
        """Starts a successor with --takeover; on success it becomes this
        mount's daemon. Returns (returncode of the successor if it failed or
        0, the predecessor's exit status or None if it still runs)."""
        opts = self.options if options is None else list(options)
        cmd = [self.kvfs_bin, "-f", "--takeover"]
        if opts:
            cmd += ["-o", ",".join(opts)]
        cmd += [str(self.backing), str(self.mnt)]
        full_env = dict(os.environ, **env) if env else None
        old = self.proc
        new = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=full_env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if new.poll() is not None:
                return new.returncode, old.poll()
            if old.poll() is not None:
                self.proc = new
                return 0, old.returncode
            time.sleep(0.005)
        new.kill()
        new.wait()
        raise RuntimeError(f"takeover did not finish within {timeout}s: {self.log()}")

    def freeze(self, timeout=10.0):
        """SIGSTOPs the daemon and returns once every one of its threads is
        stopped: the signal is asynchronous, and a request answered in the
        meantime would make a test of a hung daemon see an answer."""
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.time() + timeout
        tasks = Path(f"/proc/{self.proc.pid}/task")
        while time.time() < deadline:
            states = []
            for t in tasks.iterdir():
                try:
                    states.append((t / "stat").read_text().rsplit(")", 1)[1].split()[0])
                except OSError:
                    pass  # a thread that just exited
            if states and all(st in ("T", "t") for st in states):
                return
            time.sleep(0.005)
        raise RuntimeError("the daemon did not stop")

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            abort_connection(self.mnt)  # see there
            self.proc.wait(timeout=10)

    def stop(self):
        forced = False
        if self.proc and self.proc.poll() is None:
            forced = unmount(self.mnt)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
                forced = True
        else:
            forced = unmount(self.mnt)
        if getattr(self, "logf", None):
            self.logf.close()
            self.logf = None
        return forced


@pytest.fixture
def backing(tmp_path):
    d = tmp_path / "backing"
    d.mkdir()
    return d


@pytest.fixture
def mount_factory(kvfs_bin, tmp_path, tmpfs_factory):  # tmpfs outlives the mounts over it
    """Returns start(backing, name="mnt", options=()) -> Mount; all are stopped
    at teardown, and a daemon that crashed by itself fails the test."""
    mounts = []

    def start(backing_dir, name="mnt", options=(), **kw):
        m = Mount(kvfs_bin, backing_dir, tmp_path / name, options, **kw)
        mounts.append(m)
        return m.start()

    yield start
    for m in mounts:
        m.stop()
    for m in mounts:
        assert not is_mounted(m.mnt), f"{m.mnt} still mounted"
    check_sanitizer_reports(mounts)


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def check_sanitizer_reports(mounts):
    """A daemon built with sanitizers (-DKVFS_SANITIZE=ON) prints its reports
    to its log; any report fails the test that ran it."""
    for m in mounts:
        log = m.log()
        for mark in SANITIZER_MARKS:
            if mark in log:
                pytest.fail(f"sanitizer report from the kvfs daemon of {m.mnt}:\n{log[-4000:]}")


@pytest.fixture
def tmpfs_factory(tmp_path):
    """Returns make(size) -> a fresh tmpfs of SIZE (mount's syntax, e.g.
    "4m") below tmp_path; all are unmounted at teardown, after the kvfs
    mounts over them (mount_factory depends on this fixture, and fixtures
    are torn down in reverse order)."""
    made = []

    def make(size):
        d = tmp_path / f"tmpfs{len(made)}"
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                       check=True)
        made.append(d)
        return d

    yield make
    for d in made:
        subprocess.run(["umount", "-l", str(d)], check=True)


@pytest.fixture
def kvfs(mount_factory, backing):
    """A kvfs mount over a fresh backing directory."""
    return mount_factory(backing)


def block_name(i, ext=".bin"):
    """A 32-hex-digit block name, spread over the fan-out buckets like real hashes."""
    return hashlib.sha256(str(i).encode()).hexdigest()[:32] + ext


def block_data(name, size):
    """Content derived from the name and the position in the file, so that a
    torn, shifted or wrong read is detectable."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += f"{name}:{i:012d}|".encode()
        i += 1
    return bytes(out[:size])
