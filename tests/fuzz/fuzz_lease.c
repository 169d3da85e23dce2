/* libFuzzer target: the eviction lease file (core/kvfs_lease), as another
 * node or a damaged store may have written it. */
#include "kvfs_lease.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char holder[128];
    int64_t expires;
    int rc = kvfs_lease_parse((const char *)data, size, holder, sizeof(holder), &expires);
    if (rc == 0 && strlen(holder) >= sizeof(holder))
        abort();
    return 0;
}
