"""(a) vLLM's own filesystem tier, unmodified, on a kvfs mount: the classes of
vllm/v1/kv_offload/tiering/fs/ driven as vLLM's scheduler drives them."""

import os

import numpy as np
from conftest import (
    BareSpec,
    PrimaryRows,
    finish,
    keys,
    load,
    offloading_config,
    settle_lookups,
    store,
)
from vllm.v1.kv_offload.base import LookupResult, ReqContext
from vllm.v1.kv_offload.tiering.base import TransferJob
from vllm.v1.kv_offload.tiering.fs.io import probe_o_direct
from vllm.v1.kv_offload.tiering.fs.manager import FileSystemTierManager

ROW = 64 << 10
ROWS = 16


def fs_tier(root, rows):
    return FileSystemTierManager(BareSpec(offloading_config(row_bytes=ROW)), rows.view, "fs",
                                 root_dir=str(root), n_read_threads=2, n_write_threads=2)


def test_store_lookup_load_round_trip(kvfs, req):
    rows = PrimaryRows(ROWS, ROW)
    rows.fill_random(range(8), seed=1)
    written = rows.array[:8].copy()
    tier = fs_tier(kvfs.mnt / "kv", rows)
    try:
        ks = keys(8, seed=1)
        assert settle_lookups(tier, ks, req) == [LookupResult.MISS] * 8
        tier.on_request_finished(req)  # verdicts are cached while a request lives
        assert store(tier, 1, ks, range(8)).success
        assert settle_lookups(tier, ks, ReqContext("req-1")) == [LookupResult.HIT] * 8
        rows.zero()
        assert load(tier, 2, ks, range(8, 16)).success
        assert np.array_equal(rows.array[8:16], written)
        # vLLM's own layout under the mount, and each block a file of one row.
        path = tier.file_mapper.get_file_name(ks[0])
        assert path.startswith(str(kvfs.mnt / "kv")) and os.path.getsize(path) == ROW
        assert (kvfs.mnt / "kv" / os.path.relpath(tier.file_mapper.get_config_file_path(),
                                                  kvfs.mnt / "kv")).exists()
        # Each rename of vLLM's temp file published a block that kvfs indexes
        # (and so can evict): it sits in the block store of its directory.
        assert kvfs.stats()["renames"] >= 8
        rel = os.path.relpath(path, kvfs.mnt)
        d, name = os.path.split(rel)
        assert (kvfs.backing / d / ".kvfs-blocks" / name[:3] / name).exists()
    finally:
        tier.shutdown()


def test_o_direct_probe_succeeds_and_leaves_nothing(kvfs):
    d = kvfs.mnt / "kv"
    d.mkdir()
    assert probe_o_direct(str(d)) is True
    assert os.listdir(d) == []
    rows = PrimaryRows(ROWS, ROW)
    tier = fs_tier(d, rows)
    try:
        assert tier._use_o_direct, "the tier would fall back to buffered I/O on kvfs"
    finally:
        tier.shutdown()


def test_two_tiers_on_one_mount_share_blocks(kvfs, req):
    """Two vLLM servers on one node: what one stores, the other loads."""
    a_rows, b_rows = PrimaryRows(ROWS, ROW), PrimaryRows(ROWS, ROW)
    a, b = fs_tier(kvfs.mnt / "kv", a_rows), fs_tier(kvfs.mnt / "kv", b_rows)
    try:
        assert a.file_mapper.base_path == b.file_mapper.base_path
        ks = keys(6, seed=2)
        a_rows.fill_random(range(6), seed=2)
        assert store(a, 1, ks, range(6)).success
        assert settle_lookups(b, ks, req) == [LookupResult.HIT] * 6
        assert load(b, 1, ks, range(6)).success
        assert np.array_equal(b_rows.array[:6], a_rows.array[:6])
        # Both storing the same blocks at once: one copy each, intact.
        more = keys(6, seed=3)
        a_rows.fill_random(range(6, 12), seed=3)
        b_rows.array[6:12] = a_rows.array[6:12]
        a.submit_store(TransferJob(2, more, np.arange(6, 12), False, ReqContext("s")))
        b.submit_store(TransferJob(2, more, np.arange(6, 12), False, ReqContext("s")))
        assert finish(a, 2).success and finish(b, 2).success
        b_rows.zero()
        assert load(b, 3, more, range(6)).success
        assert np.array_equal(b_rows.array[:6], a_rows.array[6:12])
    finally:
        a.shutdown()
        b.shutdown()


def test_two_daemons_on_one_backing_directory(mount_factory, backing, req):
    """Two nodes: a block stored through one node's mount loads through the
    other's."""
    m1 = mount_factory(backing, name="node1")
    m2 = mount_factory(backing, name="node2")
    r1, r2 = PrimaryRows(ROWS, ROW), PrimaryRows(ROWS, ROW)
    t1, t2 = fs_tier(m1.mnt / "kv", r1), fs_tier(m2.mnt / "kv", r2)
    try:
        ks = keys(8, seed=4)
        r1.fill_random(range(8), seed=4)
        assert store(t1, 1, ks, range(8)).success
        assert settle_lookups(t2, ks, req) == [LookupResult.HIT] * 8
        assert load(t2, 1, ks, range(8)).success
        assert np.array_equal(r2.array[:8], r1.array[:8])
    finally:
        t1.shutdown()
        t2.shutdown()


def test_block_removed_between_lookup_and_load_fails_the_load(kvfs, req):
    rows = PrimaryRows(ROWS, ROW)
    rows.fill_random(range(4), seed=5)
    tier = fs_tier(kvfs.mnt / "kv", rows)
    try:
        ks = keys(4, seed=5)
        assert store(tier, 1, ks, range(4)).success
        assert settle_lookups(tier, ks, req) == [LookupResult.HIT] * 4
        os.unlink(tier.file_mapper.get_file_name(ks[2]))  # evicted, or removed by an operator
        rows.array[8:12] = 0xAB
        r = load(tier, 2, ks, range(8, 12))
        assert not r.success, "a missing block was reported as loaded"
        # The two before it are kept (vLLM's partial keep); the rest is a miss.
        assert list(r.successful_keys) == ks[:2]
        assert np.array_equal(rows.array[8:10], rows.array[0:2])
        assert tier.lookup(ks[2], req) == LookupResult.MISS
    finally:
        tier.shutdown()
