/* XXH3 with AVX2 (this file is compiled with -mavx2): see kvfs_hash.h. */
#define XXH_VECTOR XXH_AVX2
#define KVFS_HASH_SUFFIX avx2
#include "kvfs_hash_simd.h"
