/* One XXH3 streaming implementation, instantiated by kvfs_hash_sse2.c and
 * kvfs_hash_avx2.c with KVFS_HASH_SUFFIX naming it. */
#define XXH_INLINE_ALL
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "kvfs_hash.h"

#define KVFS_CAT2(a, b) a##b
#define KVFS_CAT(a, b) KVFS_CAT2(a, b)

_Static_assert(sizeof(XXH3_state_t) <= sizeof(((struct kvfs_hash *)0)->state), "XXH3_state_t fits");

void KVFS_CAT(kvfs_hash_reset_, KVFS_HASH_SUFFIX)(struct kvfs_hash *h) {
    XXH3_64bits_reset((XXH3_state_t *)h->state);
}

void KVFS_CAT(kvfs_hash_update_, KVFS_HASH_SUFFIX)(struct kvfs_hash *h, const void *p, size_t n) {
    XXH3_64bits_update((XXH3_state_t *)h->state, p, n);
}

uint64_t KVFS_CAT(kvfs_hash_digest_, KVFS_HASH_SUFFIX)(const struct kvfs_hash *h) {
    return XXH3_64bits_digest((const XXH3_state_t *)h->state);
}
