"""How long a takeover (kvfs --takeover) pauses the processes using a mount.

Mounts kvfs, stores a few blocks, and runs reader threads that each open,
read (and check) and close a block in a loop, timing every operation. The
same run first records a window without takeovers (the baseline), then one
in which the daemon is replaced every --every seconds; it reports the
latency percentiles and the longest operation of both windows, and the
ratios. Every error fails the run. Run as root:

    python3 tests/bench/takeover_bench.py --backing /dev/shm/kvfs-tb --mount /mnt/kvfs-tb"""

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIZE = 256 * 1024


def block(i):
    name = hashlib.sha256(str(i).encode()).hexdigest()[:32] + ".bin"
    return name, (name.encode() * (SIZE // len(name) + 1))[:SIZE]


def is_mounted(path):
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


def start(kvfs, backing, mnt, opts, takeover=False):
    cmd = [kvfs, "-f"] + (["--takeover"] if takeover else []) + ["-o", opts, backing, mnt]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def window(mnt, names, seconds, threads, action=None):
    """Runs the readers for SECONDS while ACTION (if any) runs beside them;
    returns every operation's latency in ms."""
    lat, errors, stop = [], [], threading.Event()

    def reader(t):
        i = t
        while not stop.is_set():
            name, data = names[i % len(names)]
            t0 = time.perf_counter()
            try:
                with open(os.path.join(mnt, "ns", name), "rb") as f:
                    ok = f.read() == data
            except OSError as e:
                errors.append(repr(e))
                continue
            lat.append((time.perf_counter() - t0) * 1000)
            if not ok:
                errors.append(f"wrong content in {name}")
            i += threads

    ts = [threading.Thread(target=reader, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    end = time.time() + seconds
    result = action(end) if action else time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    if errors:
        sys.exit(f"errors: {errors[:5]}")
    return lat, result


def summary(lat):
    q = statistics.quantiles(lat, n=1000)
    return {"ops": len(lat), "p50": q[499], "p99": q[989], "p99.9": q[998], "max": max(lat)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backing", required=True)
    ap.add_argument("--mount", required=True)
    ap.add_argument("--kvfs", default=str(ROOT / "build" / "bin" / "kvfs"))
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--every", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=4)
    a = ap.parse_args()
    shutil.rmtree(a.backing, ignore_errors=True)
    os.makedirs(a.backing)
    os.makedirs(a.mount, exist_ok=True)
    sock = os.path.join(os.path.dirname(os.path.abspath(a.backing)), "kvfs-tb.sock")
    opts = f"handover_socket={sock}"
    proc = start(a.kvfs, a.backing, a.mount, opts)
    try:
        for _ in range(200):
            if is_mounted(a.mount) and os.path.exists(os.path.join(a.mount, ".kvfs", "stats")):
                break
            time.sleep(0.05)
        os.makedirs(os.path.join(a.mount, "ns"), exist_ok=True)
        names = [block(i) for i in range(32)]
        for name, data in names:
            with open(os.path.join(a.mount, "ns", name), "wb") as f:
                f.write(data)

        def takeovers(end):
            nonlocal proc
            took = []
            while time.time() + a.every < end:
                time.sleep(a.every)
                t0 = time.perf_counter()
                new = start(a.kvfs, a.backing, a.mount, opts, takeover=True)
                if proc.wait(timeout=60) != 0:
                    sys.exit("the old daemon did not exit cleanly")
                took.append((time.perf_counter() - t0) * 1000)
                proc = new
            return took

        base, _ = window(a.mount, names, a.seconds, a.threads)
        during, took = window(a.mount, names, a.seconds, a.threads, takeovers)
    finally:
        subprocess.run(["fusermount3", "-u", a.mount], capture_output=True)
        proc.wait(timeout=30)
    b, d = summary(base), summary(during)
    print(f"{a.threads} reader threads, 256 KiB blocks, {a.seconds:.0f} s windows; "
          f"{len(took)} takeovers, each {statistics.median(took):.1f} ms median from "
          f"`kvfs --takeover` to the old daemon's exit (max {max(took):.1f} ms)")
    print("| window | operations | p50 ms | p99 ms | p99.9 ms | max ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, s in (("no takeover (baseline)", b), (f"a takeover every {a.every:g} s", d)):
        print(f"| {label} | {s['ops']} | {s['p50']:.2f} | {s['p99']:.2f} | {s['p99.9']:.2f} "
              f"| {s['max']:.1f} |")
    print(f"| ratio | {d['ops'] / b['ops']:.2f} | {d['p50'] / b['p50']:.2f} | "
          f"{d['p99'] / b['p99']:.2f} | {d['p99.9'] / b['p99.9']:.2f} | {d['max'] / b['max']:.2f} |")
    print("errors: 0")


if __name__ == "__main__":
    main()
