"""Python binding of libkvfs and libkvfs-cuda (ctypes; no compiled extension).

    from kvfs import Layout, Engine, CudaEngine

`Engine` moves blocks between host buffers and a directory (a kvfs mount or any
other); `CudaEngine` moves them between vLLM's paged GPU KV cache (a list of
torch tensors, one per layer) and the directory. Both return `Job`s whose
per-block results say exactly what happened to each block: a load that did not
produce verified data is reported as failed, never as success.

The libraries are found through $KVFS_LIB_DIR, then next to this package
(lib/), then in the source tree's build/lib."""

import ctypes
import errno as _errno
import os
from pathlib import Path

__all__ = ["Layout", "Engine", "CudaEngine", "Job", "KvfsError", "strerror",
           "E_SHORT", "E_CORRUPT", "E_LAYOUT", "E_FORMAT", "E_DROPPED", "E_CANCELLED", "E_COPY",
           "PENDING", "EXISTED", "STORE", "LOAD", "EXISTS"]

E_SHORT, E_CORRUPT, E_LAYOUT, E_FORMAT, E_DROPPED, E_CANCELLED, E_COPY = (
    -4001, -4002, -4003, -4004, -4005, -4006, -4007)
PENDING, EXISTED = 2, 3
STORE, LOAD, EXISTS = 1, 2, 3
HEADER_SIZE = 4096

DTYPES = {"fp16": 1, "bf16": 2, "fp8_e4m3": 3, "fp8_e5m2": 4, "fp32": 5}
DTYPE_SIZE = {1: 2, 2: 2, 3: 1, 4: 1, 5: 4}
WRITE_MODES = {"auto": 0, "direct": 1, "link": 2}
COPY_ENGINES = {"default": 0, "dma": 1, "kernel": 2}


def _lib_dirs():
    env = os.environ.get("KVFS_LIB_DIR")
    if env:
        yield Path(env)
    here = Path(__file__).resolve().parent
    yield here / "lib"
    yield here.parents[2] / "build" / "lib"


def _load(name):
    for d in _lib_dirs():
        p = d / name
        if p.exists():
            return ctypes.CDLL(str(p), mode=ctypes.RTLD_GLOBAL)
    raise OSError(f"{name} not found (set KVFS_LIB_DIR); looked in "
                  + ", ".join(str(d) for d in _lib_dirs()))


class _Layout(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in
                ("num_layers", "block_tokens", "num_heads", "head_size", "dtype",
                 "blocks_per_file")]


class _EngineOptions(ctypes.Structure):
    _fields_ = [("root", ctypes.c_char_p), ("layout", _Layout), ("io_threads", ctypes.c_int),
                ("numa_node", ctypes.c_int), ("store_queue_max", ctypes.c_size_t),
                ("timeout_ms", ctypes.c_int), ("write_mode", ctypes.c_int),
                ("copier", ctypes.c_void_p), ("copier_ctx", ctypes.c_void_p),
                ("xfer_size", ctypes.c_size_t)]


class _Op(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("name", ctypes.c_char_p), ("host", ctypes.c_void_p),
                ("xfer", ctypes.c_void_p)]


class _Stats(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in
                ("stores_done", "stores_existed", "stores_failed", "stores_dropped",
                 "loads_done", "loads_failed", "timeouts", "bytes_stored", "bytes_loaded")]


class _CudaLayer(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("block_stride", ctypes.c_int64),
                ("kv_stride", ctypes.c_int64)]


class _CudaOptions(ctypes.Structure):
    _fields_ = [("root", ctypes.c_char_p), ("layout", _Layout), ("device", ctypes.c_int),
                ("layers", ctypes.POINTER(_CudaLayer)), ("num_gpu_blocks", ctypes.c_uint64),
                ("io_threads", ctypes.c_int), ("numa_node", ctypes.c_int),
                ("staging_bytes", ctypes.c_size_t), ("copy_engine", ctypes.c_int),
                ("timeout_ms", ctypes.c_int), ("store_queue_max", ctypes.c_size_t),
                ("write_mode", ctypes.c_int)]


