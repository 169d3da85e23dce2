/* Unit tests for client/ (libkvfs): the block file format, and the engine in
 * host mode on a plain directory: round trips, every load error, the store
 * queue bound, deadlines on a hung file, NUMA pinning. A FIFO stands in for a
 * hung backing store: opening one blocks until a writer comes. */
#include "unit_util.h"

#include "kvfs_client.h"

#include <dirent.h>
#include <errno.h>
#include <numa.h>
#include <sched.h>
#include <sys/stat.h>
#include <time.h>
#include <xxhash.h>

static const struct kvfs_layout L = {2, 4, 2, 8, KVFS_DTYPE_BF16, 3}; /* 768-byte payload */

static void fill(char *p, size_t n, int seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (char)(i * 7 + seed * 13);
}

START_TEST(layout_sizes) {
    ck_assert_uint_eq(kvfs_layout_chunk_bytes(&L), 4 * 2 * 8 * 2);
    ck_assert_uint_eq(kvfs_layout_payload_bytes(&L), 128 * 2 * 2 * 3);
    ck_assert_int_eq(kvfs_layout_check(&L), 0);
    struct kvfs_layout bad = L;
    bad.dtype = 99;
    ck_assert_int_eq(kvfs_layout_check(&bad), -EINVAL);
    bad = L;
    bad.num_layers = 0;
    ck_assert_int_eq(kvfs_layout_check(&bad), -EINVAL);
}
END_TEST

START_TEST(header_and_verify) {
    size_t plen = kvfs_layout_payload_bytes(&L), total = KVFS_HEADER_SIZE + plen;
    char *file = malloc(total + 1);
    fill(file + KVFS_HEADER_SIZE, plen, 1);
    /* checksum through the public verify path: encode with a wrong sum first */
    kvfs_header_encode(file, &L, plen, 0);
    ck_assert_int_eq(kvfs_block_verify(file, total, &L), KVFS_E_CORRUPT);
    /* find the right sum by re-encoding with the value kvfs_block_verify wants */
    kvfs_header_encode(file, &L, plen, XXH3_64bits(file + KVFS_HEADER_SIZE, plen));
    ck_assert_int_eq(kvfs_block_verify(file, total, &L), 0);
    file[KVFS_HEADER_SIZE + 5] ^= 1; /* a flipped payload byte */
    ck_assert_int_eq(kvfs_block_verify(file, total, &L), KVFS_E_CORRUPT);
    file[KVFS_HEADER_SIZE + 5] ^= 1;
    ck_assert_int_eq(kvfs_block_verify(file, total - 1, &L), KVFS_E_SHORT);
    ck_assert_int_eq(kvfs_block_verify(file, 100, &L), KVFS_E_SHORT);
    ck_assert_int_eq(kvfs_block_verify(file, total + 1, &L), KVFS_E_CORRUPT);
    struct kvfs_layout other = L;
    other.num_heads = 4;
    ck_assert_int_eq(kvfs_block_verify(file, total, &other), KVFS_E_LAYOUT);
    file[20] ^= 1; /* a scribbled header */
    ck_assert_int_eq(kvfs_block_verify(file, total, &L), KVFS_E_FORMAT);
    memset(file, 'x', 64);
    ck_assert_int_eq(kvfs_block_verify(file, total, &L), KVFS_E_FORMAT);
    ck_assert_int_eq(kvfs_block_verify(file, 10, &L), KVFS_E_FORMAT);
    free(file);
    ck_assert_str_eq(kvfs_strerror(KVFS_E_CORRUPT), "block payload does not match its checksum");
}
END_TEST

