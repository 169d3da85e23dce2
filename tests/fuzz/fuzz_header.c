/* libFuzzer target: the block file header and a whole block as read from
 * storage (client/kvfs_format): any bytes must be classified (success or one
 * of the errors), and success only for a consistent header and payload. */
#include "kvfs_client.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* The first 24 bytes choose the expected layout; the rest is the file. */
    struct kvfs_layout want = {1, 1, 1, 1, KVFS_DTYPE_FP16, 1};
    if (size >= 24) {
        uint32_t v[6];
        memcpy(v, data, 24);
        struct kvfs_layout l = {v[0] % 4 + 1, v[1] % 4 + 1, v[2] % 4 + 1,
                                v[3] % 8 + 1, v[4] % 6,     v[5] % 3 + 1};
        want = l;
        data += 24;
        size -= 24;
    }
    uint64_t plen, sum;
    int h = kvfs_header_check(data, size, &want, &plen, &sum);
    if (h == 0 && plen != kvfs_layout_payload_bytes(&want))
        abort();
    int rc = kvfs_block_verify(data, size, &want);
    if (rc == 0 && (h != 0 || size != KVFS_HEADER_SIZE + plen))
        abort();
    if (rc != 0 && rc != KVFS_E_SHORT && rc != KVFS_E_CORRUPT && rc != KVFS_E_LAYOUT &&
        rc != KVFS_E_FORMAT)
        abort();
    /* A header we write is always accepted by the checker. */
    if (kvfs_layout_check(&want) == 0) {
        unsigned char hdr[KVFS_HEADER_SIZE];
        kvfs_header_encode(hdr, &want, kvfs_layout_payload_bytes(&want), sum);
        if (kvfs_header_check(hdr, sizeof(hdr), &want, &plen, &sum) != 0)
            abort();
    }
    return 0;
}