class _CudaOp(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("name", ctypes.c_char_p),
                ("block_ids", ctypes.POINTER(ctypes.c_int64))]


_lib = None
_cuda = None


def _core():
    global _lib
    if _lib is None:
        lib = _load("libkvfs.so")
        lib.kvfs_strerror.restype = ctypes.c_char_p
        lib.kvfs_strerror.argtypes = [ctypes.c_int]
        lib.kvfs_engine_create.argtypes = [ctypes.POINTER(_EngineOptions),
                                           ctypes.POINTER(ctypes.c_void_p)]
        lib.kvfs_engine_destroy.argtypes = [ctypes.c_void_p]
        lib.kvfs_engine_writes_direct.argtypes = [ctypes.c_void_p]
        lib.kvfs_submit.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Op), ctypes.c_size_t,
                                    ctypes.POINTER(ctypes.c_void_p)]
        lib.kvfs_job_wait.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.kvfs_job_done.argtypes = [ctypes.c_void_p]
        lib.kvfs_job_done.restype = ctypes.c_bool
        lib.kvfs_job_size.argtypes = [ctypes.c_void_p]
        lib.kvfs_job_size.restype = ctypes.c_size_t
        lib.kvfs_job_result.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.kvfs_job_free.argtypes = [ctypes.c_void_p]
        lib.kvfs_exists.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p),
                                    ctypes.c_size_t, ctypes.POINTER(ctypes.c_int)]
        lib.kvfs_engine_stats.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Stats)]
        lib.kvfs_block_verify.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(_Layout)]
        _lib = lib
    return _lib


def _cudalib():
    global _cuda
    if _cuda is None:
        _core()
        lib = _load("libkvfs_cuda.so")
        lib.kvfs_cuda_engine_create.argtypes = [ctypes.POINTER(_CudaOptions),
                                                ctypes.POINTER(ctypes.c_void_p)]
        lib.kvfs_cuda_engine_destroy.argtypes = [ctypes.c_void_p]
        lib.kvfs_cuda_submit.argtypes = [ctypes.c_void_p, ctypes.POINTER(_CudaOp),
                                         ctypes.c_size_t, ctypes.c_int64,
                                         ctypes.POINTER(ctypes.c_void_p)]
        lib.kvfs_cuda_engine_core.argtypes = [ctypes.c_void_p]
        lib.kvfs_cuda_engine_core.restype = ctypes.c_void_p
        lib.kvfs_cuda_copy_engine_name.argtypes = [ctypes.c_void_p]
        lib.kvfs_cuda_copy_engine_name.restype = ctypes.c_char_p
        lib.kvfs_cuda_io_threads.argtypes = [ctypes.c_void_p]
        lib.kvfs_cuda_numa_node.argtypes = [ctypes.c_void_p]
        lib.kvfs_cuda_last_error.restype = ctypes.c_char_p
        _cuda = lib
    return _cuda


def strerror(code):
    return _core().kvfs_strerror(code).decode()


class KvfsError(OSError):
    def __init__(self, code, what):
        self.code = code
        super().__init__(-code if -code < 4000 else _errno.EIO, f"{what}: {strerror(code)}")


class Layout:
    """What one block file holds: blocks_per_file GPU blocks x num_layers x (K, V)
    chunks of block_tokens x num_heads x head_size elements of dtype."""

    def __init__(self, num_layers, block_tokens, num_heads, head_size, dtype, blocks_per_file):
        self.num_layers, self.block_tokens = int(num_layers), int(block_tokens)
        self.num_heads, self.head_size = int(num_heads), int(head_size)
        self.dtype = DTYPES[dtype] if isinstance(dtype, str) else int(dtype)
        self.blocks_per_file = int(blocks_per_file)

    def _c(self):
        return _Layout(self.num_layers, self.block_tokens, self.num_heads, self.head_size,
                       self.dtype, self.blocks_per_file)

    @property
    def chunk_bytes(self):
        return self.block_tokens * self.num_heads * self.head_size * DTYPE_SIZE[self.dtype]

    @property
    def payload_bytes(self):
        return self.chunk_bytes * 2 * self.num_layers * self.blocks_per_file

    def __repr__(self):
        return (f"Layout(layers={self.num_layers}, block_tokens={self.block_tokens}, "
                f"heads={self.num_heads}, head_size={self.head_size}, dtype={self.dtype}, "
                f"blocks_per_file={self.blocks_per_file})")


