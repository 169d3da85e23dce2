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

START_TEST(generation_tags) {
    struct kvfs_idmap m = KVFS_IDMAP_INIT;
    /* Successive generations never reuse the previous tag, nor 0. */
    uint64_t t = 0;
    for (int i = 0; i < 20; i++) {
        uint64_t n = kvfs_idmap_next_tag(t);
        ck_assert_uint_ne(n, t);
        ck_assert_uint_ne(n, 0);
        ck_assert_uint_le(n, KVFS_IDMAP_TAG_MASK);
        t = n;
    }
    /* An id of this process names its structure; an inherited one its own. */
    kvfs_idmap_set_tag(&m, 3);
    int *mine = calloc(1, sizeof(int)), other;
    uint64_t id = kvfs_idmap_id(&m, mine);
    ck_assert_uint_eq(id & KVFS_IDMAP_TAG_MASK, 3);
    ck_assert_ptr_eq(kvfs_idmap_ptr(&m, id), mine);
    /* The predecessor used the same address with another tag: no clash. */
    uint64_t old = (uint64_t)(uintptr_t)mine | 2;
    ck_assert_int_eq(kvfs_idmap_put(&m, old, &other), 0);
    ck_assert_ptr_eq(kvfs_idmap_ptr(&m, old), &other);
    ck_assert_ptr_eq(kvfs_idmap_ptr(&m, id), mine);
    /* The same tag and address seven generations on: alloc avoids it. */
    free(mine);
    void *p = calloc(1, sizeof(int));
    uint64_t same = kvfs_idmap_id(&m, p);
    free(p);
    ck_assert(!m.tag_shared); /* so far this process's ids resolve without the map */
    ck_assert_int_eq(kvfs_idmap_put(&m, same, &other), 0);
    ck_assert(m.tag_shared);
    ck_assert_ptr_eq(kvfs_idmap_ptr(&m, same), &other);
    for (int i = 0; i < 50; i++) {
        void *q = kvfs_idmap_alloc(&m, sizeof(int));
        ck_assert_ptr_nonnull(q);
        ck_assert_uint_ne(kvfs_idmap_id(&m, q), same);
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
    tcase_add_test(tc, generation_tags);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
