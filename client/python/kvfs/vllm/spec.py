"""(b) kvfs's own offloading spec: vLLM's paged GPU KV cache to and from the
kvfs mount directly, through libkvfs-cuda, with no CPU tier in between.

    --kv-transfer-config '{"kv_connector": "OffloadingConnector",
      "kv_role": "kv_both",
      "kv_connector_extra_config": {
        "spec_name": "KvfsOffloadingSpec", "spec_module_path": "kvfs.vllm.spec",
        "root_dir": "/mnt/kvfs/kv"}}'

Scheduler side (KvfsOffloadingManager): lookups are one batched existence
check per step, off the scheduler thread; blocks known to be stored are not
stored again; blocks are files named g<group>/<hash>.bin under a namespace
pinned to the run (see namespace.py), one directory per rank (r<rank>/).
Worker side (KvfsOffloadingWorker): libkvfs-cuda moves whole files between
the GPU pages and the mount; every load is verified (header, layout, xxh3
checksum) and a failed, missing or corrupt file fails its job, which vLLM
answers by recomputing those tokens, never by using the blocks.

Keys of kv_connector_extra_config (defaults in brackets): root_dir (required),
namespace [<model>_tp<N>_pp<N>], io_threads [16], staging_bytes [0: the
library's default], copy_engine ["default"; "dma" or "kernel"],
io_timeout_s [30], store_queue_max [4096]; vLLM's own block_size or
blocks_per_chunk set how many GPU blocks (tokens) go in one file."""

import logging
import os
from collections import OrderedDict

from vllm.v1.kv_offload.base import (
    GPULoadStoreSpec,
    LoadStoreSpec,
    LookupResult,
    OffloadingManager,
    OffloadingSpec,
    OffloadingWorker,
    PrepareStoreOutput,
    ReqContext,
    RequestOffloadingContext,
    ScheduleEndContext,
    TransferResult,
)

from .. import Engine
from .common import ExistsLookup, block_name, open_run_namespace
from .tier import raw_layout

logger = logging.getLogger("kvfs.vllm.spec")

# kv_connector_extra_config keys that belong to vLLM's connector, not to us.
CONNECTOR_KEYS = {"spec_name", "spec_module_path", "block_size", "blocks_per_chunk",
                  "offload_prompt_only", "self_describing_kv_events",
                  "max_recompute_pending_tokens", "store_threshold", "max_tracker_size",
                  "eviction_policy", "cache_policy_module_path", "canonical_layout",
                  "load_timeout_seconds"}

DEFAULTS = {"namespace": None, "io_threads": 16, "staging_bytes": 0, "copy_engine": "default",
            "io_timeout_s": 30.0, "store_queue_max": 4096}


class KvfsFiles(LoadStoreSpec):
    """Where a batch of blocks lives on the mount: one file name per key,
    relative to the namespace and without the rank directory."""

    def __init__(self, names):
        self.names = list(names)

    def __repr__(self):
        return f"KvfsFiles({len(self.names)} files)"


def rank_dir(rank):
    return f"r{rank}"


class KvfsOffloadingSpec(OffloadingSpec):
    def __init__(self, config):
        super().__init__(config)
        unknown = set(self.extra_config) - set(DEFAULTS) - {"root_dir", "hash_algo"} - CONNECTOR_KEYS
        if unknown:
            raise ValueError(f"unknown kvfs spec keys: {', '.join(sorted(unknown))}")
        if not self.extra_config.get("root_dir"):
            raise ValueError("kvfs spec: 'root_dir' (a directory on the kvfs mount) is required")
        self.options = {k: self.extra_config.get(k, v) for k, v in DEFAULTS.items()}
        self.root_dir = str(self.extra_config["root_dir"])
        self.bytes_per_file = config.worker_kv_bytes_per_block * self.blocks_per_chunk
        # Every rank of one run opens the same namespace; the manager (rank 0,
        # scheduler side) creates it.
        kv_layout = config.kv_cache_layout if config.canonical_layout else "pages"
        self.namespace_dir = open_run_namespace(self.root_dir, config, self.bytes_per_file,
                                                kv_layout, self.options["namespace"])
        self._manager = None

    def get_manager(self):
        if self._manager is None:
            self._manager = KvfsOffloadingManager(self)
        return self._manager

    def get_worker(self, kv_caches):
        return KvfsOffloadingWorker(self, kv_caches)


