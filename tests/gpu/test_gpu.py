"""libkvfs-cuda on a GPU: random KV tensors laid out as vLLM lays them out go
through a kvfs mount (backing on /dev/shm) into zeroed tensors and come back
bitwise equal, for both layouts, several dtypes and both copy engines; a
corrupted file is reported as a failed load and leaves the GPU blocks alone."""

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

import kvfs as kv  # noqa: E402

LAYERS, BLOCKS, T, H, D = 4, 64, 16, 8, 128


def make_caches(kind, dtype, padded=False):
    """One tensor per layer, like vLLM's, filled with random values. kv_first
    tensors are views that start a few blocks into a wider allocation (a base
    offset and a K-to-V stride larger than the blocks); padded block_first ones
    have a block stride larger than one block's K and V."""
    caches = []
    for _ in range(LAYERS):
        if kind == "kv_first":
            t = torch.empty((2, BLOCKS + 4, T, H, D), dtype=dtype, device="cuda")[:, 2:2 + BLOCKS]
        else:
            width = 3 if padded else 2
            t = torch.empty((BLOCKS, width, T, H, D), dtype=dtype, device="cuda")[:, :2]
        t.copy_(torch.randn(t.shape, device="cuda").to(dtype))
        caches.append(t)
    return caches


def same_blocks(a, b, ids_a, ids_b, kind):
    bdim = 1 if kind == "kv_first" else 0
    for x, y in zip(a, b):
        xa = x.index_select(bdim, torch.tensor(ids_a, device="cuda")).contiguous().view(torch.uint8)
        yb = y.index_select(bdim, torch.tensor(ids_b, device="cuda")).contiguous().view(torch.uint8)
        if not torch.equal(xa, yb):
            return False
    return True


@pytest.mark.parametrize("engine", ["dma", "kernel"])
@pytest.mark.parametrize("kind", ["kv_first", "block_first"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_round_trip_bitwise(shm_mount, kind, dtype, engine):
    src = make_caches(kind, dtype, padded=(kind == "block_first"))
    dst = [torch.zeros_like(t) for t in src]
    bpf = 4
    files = BLOCKS // bpf
    perm = torch.randperm(BLOCKS).tolist()
    store_ids = [perm[i * bpf:(i + 1) * bpf] for i in range(files)]
    names = [f"model/r0/{i:032x}.bin" for i in range(files)]
    with kv.CudaEngine(shm_mount.mnt, src, bpf, io_threads=3, copy_engine=engine) as e:
        assert e.copy_engine.startswith(engine)
        j = e.store(names, store_ids)
        assert j.wait(60) and j.results() == [0] * files, j.failed()
    # Load into other blocks of zeroed tensors.
    load_ids = [list(reversed(ids)) for ids in store_ids]
    with kv.CudaEngine(shm_mount.mnt, dst, bpf, io_threads=2, copy_engine=engine) as e:
        j = e.load(names, load_ids)
        assert j.wait(60) and j.results() == [0] * files, j.failed()
    torch.cuda.synchronize()
    flat_store = [b for ids in store_ids for b in ids]
    flat_load = [b for ids in load_ids for b in ids]
    assert same_blocks(src, dst, flat_store, flat_load, kind)


def test_corrupt_file_is_a_failed_load(shm_mount):
    kind, dtype = "kv_first", torch.bfloat16
    src = make_caches(kind, dtype)
    names = ["ns/" + "ab" * 16 + ".bin", "ns/" + "cd" * 16 + ".bin"]
    with kv.CudaEngine(shm_mount.mnt, src, 2) as e:
        j = e.store(names, [[0, 1], [2, 3]])
        assert j.wait(60) and j.results() == [0, 0]
    f = shm_mount.backing / "ns" / ".kvfs-blocks" / "aba" / ("ab" * 16 + ".bin")
    data = bytearray(f.read_bytes())
    data[kv.HEADER_SIZE + 12345] ^= 0x10
    f.write_bytes(data)
    dst = [torch.full_like(t, 7) for t in src]
    before = [t.clone() for t in dst]
    with kv.CudaEngine(shm_mount.mnt, dst, 2) as e:
        j = e.load(names + ["ns/" + "ef" * 16 + ".bin"], [[5, 6], [7, 8], [9, 10]])
        assert j.wait(60)
        assert j.results() == [kv.E_CORRUPT, 0, -2]
    torch.cuda.synchronize()
    assert same_blocks(before, dst, [5, 6, 9, 10], [5, 6, 9, 10], kind)  # untouched
    assert same_blocks(src, dst, [2, 3], [7, 8], kind)


def test_bad_block_ids_and_budget_refused(shm_mount):
    src = make_caches("kv_first", torch.float16)
    with kv.CudaEngine(shm_mount.mnt, src, 2) as e:
        with pytest.raises(kv.KvfsError):
            e.store(["x/" + "00" * 16], [[0, BLOCKS]])  # out of range
    with pytest.raises(kv.KvfsError):
        kv.CudaEngine(shm_mount.mnt, src, 2, staging_bytes=1024)  # not even one file
