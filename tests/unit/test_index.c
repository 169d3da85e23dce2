/* Unit tests for core/kvfs_index: what it keeps, LRU order, open blocks
 * skipped, the watermark arithmetic, churn against a simple model, and the
 * memory per block at one million blocks (which it prints). */
#include "unit_util.h"

#include "kvfs_index.h"

#include <errno.h>
#include <time.h>

static void name_of(char *buf, size_t len, unsigned i, const char *ext) {
    /* 64 hex digits, like vLLM's sha256 block hashes. */
    unsigned long long a = i * 0x9E3779B97F4A7C15ull, b = a ^ 0xC2B2AE3D27D4EB4Full;
    snprintf(buf, len, "%016llx%016llx%016llx%016llx%s", a, b, a * 3, b * 5, ext);
}

START_TEST(put_get_touch_remove) {
    struct kvfs_index *ix = kvfs_index_new();
    int64_t d0 = kvfs_index_dir(ix, ""), d1 = kvfs_index_dir(ix, "model/r0");
    ck_assert_int_eq(d0, 0);
    ck_assert_int_eq(d1, 1);
    ck_assert_int_eq(kvfs_index_dir(ix, "model/r0"), 1);
    ck_assert_str_eq(kvfs_index_dir_path(ix, 1), "model/r0");
    const char *names[] = {"0123456789abcdef",
                           "0123456789ABCDEF",
                           "0123456789AbCdEf",
                           "0123456789abcdef.bin",
                           "0123456789abcdef.safetensors",
                           "0123456789abcdef0"};
    for (unsigned i = 0; i < 6; i++)
        ck_assert_int_eq(kvfs_index_put(ix, (uint32_t)d1, names[i], 100 + i, 1000 + i), 0);
    ck_assert_int_eq(kvfs_index_put(ix, (uint32_t)d1, "config.json", 1, 1), -EINVAL);
    ck_assert_uint_eq(kvfs_index_count(ix), 6);
    ck_assert_uint_eq(kvfs_index_usage(ix), 100 + 101 + 102 + 103 + 104 + 105);
    struct kvfs_index_info in;
    for (unsigned i = 0; i < 6; i++) {
        ck_assert(kvfs_index_get(ix, (uint32_t)d1, names[i], &in));
        ck_assert_uint_eq(in.size, 100 + i);
        ck_assert_uint_eq(in.atime, 1000 + i);
        ck_assert(!kvfs_index_get(ix, (uint32_t)d0, names[i], &in)); /* other directory */
    }
    ck_assert(!kvfs_index_get(ix, (uint32_t)d1, "0123456789abcdee", &in));
    ck_assert(!kvfs_index_get(ix, (uint32_t)d1, "0123456789abcdef.pt", &in));
    /* Updates keep the later access time. */
    ck_assert_int_eq(kvfs_index_put(ix, (uint32_t)d1, names[0], 500, 900), 0);
    ck_assert(kvfs_index_get(ix, (uint32_t)d1, names[0], &in));
    ck_assert(in.size == 500 && in.atime == 1000);
    ck_assert(kvfs_index_touch(ix, (uint32_t)d1, names[0], 5000));
    ck_assert(kvfs_index_get(ix, (uint32_t)d1, names[0], &in) && in.atime == 5000);
    ck_assert(kvfs_index_open(ix, (uint32_t)d1, names[0], 1));
    ck_assert(kvfs_index_open(ix, (uint32_t)d1, names[0], -5)); /* never below zero */
    ck_assert(kvfs_index_get(ix, (uint32_t)d1, names[0], &in) && in.open == 0);
    uint64_t size = 0;
    ck_assert(kvfs_index_remove(ix, (uint32_t)d1, names[2], &size));
    ck_assert_uint_eq(size, 102);
    ck_assert(!kvfs_index_remove(ix, (uint32_t)d1, names[2], NULL));
    ck_assert_uint_eq(kvfs_index_count(ix), 5);
    for (unsigned i = 0; i < 6; i++)
        ck_assert_int_eq(kvfs_index_get(ix, (uint32_t)d1, names[i], NULL), i != 2);
    kvfs_index_free(ix);
}
END_TEST