class Job:
    """A submitted batch; results()[i] is 0 (done), EXISTED (a store found the block
    already there), 1/0 for an existence check, or a negative error."""

    def __init__(self, handle, keep):
        self._h = ctypes.c_void_p(handle)
        self._keep = keep  # buffers and descriptors that must outlive the job

    def wait(self, timeout=None):
        """Waits until every block is done or TIMEOUT seconds pass; True if done."""
        ms = -1 if timeout is None else int(timeout * 1000)
        return _core().kvfs_job_wait(self._h, ms) == 0

    def done(self):
        return bool(_core().kvfs_job_done(self._h))

    def results(self):
        lib = _core()
        return [lib.kvfs_job_result(self._h, i) for i in range(lib.kvfs_job_size(self._h))]

    def failed(self):
        """(index, code, message) of every block that did not succeed."""
        return [(i, r, strerror(r)) for i, r in enumerate(self.results()) if r < 0]

    def free(self):
        if self._h:
            _core().kvfs_job_free(self._h)
            self._h = None

    def __del__(self):
        try:
            self.free()
        except Exception:
            pass


def _names(names):
    return [n.encode() if isinstance(n, str) else bytes(n) for n in names]


class _Base:
    _h = None

    def _check(self, rc, what):
        if rc < 0:
            raise KvfsError(rc, what)

    def exists(self, names):
        """One entry per name: True, False, or a negative error code."""
        names = _names(names)
        arr = (ctypes.c_char_p * len(names))(*names)
        out = (ctypes.c_int * len(names))()
        rc = _core().kvfs_exists(self._core_handle(), arr, len(names), out)
        if rc not in (0, -_errno.ETIMEDOUT):
            self._check(rc, "kvfs_exists")
        return [bool(v) if v in (0, 1) else v for v in out]

    def stats(self):
        st = _Stats()
        _core().kvfs_engine_stats(self._core_handle(), ctypes.byref(st))
        return {n: getattr(st, n) for n, _ in _Stats._fields_}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._h:
            self._destroy(self._h)
            self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Engine(_Base):
    """Host-memory engine: stores from and loads into buffers that support the
    buffer protocol (bytearray, numpy arrays, mmap), each layout.payload_bytes long."""

    def __init__(self, root, layout, io_threads=4, numa_node=-1, timeout=30.0,
                 store_queue_max=4096, write_mode="auto"):
        self.layout = layout
        o = _EngineOptions(str(root).encode(), layout._c(), io_threads, numa_node,
                           store_queue_max, int(timeout * 1000), WRITE_MODES[write_mode],
                           None, None, 0)
        h = ctypes.c_void_p()
        self._check(_core().kvfs_engine_create(ctypes.byref(o), ctypes.byref(h)),
                    "kvfs_engine_create")
        self._h = h

    def _core_handle(self):
        return self._h

    @property
    def writes_direct(self):
        return bool(_core().kvfs_engine_writes_direct(self._h))

    def _submit(self, kind, names, buffers):
        names = _names(names)
        if len(buffers) != len(names):
            raise ValueError("one buffer per name")
        ptrs = []
        for b in buffers:
            c = (ctypes.c_char * self.layout.payload_bytes).from_buffer(b)
            ptrs.append(c)
        ops = (_Op * len(names))(*[_Op(kind, n, ctypes.addressof(p), None)
                                   for n, p in zip(names, ptrs)])
        h = ctypes.c_void_p()
        self._check(_core().kvfs_submit(self._h, ops, len(names), ctypes.byref(h)), "kvfs_submit")
        return Job(h.value, (ptrs, buffers))

    def store(self, names, buffers):
        return self._submit(STORE, names, buffers)

    def load(self, names, buffers):
        return self._submit(LOAD, names, buffers)

    @staticmethod
    def _destroy(h):
        _core().kvfs_engine_destroy(h)