class KvfsOffloadingManager(OffloadingManager):
    """Scheduler side: what is on the mount, and which files a load or store
    touches. The mount is the source of truth (other servers and nodes write
    to it and eviction removes from it), so nothing is cached beyond a short
    list of blocks this server has just stored."""

    RECENT = 65536

    def __init__(self, spec):
        self.spec = spec
        self.root = os.path.join(spec.namespace_dir, rank_dir(0))
        os.makedirs(self.root, exist_ok=True)
        o = spec.options
        # Only for batched existence checks, which read no file: any layout.
        self.engine = Engine(self.root, raw_layout(4096), io_threads=2,
                             timeout=o["io_timeout_s"])
        self._lookup = ExistsLookup(self.engine, block_name, "kvfs")
        self._recent = OrderedDict()  # keys this server stored: no second store
        logger.info("kvfs offloading to %s (%d-byte files of %d GPU blocks)",
                    spec.namespace_dir, spec.bytes_per_file, spec.blocks_per_chunk)

    def on_new_request(self, req_context: ReqContext) -> RequestOffloadingContext:
        return RequestOffloadingContext()

    def lookup(self, key, req_context: ReqContext) -> LookupResult:
        r = self._lookup.lookup(key, req_context)
        if r is None:
            return LookupResult.RETRY
        return LookupResult.HIT if r else LookupResult.MISS

    def prepare_load(self, keys, req_context: ReqContext) -> LoadStoreSpec:
        return KvfsFiles(block_name(k) for k in keys)

    def prepare_store(self, keys, req_context: ReqContext):
        todo = [k for k in keys if k not in self._recent]
        return PrepareStoreOutput(keys_to_store=todo, store_spec=KvfsFiles(block_name(k) for k in todo),
                                  evicted_keys=[])

    def complete_store(self, keys, req_context: ReqContext, success: bool = True):
        if success:
            for k in keys:
                self._recent[k] = True
                self._recent.move_to_end(k)
            while len(self._recent) > self.RECENT:
                self._recent.popitem(last=False)

    def on_request_finished(self, req_context: ReqContext) -> None:
        self._lookup.cleanup(req_context.req_id)

    def on_schedule_end(self, context: ScheduleEndContext) -> None:
        self._lookup.flush()

    def reset_cache(self) -> None:
        self._recent.clear()

    def shutdown(self) -> None:
        self._lookup.shutdown()
        self.engine.close()


class KvfsOffloadingWorker(OffloadingWorker):
    """Worker side: vLLM's canonical KV pages to and from this rank's files."""

    def __init__(self, spec, kv_caches):
        from .transfer import PageTransfer

        pages = [(t.tensor, t.page_size_bytes) for t in kv_caches.tensors]
        tokens = spec.config.groups[0].tokens_per_block
        if any(g.tokens_per_block != tokens for g in spec.config.groups):
            raise ValueError("kvfs spec: KV-cache groups with different block sizes are not "
                             "supported")
        rank = spec.config.parallel.rank
        root = os.path.join(spec.namespace_dir, rank_dir(rank))
        os.makedirs(root, exist_ok=True)
        o = spec.options
        self.transfer = PageTransfer(root, pages, tokens, spec.blocks_per_chunk,
                                     io_threads=o["io_threads"], staging_bytes=o["staging_bytes"],
                                     copy_engine=o["copy_engine"], timeout=o["io_timeout_s"],
                                     store_queue_max=o["store_queue_max"])
        self._refused = []  # jobs failed at submission, reported by get_finished
        logger.info("kvfs worker rank %d: %s, %d I/O threads, copy engine %s", rank, root,
                    self.transfer.engine.io_threads, self.transfer.engine.copy_engine)

    def _aligned(self, gpu):
        bpf = self.transfer.blocks_per_file
        return all(int(i) % bpf == 0 for i in gpu.block_indices)

    def submit_store(self, job_id, src_spec: GPULoadStoreSpec, dst_spec) -> bool:
        try:
            self.transfer.store(job_id, dst_spec.names, src_spec.block_ids)
        except Exception as e:  # vLLM asserts on False: report it as a failed job
            logger.warning("kvfs: store job %d refused: %s", job_id, e)
            self._refused.append(job_id)
        return True

    def submit_load(self, job_id, src_spec, dst_spec: GPULoadStoreSpec) -> bool:
        try:
            if not self._aligned(dst_spec):
                raise ValueError("a load that starts inside a file is not supported")
            self.transfer.load(job_id, src_spec.names, dst_spec.block_ids)
        except Exception as e:
            logger.warning("kvfs: load job %d refused: %s", job_id, e)
            self._refused.append(job_id)
        return True

    def get_finished(self):
        out = [TransferResult(j, False, 0, 0.0) for j in self._refused]
        self._refused.clear()
        for job_id, ok, size, seconds in self.transfer.finished():
            out.append(TransferResult(job_id, ok, size, seconds))
        return out

    def wait(self, job_ids):
        self.transfer.wait(job_ids)

    def shutdown(self):
        self.transfer.close()
