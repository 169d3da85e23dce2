"""(c) A kvfs secondary tier for vLLM's TieringOffloadingSpec.

    "secondary_tiers": [{"type": "KvfsTier", "module_path": "kvfs.vllm.tier",
                         "root_dir": "/mnt/kvfs/kv"}]

It does what vLLM's own "fs" tier does (moves blocks between the CPU primary
tier's rows and files), but through libkvfs: every file carries a header and
an xxh3 checksum that each load verifies, so a truncated, corrupt or
differently laid out file is a failed load and never KV data; every I/O has a
timeout, so a hung backing store fails the job instead of a thread; stores of
blocks already present are skipped; lookups are one batched call; and the
kvfs mount's capacity and usage are reported with vLLM's metrics.

The namespace (ROOT/<model>_tp<N>_pp<N>, or the `namespace` key) is pinned to
the run's model, hash, block size, layout, dtype and parallel sizes; a server
configured differently is refused at start (see namespace.py)."""

import logging
import time
from collections.abc import Iterable
from typing import ClassVar

from vllm.v1.kv_offload.base import (
    Locality,
    LookupResult,
    Medium,
    OffloadingCounterMetadata,
    OffloadingGaugeMetadata,
    OffloadKey,
    ReqContext,
)
from vllm.v1.kv_offload.tiering.base import (
    JobResult,
    RequestOffloadingContext,
    ScheduleEndContext,
    SecondaryTierManager,
    TransferJob,
)

from .. import E_DROPPED, EXISTED, Engine, Layout, strerror
from .common import ExistsLookup, MountFigures, block_name, open_run_namespace

logger = logging.getLogger("kvfs.vllm.tier")

CAPACITY = "vllm:kv_offload_kvfs_capacity_bytes"
USAGE = "vllm:kv_offload_kvfs_usage_bytes"
LOAD_FAILURES = "vllm:kv_offload_kvfs_load_failures"
STORE_FAILURES = "vllm:kv_offload_kvfs_store_failures"
STORES_SKIPPED = "vllm:kv_offload_kvfs_stores_skipped"


