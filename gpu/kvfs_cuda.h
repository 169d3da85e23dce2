/* libkvfs-cuda: moving KV-cache blocks between vLLM's paged GPU KV cache and
 * a kvfs mount, through pinned staging buffers on the GPU's NUMA node.
 *
 * The KV cache is one tensor per layer, either [2, num_blocks, block_tokens,
 * heads, head_size] or [num_blocks, 2, block_tokens, heads, head_size]; the
 * caller describes each layer by its base address and two byte strides (from
 * one GPU block to the next, from K to V), so any stride vLLM uses works and
 * nothing here links against PyTorch. A file holds layout.blocks_per_file GPU
 * blocks; a store gathers their chunks (block, layer, K then V) into staging
 * and writes one checksummed file, a load reads and verifies one and scatters
 * it back. Each I/O thread has its own CUDA stream and two staging slots, so
 * one file's copy overlaps the previous file's I/O.
 *
 * Copy engines: an SM copy kernel that moves the chunks between device memory
 * and mapped pinned memory (the default: it measured faster), or DMA
 * (cudaMemcpyBatchAsync, one call per file; per-chunk cudaMemcpyAsync where
 * the driver lacks it), which leaves the SMs to the model. Chosen by option,
 * or by the KVFS_COPY_ENGINE environment variable (kernel|dma). */
#ifndef KVFS_CUDA_H
#define KVFS_CUDA_H

#include "kvfs_client.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum kvfs_copy_engine {
    KVFS_COPY_DEFAULT = 0, /* KVFS_COPY_ENGINE from the environment, else the kernel */
    KVFS_COPY_DMA = 1,
    KVFS_COPY_KERNEL = 2,
};

struct kvfs_cuda_layer {
    uint64_t base;        /* device address of the layer's tensor */
    int64_t block_stride; /* bytes from GPU block i to i+1 */
    int64_t kv_stride;    /* bytes from a block's K to its V */
};

struct kvfs_cuda_options {
    const char *root;
    struct kvfs_layout layout; /* num_layers must match the layers below */
    int device;
    const struct kvfs_cuda_layer *layers;
    uint64_t num_gpu_blocks; /* block ids must be below this */
    int io_threads;          /* default 4 */
    int numa_node;           /* -1: don't pin; KVFS_NUMA_OF_GPU: the GPU's own node */
    size_t staging_bytes;    /* pinned staging budget; 0: two files per thread */
    int copy_engine;         /* enum kvfs_copy_engine */
    int timeout_ms;
    size_t store_queue_max;
    int write_mode; /* enum kvfs_write_mode */
};
#define KVFS_NUMA_OF_GPU (-2)

typedef struct kvfs_cuda_engine kvfs_cuda_engine;

struct kvfs_cuda_op {
    int kind;                 /* KVFS_OP_STORE or KVFS_OP_LOAD */
    const char *name;         /* file name, relative to root */
    const int64_t *block_ids; /* layout.blocks_per_file GPU block ids */
};

KVFS_API int kvfs_cuda_engine_create(const struct kvfs_cuda_options *o, kvfs_cuda_engine **out);
KVFS_API void kvfs_cuda_engine_destroy(kvfs_cuda_engine *e);
/* Queues the operations; wait on and free the job with libkvfs's kvfs_job_*.
 * Unless AFTER_STREAM is KVFS_CUDA_NO_STREAM, the copies start only once the
 * work queued so far on that CUDA stream (the cudaStream_t value; 0 is the
 * legacy default stream) is done, so that a store reads the KV values the
 * model has just written rather than older ones. */
#define KVFS_CUDA_NO_STREAM (-1)
KVFS_API int kvfs_cuda_submit(kvfs_cuda_engine *e, const struct kvfs_cuda_op *ops, size_t n,
                              int64_t after_stream, kvfs_job **out);
/* The underlying engine, for kvfs_exists and kvfs_engine_stats. */
KVFS_API kvfs_engine *kvfs_cuda_engine_core(kvfs_cuda_engine *e);
KVFS_API const char *kvfs_cuda_copy_engine_name(const kvfs_cuda_engine *e);
KVFS_API int kvfs_cuda_io_threads(const kvfs_cuda_engine *e);
KVFS_API int kvfs_cuda_numa_node(const kvfs_cuda_engine *e);
/* The last CUDA error message seen (for reports), or "". */
KVFS_API const char *kvfs_cuda_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
