/* A scratch backing store opened before each test and removed after it,
 * for the tests of core/kvfs_store and core/kvfs_publish. */
#ifndef UNIT_STORE_H
#define UNIT_STORE_H

#include "kvfs_store.h"
#include "unit_util.h"

static const char *dir;
static struct kvfs_store st;

static void setup(void) {
    char err[256];
    dir = scratch_dir();
    ck_assert_int_eq(kvfs_store_open(&st, dir, err, sizeof(err)), 0);
}

static void teardown(void) {
    kvfs_store_close(&st);
    remove_tree(dir);
}

#endif
