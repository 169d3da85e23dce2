/* libFuzzer target: the daemon's command line and -o lists (core/kvfs_config).
 * The input is split on NUL bytes into arguments; every input must either
 * parse or be refused with a message, never crash or overrun. */
#include "kvfs_config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *argv[64];
    int argc = 0;
    argv[argc++] = "kvfs";
    for (size_t i = 0; i <= size && argc < 63; i++) {
        argv[argc++] = buf + i;
        i += strlen(buf + i);
    }
    argv[argc] = NULL;
    struct kvfs_config cfg;
    char err[256];
    kvfs_config_defaults(&cfg);
    err[0] = '\0';
    int rc = kvfs_config_parse(&cfg, argc, argv, err, sizeof(err));
    if (rc != 0 && err[0] == '\0')
        abort(); /* every refusal says why */
    if (rc == 0 && (cfg.threads < 1 || cfg.threads > 1024 || cfg.entry_timeout < 0))
        abort();
    if (strlen(cfg.fuse_opts) >= sizeof(cfg.fuse_opts))
        abort();
    free(buf);
    return 0;
}