def raw_layout(row_bytes):
    """The file layout of one primary-tier row: its bytes as one fp16 (K, V)
    chunk of 1024-element heads. The tier sees rows, not tensors; what the
    bytes mean is pinned by the namespace."""
    if row_bytes <= 0 or row_bytes % 4096:
        raise ValueError(f"a primary-tier row of {row_bytes} bytes is not a multiple of 4096")
    return Layout(1, 1, row_bytes // 4096, 1024, "fp16", 1)


class KvfsTier(SecondaryTierManager):
    medium: ClassVar[Medium] = Medium.STORAGE

    @classmethod
    def build_metric_definitions(cls, extra_config):
        return {
            CAPACITY: OffloadingGaugeMetadata("Capacity of the kvfs mount (0: unbounded)."),
            USAGE: OffloadingGaugeMetadata("Bytes of blocks on the kvfs mount."),
            LOAD_FAILURES: OffloadingCounterMetadata(
                "Blocks the kvfs tier failed to load, by reason.", ("reason",)),
            STORE_FAILURES: OffloadingCounterMetadata(
                "Blocks the kvfs tier failed to store, by reason.", ("reason",)),
            STORES_SKIPPED: OffloadingCounterMetadata(
                "Stores skipped because the block was already stored."),
        }

    def __init__(self, offloading_spec, primary_kv_view: memoryview, tier_type: str,
                 root_dir: str, namespace: str | None = None, io_threads: int = 16,
                 io_timeout_s: float = 30.0, store_queue_max: int = 4096,
                 locality: str | None = None, backpressure_detector=None):
        super().__init__(offloading_spec, primary_kv_view, tier_type, backpressure_detector)
        self.locality = Locality(locality) if locality is not None else None
        config = offloading_spec.config
        kv_layout = config.kv_cache_layout if config.canonical_layout else "direct"
        self.root = open_run_namespace(root_dir, config, self.block_size_bytes, kv_layout,
                                       namespace)
        self.layout = raw_layout(self.block_size_bytes)
        self.engine = Engine(self.root, self.layout, io_threads=io_threads,
                             timeout=io_timeout_s, store_queue_max=store_queue_max)
        self._rows = primary_kv_view.cast("B")
        self._jobs = {}  # job id -> (kvfs Job, TransferJob, is load, submit time)
        self._lookup = ExistsLookup(self.engine, block_name, tier_type)
        self._figures = MountFigures(self.root)
        self._counts = {}
        logger.info("kvfs tier at %s: %d-byte blocks, %d I/O threads, %.0fs I/O timeout%s",
                    self.root, self.block_size_bytes, io_threads, io_timeout_s,
                    "" if self._figures.stats_path else " (not a kvfs mount: no capacity figures)")

    def _row(self, chunk_id):
        off = int(chunk_id) * self.block_size_bytes
        return self._rows[off:off + self.block_size_bytes]

    def _count(self, name, label=()):
        self._counts[(name, label)] = self._counts.get((name, label), 0) + 1

    def on_new_request(self, req_context: ReqContext) -> RequestOffloadingContext:
        return RequestOffloadingContext()

    def lookup(self, key: OffloadKey, req_context: ReqContext) -> LookupResult:
        r = self._lookup.lookup(key, req_context)
        if r is None:
            return LookupResult.RETRY
        return LookupResult.HIT if r else LookupResult.MISS

    def submit_store(self, job_metadata: TransferJob) -> None:
        keys = list(job_metadata.keys)
        job = self.engine.store([block_name(k) for k in keys],
                                [self._row(c) for c in job_metadata.chunk_ids])
        self._jobs[job_metadata.job_id] = (job, keys, False, time.monotonic())

    def submit_load(self, job_metadata: TransferJob) -> None:
        keys = list(job_metadata.keys)
        job = self.engine.load([block_name(k) for k in keys],
                               [self._row(c) for c in job_metadata.chunk_ids])
        self._jobs[job_metadata.job_id] = (job, keys, True, time.monotonic())

    def get_finished_jobs(self) -> Iterable[JobResult]:
        out = []
        for job_id in [j for j, (job, *_) in self._jobs.items() if job.done()]:
            job, keys, is_load, t0 = self._jobs.pop(job_id)
            codes = job.results()
            job.free()
            good = [k for k, c in zip(keys, codes) if c >= 0]
            for k, c in zip(keys, codes):
                if c == EXISTED:
                    self._count(STORES_SKIPPED)
                elif c < 0:
                    reason = strerror(c)
                    self._count(LOAD_FAILURES if is_load else STORE_FAILURES, (reason,))
                    if c != E_DROPPED:
                        logger.warning("kvfs tier: %s of %s failed: %s",
                                       "load" if is_load else "store", block_name(k), reason)
            ok = len(good) == len(keys)
            if is_load and not ok:
                # Failed blocks are a miss from now on (vLLM recomputes them);
                # the ones that loaded and verified are kept.
                self._lookup.mark_miss([k for k, c in zip(keys, codes) if c < 0])
            out.append(JobResult(
                job_id=job_id, success=ok,
                successful_keys=tuple(good) if is_load and not ok and good else None,
                transfer_time=time.monotonic() - t0,
                transfer_bytes=len(good) * self.block_size_bytes))
        return out

    def has_pending_work(self) -> bool:
        return bool(self._jobs)

    def drain_jobs(self) -> None:
        for job, *_ in list(self._jobs.values()):
            job.wait()

    def on_request_finished(self, req_context: ReqContext) -> None:
        self._lookup.cleanup(req_context.req_id)

    def on_schedule_end(self, context: ScheduleEndContext) -> None:
        self._lookup.flush()

    def usage(self):
        """{"capacity_bytes", "usage_bytes"} of the kvfs mount, or None off kvfs."""
        return self._figures.read()

    def get_stats(self):
        from vllm.distributed.kv_transfer.kv_connector.v1.offloading.metrics import (
            OffloadingConnectorStats,
        )

        stats = OffloadingConnectorStats()
        try:
            fig = self.usage()
        except OSError as e:
            logger.warning("kvfs tier: reading the mount's figures failed: %s", e)
            fig = None
        if fig:
            stats.set_gauge(CAPACITY, fig["capacity_bytes"])
            stats.set_gauge(USAGE, fig["usage_bytes"])
        for (name, label), n in self._counts.items():
            stats.increase_counter(name, n, label)
        self._counts.clear()
        return stats

    def shutdown(self) -> None:
        self._lookup.shutdown()
        self.drain_jobs()
        for job, *_ in self._jobs.values():
            job.free()
        self._jobs.clear()
        self.engine.close()
