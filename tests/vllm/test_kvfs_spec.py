"""(b) kvfs's own offloading spec on the scheduler side, loaded by vLLM's
OffloadingSpecFactory as the OffloadingConnector loads it. (Its worker moves
GPU pages: tests/gpu/test_vllm_transfer.py runs that path on the GPU machine.)"""

import os

import pytest
from conftest import PrimaryRows, keys, offloading_config, settle_lookups
from vllm.v1.kv_offload.base import LookupResult, ReqContext
from vllm.v1.kv_offload.factory import OffloadingSpecFactory

from kvfs import Engine
from kvfs.vllm.namespace import NamespaceMismatch
from kvfs.vllm.spec import KvfsFiles, KvfsOffloadingSpec
from kvfs.vllm.tier import raw_layout

ROW = 64 << 10


def make_spec(root, **kw):
    extra = {"spec_name": "KvfsOffloadingSpec", "spec_module_path": "kvfs.vllm.spec",
             "root_dir": str(root), **kw.pop("extra", {})}
    return OffloadingSpecFactory.create_spec(offloading_config(row_bytes=ROW, extra=extra, **kw))


def write_files(spec, names, seed=0):
    """What the GPU workers would write: verified block files under r0/."""
    d = os.path.join(spec.namespace_dir, "r0")
    rows = PrimaryRows(len(names), ROW)
    rows.fill_random(range(len(names)), seed)
    with Engine(d, raw_layout(ROW), io_threads=2) as e:
        job = e.store(names, [rows.array[i] for i in range(len(names))])
        assert job.wait(30) and not job.failed()


def test_manager_lookup_store_load(kvfs):
    spec = make_spec(kvfs.mnt / "kv")
    assert isinstance(spec, KvfsOffloadingSpec)
    m = spec.get_manager()
    try:
        ks = keys(6, seed=1)
        req = ReqContext("r1")
        m.on_new_request(req)
        assert settle_lookups(m, ks, req) == [LookupResult.MISS] * 6
        out = m.prepare_store(ks, req)
        assert out.keys_to_store == ks and out.evicted_keys == []
        assert isinstance(out.store_spec, KvfsFiles) and len(out.store_spec.names) == 6
        assert out.store_spec.names[0] == f"g0/{ks[0][:-4].hex()}.bin"
        write_files(spec, out.store_spec.names)
        m.complete_store(ks, req)
        m.on_request_finished(req)
        # Stored blocks are not stored again, and a new request finds them.
        assert m.prepare_store(ks, req).keys_to_store == []
        req2 = ReqContext("r2")
        assert settle_lookups(m, ks, req2) == [LookupResult.HIT] * 6
        load = m.prepare_load(ks[2:4], req2)
        assert load.names == out.store_spec.names[2:4]
        # Blocks removed (evicted) since: a miss for the next request.
        os.unlink(os.path.join(spec.namespace_dir, "r0", load.names[0]))
        m.on_request_finished(req2)
        assert settle_lookups(m, ks[2:4], ReqContext("r3")) == [LookupResult.MISS,
                                                                LookupResult.HIT]
    finally:
        m.shutdown()


def test_blocks_stored_through_another_node_are_found(mount_factory, backing):
    m1 = mount_factory(backing, name="node1")
    m2 = mount_factory(backing, name="node2")
    s1, s2 = make_spec(m1.mnt / "kv"), make_spec(m2.mnt / "kv")
    mgr = s2.get_manager()
    try:
        ks = keys(4, seed=2)
        write_files(s1, s1.get_manager().prepare_store(ks, ReqContext("a")).store_spec.names)
        assert settle_lookups(mgr, ks, ReqContext("b")) == [LookupResult.HIT] * 4
    finally:
        mgr.shutdown()
        s1.get_manager().shutdown()


def test_a_namespace_per_model_and_parallel_configuration(kvfs):
    a = make_spec(kvfs.mnt / "kv")
    b = make_spec(kvfs.mnt / "kv", tp=2)
    c = make_spec(kvfs.mnt / "kv", model="Qwen/Qwen3-8B")
    names = {os.path.basename(s.namespace_dir) for s in (a, b, c)}
    assert names == {"meta-llama_Llama-3.1-8B_tp1_pp1", "meta-llama_Llama-3.1-8B_tp2_pp1",
                     "Qwen_Qwen3-8B_tp1_pp1"}
    # One namespace named by hand, two configurations: the second is refused.
    make_spec(kvfs.mnt / "kv", extra={"namespace": "shared"})
    with pytest.raises(NamespaceMismatch, match="tokens_per_block"):
        make_spec(kvfs.mnt / "kv", tokens=32, extra={"namespace": "shared"})
    with pytest.raises(NamespaceMismatch, match="hash_algo"):
        make_spec(kvfs.mnt / "kv", extra={"namespace": "shared", "hash_algo": "xxhash"})


def test_bad_configuration_is_refused(kvfs):
    with pytest.raises(ValueError, match="root_dir"):
        OffloadingSpecFactory.create_spec(offloading_config(extra={
            "spec_name": "KvfsOffloadingSpec", "spec_module_path": "kvfs.vllm.spec"}))
    with pytest.raises(ValueError, match="unknown kvfs spec keys: io_thread"):
        make_spec(kvfs.mnt / "kv", extra={"io_thread": 4})
