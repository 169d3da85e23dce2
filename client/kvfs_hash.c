/* kvfs_hash: run-time choice between the SSE2 and AVX2 builds of XXH3. */
#include "kvfs_hash.h"

#include <stdbool.h>

void kvfs_hash_reset_sse2(struct kvfs_hash *h);
void kvfs_hash_update_sse2(struct kvfs_hash *h, const void *p, size_t n);
uint64_t kvfs_hash_digest_sse2(const struct kvfs_hash *h);
#ifdef KVFS_HAVE_AVX2
void kvfs_hash_reset_avx2(struct kvfs_hash *h);
void kvfs_hash_update_avx2(struct kvfs_hash *h, const void *p, size_t n);
uint64_t kvfs_hash_digest_avx2(const struct kvfs_hash *h);
#endif

static bool use_avx2(void) {
#ifdef KVFS_HAVE_AVX2
    static int cached = -1;
    if (cached < 0)
        cached = __builtin_cpu_supports("avx2") ? 1 : 0;
    return cached;
#else
    return false;
#endif
}

void kvfs_hash_reset(struct kvfs_hash *h) {
#ifdef KVFS_HAVE_AVX2
    if (use_avx2()) {
        kvfs_hash_reset_avx2(h);
        return;
    }
#endif
    kvfs_hash_reset_sse2(h);
}

void kvfs_hash_update(struct kvfs_hash *h, const void *p, size_t n) {
#ifdef KVFS_HAVE_AVX2
    if (use_avx2()) {
        kvfs_hash_update_avx2(h, p, n);
        return;
    }
#endif
    kvfs_hash_update_sse2(h, p, n);
}

uint64_t kvfs_hash_digest(const struct kvfs_hash *h) {
#ifdef KVFS_HAVE_AVX2
    if (use_avx2())
        return kvfs_hash_digest_avx2(h);
#endif
    return kvfs_hash_digest_sse2(h);
}

const char *kvfs_hash_impl(void) {
    return use_avx2() ? "avx2" : "sse2";
}
