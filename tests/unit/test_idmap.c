/* Unit tests for core/kvfs_idmap: ids map to pointers and back, removal
 * leaves the others reachable through the probe chain, the map empties
 * itself, and alloc never returns an address that is a mapped id. */
#include "unit_util.h"

#include "kvfs_idmap.h"

#include <errno.h>

START_TEST(put_get_del) {
    struct kvfs_idmap m = KVFS_IDMAP_INIT;
    int vals[5000];
    ck_assert_ptr_null(kvfs_idmap_get(&m, 42));
    for (int i = 0; i < 5000; i++)
        ck_assert_int_eq(kvfs_idmap_put(&m, (uint64_t)i * 4096 + 1, &vals[i]), 0);
    ck_assert_uint_eq(kvfs_idmap_count(&m), 5000);
    for (int i = 0; i < 5000; i++)
        ck_assert_ptr_eq(kvfs_idmap_get(&m, (uint64_t)i * 4096 + 1), &vals[i]);
    ck_assert_ptr_null(kvfs_idmap_get(&m, 2));
    /* Removing every other one keeps the rest reachable past tombstones. */
    for (int i = 0; i < 5000; i += 2)
        kvfs_idmap_del(&m, (uint64_t)i * 4096 + 1);
    for (int i = 0; i < 5000; i++)
        ck_assert_ptr_eq(kvfs_idmap_get(&m, (uint64_t)i * 4096 + 1), i % 2 ? &vals[i] : NULL);
    ck_assert_uint_eq(kvfs_idmap_count(&m), 2500);
    /* Replacing a mapping does not add one. */
    ck_assert_int_eq(kvfs_idmap_put(&m, 4097, &vals[0]), 0);
    ck_assert_ptr_eq(kvfs_idmap_get(&m, 4097), &vals[0]);
    ck_assert_uint_eq(kvfs_idmap_count(&m), 2500);
    for (int i = 1; i < 5000; i += 2)
        kvfs_idmap_del(&m, (uint64_t)i * 4096 + 1);
    ck_assert_uint_eq(kvfs_idmap_count(&m), 0);
    ck_assert_ptr_null(m.slots); /* back to no table at all */
    kvfs_idmap_del(&m, 7);       /* not mapped: nothing */
    kvfs_idmap_free(&m);
}
END_TEST

START_TEST(bad_puts_are_refused) {
    struct kvfs_idmap m = KVFS_IDMAP_INIT;
    int x;
    ck_assert_int_eq(kvfs_idmap_put(&m, 0, &x), -EINVAL);
    ck_assert_int_eq(kvfs_idmap_put(&m, 5, NULL), -EINVAL);
    ck_assert_uint_eq(kvfs_idmap_count(&m), 0);
    kvfs_idmap_free(&m);
}
END_TEST

START_TEST(alloc_avoids_mapped_ids) {
    struct kvfs_idmap m = KVFS_IDMAP_INIT;
    int x;
    /* Map the address the allocator is about to hand out again. */
    void *p = calloc(1, 96);
    uint64_t id = (uint64_t)(uintptr_t)p;
    free(p);
    ck_assert_int_eq(kvfs_idmap_put(&m, id, &x), 0);
    for (int i = 0; i < 100; i++) {
        void *q = kvfs_idmap_alloc(&m, 96);
        ck_assert_ptr_nonnull(q);
        ck_assert_uint_ne((uint64_t)(uintptr_t)q, id);
        free(q);
    }
    kvfs_idmap_free(&m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("idmap");
    TCase *tc = tcase_create("idmap");
    tcase_add_test(tc, put_get_del);
    tcase_add_test(tc, bad_puts_are_refused);
    tcase_add_test(tc, alloc_avoids_mapped_ids);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
