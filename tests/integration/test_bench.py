"""kvfs-bench runs end to end against a real mount and reports every
workload on both sides (behaviour only: no timing is asserted)."""

import json
import os
import subprocess


def test_kvfs_bench_json(kvfs, kvfs_bin):
    bench = os.path.join(os.path.dirname(kvfs_bin), "kvfs-bench")
    r = subprocess.run([bench, "--backing", str(kvfs.backing), "--mount", str(kvfs.mnt),
                        "-n", "8", "-s", "256K", "-t", "2", "--rounds", "2", "--meta-ops", "20",
                        "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["data_mode"] == kvfs.stats()["data_mode"]
    names = {x["name"] for x in out["results"]}
    assert {"write+publish", "read warm", "stat present block", "stat missing block",
            "create+write+close small block", "create+write+close+publish block",
            "open+close block"} <= names
    for x in out["results"]:
        assert x["backing"] > 0 and x["kvfs"] > 0
        # All three are printed to 4 decimals: the ratio of the printed
        # values is off by at most their rounding (large when a loaded
        # machine makes them small).
        slack = x["ratio"] * (5e-5 / x["kvfs"] + 5e-5 / x["backing"])
        assert abs(x["ratio"] - x["kvfs"] / x["backing"]) < 1e-3 * x["ratio"] + slack + 1e-4
    # It cleans up after itself on both sides.
    assert [n for n in os.listdir(kvfs.mnt) if n.startswith("kvfs-bench")] == []
    assert [n for n in os.listdir(kvfs.backing) if n.startswith("kvfs-bench")] == []


def test_kvfs_bench_refuses_a_wrong_pair(kvfs, kvfs_bin, tmp_path):
    bench = os.path.join(os.path.dirname(kvfs_bin), "kvfs-bench")
    r = subprocess.run([bench, "--backing", str(tmp_path), "--mount", str(kvfs.mnt)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "is not a kvfs mount of" in r.stderr
    r = subprocess.run([bench, "--backing", str(kvfs.backing), "--mount", str(kvfs.mnt),
                        "-t", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--threads" in r.stderr