_TORCH_DTYPES = {"torch.float16": "fp16", "torch.bfloat16": "bf16",
                 "torch.float8_e4m3fn": "fp8_e4m3", "torch.float8_e5m2": "fp8_e5m2",
                 "torch.float32": "fp32"}


def describe_kv_caches(kv_caches, layout_kind=None):
    """Works out (layout fields, per-layer (base, block_stride, kv_stride), num_blocks)
    from vLLM's per-layer KV tensors, [2, num_blocks, T, H, D] ("kv_first") or
    [num_blocks, 2, T, H, D] ("block_first"). Only data pointers and strides are read."""
    first = kv_caches[0]
    if first.dim() != 5:
        raise ValueError(f"KV cache tensors must have 5 dimensions, not {tuple(first.shape)}")
    if layout_kind is None:
        layout_kind = "kv_first" if first.shape[0] == 2 and first.shape[1] != 2 else "block_first"
    kvdim, bdim = (0, 1) if layout_kind == "kv_first" else (1, 0)
    num_blocks = first.shape[bdim]
    _, _, T, H, D = (first.shape[0], first.shape[1], first.shape[2], first.shape[3], first.shape[4])
    dtype = _TORCH_DTYPES.get(str(first.dtype))
    if dtype is None:
        raise ValueError(f"unsupported KV cache dtype {first.dtype}")
    layers = []
    for t in kv_caches:
        if tuple(t.shape) != tuple(first.shape) or t.dtype != first.dtype:
            raise ValueError("all layers must have the same shape and dtype")
        if t.shape[kvdim] != 2:
            raise ValueError(f"layout {layout_kind} needs 2 in dimension {kvdim}")
        st = t.stride()
        if st[4] != 1 or st[3] != D or st[2] != H * D:
            raise ValueError("each block's [tokens, heads, head_size] must be contiguous")
        es = t.element_size()
        layers.append((t.data_ptr(), st[bdim] * es, st[kvdim] * es))
    return (T, H, D, dtype), layers, num_blocks


