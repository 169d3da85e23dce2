/* XXH3 for any x86-64 (SSE2) or other CPU: see kvfs_hash.h. */
#define KVFS_HASH_SUFFIX sse2
#include "kvfs_hash_simd.h"