START_TEST(checksum_matches_reference_xxh3) {
    /* The library hashes with its own SIMD build of XXH3: it must agree with
     * the reference libxxhash for every payload size class. */
    const struct kvfs_layout sizes[] = {
        {1, 1, 1, 1, KVFS_DTYPE_FP8_E4M3, 1}, /* 2 bytes: the short path */
        {1, 1, 1, 60, KVFS_DTYPE_FP16, 1},    /* 240 bytes */
        {1, 1, 1, 61, KVFS_DTYPE_FP16, 1},    /* 244 bytes: the long path */
        {32, 16, 8, 128, KVFS_DTYPE_BF16, 1}, /* 2 MiB: several pieces */
        {3, 16, 8, 127, KVFS_DTYPE_FP32, 5},  /* odd size */
    };
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t plen = kvfs_layout_payload_bytes(&sizes[k]);
        char *file = malloc(KVFS_HEADER_SIZE + plen);
        fill(file + KVFS_HEADER_SIZE, plen, (int)k);
        kvfs_header_encode(file, &sizes[k], plen, XXH3_64bits(file + KVFS_HEADER_SIZE, plen));
        ck_assert_int_eq(kvfs_block_verify(file, KVFS_HEADER_SIZE + plen, &sizes[k]), 0);
        free(file);
    }
}
END_TEST

static const char *dir;
static kvfs_engine *eng;

static void make_engine(int threads, size_t qmax, int timeout_ms, int numa) {
    struct kvfs_engine_options o = {0};
    o.root = dir;
    o.layout = L;
    o.io_threads = threads;
    o.store_queue_max = qmax;
    o.timeout_ms = timeout_ms;
    o.numa_node = numa;
    ck_assert_int_eq(kvfs_engine_create(&o, &eng), 0);
}

static void setup(void) {
    dir = scratch_dir();
}

static void teardown(void) {
    kvfs_engine_destroy(eng);
    eng = NULL;
    remove_tree(dir);
}

static int run_one(int kind, const char *name, void *buf) {
    struct kvfs_op op = {kind, name, buf, NULL};
    kvfs_job *j;
    ck_assert_int_eq(kvfs_submit(eng, &op, 1, &j), 0);
    ck_assert_int_eq(kvfs_job_wait(j, 10000), 0);
    int rc = kvfs_job_result(j, 0);
    kvfs_job_free(j);
    return rc;
}

