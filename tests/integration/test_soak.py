"""Load: two daemons on one backing store, concurrent writers and readers of
overlapping blocks, eviction running, and one daemon replaced by a successor
(kvfs --takeover) every KVFS_SOAK_TAKEOVER_EVERY seconds (5), for a bounded
time (KVFS_SOAK_SECONDS, 20 by default): no torn or wrong read (every block's
content derives from its name), no error at all from a takeover, no published
block lost except by eviction, daemon memory flat. And
SIGKILL of a daemon at random moments under that load: after a remount every
block published before the kill is whole, nothing partial is visible, and the
staging debris is collected."""

import os
import random
import signal
import threading
import time

from conftest import Mount, block_data, block_name

SIZE = 256 * 1024


def stamp():
    """Wall-clock time as the daemons' logs print it, to match an error with them."""
    t = time.time()
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_soak_two_daemons_with_eviction(kvfs_bin, backing, tmp_path, passthrough):
    seconds = float(os.environ.get("KVFS_SOAK_SECONDS", "20"))
    opts = ["capacity=24M", "evict_high=90", "evict_low=60", "atime_interval=0"]
    every = float(os.environ.get("KVFS_SOAK_TAKEOVER_EVERY", "5"))
    a = Mount(kvfs_bin, backing, tmp_path / "a",
              opts + [f"handover_socket={tmp_path / 'a.sock'}"]).start()
    b = Mount(kvfs_bin, backing, tmp_path / "b", opts).start()
    names = [block_name(i) for i in range(200)]  # 50 MB of blocks for a 24 MB store
    for m in (a, b):
        (m.mnt / "ns").mkdir(exist_ok=True)
    stop = threading.Event()
    counts = {"writes": 0, "reads": 0, "misses": 0}
    bad, errors = [], []
    lock = threading.Lock()

    def writer(m, seed):
        rng = random.Random(seed)
        while not stop.is_set():
            n = rng.choice(names)
            try:
                f = open(m.mnt / "ns" / n, "wb")
            except OSError as e:
                errors.append(("open", n, e, stamp()))
                continue
            try:
                with f:
                    f.write(block_data(n, SIZE))
                with lock:
                    counts["writes"] += 1
            except OSError as e:
                errors.append(("write", n, e, stamp()))

    def reader(m, seed):
        rng = random.Random(seed)
        while not stop.is_set():
            n = rng.choice(names)
            try:
                got = (m.mnt / "ns" / n).read_bytes()
            except FileNotFoundError:
                with lock:
                    counts["misses"] += 1
                continue
            except OSError as e:  # anything but a miss is a failure
                errors.append(("read", n, e, stamp()))
                continue
            with lock:
                counts["reads"] += 1
            if got != block_data(n, SIZE):
                bad.append((n, len(got)))

    threads = [threading.Thread(target=writer, args=(m, i)) for i, m in enumerate([a, b, a, b])]
    threads += [threading.Thread(target=reader, args=(m, 10 + i)) for i, m in enumerate([a, b])]
    for t in threads:
        t.start()
    time.sleep(min(3.0, seconds / 4))
    rss0 = (rss_kb(a.proc.pid), rss_kb(b.proc.pid))
    takeovers = []
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(max(0.0, min(every, end - time.time())))
        if time.time() < end - 0.5:
            takeovers.append(a.takeover())
    stop.set()
    for t in threads:
        t.join()
    rss1 = (rss_kb(a.proc.pid), rss_kb(b.proc.pid))
    evicted = a.stats()["blocks_evicted"] + b.stats()["blocks_evicted"]
    a.stop()  # no eviction pass may run while the store is checked
    b.stop()
    print(f"\nsoak {seconds:.0f}s: {counts['writes']} writes, {counts['reads']} reads "
          f"({counts['reads'] / seconds:.0f}/s), {counts['misses']} misses, {evicted} evicted, "
          f"RSS {rss0} -> {rss1} kB, {len(takeovers)} takeovers of one daemon")
    try:
        assert all(t == (0, 0) for t in takeovers), takeovers
        assert bad == [], bad[:5]
        assert errors == [], errors[:5]
        assert counts["reads"] > 0 and counts["writes"] > 0 and evicted > 0
        # Every block still in the store is whole (nothing lost except by eviction).
        for bucket in (backing / "ns" / ".kvfs-blocks").iterdir():
            for f in bucket.iterdir():
                assert f.read_bytes() == block_data(f.name, SIZE), f.name
        # Under AddressSanitizer freed memory sits in its quarantine, so RSS
        # says nothing there; LeakSanitizer checks leaks at exit instead.
        if not os.environ.get("ASAN_OPTIONS"):
            for before, after in zip(rss0, rss1):
                assert after < before + 32 * 1024, "daemon memory grew"
    finally:
        a.stop()
        b.stop()


def test_sigkill_at_random_moments_under_load(kvfs_bin, backing, tmp_path):
    rng = random.Random(7)
    published = set()
    for round_ in range(3):
        m = Mount(kvfs_bin, backing, tmp_path / "m", ["staging_grace=1"]).start()
        (m.mnt / "ns").mkdir(exist_ok=True)
        stop = threading.Event()
        done = []

        def writer(seed):
            r = random.Random(seed)
            while not stop.is_set():
                n = block_name(r.randrange(10000))
                try:
                    with open(m.mnt / "ns" / n, "wb") as f:
                        f.write(block_data(n, SIZE))
                    done.append(n)
                except OSError:
                    return  # the daemon is gone

        ts = [threading.Thread(target=writer, args=(round_ * 10 + i,)) for i in range(3)]
        for t in ts:
            t.start()
        time.sleep(rng.uniform(0.3, 1.5))
        m.kill(signal.SIGKILL)
        stop.set()
        for t in ts:
            t.join(timeout=30)
        m.stop()
        published.update(done)  # close() returned success: published
    time.sleep(1.2)
    m = Mount(kvfs_bin, backing, tmp_path / "m", ["staging_grace=1"]).start()
    try:
        deadline = time.time() + 5
        while os.listdir(backing / ".kvfs-state" / "staging") and time.time() < deadline:
            time.sleep(0.1)
        assert os.listdir(backing / ".kvfs-state" / "staging") == []
        visible = set(os.listdir(m.mnt / "ns"))
        assert published <= visible, "a block published before a kill was lost"
        for n in visible:  # nothing partial anywhere
            assert (m.mnt / "ns" / n).read_bytes() == block_data(n, SIZE), n
    finally:
        m.stop()
