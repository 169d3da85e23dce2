"""(c) kvfs's secondary tier (kvfs.vllm.tier.KvfsTier) under vLLM's own
TieringOffloadingSpec and TieringOffloadingManager, on a kvfs mount; vLLM's
"fs" tier goes through the same scheduler-side pipeline for comparison."""

import os
import time

import numpy as np
import pytest
from conftest import BareSpec, PrimaryRows, keys, load, offloading_config, settle_lookups, store
from vllm.v1.kv_offload.base import LookupResult, ReqContext, ScheduleEndContext
from vllm.v1.kv_offload.tiering.spec import TieringOffloadingSpec

from kvfs import HEADER_SIZE
from kvfs.vllm.namespace import META_NAME, NamespaceMismatch
from kvfs.vllm.tier import CAPACITY, LOAD_FAILURES, STORES_SKIPPED, USAGE, KvfsTier

ROW = 64 << 10
ROWS = 16
NS = "llama_tp1"


def kvfs_tier(root, rows, namespace=NS, **cfg):
    return KvfsTier(BareSpec(offloading_config(row_bytes=ROW, **cfg)), rows.view, "KvfsTier",
                    root_dir=str(root), namespace=namespace, io_threads=2, io_timeout_s=10)


def backing_file(m, tier, key):
    from kvfs.vllm.common import block_name

    rel = os.path.relpath(os.path.join(tier.root, block_name(key)), m.mnt)
    d, name = os.path.split(rel)
    return m.backing / d / ".kvfs-blocks" / name[:3] / name


