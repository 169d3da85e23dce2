#!/usr/bin/env python3
"""Save and load throughput of libkvfs-cuda between a vLLM-like paged GPU KV cache
and a directory (a kvfs mount or its backing directory), next to the pinned-memory
PCIe limit measured in the same run.

  python3 tests/gpu/bench_gpu.py --root NAME=DIR [--root ...] [--model 8b|70b ...]
      [--threads 4 16] [--engine dma kernel] [--gib 8] [--json OUT]

Layouts: Llama-3-8B-like (32 layers) and Llama-3-70B-like (80 layers), 8 KV heads,
head size 128, bf16, 16-token GPU blocks, 256 tokens (16 GPU blocks) per file, in
vLLM's [2, num_blocks, 16, 8, 128] per-layer layout. Every configuration stores all
files into an empty directory, then loads them back (after dropping the page cache
when permitted) and checks a sample bitwise."""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "client" / "python"))
import kvfs as kv  # noqa: E402

MODELS = {"8b": 32, "70b": 80}
T, H, D, TOKENS_PER_FILE = 16, 8, 128, 256


def pcie_limit(gib=1):
    n = gib << 30
    dev = torch.empty(n, dtype=torch.uint8, device="cuda")
    host = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    out = {}
    for name, dst, src in (("d2h", host, dev), ("h2d", dev, host)):
        best = 0
        for _ in range(5):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            dst.copy_(src, non_blocking=True)
            torch.cuda.synchronize()
            best = max(best, n / (time.perf_counter() - t0) / 1e9)
        out[name] = best
    del dev, host
    return out


def drop_caches():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        return True
    except OSError:
        return False


def run(root, layers, caches, num_blocks, threads, engine):
    bpf = TOKENS_PER_FILE // T
    files = num_blocks // bpf
    ids = [list(range(i * bpf, (i + 1) * bpf)) for i in range(files)]
    sub = Path(root) / f"bench-{os.getpid()}-{layers}-{threads}-{engine}"
    names = [f"{sub.name}/{i:032x}.bin" for i in range(files)]
    with kv.CudaEngine(root, caches, bpf, io_threads=threads, copy_engine=engine,
                       staging_bytes=0, timeout=300) as e:
        file_bytes = e.layout.payload_bytes
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        j = e.store(names, ids)
        ok = j.wait(600)
        store_s = time.perf_counter() - t0
        bad = [r for r in j.results() if r != 0]
        assert ok and not bad, f"stores failed: {j.failed()[:3]}"
        cold = drop_caches()
        saved = [c[:, :bpf].clone() for c in caches]
        for c in caches:
            c[:, :bpf].zero_()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        j = e.load(names, ids)
        ok = j.wait(600)
        torch.cuda.synchronize()
        load_s = time.perf_counter() - t0
        assert ok and all(r == 0 for r in j.results()), f"loads failed: {j.failed()[:3]}"
        assert all(torch.equal(c[:, :bpf], s) for c, s in zip(caches, saved)), "data mismatch"
        engine_name = e.copy_engine
        numa = e.numa_node
    shutil.rmtree(sub, ignore_errors=True)
    total = files * file_bytes
    return {"files": files, "file_mib": file_bytes / 2**20, "store_gbs": total / store_s / 1e9,
            "load_gbs": total / load_s / 1e9, "cold": cold, "engine": engine_name,
            "numa_node": numa}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", action="append", required=True, help="NAME=DIR")
    ap.add_argument("--model", nargs="+", default=["8b", "70b"], choices=list(MODELS))
    ap.add_argument("--threads", nargs="+", type=int, default=[4, 16])
    ap.add_argument("--engine", nargs="+", default=["dma", "kernel"])
    ap.add_argument("--gib", type=float, default=8.0, help="KV cache size per model (GiB)")
    ap.add_argument("--json")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed first pass over each root")
    a = ap.parse_args()
    pcie = pcie_limit()
    print(f"pinned-memory PCIe limit: D2H {pcie['d2h']:.1f} GB/s, H2D {pcie['h2d']:.1f} GB/s",
          flush=True)
    results = []
    for model in a.model:
        layers = MODELS[model]
        per_block = layers * 2 * T * H * D * 2
        num_blocks = int(a.gib * 2**30 // per_block) // 16 * 16
        caches = [torch.randn((2, num_blocks, T, H, D), device="cuda").to(torch.bfloat16)
                  for _ in range(layers)]
        if not a.no_warmup and model == a.model[0]:
            # A fresh VM faults its memory in on first use: the first pass
            # over a root once stored at a third of the speed of the same
            # pass run later. One untimed pass per root takes that out.
            for spec in a.root:
                run(spec.partition("=")[2], layers, caches, num_blocks, max(a.threads),
                    a.engine[0])
        for spec in a.root:
            name, _, root = spec.partition("=")
            for threads in a.threads:
                for engine in a.engine:
                    r = run(root, layers, caches, num_blocks, threads, engine)
                    r.update(model=model, root=name, threads=threads)
                    results.append(r)
                    print(f"{model:>4} {name:<14} threads={threads:<3} {r['engine']:<9} "
                          f"{r['files']} files x {r['file_mib']:.0f} MiB: store "
                          f"{r['store_gbs']:6.2f} GB/s  load {r['load_gbs']:6.2f} GB/s"
                          f"{'' if r['cold'] else ' (warm)'}", flush=True)
        del caches
        torch.cuda.empty_cache()
    if a.json:
        Path(a.json).write_text(json.dumps({"pcie": pcie, "results": results}, indent=1))


if __name__ == "__main__":
    main()