START_TEST(round_trip_and_errors) {
    make_engine(2, 0, 5000, -1);
    ck_assert_int_eq(kvfs_engine_writes_direct(eng), 0); /* a plain dir: temp + link */
    size_t plen = kvfs_layout_payload_bytes(&L);
    char *src = malloc(plen), *dst = calloc(1, plen);
    enum { N = 40 };
    struct kvfs_op ops[N];
    char names[N][64];
    char *bufs[N];
    for (int i = 0; i < N; i++) {
        bufs[i] = malloc(plen);
        fill(bufs[i], plen, i);
        snprintf(names[i], sizeof(names[i]), "ns/r0/%016x%016x.bin", i * 2654435761u, i);
        ops[i] = (struct kvfs_op){KVFS_OP_STORE, names[i], bufs[i], NULL};
    }
    kvfs_job *j;
    ck_assert_int_eq(kvfs_submit(eng, ops, N, &j), 0);
    ck_assert_int_eq(kvfs_job_wait(j, 10000), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(kvfs_job_result(j, i), 0);
    kvfs_job_free(j);
    /* Loads in one batch, back into fresh buffers. */
    for (int i = 0; i < N; i++) {
        memset(bufs[i], 0, plen);
        ops[i].kind = KVFS_OP_LOAD;
    }
    ck_assert_int_eq(kvfs_submit(eng, ops, N, &j), 0);
    ck_assert_int_eq(kvfs_job_wait(j, 10000), 0);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(kvfs_job_result(j, i), 0);
        fill(src, plen, i);
        ck_assert_mem_eq(bufs[i], src, plen);
    }
    kvfs_job_free(j);
    /* A second store of a block finds it there. */
    ck_assert_int_eq(run_one(KVFS_OP_STORE, names[0], bufs[0]), KVFS_RESULT_EXISTED);
    /* Existence in one batch. */
    const char *q[3] = {names[1], "ns/r0/ffffffffffffffff.bin", names[2]};
    int out[3];
    ck_assert_int_eq(kvfs_exists(eng, q, 3, out), 0);
    ck_assert_int_eq(out[0], 1);
    ck_assert_int_eq(out[1], 0);
    ck_assert_int_eq(out[2], 1);
    /* Each bad file has its own error, and the destination is left alone. */
    char path[512];
    memset(dst, 0x5a, plen);
    ck_assert_int_eq(run_one(KVFS_OP_LOAD, "ns/r0/missing.bin", dst), -ENOENT);
    snprintf(path, sizeof(path), "%s/%s", dir, names[3]);
    FILE *f = fopen(path, "r+b");
    fseek(f, KVFS_HEADER_SIZE + 10, SEEK_SET);
    fputc(0xff ^ bufs[3][10], f);
    fclose(f);
    ck_assert_int_eq(run_one(KVFS_OP_LOAD, names[3], dst), KVFS_E_CORRUPT);
    snprintf(path, sizeof(path), "%s/%s", dir, names[4]);
    ck_assert_int_eq(truncate(path, KVFS_HEADER_SIZE + 100), 0);
    ck_assert_int_eq(run_one(KVFS_OP_LOAD, names[4], dst), KVFS_E_SHORT);
    snprintf(path, sizeof(path), "%s/ns/r0/junk.bin", dir);
    f = fopen(path, "wb");
    fputs("not a block", f);
    fclose(f);
    ck_assert_int_eq(run_one(KVFS_OP_LOAD, "ns/r0/junk.bin", dst), KVFS_E_FORMAT);
    for (size_t i = 0; i < plen; i++)
        ck_assert_int_eq((unsigned char)dst[i], 0x5a);
    /* Bad names are refused at submit. */
    struct kvfs_op bad = {KVFS_OP_LOAD, "../escape.bin", dst, NULL};
    ck_assert_int_eq(kvfs_submit(eng, &bad, 1, &j), -EINVAL);
    bad.name = "/abs.bin";
    ck_assert_int_eq(kvfs_submit(eng, &bad, 1, &j), -EINVAL);
    struct kvfs_engine_stats st;
    kvfs_engine_stats(eng, &st);
    ck_assert_uint_eq(st.stores_done, N);
    ck_assert_uint_eq(st.stores_existed, 1);
    ck_assert_uint_eq(st.loads_done, N);
    ck_assert_uint_eq(st.loads_failed, 4);
    /* No temp files are left behind. */
    snprintf(path, sizeof(path), "%s/ns/r0", dir);
    DIR *d = opendir(path);
    struct dirent *de;
    while ((de = readdir(d)))
        ck_assert_ptr_null(strstr(de->d_name, ".tmp."));
    closedir(d);
    for (int i = 0; i < N; i++)
        free(bufs[i]);
    free(src);
    free(dst);
}
END_TEST

/* Makes NAME a FIFO: a load of it blocks in open() until unblock_fifo. */
static void make_fifo(const char *name) {
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    ck_assert_int_eq(mkfifo(path, 0644), 0);
}

static void unblock_fifo(const char *name) {
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_NONBLOCK);
    if (fd >= 0)
        close(fd);
}

START_TEST(jobs_outlive_their_engine) {
    make_engine(2, 0, 5000, -1);
    size_t plen = kvfs_layout_payload_bytes(&L);
    char *buf = malloc(plen);
    fill(buf, plen, 5);
    make_fifo("hang.bin");
    struct kvfs_op ops[2] = {{KVFS_OP_STORE, "kept.bin", buf, NULL},
                             {KVFS_OP_LOAD, "hang.bin", buf, NULL}};
    kvfs_job *done, *stuck;
    ck_assert_int_eq(kvfs_submit(eng, ops, 1, &done), 0);
    ck_assert_int_eq(kvfs_job_wait(done, 5000), 0);
    ck_assert_int_eq(kvfs_submit(eng, ops + 1, 1, &stuck), 0);
    usleep(50000);
    unblock_fifo("hang.bin"); /* lets destroy's join finish */
    kvfs_engine_destroy(eng);
    eng = NULL;
    /* Both jobs are still readable, waitable and freeable. */
    ck_assert_int_eq(kvfs_job_result(done, 0), 0);
    ck_assert_int_eq(kvfs_job_wait(stuck, 1000), 0);
    ck_assert(kvfs_job_done(stuck));
    ck_assert_int_ne(kvfs_job_result(stuck, 0), KVFS_RESULT_PENDING);
    kvfs_job_free(done);
    kvfs_job_free(stuck);
    free(buf);
}
END_TEST