def test_round_trip_with_header_and_flat_namespace(kvfs, req):
    rows = PrimaryRows(ROWS, ROW)
    rows.fill_random(range(8), seed=1)
    tier = kvfs_tier(kvfs.mnt / "kv", rows)
    try:
        ks = keys(8, seed=1)
        assert settle_lookups(tier, ks, req) == [LookupResult.MISS] * 8
        tier.on_request_finished(req)
        assert store(tier, 1, ks, range(8)).success
        assert settle_lookups(tier, ks, ReqContext("r2")) == [LookupResult.HIT] * 8
        assert load(tier, 2, ks, range(8, 16)).success
        assert np.array_equal(rows.array[8:16], rows.array[0:8])
        g0 = kvfs.mnt / "kv" / NS / "g0"
        assert sorted(os.listdir(g0)) == sorted(f"{k[:-4].hex()}.bin" for k in ks)
        assert os.path.getsize(g0 / f"{ks[0][:-4].hex()}.bin") == HEADER_SIZE + ROW
        assert (kvfs.mnt / "kv" / NS / META_NAME).exists()
    finally:
        tier.shutdown()


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove"])
def test_a_damaged_block_is_a_failed_load_never_data(kvfs, req, damage):
    rows = PrimaryRows(ROWS, ROW)
    rows.fill_random(range(4), seed=2)
    tier = kvfs_tier(kvfs.mnt / "kv", rows)
    try:
        ks = keys(4, seed=2)
        assert store(tier, 1, ks, range(4)).success
        assert settle_lookups(tier, ks, req) == [LookupResult.HIT] * 4
        f = backing_file(kvfs, tier, ks[1])
        if damage == "flip":  # same size, one byte of payload changed
            with open(f, "r+b") as fh:
                fh.seek(HEADER_SIZE + 1000)
                b = fh.read(1)
                fh.seek(HEADER_SIZE + 1000)
                fh.write(bytes([b[0] ^ 0x40]))
        elif damage == "truncate":
            os.truncate(f, HEADER_SIZE + ROW // 2)
        else:
            os.unlink(kvfs.mnt / os.path.relpath(tier.root, kvfs.mnt) / "g0" / f"{ks[1][:-4].hex()}.bin")
        r = load(tier, 2, ks, range(8, 12))
        assert not r.success
        assert set(r.successful_keys) == {ks[0], ks[2], ks[3]}
        for i in (0, 2, 3):
            assert np.array_equal(rows.array[8 + i], rows.array[i])
        assert tier.lookup(ks[1], req) == LookupResult.MISS
        counters = tier.get_stats().data["data"][LOAD_FAILURES]
        assert sum(counters.values()) == 1
    finally:
        tier.shutdown()


def test_blocks_already_stored_are_skipped(kvfs):
    rows = PrimaryRows(ROWS, ROW)
    rows.fill_random(range(4), seed=3)
    tier = kvfs_tier(kvfs.mnt / "kv", rows)
    try:
        ks = keys(4, seed=3)
        assert store(tier, 1, ks, range(4)).success
        published = kvfs.stats()["blocks_published"]
        assert store(tier, 2, ks, range(4)).success
        assert kvfs.stats()["blocks_published"] == published
        assert tier.get_stats().data["data"][STORES_SKIPPED][()] == 4
    finally:
        tier.shutdown()


def test_capacity_and_usage_of_the_mount_are_reported(mount_factory, backing):
    m = mount_factory(backing, options=["capacity=64M"])
    rows = PrimaryRows(ROWS, ROW)
    rows.fill_random(range(4), seed=4)
    tier = kvfs_tier(m.mnt / "kv", rows)
    try:
        assert store(tier, 1, keys(4, seed=4), range(4)).success
        tier._figures.refresh = 0
        gauges = tier.get_stats().data["data"]
        assert gauges[CAPACITY][()] == 64 << 20
        assert gauges[USAGE][()] == m.stats()["usage_bytes"] >= 4 * (HEADER_SIZE + ROW)
    finally:
        tier.shutdown()


def test_namespace_refuses_a_different_configuration(kvfs):
    rows = PrimaryRows(ROWS, ROW)
    kvfs_tier(kvfs.mnt / "kv", rows).shutdown()
    with pytest.raises(NamespaceMismatch, match="dtype='bfloat16'.*dtype='float16'"):
        kvfs_tier(kvfs.mnt / "kv", rows, dtype="float16")
    with pytest.raises(NamespaceMismatch, match="tp_size"):
        kvfs_tier(kvfs.mnt / "kv", rows, tp=2)
    with pytest.raises(NamespaceMismatch, match="model"):
        kvfs_tier(kvfs.mnt / "kv", rows, model="Qwen/Qwen3-8B")
    # Without a namespace given, each model and parallel configuration gets its own.
    a = kvfs_tier(kvfs.mnt / "kv", rows, namespace=None)
    b = kvfs_tier(kvfs.mnt / "kv", rows, namespace=None, tp=2)
    try:
        assert os.path.basename(a.root) == "meta-llama_Llama-3.1-8B_tp1_pp1"
        assert os.path.basename(b.root) == "meta-llama_Llama-3.1-8B_tp2_pp1"
    finally:
        a.shutdown()
        b.shutdown()
    with pytest.raises(ValueError, match="bad kvfs namespace"):
        kvfs_tier(kvfs.mnt / "kv", rows, namespace="../escape")


# ---- through vLLM's TieringOffloadingSpec, as the connector's scheduler uses it ----

def tiering_manager(tier_config, engine_id):
    cfg = offloading_config(row_bytes=ROW, engine_id=engine_id, extra={
        "cpu_bytes_to_use": ROWS * ROW, "secondary_tiers": [tier_config]})
    spec = TieringOffloadingSpec(cfg)
    return spec, spec.get_manager()


def chunk_ids(load_store_spec):
    return [int(c) for c in getattr(load_store_spec, "chunk_ids", load_store_spec)]


def settle(manager, deadline=20.0):
    end = time.time() + deadline
    while manager.has_pending_work() and time.time() < end:
        manager.on_schedule_end(ScheduleEndContext([], []))
        time.sleep(0.02)
    assert not manager.has_pending_work()


def tier_configs(root):
    return {
        "fs": {"type": "fs", "root_dir": str(root / "fs"), "n_read_threads": 2,
               "n_write_threads": 2},
        "kvfs": {"type": "KvfsTier", "module_path": "kvfs.vllm.tier",
                 "root_dir": str(root / "kvfs"), "io_threads": 2},
    }


@pytest.mark.parametrize("which", ["fs", "kvfs"])
def test_two_servers_share_blocks_through_the_tiering_manager(mount_factory, backing, which):
    """Server A offloads (GPU -> CPU -> cascade to the tier); server B, on
    another node's mount of the same backing store, finds them, promotes them
    to its CPU tier and gets the same bytes."""
    m1 = mount_factory(backing, name="node1")
    m2 = mount_factory(backing, name="node2")
    spec_a, a = tiering_manager(tier_configs(m1.mnt)[which], "engine-a")
    spec_b, b = tiering_manager(tier_configs(m2.mnt)[which], "engine-b")
    try:
        ks = keys(6, seed=7)
        ctx = ReqContext("a-1")
        a.on_new_request(ctx)
        out = a.prepare_store(ks, ctx)
        ids = chunk_ids(out.store_spec)
        view_a = np.frombuffer(a.primary_tier.get_kv_memoryview(), dtype=np.uint8).reshape(ROWS, ROW)
        rng = np.random.default_rng(7)
        for i in ids:  # what the GPU worker's copy would have put there
            view_a[i] = rng.integers(0, 256, ROW, dtype=np.uint8)
        a.complete_store(ks, ctx)
        settle(a)
        a.on_request_finished(ctx)

        ctx = ReqContext("b-1")
        b.on_new_request(ctx)
        end = time.time() + 20
        while True:
            res = [b.lookup(k, ctx) for k in ks]
            if all(r == LookupResult.HIT for r in res) or time.time() > end:
                break
            b.on_schedule_end(ScheduleEndContext([], []))
            time.sleep(0.02)
        assert res == [LookupResult.HIT] * 6
        got = chunk_ids(b.prepare_load(ks, ctx))
        view_b = np.frombuffer(b.primary_tier.get_kv_memoryview(), dtype=np.uint8).reshape(ROWS, ROW)
        for ia, ib in zip(ids, got):
            assert np.array_equal(view_b[ib], view_a[ia])
        b.complete_load(ks, ctx)
        b.on_request_finished(ctx)
    finally:
        a.shutdown()
        b.shutdown()
