#!/usr/bin/env python3
"""Eviction at scale: N one-byte blocks laid out as kvfs stores them (spread
over directories and fan-out buckets, with distinct access times), then one
eviction pass with kvfsctl (scan the store, index it, pick the least recently
used 10%, unlink them), timed; and the index memory at that size, as printed by
tests/unit/test_index.c.

  tests/bench/evict_bench.py --kvfsctl build/bin/kvfsctl [--blocks 1000000] [--dir /dev/shm/x]"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kvfsctl", required=True)
    ap.add_argument("--blocks", type=int, default=1_000_000)
    ap.add_argument("--dir", default="/dev/shm/kvfs-evict-bench")
    a = ap.parse_args()
    root = a.dir
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, ".kvfs-state", "staging"))
    t0 = time.time()
    base = time.time() - a.blocks  # one-second steps of access time
    made = set()
    for i in range(a.blocks):
        h = hashlib.sha256(i.to_bytes(8, "little")).hexdigest()
        d = os.path.join(root, f"model_{i % 8}", "r0", ".kvfs-blocks", h[:3])
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        p = os.path.join(d, h + ".bin")
        fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, b"x")
        os.close(fd)
        os.utime(p, (base + i, base + i))
    build_s = time.time() - t0
    t0 = time.time()
    du = subprocess.run([a.kvfsctl, "--json", "du", root], capture_output=True, text=True,
                        check=True)
    scan_s = time.time() - t0
    total = json.loads(du.stdout)["total_blocks"]
    t0 = time.time()
    ev = subprocess.run([a.kvfsctl, "--json", "evict", root, "--to", "90", "--capacity",
                         str(a.blocks)], capture_output=True, text=True, check=True)
    pass_s = time.time() - t0
    out = json.loads(ev.stdout)
    print(json.dumps({"blocks": total, "build_s": round(build_s, 1), "scan_s": round(scan_s, 2),
                      "evict_pass_s": round(pass_s, 2), **out}))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
