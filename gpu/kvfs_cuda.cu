/* libkvfs-cuda: the device side of libkvfs (see kvfs_cuda.h).
 *
 * This file only moves bytes between GPU memory and pinned staging; queues,
 * threads, deadlines, the file format and file I/O are libkvfs's. A file's
 * chunks are listed once per copy (merging chunks that are adjacent on both
 * sides, as K and V of one block are in the [num_blocks, 2, ...] layout) and
 * handed to the copy engine in one go:
 *
 *  - DMA: one cudaMemcpyBatchAsync per file (copy engines, no SM time);
 *    per-chunk cudaMemcpyAsync when the driver does not support batches;
 *  - kernel: one launch of copy_chunks, whose thread blocks move 16-byte
 *    words between device memory and mapped pinned staging over PCIe.
 *
 * Each I/O thread has its own stream and one event per staging slot; libkvfs
 * waits on a slot's event before it touches that slot again. */
#include "kvfs_cuda.h"

#include <cuda_runtime.h>
#include <errno.h>
#include <numa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct thread_state {
    cudaStream_t stream;
    cudaEvent_t done[2];
    /* Chunk lists, one per slot: DMA takes host arrays, the kernel reads
     * mapped pinned tables through their device addresses. */
    void **dst[2];
    void **src[2];
    size_t *len[2];
    uint64_t *table[2]; /* pinned, mapped: dst[n], src[n], len[n] */
    uint64_t *table_dev[2];
    /* The staging slots' host and device addresses (the kernel needs the
     * device one; with unified addressing they are usually equal). */
    char *host_base[2], *dev_base[2];
    size_t slot_bytes;
    int nslots;
};

struct kvfs_cuda_engine {
    struct kvfs_cuda_options o;
    struct kvfs_cuda_layer *layers;
    kvfs_engine *core;
    int engine; /* KVFS_COPY_DMA or KVFS_COPY_KERNEL */
    int numa_node;
    int threads;
    size_t max_chunks;
    size_t chunk;
    bool batch_ok;
    struct thread_state *ts;
};

static __thread char last_error[256];

const char *kvfs_cuda_last_error(void) {
    return last_error;
}

static int cuda_fail(cudaError_t err, const char *what) {
    snprintf(last_error, sizeof(last_error), "%s: %s", what, cudaGetErrorString(err));
    return KVFS_E_COPY;
}

#define CUDA_TRY(call, what)                                                                       \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        if (err_ != cudaSuccess)                                                                   \
            return cuda_fail(err_, what);                                                          \
    } while (0)

__global__ void copy_chunks(const uint64_t *table, int n) {
    const uint64_t *dsts = table, *srcs = table + n, *lens = table + 2 * n;
    for (int c = blockIdx.x; c < n; c += gridDim.x) {
        char *d = (char *)dsts[c];
        const char *s = (const char *)srcs[c];
        uint64_t len = lens[c];
        if ((((uint64_t)d | (uint64_t)s | len) & 15) == 0) {
            int4 *d4 = (int4 *)d;
            const int4 *s4 = (const int4 *)s;
            for (uint64_t i = threadIdx.x; i < len / 16; i += blockDim.x)
                d4[i] = s4[i];
        } else {
            for (uint64_t i = threadIdx.x; i < len; i += blockDim.x)
                d[i] = s[i];
        }
    }
}

/* Lists the copies for one file between GPU blocks IDS and staging HOST. */
static size_t list_chunks(kvfs_cuda_engine *e, struct thread_state *t, int slot, const int64_t *ids,
                          char *host, bool to_host) {
    size_t n = 0, off = 0;
    const struct kvfs_layout *l = &e->o.layout;
    void **dst = t->dst[slot], **src = t->src[slot];
    size_t *len = t->len[slot];
    for (uint32_t b = 0; b < l->blocks_per_file; b++) {
        for (uint32_t layer = 0; layer < l->num_layers; layer++) {
            const struct kvfs_cuda_layer *ly = &e->layers[layer];
            for (int kv = 0; kv < 2; kv++) {
                char *gpu = (char *)(uintptr_t)(ly->base + (uint64_t)(ids[b] * ly->block_stride) +
                                                (uint64_t)(kv * ly->kv_stride));
                char *h = host + off;
                char *d = to_host ? h : gpu;
                char *s = to_host ? gpu : h;
                if (n && (char *)dst[n - 1] + len[n - 1] == d &&
                    (char *)src[n - 1] + len[n - 1] == s) {
                    len[n - 1] += e->chunk;
                } else {
                    dst[n] = d;
                    src[n] = s;
                    len[n] = e->chunk;
                    n++;
                }
                off += e->chunk;
            }
        }
    }
    return n;
}

