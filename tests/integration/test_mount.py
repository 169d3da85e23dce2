"""The kvfs command line: start-up checks, detaching, signals, mount(8)."""

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import Mount, is_mounted, unmount


def run_kvfs(kvfs_bin, *args, user=None):
    cmd = [kvfs_bin, *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def test_help_and_version(kvfs_bin):
    r = run_kvfs(kvfs_bin, "--help")
    assert r.returncode == 0 and "entry_timeout" in r.stdout and "BACKING_DIR" in r.stdout
    r = run_kvfs(kvfs_bin, "--version")
    assert r.returncode == 0 and r.stdout.startswith("kvfs ")


@pytest.mark.parametrize(
    "case,expect",
    [
        ("missing", "No such file"),
        ("file", "Not a directory"),
        ("same", "same directory"),
        ("backing_in_mnt", "inside the mountpoint"),
        ("mnt_in_backing", "inside the backing"),
        ("unknown_opt", "unknown option 'frobnicate'"),
        ("bad_value", "threads"),
        ("bad_timeout", "negative_timeout"),
        ("no_mountpoint", "missing MOUNTPOINT"),
    ],
)
def test_refused_at_start(kvfs_bin, tmp_path, case, expect):
    b = tmp_path / "b"
    m = tmp_path / "m"
    b.mkdir()
    m.mkdir()
    args = {
        "missing": [str(tmp_path / "nope"), str(m)],
        "file": [str(tmp_path / "f"), str(m)],
        "same": [str(b), str(b)],
        "backing_in_mnt": [str(m / "inner"), str(m)],
        "mnt_in_backing": [str(b), str(b / "inner")],
        "unknown_opt": ["-o", "frobnicate", str(b), str(m)],
        "bad_value": ["-o", "threads=lots", str(b), str(m)],
        "bad_timeout": ["-o", "negative_timeout=-2", str(b), str(m)],
        "no_mountpoint": [str(b)],
    }[case]
    (tmp_path / "f").write_text("x")
    (m / "inner").mkdir()
    (b / "inner").mkdir()
    r = run_kvfs(kvfs_bin, "-f", *args)
    assert r.returncode != 0
    assert expect in r.stderr, r.stderr
    assert r.stderr.startswith("kvfs: ")
    assert not is_mounted(m) and not is_mounted(b)


def test_refuses_unwritable_backing(kvfs_bin):
    top = tempfile.mkdtemp(prefix="kvfs-ro-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        b = os.path.join(top, "b")
        m = os.path.join(top, "m")
        os.mkdir(b, 0o755)
        os.mkdir(m, 0o777)
        os.chmod(m, 0o777)
        r = run_kvfs(kvfs_bin, "-f", b, m, user="65534")
        assert r.returncode != 0
        assert "not writable" in r.stderr, r.stderr
        assert not is_mounted(m)
    finally:
        shutil.rmtree(top)


def test_detaches_once_mounted_and_stops_on_sigterm(kvfs_bin, backing, tmp_path):
    m = tmp_path / "m"
    m.mkdir()
    r = run_kvfs(kvfs_bin, str(backing), str(m))
    try:
        assert r.returncode == 0, r.stderr
        # Ready as soon as the command returns.
        assert is_mounted(m)
        assert (m / ".kvfs" / "stats").read_text().startswith("version ")
        pid = int(
            subprocess.run(["pgrep", "-f", f"kvfs {backing} {m}"], capture_output=True, text=True)
            .stdout.split()[0]
        )
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 10
        while is_mounted(m) and time.time() < deadline:
            time.sleep(0.05)
        assert not is_mounted(m)
    finally:
        unmount(m)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly(kvfs_bin, backing, tmp_path, sig):
    m = Mount(kvfs_bin, backing, tmp_path / "m").start()
    try:
        (m.mnt / "a.txt").write_text("x")
        m.proc.send_signal(sig)
        # 30 s: seen above 10 s once on a heavily loaded 2-vCPU machine.
        assert m.proc.wait(timeout=30) == 0, m.log()
        assert not is_mounted(m.mnt)
        assert (backing / "a.txt").read_text() == "x"
    finally:
        m.stop()


def test_fusermount_unmount(kvfs_bin, backing, tmp_path):
    m = Mount(kvfs_bin, backing, tmp_path / "m").start()
    try:
        subprocess.run(["fusermount3", "-u", str(m.mnt)], check=True)
        assert m.proc.wait(timeout=10) == 0, m.log()
        assert not is_mounted(m.mnt)
    finally:
        m.stop()


def test_root_defaults_and_options_in_mount_table(kvfs):
    with open("/proc/self/mountinfo") as f:
        line = next(l for l in f if l.split()[4] == str(kvfs.mnt))
    assert "fuse.kvfs" in line
    assert str(kvfs.backing) in line
    assert "allow_other" in line and "default_permissions" in line


@pytest.fixture
def kvfs_on_path(kvfs_bin):
    """mount(8) runs helpers with a fixed PATH: make `kvfs` resolve to the
    binary under test for the duration of the test (as `cmake --install`
    would), unless one is installed already."""
    link = "/usr/local/bin/kvfs"
    created = False
    if not os.path.lexists(link):
        os.symlink(os.path.abspath(kvfs_bin), link)
        created = True
    elif os.path.realpath(link) != os.path.realpath(kvfs_bin):
        pytest.skip(f"{link} is another kvfs; not replacing it")
    yield
    if created:
        os.unlink(link)


def test_mount_t_fuse_kvfs(kvfs_on_path, backing, tmp_path):
    m = tmp_path / "m"
    m.mkdir()
    r = subprocess.run(
        ["mount", "-t", "fuse.kvfs", str(backing), str(m), "-o", "threads=4,nosuid,nodev,noatime"],
        capture_output=True, text=True, timeout=30,
    )
    try:
        assert r.returncode == 0, r.stderr
        assert is_mounted(m)
        (m / "x.txt").write_text("via mount(8)")
        assert (backing / "x.txt").read_text() == "via mount(8)"
    finally:
        subprocess.run(["umount", str(m)], capture_output=True)
        unmount(m)
    assert not is_mounted(m)


def test_fstab_line(kvfs_on_path, backing, tmp_path):
    m = tmp_path / "m"
    m.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{backing} {m} fuse.kvfs defaults,_netdev,nofail,negative_timeout=0.5 0 0\n")
    r = subprocess.run(["mount", "-T", str(fstab), str(m)], capture_output=True, text=True,
                       timeout=30)
    try:
        assert r.returncode == 0, r.stderr
        assert is_mounted(m)
        assert (m / ".kvfs" / "stats").exists()
    finally:
        subprocess.run(["umount", str(m)], capture_output=True)
        unmount(m)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_over_http(mount_factory, backing):
    import urllib.error
    import urllib.request

    port = _free_port()
    m = mount_factory(backing, options=[f"metrics_addr=:{port}"])
    (m.mnt / "x.txt").write_text("x")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body = r.read().decode()
        assert r.headers["Content-Type"].startswith("text/plain")
    assert "# TYPE kvfs_files_published_total counter" in body
    assert "kvfs_files_published_total 1" in body
    assert "kvfs_usage_bytes" in body and "kvfs_info{" in body
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
    assert e.value.code == 404
    # Bound to loopback only, as by default.
    with open("/proc/net/tcp") as f:
        listening = [l.split() for l in f if l.split()[3:4] == ["0A"]]
    assert any(l[1] == f"0100007F:{port:04X}" for l in listening)


def test_metrics_addr_in_use_is_refused(kvfs_bin, backing, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        m = tmp_path / "m"
        m.mkdir()
        r = run_kvfs(kvfs_bin, "-f", "-o", f"metrics_addr=127.0.0.1:{port}", str(backing), str(m))
        assert r.returncode != 0
        assert "cannot serve metrics" in r.stderr
        assert not is_mounted(m)
