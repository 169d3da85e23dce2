"""The GPU side of kvfs's offloading spec, without vLLM: whole block files
moved between the GPU's KV pages and a directory by libkvfs-cuda (pinned
staging buffers on the GPU's NUMA node, DMA or copy kernels, I/O threads),
with per-file results. The vLLM worker (spec.py) wraps it; keeping vLLM out
lets the GPU machine, which has PyTorch but no vLLM, test exactly this path."""

import logging
import time

from .. import EXISTED, CudaEngine, strerror

logger = logging.getLogger("kvfs.vllm")


class PageTransfer:
    def __init__(self, root, pages, block_tokens, blocks_per_file, io_threads=8,
                 staging_bytes=0, copy_engine="default", timeout=30.0, store_queue_max=4096):
        self.engine = CudaEngine(root, None, blocks_per_file, io_threads=io_threads,
                                 staging_bytes=staging_bytes, copy_engine=copy_engine,
                                 timeout=timeout, store_queue_max=store_queue_max,
                                 pages=pages, block_tokens=block_tokens)
        self.blocks_per_file = blocks_per_file
        self.file_bytes = self.engine.layout.payload_bytes
        self._jobs = {}  # job id -> (libkvfs job, names, is load, start)
        self.skipped = 0  # stores of files that already existed

    def _per_file(self, names, block_ids):
        bpf = self.blocks_per_file
        ids = [int(b) for b in block_ids]
        if len(ids) != len(names) * bpf:
            raise ValueError(f"{len(ids)} GPU blocks for {len(names)} files of {bpf}")
        return [ids[i * bpf:(i + 1) * bpf] for i in range(len(names))]

    def store(self, job_id, names, block_ids, after_stream=None):
        """Stores each file's GPU blocks once the work queued on AFTER_STREAM
        (default: torch's current stream) is done."""
        job = self.engine.store(names, self._per_file(names, block_ids), after_stream)
        self._jobs[job_id] = (job, list(names), False, time.monotonic())

    def load(self, job_id, names, block_ids):
        job = self.engine.load(names, self._per_file(names, block_ids))
        self._jobs[job_id] = (job, list(names), True, time.monotonic())

    def finished(self):
        """(job id, ok, bytes moved, seconds) of every job done since the last
        call. A job is ok only if every file in it was stored (or was there
        already) or loaded and verified; each failure is logged by name."""
        out = []
        for job_id in [j for j, (job, *_) in self._jobs.items() if job.done()]:
            job, names, is_load, t0 = self._jobs.pop(job_id)
            codes = job.results()
            job.free()
            moved = 0
            for name, c in zip(names, codes):
                if c < 0:
                    logger.warning("kvfs: %s of %s failed: %s", "load" if is_load else "store",
                                   name, strerror(c))
                elif c == EXISTED:
                    self.skipped += 1
                else:
                    moved += self.file_bytes
            out.append((job_id, all(c >= 0 for c in codes), moved, time.monotonic() - t0))
        return out

    def pending(self):
        return list(self._jobs)

    def wait(self, job_ids):
        for j in job_ids:
            entry = self._jobs.get(j)
            if entry:
                entry[0].wait()

    def close(self):
        for job, *_ in self._jobs.values():
            job.wait()
            job.free()
        self._jobs.clear()
        self.engine.close()