START_TEST(store_queue_bound_drops_oldest) {
    make_engine(1, 3, 10000, -1);
    size_t plen = kvfs_layout_payload_bytes(&L);
    char *buf = malloc(plen), *dst = malloc(plen);
    fill(buf, plen, 9);
    make_fifo("hang.bin");
    struct kvfs_op hang = {KVFS_OP_LOAD, "hang.bin", dst, NULL};
    kvfs_job *hj, *sj;
    ck_assert_int_eq(kvfs_submit(eng, &hang, 1, &hj), 0);
    usleep(100000); /* the only thread is now stuck in open() */
    enum { N = 10 };
    struct kvfs_op ops[N];
    char names[N][32];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "s%02d.bin", i);
        ops[i] = (struct kvfs_op){KVFS_OP_STORE, names[i], buf, NULL};
    }
    ck_assert_int_eq(kvfs_submit(eng, ops, N, &sj), 0);
    /* The caller was not blocked; the 7 oldest were dropped at once. */
    for (int i = 0; i < N - 3; i++)
        ck_assert_int_eq(kvfs_job_result(sj, i), KVFS_E_DROPPED);
    for (int i = N - 3; i < N; i++)
        ck_assert_int_eq(kvfs_job_result(sj, i), KVFS_RESULT_PENDING);
    unblock_fifo("hang.bin");
    ck_assert_int_eq(kvfs_job_wait(hj, 10000), 0);
    ck_assert_int_eq(kvfs_job_result(hj, 0), KVFS_E_SHORT); /* an empty "file" */
    ck_assert_int_eq(kvfs_job_wait(sj, 10000), 0);
    for (int i = N - 3; i < N; i++)
        ck_assert_int_eq(kvfs_job_result(sj, i), 0);
    struct kvfs_engine_stats st;
    kvfs_engine_stats(eng, &st);
    ck_assert_uint_eq(st.stores_dropped, N - 3);
    kvfs_job_free(hj);
    kvfs_job_free(sj);
    free(buf);
    free(dst);
}
END_TEST

START_TEST(loads_go_before_stores) {
    make_engine(1, 0, 10000, -1);
    size_t plen = kvfs_layout_payload_bytes(&L);
    char *buf = malloc(plen), *dst = malloc(plen);
    fill(buf, plen, 3);
    ck_assert_int_eq(run_one(KVFS_OP_STORE, "present.bin", buf), 0);
    make_fifo("hang.bin");
    struct kvfs_op hang = {KVFS_OP_LOAD, "hang.bin", dst, NULL};
    kvfs_job *hj, *sj, *lj;
    ck_assert_int_eq(kvfs_submit(eng, &hang, 1, &hj), 0);
    usleep(100000);
    struct kvfs_op st_op = {KVFS_OP_STORE, "later.bin", buf, NULL};
    struct kvfs_op ld_op = {KVFS_OP_LOAD, "present.bin", dst, NULL};
    ck_assert_int_eq(kvfs_submit(eng, &st_op, 1, &sj), 0);
    ck_assert_int_eq(kvfs_submit(eng, &ld_op, 1, &lj), 0);
    unblock_fifo("hang.bin");
    ck_assert_int_eq(kvfs_job_wait(lj, 10000), 0);
    /* The load, submitted last, ran before the queued store. */
    ck_assert_int_eq(kvfs_job_result(lj, 0), 0);
    ck_assert_int_eq(kvfs_job_wait(sj, 10000), 0);
    kvfs_job_wait(hj, 10000);
    kvfs_job_free(hj);
    kvfs_job_free(sj);
    kvfs_job_free(lj);
    free(buf);
    free(dst);
}
END_TEST

