"""Fixtures for the tests against real vLLM (installed from PyPI into a
virtual environment by tests/vllm/setup-venv.sh; run with that interpreter).

The kvfs mount fixtures are the integration suite's own, loaded under another
module name so that both directories keep a conftest.py."""

import importlib.util
import mmap
import sys
import time
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location(
    "kvfs_integration_conftest", Path(__file__).resolve().parents[1] / "integration" / "conftest.py")
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)
# Fixtures, hooks and helpers: kvfs, mount_factory, backing, pytest_addoption, ...
globals().update({k: v for k, v in vars(_shared).items() if not k.startswith("__")})

# The kvfs Python package of this source tree.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "client" / "python"))

from vllm.v1.kv_offload.base import (  # noqa: E402
    OffloadingSpec,
    ReqContext,
    ScheduleEndContext,
    make_offload_key,
)
from vllm.v1.kv_offload.tiering.base import TransferJob  # noqa: E402
from vllm.v1.kv_offload.config import (  # noqa: E402
    OffloadingCacheConfig,
    OffloadingConfig,
    OffloadingGroupConfig,
    OffloadingModelConfig,
    OffloadingParallelConfig,
)


class BareSpec(OffloadingSpec):
    """The spec a secondary tier receives; the tier uses only its config."""

    def get_manager(self):
        raise NotImplementedError

    def get_worker(self, kv_caches):
        raise NotImplementedError


def offloading_config(model="meta-llama/Llama-3.1-8B", dtype="bfloat16", tokens=16, tp=1,
                      layers=4, row_bytes=64 << 10, extra=None, engine_id="engine-0"):
    """An OffloadingConfig as vLLM's connector normalizes it on the scheduler
    side (rank 0) for one attention group."""
    return OffloadingConfig(
        groups=(OffloadingGroupConfig(tokens, tuple(f"model.layers.{i}.attn" for i in range(layers)), 0),),
        worker_kv_bytes_per_block=row_bytes // tp,
        enable_kv_cache_events=False,
        extra_config=dict(extra or {}),
        engine_id=engine_id,
        model=OffloadingModelConfig(model, dtype),
        cache=OffloadingCacheConfig(tokens_per_hash=tokens, blocks_per_chunk=1),
        parallel=OffloadingParallelConfig(
            rank=0, world_size=tp, tp_size=tp, pp_size=1, pcp_size=1, dcp_size=1,
            data_parallel_index=0, data_parallel_size=1, data_parallel_rank_local=None,
            is_parallelism_agnostic=False),
    )


class PrimaryRows:
    """A stand-in for the CPU primary tier's shared region: page-aligned rows
    of ROW_BYTES in an anonymous mmap, as vLLM's SharedOffloadRegion is, so
    O_DIRECT I/O from it works."""

    def __init__(self, rows, row_bytes):
        self.map = mmap.mmap(-1, rows * row_bytes)
        self.array = np.frombuffer(self.map, dtype=np.uint8).reshape(rows, row_bytes)
        self.view = memoryview(self.array)

    def fill_random(self, ids, seed):
        rng = np.random.default_rng(seed)
        for i in ids:
            self.array[i] = rng.integers(0, 256, self.array.shape[1], dtype=np.uint8)

    def zero(self):
        self.array[:] = 0


def keys(n, seed=0, group=0):
    rng = np.random.default_rng(seed)
    return [make_offload_key(rng.bytes(32), group) for _ in range(n)]


def settle_lookups(tier, ks, ctx, timeout=10.0):
    """Drives the tier's asynchronous lookup as the scheduler does: look up,
    end the step (which flushes the batch), repeat until no key is RETRY."""
    from vllm.v1.kv_offload.base import LookupResult

    deadline = time.time() + timeout
    while True:
        res = [tier.lookup(k, ctx) for k in ks]
        if LookupResult.RETRY not in res or time.time() > deadline:
            return res
        tier.on_schedule_end(ScheduleEndContext([], []))
        time.sleep(0.02)


def finish(tier, job_id, timeout=30.0, poll=0.01):
    """Waits for JOB_ID among the tier's finished jobs and returns its result."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for r in tier.get_finished_jobs():
            if r.job_id == job_id:
                return r
        time.sleep(poll)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")


def store(tier, job_id, ks, ids, poll=0.01):
    """A secondary tier's store of keys KS from primary rows IDS, waited for."""
    tier.submit_store(TransferJob(job_id, ks, np.array(ids), False, ReqContext("store")))
    return finish(tier, job_id, poll=poll)


def load(tier, job_id, ks, ids, poll=0.01):
    """A secondary tier's load (promotion) of KS into primary rows IDS, waited for."""
    tier.submit_load(TransferJob(job_id, ks, np.array(ids), True, ReqContext("load")))
    return finish(tier, job_id, poll=poll)


@pytest.fixture
def req():
    return ReqContext("req-0")
