/* kvfs_hash: XXH3-64 of block payloads, using AVX2 where the CPU has it.
 * Debian's libxxhash is built for baseline x86-64 (SSE2); hashing is on the
 * load and store paths of every block, so it is compiled here a second time
 * from xxHash's header with AVX2 and chosen at run time. The digest is the
 * same either way. */
#ifndef KVFS_HASH_H
#define KVFS_HASH_H

#include <stddef.h>
#include <stdint.h>

struct kvfs_hash {
    _Alignas(64) unsigned char state[640]; /* an XXH3_state_t */
};

void kvfs_hash_reset(struct kvfs_hash *h);
void kvfs_hash_update(struct kvfs_hash *h, const void *p, size_t n);
uint64_t kvfs_hash_digest(const struct kvfs_hash *h);
/* Which implementation runs: "avx2" or "sse2". */
const char *kvfs_hash_impl(void);

#endif