START_TEST(pick_least_recent_unopened) {
    struct kvfs_index *ix = kvfs_index_new();
    uint32_t d = (uint32_t)kvfs_index_dir(ix, "ns");
    char n[160];
    for (unsigned i = 0; i < 100; i++) {
        name_of(n, sizeof(n), i, i % 2 ? ".bin" : "");
        ck_assert_int_eq(kvfs_index_put(ix, d, n, 10, 1000 + (i * 37) % 100), 0);
    }
    /* The oldest block is open here: it must be skipped. */
    unsigned oldest = 0;
    for (unsigned i = 0; i < 100; i++)
        if ((i * 37) % 100 == 0)
            oldest = i;
    name_of(n, sizeof(n), oldest, oldest % 2 ? ".bin" : "");
    ck_assert(kvfs_index_open(ix, d, n, 1));
    struct kvfs_victim *v;
    int64_t k = kvfs_index_pick(ix, 95, &v);
    ck_assert_int_eq(k, 10); /* 10 blocks of 10 bytes cover 95 */
    for (int64_t i = 0; i < k; i++) {
        ck_assert_uint_eq(v[i].atime, 1001 + (uint32_t)i); /* oldest first, 1000 is open */
        ck_assert(kvfs_index_get(ix, d, v[i].name, NULL)); /* names come back whole */
        ck_assert_str_ne(v[i].name, n);
    }
    free(v);
    ck_assert_int_eq(kvfs_index_pick(ix, 0, &v), 0);
    ck_assert_int_eq(kvfs_index_pick(ix, 1u << 30, &v), 99); /* all but the open one */
    free(v);
    kvfs_index_free(ix);
}
END_TEST

START_TEST(watermarks) {
    ck_assert_uint_eq(kvfs_evict_need(50, 0, 95, 85), 0); /* no capacity: never */
    ck_assert_uint_eq(kvfs_evict_need(95, 100, 95, 85), 0);
    ck_assert_uint_eq(kvfs_evict_need(96, 100, 95, 85), 11);
    ck_assert_uint_eq(kvfs_evict_need(200, 100, 95, 85), 115);
    uint64_t tb = 1ull << 40;
    ck_assert_uint_eq(kvfs_evict_need(tb, tb, 95, 85), tb - (tb / 100 * 85 + tb % 100 * 85 / 100));
}
END_TEST

START_TEST(churn_matches_a_model) {
    struct kvfs_index *ix = kvfs_index_new();
    uint32_t d = (uint32_t)kvfs_index_dir(ix, "x");
    enum { N = 5000 };
    static uint64_t model[N]; /* 0: absent, else size */
    unsigned seed = 12345;
    char n[160];
    for (int step = 0; step < 200000; step++) {
        seed = seed * 1103515245 + 12345;
        unsigned i = (seed >> 8) % N;
        name_of(n, sizeof(n), i, ".bin");
        if ((seed >> 4) % 3) {
            uint64_t size = 1 + (seed >> 12) % 1000;
            ck_assert_int_eq(kvfs_index_put(ix, d, n, size, (uint32_t)step), 0);
            model[i] = size;
        } else {
            uint64_t size;
            ck_assert_int_eq(kvfs_index_remove(ix, d, n, &size), model[i] != 0);
            if (model[i])
                ck_assert_uint_eq(size, model[i]);
            model[i] = 0;
        }
    }
    uint64_t usage = 0;
    size_t count = 0;
    for (unsigned i = 0; i < N; i++) {
        struct kvfs_index_info in;
        name_of(n, sizeof(n), i, ".bin");
        ck_assert_int_eq(kvfs_index_get(ix, d, n, &in), model[i] != 0);
        if (model[i]) {
            ck_assert_uint_eq(in.size, model[i]);
            usage += model[i];
            count++;
        }
    }
    ck_assert_uint_eq(kvfs_index_usage(ix), usage);
    ck_assert_uint_eq(kvfs_index_count(ix), count);
    kvfs_index_free(ix);
}
END_TEST

START_TEST(one_million_blocks) {
    struct kvfs_index *ix = kvfs_index_new();
    uint32_t dirs[16];
    char n[160];
    for (unsigned i = 0; i < 16; i++) {
        snprintf(n, sizeof(n), "model_%u/r0", i);
        dirs[i] = (uint32_t)kvfs_index_dir(ix, n);
    }
    /* One million unless KVFS_INDEX_BLOCKS says otherwise (valgrind runs fewer). */
    const char *env = getenv("KVFS_INDEX_BLOCKS");
    const int N = env ? atoi(env) : 1000000;
    for (unsigned i = 0; i < (unsigned)N; i++) {
        name_of(n, sizeof(n), i, ".bin");
        ck_assert_int_eq(kvfs_index_put(ix, dirs[i % 16], n, 32u << 20, i), 0);
    }
    size_t mem = kvfs_index_memory(ix);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct kvfs_victim *v;
    int64_t k = kvfs_index_pick(ix, (uint64_t)N / 10 * (32u << 20), &v);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    printf("index: %d blocks with 64-digit names use %zu bytes (%.1f per block); choosing "
           "%lld victims (10%%) took %.0f ms\n",
           N, mem, (double)mem / N, (long long)k, ms);
    ck_assert_int_eq(k, N / 10);
    ck_assert_uint_eq(v[0].atime, 0);
    free(v);
    ck_assert_uint_le(mem / N, 128);
    kvfs_index_free(ix);
}
END_TEST

int main(void) {
    Suite *s = suite_create("index");
    TCase *tc = tcase_create("index");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, put_get_touch_remove);
    tcase_add_test(tc, pick_least_recent_unopened);
    tcase_add_test(tc, watermarks);
    tcase_add_test(tc, churn_matches_a_model);
    tcase_add_test(tc, one_million_blocks);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
