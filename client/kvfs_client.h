/* libkvfs: moving KV-cache blocks between memory and a kvfs mount (or any
 * directory) with plain POSIX calls.
 *
 * A block file is a 4 KiB header followed by the payload. The header records
 * the format version, the layout the block was written with, the payload's
 * length and its xxh3-64; every load checks all of them, so a missing, short,
 * corrupt or differently laid out file fails with its own error and never
 * reaches the caller's memory as if it were valid.
 *
 * The engine runs a pool of I/O threads (optionally pinned to one NUMA node)
 * fed by an asynchronous job API: submit a batch of stores and loads, then
 * poll or wait; each block has its own result. Loads and lookups go before
 * stores; a store queue past its bound drops its oldest entries (counted)
 * rather than blocking the caller; every operation has a deadline, so a hung
 * backing store fails the job instead of hanging its caller.
 *
 * Data moves through per-thread staging buffers. By default the source and
 * destination are host buffers; libkvfs-cuda plugs in a kvfs_copier that
 * gathers from and scatters to GPU memory instead, overlapping each file's
 * copy with the previous file's I/O.
 *
 * Errors are negative: -errno, or one of the KVFS_E_* codes below. */
#ifndef KVFS_CLIENT_H
#define KVFS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef KVFS_API
#define KVFS_API
#endif

#define KVFS_HEADER_SIZE 4096
#define KVFS_FORMAT_VERSION 1

enum kvfs_dtype {
    KVFS_DTYPE_FP16 = 1,
    KVFS_DTYPE_BF16 = 2,
    KVFS_DTYPE_FP8_E4M3 = 3,
    KVFS_DTYPE_FP8_E5M2 = 4,
    KVFS_DTYPE_FP32 = 5,
};

/* How the blocks in one file are laid out: blocks_per_file GPU blocks, each
 * with num_layers layers of a K and a V chunk of block_tokens x num_heads x
 * head_size elements (payload order: block, layer, K then V). */
struct kvfs_layout {
    uint32_t num_layers;
    uint32_t block_tokens;
    uint32_t num_heads;
    uint32_t head_size;
    uint32_t dtype; /* enum kvfs_dtype */
    uint32_t blocks_per_file;
};

KVFS_API size_t kvfs_dtype_size(uint32_t dtype);
/* Bytes of one K or V chunk of one block of one layer. */
KVFS_API size_t kvfs_layout_chunk_bytes(const struct kvfs_layout *l);
KVFS_API size_t kvfs_layout_payload_bytes(const struct kvfs_layout *l);
/* 0, or -EINVAL for a zero field, an unknown dtype or an absurd size. */
KVFS_API int kvfs_layout_check(const struct kvfs_layout *l);

/* Errors besides -errno. */
#define KVFS_E_SHORT (-4001)   /* the file is shorter than its header says */
#define KVFS_E_CORRUPT (-4002) /* the payload does not match its checksum */
#define KVFS_E_LAYOUT (-4003)  /* written with another layout */
#define KVFS_E_FORMAT (-4004)  /* not a kvfs block file, or a newer format */
#define KVFS_E_DROPPED (-4005) /* a store dropped because its queue was full */
#define KVFS_E_CANCELLED (-4006)
#define KVFS_E_COPY (-4007) /* the device copy failed */
/* -ENOENT: no such block; -ETIMEDOUT: the operation passed its deadline. */
KVFS_API const char *kvfs_strerror(int err);

/* The header: writes KVFS_HEADER_SIZE bytes to BUF. */
KVFS_API void kvfs_header_encode(void *buf, const struct kvfs_layout *l, uint64_t payload_len,
                                 uint64_t payload_xxh3);
/* Checks a header against the layout the caller expects. Returns 0 and the
 * payload's length and checksum, or KVFS_E_FORMAT / KVFS_E_LAYOUT. */
KVFS_API int kvfs_header_check(const void *buf, size_t len, const struct kvfs_layout *want,
                               uint64_t *payload_len, uint64_t *payload_xxh3);
/* Checks a whole block file held in memory (header then payload). */
KVFS_API int kvfs_block_verify(const void *buf, size_t len, const struct kvfs_layout *want);

/* Device side of the data path, called on the I/O threads. Each thread owns
 * two staging slots so that one file's copy overlaps the other's I/O;
 * gather/scatter may return before the copy is done, and wait(slot) must then
 * wait for it. Return 0 or a negative error. */
