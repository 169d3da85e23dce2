/* Helpers shared by the unit tests: a scratch backing directory. */
#ifndef UNIT_UTIL_H
#define UNIT_UTIL_H

#define _GNU_SOURCE
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Creates an empty scratch directory; returns its path (static buffer). */
static inline const char *scratch_dir(void) {
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/kvfs-unit-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(path));
    return path;
}

static inline void write_file_at(int dirfd, const char *name, const char *data) {
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, strlen(data)), (ssize_t)strlen(data));
    close(fd);
}

static inline void remove_tree(const char *path) {
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    ck_assert_int_eq(system(cmd), 0);
}

static inline int run_suite(Suite *s) {
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

#endif