static int copy(kvfs_cuda_engine *e, int thread, int slot, const void *xfer, char *host,
                bool to_host) {
    struct thread_state *t = &e->ts[thread];
    size_t n = list_chunks(e, t, slot, (const int64_t *)xfer, host, to_host);
    if (e->engine == KVFS_COPY_KERNEL) {
        /* Staging addresses as the device sees them. */
        char *hb = t->host_base[slot], *db = t->dev_base[slot];
        for (size_t i = 0; i < n; i++) {
            char **p = to_host ? (char **)&t->dst[slot][i] : (char **)&t->src[slot][i];
            if (*p >= hb && *p < hb + t->slot_bytes)
                *p = db + (*p - hb);
        }
        uint64_t *tab = t->table[slot];
        for (size_t i = 0; i < n; i++) {
            tab[i] = (uint64_t)(uintptr_t)t->dst[slot][i];
            tab[n + i] = (uint64_t)(uintptr_t)t->src[slot][i];
            tab[2 * n + i] = t->len[slot][i];
        }
        int grid = n < 2048 ? (int)n : 2048;
        copy_chunks<<<grid, 256, 0, t->stream>>>(t->table_dev[slot], (int)n);
        CUDA_TRY(cudaGetLastError(), "copy kernel launch");
    } else if (e->batch_ok) {
        struct cudaMemcpyAttributes attr;
        memset(&attr, 0, sizeof(attr));
        attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
        size_t idx = 0;
        cudaError_t err = cudaMemcpyBatchAsync(t->dst[slot], t->src[slot], t->len[slot], n, &attr,
                                               &idx, 1, t->stream);
        if (err == cudaErrorNotSupported || err == cudaErrorInvalidValue) {
            cudaGetLastError();
            e->batch_ok = false; /* fall back for good */
        } else if (err != cudaSuccess) {
            return cuda_fail(err, "cudaMemcpyBatchAsync");
        }
    }
    if (e->engine == KVFS_COPY_DMA && !e->batch_ok)
        for (size_t i = 0; i < n; i++)
            CUDA_TRY(cudaMemcpyAsync(t->dst[slot][i], t->src[slot][i], t->len[slot][i],
                                     cudaMemcpyDefault, t->stream),
                     "cudaMemcpyAsync");
    CUDA_TRY(cudaEventRecord(t->done[slot], t->stream), "cudaEventRecord");
    return 0;
}

static int c_gather(void *ctx, int thread, int slot, const void *xfer, void *dst, size_t len) {
    (void)len;
    return copy((kvfs_cuda_engine *)ctx, thread, slot, xfer, (char *)dst, true);
}

static int c_scatter(void *ctx, int thread, int slot, const void *xfer, const void *src,
                     size_t len) {
    (void)len;
    return copy((kvfs_cuda_engine *)ctx, thread, slot, xfer, (char *)src, false);
}

static int c_wait(void *ctx, int thread, int slot) {
    kvfs_cuda_engine *e = (kvfs_cuda_engine *)ctx;
    CUDA_TRY(cudaEventSynchronize(e->ts[thread].done[slot]), "copy");
    return 0;
}

static int c_thread_start(void *ctx, int thread) {
    (void)thread;
    CUDA_TRY(cudaSetDevice(((kvfs_cuda_engine *)ctx)->o.device), "cudaSetDevice");
    return 0;
}

