"""The GPU path of kvfs's offloading spec (kvfs.vllm.transfer.PageTransfer,
what KvfsOffloadingWorker runs) on a GPU: KV caches as vLLM hands them to an
offloading worker (CanonicalKVCaches: per layer, a block-first tensor whose
block is one page of keys then values, viewed as int8 pages, possibly padded)
go through a kvfs mount into zeroed pages and come back bitwise equal; a
missing or corrupt file fails its job and only its own blocks. No vLLM is
needed (the GPU machine has none); the same class is driven by vLLM's
connector through KvfsOffloadingWorker."""

import os

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from kvfs.vllm.transfer import PageTransfer  # noqa: E402

LAYERS, BLOCKS, T, H, D = 4, 64, 16, 8, 128


def canonical_pages(dtype=torch.bfloat16, pad_bytes=0):
    """Per layer a [num_blocks, 2, T, H, D] tensor (vLLM's block-first layout)
    filled at random, and its int8 page view [num_blocks, page (+ padding)]."""
    page = 2 * T * H * D * torch.tensor([], dtype=dtype).element_size()
    out = []
    for _ in range(LAYERS):
        raw = torch.randint(-128, 127, (BLOCKS, page + pad_bytes), dtype=torch.int8, device="cuda")
        out.append((raw, page))
    return out


@pytest.mark.parametrize("bpf", [1, 4])
@pytest.mark.parametrize("pad", [0, 4096])
def test_pages_round_trip_bitwise(shm_mount, bpf, pad):
    src = canonical_pages(pad_bytes=pad)
    dst = [(torch.zeros_like(t), p) for t, p in src]
    root = shm_mount.mnt / "kv" / "r0"
    os.makedirs(root)
    files = 8
    names = [f"g0/{i:064x}.bin" for i in range(files)]
    ids = list(range(files * bpf))
    a = PageTransfer(root, src, T, bpf, io_threads=4)
    b = PageTransfer(root, dst, T, bpf, io_threads=4)
    try:
        a.store(1, names, ids)
        a.wait([1])
        assert a.finished() == [(1, True, files * a.file_bytes, pytest.approx(0, abs=60))]
        # Loaded into other GPU blocks than they came from.
        back = [BLOCKS - 1 - i for i in ids]
        b.load(7, names, back)
        b.wait([7])
        [(job, ok, size, _)] = b.finished()
        assert (job, ok, size) == (7, True, files * b.file_bytes)
        torch.cuda.synchronize()
        for (s, page), (d, _) in zip(src, dst):
            for i, j in zip(ids, back):
                assert torch.equal(s[i, :page].cpu(), d[j, :page].cpu())
            assert not d[:, page:].any(), "padding past the page was written"
        # A second store of the same files is skipped, not rewritten.
        a.store(2, names, ids)
        a.wait([2])
        assert a.finished()[0][:3] == (2, True, 0) and a.skipped == files
    finally:
        a.close()
        b.close()


def test_missing_or_corrupt_file_fails_only_its_blocks(shm_mount):
    src = canonical_pages()
    dst = [(torch.zeros_like(t), p) for t, p in src]
    root = shm_mount.mnt / "kv" / "r0"
    os.makedirs(root)
    names = [f"g0/{i:064x}.bin" for i in range(4)]
    a = PageTransfer(root, src, T, 1)
    b = PageTransfer(root, dst, T, 1)
    try:
        a.store(1, names, range(4))
        a.wait([1])
        assert a.finished()[0][1]
        os.unlink(root / names[1])
        blk = shm_mount.backing / "kv" / "r0" / "g0" / ".kvfs-blocks" / names[2][3:6] / names[2][3:]
        with open(blk, "r+b") as f:  # one payload byte of block 2
            f.seek(-5, os.SEEK_END)
            byte = f.read(1)
            f.seek(-5, os.SEEK_END)
            f.write(bytes([byte[0] ^ 1]))
        b.load(2, names, range(4))
        b.wait([2])
        [(job, ok, size, _)] = b.finished()
        assert (job, ok) == (2, False) and size == 2 * b.file_bytes
        torch.cuda.synchronize()
        for (s, page), (d, _) in zip(src, dst):
            assert torch.equal(s[0].cpu(), d[0].cpu()) and torch.equal(s[3].cpu(), d[3].cpu())
            assert not d[1].any(), "a missing file left data in its blocks"
            assert not d[2].any(), "a corrupt file's data reached the GPU"
    finally:
        a.close()
        b.close()
