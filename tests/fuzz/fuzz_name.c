/* libFuzzer target: block names and paths (core/kvfs_name). Mapping a path
 * to the backing store and back must give the path again, and nothing may
 * read or write out of bounds. */
#include "kvfs_name.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    size_t hl;
    if (kvfs_name_is_block(s, &hl) && (hl < KVFS_HASH_MIN || hl > KVFS_HASH_MAX))
        abort();
    (void)kvfs_name_check(s);
    (void)kvfs_name_is_reserved(s);
    char back[4200], mnt[4200];
    if (kvfs_path_to_backing(s, back, sizeof(back)) == 0 &&
        kvfs_path_from_backing(back, mnt, sizeof(mnt)) == 0) {
        /* The round trip gives the path without its redundant slashes. */
        char norm[4200];
        size_t n = 0;
        for (const char *p = s; *p && n + 1 < sizeof(norm); p++)
            if (*p != '/' || (n > 0 && norm[n - 1] != '/'))
                norm[n++] = *p;
        while (n > 0 && norm[n - 1] == '/')
            n--;
        norm[n] = '\0';
        if (strcmp(norm, mnt) != 0)
            abort();
    }
    (void)kvfs_path_from_backing(s, mnt, sizeof(mnt));
    (void)kvfs_path_to_backing(s, back, 8); /* short buffers */
    free(s);
    return 0;
}
