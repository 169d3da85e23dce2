"""kvfsctl on a real mount and on its backing directory: output, --json, and
one-line errors with a non-zero exit."""

import json
import os
import subprocess
import time

import pytest

from conftest import block_data, block_name


@pytest.fixture
def ctl(kvfs_bin):
    exe = os.path.join(os.path.dirname(os.path.abspath(kvfs_bin)), "kvfsctl")

    def run(*args, cwd=None):
        return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                              timeout=60)

    return run


def fill(m, ns="model/r0", n=5, size=100000):
    d = m.mnt / ns
    d.mkdir(parents=True, exist_ok=True)
    names = [block_name(i) for i in range(n)]
    for x in names:
        (d / x).write_bytes(block_data(x, size))
    (d / "config.json").write_text("{}")
    return names


def test_ls_stat_du_stats(ctl, mount_factory, backing):
    m = mount_factory(backing, options=["capacity=64M"])
    names = fill(m)
    for where in (m.mnt / "model/r0", backing / "model/r0"):
        r = ctl("--json", "ls", where)
        assert r.returncode == 0, r.stderr
        listed = {e["name"]: e for e in json.loads(r.stdout)}
        assert set(listed) == set(names) | {"config.json"}
        assert all(listed[n]["block"] and listed[n]["size"] == 100000 for n in names)
        assert not listed["config.json"]["block"]
    r = ctl("ls", m.mnt / "model/r0")
    assert r.returncode == 0 and names[0] in r.stdout and "100000" in r.stdout
    # stat: by path on the mount, by bare hash in the current directory.
    r = ctl("--json", "stat", m.mnt / "model/r0" / names[0])
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["block"] and info["size"] == 100000
    assert info["stored"] == str(backing / "model/r0/.kvfs-blocks" / names[0][:3] / names[0])
    r = ctl("stat", names[1], cwd=m.mnt / "model/r0")
    assert r.returncode == 0 and "stored" in r.stdout and names[1] in r.stdout
    os.setxattr(m.mnt / "model/r0" / names[2], "user.model", b"llama")
    r = ctl("--json", "stat", backing / "model/r0/.kvfs-blocks" / names[2][:3] / names[2])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["xattrs"] == {"user.model": "llama"}
    fill(m, "other", 2, 5000)
    r = ctl("--json", "du", m.mnt)
    du = json.loads(r.stdout)
    assert du["total_blocks"] == 7 and du["total_bytes"] == 5 * 100000 + 2 * 5000
    assert {d["path"]: d["blocks"] for d in du["directories"]} == {"model/r0": 5, "other": 2}
    r = ctl("du", backing)
    assert r.returncode == 0 and "total" in r.stdout
    r = ctl("--json", "stats", m.mnt)
    stats = json.loads(r.stdout)
    assert stats["blocks_published"] == 7 and stats["capacity_bytes"] == 64 << 20
    assert ctl("stats", m.mnt).stdout.startswith("version ")


def test_evict_and_gc(ctl, mount_factory, backing):
    m = mount_factory(backing, options=["capacity=1M", "evict_high=100", "evict_low=99"])
    names = fill(m, n=8)  # 800 kB of a 1 MB capacity: under the daemon's own mark
    time.sleep(1.1)
    (m.mnt / "model/r0" / names[0]).read_bytes()  # the most recently used
    r = ctl("--json", "evict", m.mnt, "--to", "50")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["usage_before"] == 800000 and out["target"] == 524288  # 50% of 1 MiB
    assert out["blocks_evicted"] == 3 and out["bytes_evicted"] == 300000
    left = set(os.listdir(m.mnt / "model/r0")) - {"config.json"}
    assert len(left) == 5 and names[0] in left  # the recently read block stays
    assert not (backing / ".kvfs-state" / "evict.lease").exists()
    # A live lease of another node stops it.
    (backing / ".kvfs-state" / "evict.lease").write_text(
        f"holder other.1\nexpires {int(time.time() * 1000) + 60000}\n")
    r = ctl("evict", m.mnt, "--to", "10")
    assert r.returncode == 1 and "lease held by other.1" in r.stderr
    (backing / ".kvfs-state" / "evict.lease").unlink()
    # gc removes old staging files only.
    staging = backing / ".kvfs-state" / "staging"
    (staging / "dead.1.0.stage").write_bytes(b"x")
    os.utime(staging / "dead.1.0.stage", (time.time() - 7200, time.time() - 7200))
    (staging / "live.2.0.stage").write_bytes(b"y")
    r = ctl("--json", "gc", backing, "--older", "3600")
    assert r.returncode == 0 and json.loads(r.stdout) == {"staging_removed": 1}
    assert os.listdir(staging) == ["live.2.0.stage"]


@pytest.mark.parametrize("args,msg", [
    (("ls", "/nonexistent/x"), "No such file"),
    (("ls", "/tmp"), "not on a kvfs mount"),
    (("bogus",), "unknown command"),
    (("--frobnicate", "ls", "."), "unknown option"),
    (("evict", "."), "needs PATH and --to"),
    (("evict", ".", "--to", "150"), "not a percentage"),
    (("gc", ".", "--older", "-1"), "not a number"),
    (("stat",), "needs a PATH"),
])
def test_errors(ctl, args, msg):
    r = ctl(*args)
    assert r.returncode != 0
    assert msg in r.stderr, r.stderr
    assert r.stderr.startswith("kvfsctl: ") and r.stderr.count("\n") == 1