static int c_thread_init(void *ctx, int thread) {
    kvfs_cuda_engine *e = (kvfs_cuda_engine *)ctx;
    struct thread_state *t = &e->ts[thread];
    CUDA_TRY(cudaStreamCreateWithFlags(&t->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    for (int s = 0; s < 2; s++) {
        CUDA_TRY(cudaEventCreateWithFlags(&t->done[s], cudaEventDisableTiming), "cudaEventCreate");
        t->dst[s] = (void **)calloc(e->max_chunks, sizeof(void *));
        t->src[s] = (void **)calloc(e->max_chunks, sizeof(void *));
        t->len[s] = (size_t *)calloc(e->max_chunks, sizeof(size_t));
        if (!t->dst[s] || !t->src[s] || !t->len[s])
            return -ENOMEM;
        CUDA_TRY(cudaHostAlloc((void **)&t->table[s], 3 * e->max_chunks * sizeof(uint64_t),
                               cudaHostAllocMapped | cudaHostAllocPortable),
                 "cudaHostAlloc (chunk table)");
        CUDA_TRY(cudaHostGetDevicePointer((void **)&t->table_dev[s], t->table[s], 0),
                 "cudaHostGetDevicePointer");
    }
    return 0;
}

/* Pinned staging on the GPU's NUMA node: allocated there by libnuma, then
 * registered (and mapped, for the copy kernel) with CUDA. */
static void *c_alloc(void *ctx, int thread, size_t bytes) {
    kvfs_cuda_engine *e = (kvfs_cuda_engine *)ctx;
    struct thread_state *t = &e->ts[thread];
    void *p = NULL;
    if (t->nslots >= 2)
        return NULL;
    if (e->numa_node >= 0 && numa_available() >= 0) {
        p = numa_alloc_onnode(bytes, e->numa_node);
        if (!p)
            return NULL;
        memset(p, 0, bytes); /* fault the pages in on that node */
        cudaError_t err =
            cudaHostRegister(p, bytes, cudaHostRegisterMapped | cudaHostRegisterPortable);
        if (err != cudaSuccess) {
            cuda_fail(err, "cudaHostRegister");
            numa_free(p, bytes);
            return NULL;
        }
    } else if (cudaHostAlloc(&p, bytes, cudaHostAllocMapped | cudaHostAllocPortable) !=
               cudaSuccess) {
        return NULL;
    }
    void *dev = NULL;
    if (cudaHostGetDevicePointer(&dev, p, 0) != cudaSuccess) {
        cudaGetLastError();
        dev = p;
    }
    t->host_base[t->nslots] = (char *)p;
    t->dev_base[t->nslots] = (char *)dev;
    t->slot_bytes = bytes;
    t->nslots++;
    return p;
}

static void c_free(void *ctx, int thread, void *p, size_t bytes) {
    (void)thread;
    kvfs_cuda_engine *e = (kvfs_cuda_engine *)ctx;
    if (e->numa_node >= 0 && numa_available() >= 0) {
        cudaHostUnregister(p);
        numa_free(p, bytes);
    } else {
        cudaFreeHost(p);
    }
}

static const struct kvfs_copier cuda_copier = {
    c_thread_init, c_thread_start, c_alloc, c_free, c_gather, c_scatter, c_wait,
};

static int pick_engine(int requested) {
    if (requested == KVFS_COPY_DMA || requested == KVFS_COPY_KERNEL)
        return requested;
    /* The kernel is the default because it measured faster (README,
     * "GPU client library"); KVFS_COPY_ENGINE=dma keeps the SMs free. */
    const char *env = getenv("KVFS_COPY_ENGINE");
    if (env && strcmp(env, "dma") == 0)
        return KVFS_COPY_DMA;
    if (env && strcmp(env, "kernel") != 0 && env[0])
        return -EINVAL;
    return KVFS_COPY_KERNEL;
}

static void release(kvfs_cuda_engine *e) {
    if (e->ts) {
        for (int i = 0; i < e->threads; i++) {
            struct thread_state *t = &e->ts[i];
            for (int s = 0; s < 2; s++) {
                free(t->dst[s]);
                free(t->src[s]);
                free(t->len[s]);
                if (t->table[s])
                    cudaFreeHost(t->table[s]);
                if (t->done[s])
                    cudaEventDestroy(t->done[s]);
            }
            if (t->stream)
                cudaStreamDestroy(t->stream);
        }
        free(e->ts);
    }
    free(e->layers);
    free(e);
}

int kvfs_cuda_engine_create(const struct kvfs_cuda_options *o, kvfs_cuda_engine **out) {
    if (!o->layers || kvfs_layout_check(&o->layout) != 0 || o->num_gpu_blocks == 0)
        return -EINVAL;
    int engine = pick_engine(o->copy_engine);
    if (engine < 0)
        return engine;
    CUDA_TRY(cudaSetDevice(o->device), "cudaSetDevice");
    kvfs_cuda_engine *e = (kvfs_cuda_engine *)calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->o = *o;
    e->engine = engine;
    e->batch_ok = true;
    e->chunk = kvfs_layout_chunk_bytes(&o->layout);
    e->max_chunks = (size_t)o->layout.blocks_per_file * o->layout.num_layers * 2;
    e->layers = (struct kvfs_cuda_layer *)malloc(o->layout.num_layers * sizeof(*e->layers));
    if (!e->layers) {
        release(e);
        return -ENOMEM;
    }
    memcpy(e->layers, o->layers, o->layout.num_layers * sizeof(*e->layers));
    e->numa_node = o->numa_node;
    if (e->numa_node == KVFS_NUMA_OF_GPU) {
        int node = -1;
        if (cudaDeviceGetAttribute(&node, cudaDevAttrHostNumaId, o->device) != cudaSuccess)
            cudaGetLastError();
        e->numa_node = node >= 0 && numa_available() >= 0 && node <= numa_max_node() ? node : -1;
    }
    /* The staging budget bounds the threads: each needs two files' worth. */
    size_t per_thread = 2 * (KVFS_HEADER_SIZE + kvfs_layout_payload_bytes(&o->layout));
    int threads = o->io_threads > 0 ? o->io_threads : 4;
    if (o->staging_bytes) {
        size_t fit = o->staging_bytes / per_thread;
        if (fit == 0) {
            release(e);
            return -ENOBUFS;
        }
        if ((size_t)threads > fit)
            threads = (int)fit;
    }
    e->threads = threads;
    e->ts = (struct thread_state *)calloc((size_t)threads, sizeof(*e->ts));
    if (!e->ts) {
        release(e);
        return -ENOMEM;
    }
    struct kvfs_engine_options eo;
    memset(&eo, 0, sizeof(eo));
    eo.root = o->root;
    eo.layout = o->layout;
    eo.io_threads = threads;
    eo.numa_node = e->numa_node;
    eo.store_queue_max = o->store_queue_max;
    eo.timeout_ms = o->timeout_ms;
    eo.write_mode = o->write_mode;
    eo.copier = &cuda_copier;
    eo.copier_ctx = e;
    eo.xfer_size = o->layout.blocks_per_file * sizeof(int64_t);
    int rc = kvfs_engine_create(&eo, &e->core);
    if (rc) {
        release(e);
        return rc;
    }
    *out = e;
    return 0;
}

void kvfs_cuda_engine_destroy(kvfs_cuda_engine *e) {
    if (!e)
        return;
    kvfs_engine_destroy(e->core);
    release(e);
}

/* Orders every I/O thread's stream after the work queued so far on STREAM.
 * Waiting on all of them (a few microseconds) is simpler and as correct as
 * tracking which thread will take which operation, and the event can be
 * destroyed at once because the waits are already enqueued. */
static int order_after(kvfs_cuda_engine *e, int64_t stream) {
    cudaEvent_t ev;
    CUDA_TRY(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreate");
    cudaError_t err = cudaEventRecord(ev, (cudaStream_t)(uintptr_t)stream);
    for (int i = 0; err == cudaSuccess && i < e->threads; i++)
        err = cudaStreamWaitEvent(e->ts[i].stream, ev, 0);
    cudaEventDestroy(ev);
    return err == cudaSuccess ? 0 : cuda_fail(err, "ordering after the caller's stream");
}

int kvfs_cuda_submit(kvfs_cuda_engine *e, const struct kvfs_cuda_op *ops, size_t n,
                     int64_t after_stream, kvfs_job **out) {
    struct kvfs_op *kops = (struct kvfs_op *)calloc(n ? n : 1, sizeof(*kops));
    if (!kops)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if ((ops[i].kind != KVFS_OP_STORE && ops[i].kind != KVFS_OP_LOAD) || !ops[i].block_ids) {
            free(kops);
            return -EINVAL;
        }
        for (uint32_t b = 0; b < e->o.layout.blocks_per_file; b++) {
            int64_t id = ops[i].block_ids[b];
            if (id < 0 || (uint64_t)id >= e->o.num_gpu_blocks) {
                free(kops);
                return -ERANGE;
            }
        }
        kops[i].kind = ops[i].kind;
        kops[i].name = ops[i].name;
        kops[i].xfer = ops[i].block_ids;
    }
    int rc = after_stream == KVFS_CUDA_NO_STREAM ? 0 : order_after(e, after_stream);
    if (rc == 0)
        rc = kvfs_submit(e->core, kops, n, out);
    free(kops);
    return rc;
}

kvfs_engine *kvfs_cuda_engine_core(kvfs_cuda_engine *e) {
    return e->core;
}

const char *kvfs_cuda_copy_engine_name(const kvfs_cuda_engine *e) {
    if (e->engine == KVFS_COPY_KERNEL)
        return "kernel";
    return e->batch_ok ? "dma-batch" : "dma";
}

int kvfs_cuda_io_threads(const kvfs_cuda_engine *e) {
    return e->threads;
}

int kvfs_cuda_numa_node(const kvfs_cuda_engine *e) {
    return e->numa_node;
}
