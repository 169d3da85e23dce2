"""What the kvfs tier and the kvfs spec share: the namespace fields of a vLLM
run, block names, and the kvfs mount's own figures."""

import logging
import os
import time

from vllm.v1.kv_offload.base import get_offload_block_hash, get_offload_group_idx
from vllm.v1.kv_offload.tiering.async_lookup import AsyncLookupManager

from .namespace import default_name, open_namespace


def hash_algo_and_seed(extra_config):
    """The prefix-cache hash a server names blocks with, and its seed: servers
    that differ in either never share a block."""
    algo = extra_config.get("hash_algo")
    if algo is None:
        try:
            from vllm.config import get_current_vllm_config_or_none

            vc = get_current_vllm_config_or_none()
            algo = vc.cache_config.prefix_caching_hash_algo if vc is not None else None
        except ImportError:
            algo = None
    algo = str(algo or "sha256")
    seed = os.environ.get("PYTHONHASHSEED", "default")
    if algo.startswith("xxhash") and seed == "default":
        logging.getLogger("kvfs.vllm").warning(
            "prefix-cache hash %s without PYTHONHASHSEED: vLLM seeds it per process, so no "
            "two servers will ever share a block; set the same PYTHONHASHSEED everywhere", algo)
    return algo, seed


def namespace_fields(config, bytes_per_file, kv_layout):
    """The fields a namespace is pinned to, from vLLM's OffloadingConfig."""
    algo, seed = hash_algo_and_seed(config.extra_config)
    p = config.parallel
    return {
        "model": config.model.name,
        "hash_algo": algo,
        "hash_seed": seed,
        "tokens_per_block": [g.tokens_per_block for g in config.groups],
        "blocks_per_file": config.cache.blocks_per_chunk,
        "kv_layout": kv_layout,
        "dtype": str(config.model.dtype),
        "bytes_per_file": int(bytes_per_file),
        "tp_size": p.tp_size,
        "pp_size": p.pp_size,
        "pcp_size": p.pcp_size,
        "dcp_size": p.dcp_size,
    }


def open_run_namespace(root, config, bytes_per_file, kv_layout, name=None):
    p = config.parallel
    name = name or default_name(config.model.name, p.tp_size, p.pp_size, p.pcp_size, p.dcp_size)
    return open_namespace(str(root), name, namespace_fields(config, bytes_per_file, kv_layout))


def block_name(key, suffix=".bin"):
    """g<group>/<hash hex>.bin: a kvfs block name (hex, one extension) in one
    flat directory per KV-cache group; kvfs fans blocks out on the backing
    store itself."""
    return f"g{get_offload_group_idx(key)}/{get_offload_block_hash(key).hex()}{suffix}"


class MountFigures:
    """Capacity and usage of the kvfs mount holding PATH, read from its
    control directory at most every REFRESH seconds; None off kvfs."""

    def __init__(self, path, refresh=5.0):
        self.stats_path = None
        d = os.path.abspath(path)
        while True:
            if os.path.exists(os.path.join(d, ".kvfs", "stats")):
                self.stats_path = os.path.join(d, ".kvfs", "stats")
                break
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
        self.refresh = refresh
        self._at = 0.0
        self._last = None

    def read(self):
        if self.stats_path is None:
            return None
        now = time.monotonic()
        if self._last is None or now - self._at >= self.refresh:
            out = {}
            with open(self.stats_path) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    out[k] = v.strip()
            self._last = {k: int(out[k]) for k in ("capacity_bytes", "usage_bytes")}
            self._at = now
        return self._last


class ExistsLookup(AsyncLookupManager):
    """vLLM's asynchronous lookup (a step's keys checked together off the
    scheduler thread, verdicts cached per request) over one batched libkvfs
    existence check."""

    def __init__(self, engine, name_of, tier_type):
        super().__init__(tier_type=tier_type)
        self._engine = engine
        self._name_of = name_of

    def batch_lookup(self, keys, req_context):
        found = self._engine.exists([self._name_of(k) for k in keys])
        # An error (a hung store timing out) is a miss: recomputing is safe.
        return [v is True for v in found]
