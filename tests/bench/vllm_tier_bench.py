"""vLLM's secondary tiers on kvfs, in one run: vLLM's own "fs" tier on the
backing directory directly (the baseline), the same tier through a kvfs mount
of it, and kvfs's KvfsTier through the mount. Each stores N blocks from the
CPU tier's rows and loads them back into other rows (checked), in interleaved
rounds; the table gives medians in GB/s and ratios to the baseline.

Needs the vLLM virtual environment (tests/vllm/setup-venv.sh) and a kvfs
build; run as root:

    PY=$(bash tests/vllm/setup-venv.sh)
    $PY tests/bench/vllm_tier_bench.py --backing /dev/shm/kvfs-vb --mount /mnt/kvfs-vb"""

import argparse
import mmap
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "client" / "python"))
sys.path.insert(0, str(ROOT / "tests" / "vllm"))

from conftest import BareSpec, keys, load, offloading_config, store  # noqa: E402
from vllm.v1.kv_offload.tiering.fs.manager import FileSystemTierManager  # noqa: E402

from kvfs.vllm.tier import KvfsTier  # noqa: E402


def rows(n, size):
    m = mmap.mmap(-1, n * size)
    return m, np.frombuffer(m, dtype=np.uint8).reshape(n, size)


def one_round(make_tier, root, nblocks, size, seed, data):
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    m, arr = rows(2 * nblocks, size)
    arr[:nblocks] = data
    tier = make_tier(root, memoryview(arr))
    try:
        ks = keys(nblocks, seed=seed)
        # Completion polled every 0.5 ms, so that waiting adds little to the timing.
        t0 = time.perf_counter()
        assert store(tier, 1, ks, range(nblocks), poll=0.0005).success, "store failed"
        t1 = time.perf_counter()
        assert load(tier, 2, ks, range(nblocks, 2 * nblocks), poll=0.0005).success, "load failed"
        t2 = time.perf_counter()
        assert np.array_equal(arr[nblocks:], arr[:nblocks]), "loaded data differs"
    finally:
        tier.shutdown()
    gb = nblocks * size / 1e9
    return gb / (t1 - t0), gb / (t2 - t1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backing", required=True)
    ap.add_argument("--mount", required=True)
    ap.add_argument("--kvfs", default=str(ROOT / "build" / "bin" / "kvfs"))
    ap.add_argument("--blocks", type=int, default=256)
    ap.add_argument("--block-mib", type=float, default=2)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    size = int(a.block_mib * (1 << 20))
    t = a.threads
    spec = BareSpec(offloading_config(row_bytes=size))
    backing, mnt = Path(a.backing), Path(a.mount)
    backing.mkdir(parents=True, exist_ok=True)
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run([a.kvfs, str(backing), str(mnt)], check=True)
    try:
        configs = {
            "fs tier, backing dir": (backing / "direct",
                                     lambda r, v: FileSystemTierManager(spec, v, "fs", root_dir=str(r),
                                                                        n_read_threads=t,
                                                                        n_write_threads=t)),
            "fs tier, kvfs": (mnt / "fs",
                              lambda r, v: FileSystemTierManager(spec, v, "fs", root_dir=str(r),
                                                                 n_read_threads=t, n_write_threads=t)),
            "KvfsTier, kvfs": (mnt / "kvfs",
                               lambda r, v: KvfsTier(spec, v, "KvfsTier", root_dir=str(r),
                                                     io_threads=t)),
        }
        data = np.random.default_rng(0).integers(0, 256, (a.blocks, size), dtype=np.uint8)
        res = {k: ([], []) for k in configs}
        for rnd in range(a.rounds):
            for name, (root, make) in configs.items():
                s, l = one_round(make, root, a.blocks, size, rnd, data)
                res[name][0].append(s)
                res[name][1].append(l)
        base = res["fs tier, backing dir"]
        print(f"{a.blocks} blocks of {a.block_mib:g} MiB, {t} threads, {a.rounds} interleaved "
              f"rounds, medians (GB/s):")
        print(f"| {'tier, where':22} | store | load | store ratio | load ratio |")
        print("| --- | --- | --- | --- | --- |")
        for name, (st, ld) in res.items():
            s, l = statistics.median(st), statistics.median(ld)
            print(f"| {name:22} | {s:5.2f} | {l:5.2f} | {s / statistics.median(base[0]):.2f} | "
                  f"{l / statistics.median(base[1]):.2f} |")
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)])
        shutil.rmtree(backing, ignore_errors=True)


if __name__ == "__main__":
    main()