def describe_pages(pages, block_tokens):
    """Like describe_kv_caches, for KV caches given as pages: (tensor, page_bytes)
    pairs, each tensor indexed by block first (vLLM's CanonicalKVCaches: one
    tensor per layer or group of layers, a block's keys and values in one
    page of page_bytes, keys in its first half). All pages must be equal."""
    tensors = [t for t, _ in pages]
    page = {int(b) for _, b in pages}
    if len(page) != 1:
        raise ValueError(f"all KV pages must have one size, not {sorted(page)}")
    page = page.pop()
    num_blocks = {int(t.shape[0]) for t in tensors}
    if len(num_blocks) != 1:
        raise ValueError("all KV tensors must have the same number of blocks")
    if page % (4 * block_tokens):
        raise ValueError(f"a {page}-byte page does not split into keys and values of "
                         f"{block_tokens} 16-bit tokens")
    # The file format counts 16-bit elements of [tokens, heads, head_size];
    # a page's bytes need only be split into factors the header can hold.
    per_token = page // (4 * block_tokens)
    heads = next(h for h in range(1, per_token + 1) if per_token % h == 0
                 and per_token // h <= 65535)
    layers = []
    for t in tensors:
        row = t.stride(0) * t.element_size()
        if row < page:
            raise ValueError(f"KV tensor rows of {row} bytes are shorter than the {page}-byte page")
        layers.append((t.data_ptr(), row, page // 2))
    return (block_tokens, heads, per_token // heads, "fp16"), layers, num_blocks.pop()


class CudaEngine(_Base):
    """GPU engine: stores and loads files of `blocks_per_file` GPU blocks between
    vLLM's paged KV cache (one torch tensor per layer) and ROOT."""

    def __init__(self, root, kv_caches, blocks_per_file, io_threads=4, numa_node="gpu",
                 staging_bytes=0, copy_engine="default", timeout=30.0, store_queue_max=4096,
                 write_mode="auto", layout_kind=None, pages=None, block_tokens=None):
        """KV_CACHES: vLLM's per-layer tensors; or PAGES with BLOCK_TOKENS (see
        describe_pages), KV_CACHES then None."""
        if pages is not None:
            (T, H, D, dtype), layers, num_blocks = describe_pages(pages, block_tokens)
            kv_caches = [t for t, _ in pages]
        else:
            (T, H, D, dtype), layers, num_blocks = describe_kv_caches(kv_caches, layout_kind)
        self.layout = Layout(len(kv_caches), T, H, D, dtype, blocks_per_file)
        self._layers = (_CudaLayer * len(layers))(*[_CudaLayer(*x) for x in layers])
        self._tensors = list(kv_caches)
        node = -2 if numa_node == "gpu" else (-1 if numa_node is None else int(numa_node))
        o = _CudaOptions(str(root).encode(), self.layout._c(), kv_caches[0].device.index or 0,
                         self._layers, num_blocks, io_threads, node, staging_bytes,
                         COPY_ENGINES[copy_engine], int(timeout * 1000), store_queue_max,
                         WRITE_MODES[write_mode])
        h = ctypes.c_void_p()
        rc = _cudalib().kvfs_cuda_engine_create(ctypes.byref(o), ctypes.byref(h))
        if rc < 0:
            raise KvfsError(rc, "kvfs_cuda_engine_create: "
                            + _cudalib().kvfs_cuda_last_error().decode())
        self._h = h
        self.num_blocks = num_blocks

    def _core_handle(self):
        return _cudalib().kvfs_cuda_engine_core(self._h)

    @property
    def copy_engine(self):
        return _cudalib().kvfs_cuda_copy_engine_name(self._h).decode()

    @property
    def io_threads(self):
        return _cudalib().kvfs_cuda_io_threads(self._h)

    @property
    def numa_node(self):
        return _cudalib().kvfs_cuda_numa_node(self._h)

    def _submit(self, kind, names, block_ids, after_stream):
        names = _names(names)
        if len(block_ids) != len(names):
            raise ValueError("one list of block ids per name")
        if after_stream is None:
            import torch

            after_stream = torch.cuda.current_stream(self._tensors[0].device).cuda_stream
        bpf = self.layout.blocks_per_file
        arrays = []
        for ids in block_ids:
            if len(ids) != bpf:
                raise ValueError(f"each file holds {bpf} GPU blocks, not {len(ids)}")
            arrays.append((ctypes.c_int64 * bpf)(*ids))
        ops = (_CudaOp * len(names))(*[_CudaOp(kind, n, a) for n, a in zip(names, arrays)])
        h = ctypes.c_void_p()
        self._check(_cudalib().kvfs_cuda_submit(self._h, ops, len(names), after_stream,
                                                ctypes.byref(h)), "kvfs_cuda_submit")
        return Job(h.value, (arrays, self._tensors))

    def store(self, names, block_ids, after_stream=None):
        """Stores each file's GPU blocks; the copies wait for the work queued so far on
        AFTER_STREAM (default: torch's current stream; -1: no wait)."""
        return self._submit(STORE, names, block_ids, after_stream)

    def load(self, names, block_ids, after_stream=-1):
        """Loads files into GPU blocks. Wait on the job before using the blocks."""
        return self._submit(LOAD, names, block_ids, after_stream)

    @staticmethod
    def _destroy(h):
        _cudalib().kvfs_cuda_engine_destroy(h)