START_TEST(hung_store_times_out) {
    make_engine(1, 0, 300, -1);
    size_t plen = kvfs_layout_payload_bytes(&L);
    char *dst = malloc(plen);
    memset(dst, 0x33, plen);
    make_fifo("hang.bin");
    struct kvfs_op ops[2] = {{KVFS_OP_LOAD, "hang.bin", dst, NULL},
                             {KVFS_OP_LOAD, "queued.bin", dst, NULL}};
    kvfs_job *j;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_int_eq(kvfs_submit(eng, ops, 2, &j), 0);
    ck_assert_int_eq(kvfs_job_wait(j, 5000), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    ck_assert_int_eq(kvfs_job_result(j, 0), -ETIMEDOUT);
    ck_assert_int_eq(kvfs_job_result(j, 1), -ETIMEDOUT); /* no thread could run it */
    ck_assert(secs < 2.0);
    struct kvfs_engine_stats st;
    kvfs_engine_stats(eng, &st);
    ck_assert_uint_eq(st.timeouts, 2);
    kvfs_job_free(j);
    /* The stuck thread wakes later; the caller's buffer is not touched. */
    unblock_fifo("hang.bin");
    usleep(200000);
    for (size_t i = 0; i < plen; i++)
        ck_assert_int_eq((unsigned char)dst[i], 0x33);
    free(dst);
}
END_TEST

START_TEST(threads_pinned_to_numa_node) {
    if (numa_available() < 0)
        return; /* nothing to pin to */
    make_engine(2, 0, 5000, 0);
    usleep(100000);
    struct bitmask *cpus = numa_allocate_cpumask();
    ck_assert_int_eq(numa_node_to_cpus(0, cpus), 0);
    int pinned = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;
    while ((de = readdir(d))) {
        char p[320], comm[64] = "";
        snprintf(p, sizeof(p), "/proc/self/task/%s/comm", de->d_name);
        FILE *f = fopen(p, "r");
        if (!f)
            continue;
        ck_assert_ptr_nonnull(fgets(comm, sizeof(comm), f));
        fclose(f);
        if (strncmp(comm, "kvfs-io-", 8) != 0)
            continue;
        cpu_set_t set;
        ck_assert_int_eq(sched_getaffinity(atoi(de->d_name), sizeof(set), &set), 0);
        ck_assert_int_eq(CPU_COUNT(&set), 1); /* one CPU each, */
        for (int c = 0; c < CPU_SETSIZE && c < (int)cpus->size; c++)
            if (CPU_ISSET(c, &set)) /* on the node */
                ck_assert(numa_bitmask_isbitset(cpus, c));
        pinned++;
    }
    closedir(d);
    numa_free_cpumask(cpus);
    ck_assert_int_eq(pinned, 2);
    kvfs_engine_destroy(eng);
    struct kvfs_engine_options o = {0};
    o.root = dir;
    o.layout = L;
    o.numa_node = 4096; /* no such node: refused, not silently unpinned */
    eng = NULL;
    ck_assert_int_eq(kvfs_engine_create(&o, &eng), -EINVAL);
}
END_TEST

int main(void) {
    Suite *s = suite_create("client");
    TCase *tf = tcase_create("format");
    tcase_add_test(tf, layout_sizes);
    tcase_add_test(tf, header_and_verify);
    tcase_add_test(tf, checksum_matches_reference_xxh3);
    suite_add_tcase(s, tf);
    TCase *te = tcase_create("engine");
    tcase_set_timeout(te, 60);
    tcase_add_checked_fixture(te, setup, teardown);
    tcase_add_test(te, round_trip_and_errors);
    tcase_add_test(te, store_queue_bound_drops_oldest);
    tcase_add_test(te, jobs_outlive_their_engine);
    tcase_add_test(te, loads_go_before_stores);
    tcase_add_test(te, hung_store_times_out);
    tcase_add_test(te, threads_pinned_to_numa_node);
    suite_add_tcase(s, te);
    return run_suite(s);
}