struct kvfs_copier {
    int (*thread_init)(void *ctx, int thread);           /* at engine creation, before alloc */
    int (*thread_start)(void *ctx, int thread);          /* on the I/O thread itself, first */
    void *(*alloc)(void *ctx, int thread, size_t bytes); /* staging memory */
    void (*free)(void *ctx, int thread, void *p, size_t bytes);
    int (*gather)(void *ctx, int thread, int slot, const void *xfer, void *dst, size_t len);
    int (*scatter)(void *ctx, int thread, int slot, const void *xfer, const void *src, size_t len);
    int (*wait)(void *ctx, int thread, int slot);
};

enum kvfs_write_mode {
    KVFS_WRITE_AUTO,   /* final name on a kvfs mount, temp + link elsewhere */
    KVFS_WRITE_DIRECT, /* final name (kvfs publishes it atomically at close) */
    KVFS_WRITE_LINK,   /* temp name, then link() into place: atomic anywhere */
};

struct kvfs_engine_options {
    const char *root;          /* directory the block names are relative to */
    struct kvfs_layout layout; /* every block of this engine */
    int io_threads;            /* default 4 */
    int numa_node;             /* pin I/O threads and staging to this node; -1: don't */
    size_t store_queue_max;    /* pending stores before the oldest are dropped; default 4096 */
    int timeout_ms;            /* per-operation deadline; default 30000 */
    int write_mode;            /* enum kvfs_write_mode */
    const struct kvfs_copier *copier; /* NULL: host buffers */
    void *copier_ctx;
    size_t xfer_size; /* bytes of each operation's xfer descriptor (copier mode) */
};

typedef struct kvfs_engine kvfs_engine;
typedef struct kvfs_job kvfs_job;

KVFS_API int kvfs_engine_create(const struct kvfs_engine_options *o, kvfs_engine **out);
/* Cancels what is queued, waits for what is running, frees the engine. Jobs
 * not freed yet stay valid (results, wait, free) without it. */
KVFS_API void kvfs_engine_destroy(kvfs_engine *e);
/* 1 if the engine writes final names (it found a kvfs mount), 0 if temp + link. */
KVFS_API int kvfs_engine_writes_direct(const kvfs_engine *e);

enum kvfs_op_kind { KVFS_OP_STORE = 1, KVFS_OP_LOAD = 2, KVFS_OP_EXISTS = 3 };

struct kvfs_op {
    int kind;         /* enum kvfs_op_kind */
    const char *name; /* relative to root; parent directories are created */
    void *host;       /* host mode: the payload's source (store) or destination (load) */
    const void *xfer; /* copier mode: xfer_size bytes describing the device side */
};

/* Results: 0 done; KVFS_RESULT_EXISTED a store that found the block there
 * already (nothing written); 1/0 for EXISTS; negative on failure; while in
 * flight KVFS_RESULT_PENDING. */
#define KVFS_RESULT_PENDING 2
#define KVFS_RESULT_EXISTED 3

/* Queues N operations (copied: the names and xfer descriptors need not
 * outlive the call; host buffers must live until the job is done). */
KVFS_API int kvfs_submit(kvfs_engine *e, const struct kvfs_op *ops, size_t n, kvfs_job **out);
/* Waits until every operation is done or TIMEOUT_MS passes (-1: no limit,
 * beyond the operations' own deadlines). Returns 0 or -ETIMEDOUT. */
KVFS_API int kvfs_job_wait(kvfs_job *j, int timeout_ms);
KVFS_API bool kvfs_job_done(kvfs_job *j);
KVFS_API size_t kvfs_job_size(const kvfs_job *j);
KVFS_API int kvfs_job_result(const kvfs_job *j, size_t i);
/* Frees a job; operations not started yet are cancelled, running ones are
 * left to finish (their results discarded). */
KVFS_API void kvfs_job_free(kvfs_job *j);

/* Batch existence check: OUT[i] is 1, 0, or a negative error. Runs on the
 * I/O threads with their deadlines. Returns 0 or -ETIMEDOUT. */
KVFS_API int kvfs_exists(kvfs_engine *e, const char *const *names, size_t n, int *out);

struct kvfs_engine_stats {
    uint64_t stores_done, stores_existed, stores_failed, stores_dropped;
    uint64_t loads_done, loads_failed;
    uint64_t timeouts;
    uint64_t bytes_stored, bytes_loaded;
};
KVFS_API void kvfs_engine_stats(kvfs_engine *e, struct kvfs_engine_stats *out);

#ifdef __cplusplus
}
#endif
#endif
