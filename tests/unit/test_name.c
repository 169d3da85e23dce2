/* Unit tests for core/kvfs_name: what is a block, what is reserved, and the
 * fan-out mapping in both directions. */
#include "kvfs_name.h"

#include "unit_util.h"

#include <check.h>
#include <errno.h>
#include <string.h>

START_TEST(block_names) {
    size_t n = 0;
    ck_assert(kvfs_name_is_block("0123456789abcdef", &n));
    ck_assert_uint_eq(n, 16);
    ck_assert(kvfs_name_is_block("0123456789ABCDEF0123", &n));
    ck_assert_uint_eq(n, 20);
    ck_assert(kvfs_name_is_block("0123456789abcdef.bin", &n));
    ck_assert_uint_eq(n, 16);
    ck_assert(kvfs_name_is_block("0123456789abcdef.a", NULL));
    ck_assert(kvfs_name_is_block("0123456789abcdef.abcdefghijklmnop", NULL)); /* 16-char ext */
    char h128[129];
    memset(h128, 'a', 128);
    h128[128] = '\0';
    ck_assert(kvfs_name_is_block(h128, &n));
    ck_assert_uint_eq(n, 128);
}
END_TEST

START_TEST(not_block_names) {
    ck_assert(!kvfs_name_is_block("0123456789abcde", NULL)); /* 15 digits */
    char h129[130];
    memset(h129, 'a', 129);
    h129[129] = '\0';
    ck_assert(!kvfs_name_is_block(h129, NULL));
    ck_assert(!kvfs_name_is_block("0123456789abcdeg", NULL));
    ck_assert(!kvfs_name_is_block("0123456789abcdef.", NULL));
    ck_assert(!kvfs_name_is_block("0123456789abcdef.bin.tmp", NULL));
    ck_assert(!kvfs_name_is_block("0123456789abcdef.bin_123.tmp", NULL));       /* vLLM's temp */
    ck_assert(!kvfs_name_is_block("0123456789abcdef.abcdefghijklmnopq", NULL)); /* 17 */
    ck_assert(!kvfs_name_is_block("0123456789abcdef.b-n", NULL));
    ck_assert(!kvfs_name_is_block("", NULL));
    ck_assert(!kvfs_name_is_block("config.json", NULL));
    ck_assert(!kvfs_name_is_block(".0123456789abcdef", NULL));
}
END_TEST

START_TEST(reserved_and_checks) {
    ck_assert(kvfs_name_is_reserved(".kvfs"));
    ck_assert(kvfs_name_is_reserved(".kvfs-blocks"));
    ck_assert(kvfs_name_is_reserved(".kvfs-state"));
    ck_assert(!kvfs_name_is_reserved(".kv"));
    ck_assert(!kvfs_name_is_reserved("kvfs"));
    ck_assert_int_eq(kvfs_name_check("ok"), 0);
    ck_assert_int_eq(kvfs_name_check(""), -EINVAL);
    ck_assert_int_eq(kvfs_name_check("."), -EINVAL);
    ck_assert_int_eq(kvfs_name_check(".."), -EINVAL);
    ck_assert_int_eq(kvfs_name_check("a/b"), -EINVAL);
    ck_assert_int_eq(kvfs_name_check(".kvfs-x"), -EPERM);
    char longname[300];
    memset(longname, 'x', 256);
    longname[256] = '\0';
    ck_assert_int_eq(kvfs_name_check(longname), -ENAMETOOLONG);
    longname[255] = '\0';
    ck_assert_int_eq(kvfs_name_check(longname), 0);
}
END_TEST

START_TEST(bucket_mapping) {
    char b[KVFS_BUCKET_LEN + 1], rel[512];
    kvfs_block_bucket("ABCdef0123456789", b);
    ck_assert_str_eq(b, "abc");
    ck_assert(kvfs_bucket_is_valid("abc"));
    ck_assert(!kvfs_bucket_is_valid("ABC"));
    ck_assert(!kvfs_bucket_is_valid("ab"));
    ck_assert(!kvfs_bucket_is_valid("abcd"));
    ck_assert(!kvfs_bucket_is_valid("abg"));
    ck_assert_int_eq(kvfs_block_relpath("ABCdef0123456789.bin", rel, sizeof(rel)), 0);
    ck_assert_str_eq(rel, ".kvfs-blocks/abc/ABCdef0123456789.bin");
    ck_assert_int_eq(kvfs_block_relpath("ABCdef0123456789.bin", rel, 10), -ENAMETOOLONG);
}
END_TEST

START_TEST(path_to_backing) {
    char out[1024];
    ck_assert_int_eq(kvfs_path_to_backing("model/r0/0123456789abcdef.bin", out, sizeof(out)), 0);
    ck_assert_str_eq(out, "model/r0/.kvfs-blocks/012/0123456789abcdef.bin");
    /* A hash-named directory is a plain directory; only the last component maps. */
    ck_assert_int_eq(kvfs_path_to_backing("/0123456789abcdef/x//", out, sizeof(out)), 0);
    ck_assert_str_eq(out, "0123456789abcdef/x");
    ck_assert_int_eq(kvfs_path_to_backing("a/config.json", out, sizeof(out)), 0);
    ck_assert_str_eq(out, "a/config.json");
    ck_assert_int_eq(kvfs_path_to_backing("a/.kvfs-state/x", out, sizeof(out)), -EPERM);
    ck_assert_int_eq(kvfs_path_to_backing("a/../b", out, sizeof(out)), -EINVAL);
    ck_assert_int_eq(kvfs_path_to_backing("a/0123456789abcdef", out, 10), -ENAMETOOLONG);
    ck_assert_int_eq(kvfs_path_to_backing("", out, sizeof(out)), 0);
    ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(path_from_backing) {
    char out[1024];
    ck_assert_int_eq(
        kvfs_path_from_backing("model/r0/.kvfs-blocks/012/0123456789abcdef.bin", out, sizeof(out)),
        0);
    ck_assert_str_eq(out, "model/r0/0123456789abcdef.bin");
    ck_assert_int_eq(kvfs_path_from_backing("a/b.txt", out, sizeof(out)), 0);
    ck_assert_str_eq(out, "a/b.txt");
    /* A block in the wrong bucket, a non-block in a bucket, a deeper path. */
    ck_assert_int_eq(
        kvfs_path_from_backing("a/.kvfs-blocks/013/0123456789abcdef", out, sizeof(out)), -EINVAL);
    ck_assert_int_eq(kvfs_path_from_backing("a/.kvfs-blocks/012/notablock", out, sizeof(out)),
                     -EINVAL);
    ck_assert_int_eq(
        kvfs_path_from_backing("a/.kvfs-blocks/012/0123456789abcdef/x", out, sizeof(out)), -EINVAL);
    ck_assert_int_eq(kvfs_path_from_backing(".kvfs-state/staging/x", out, sizeof(out)), -EPERM);
}
END_TEST

START_TEST(round_trip) {
    const char *paths[] = {"0123456789abcdef", "ns/FEDCBA9876543210.bin", "a/b/c/d.txt",
                           "x/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        char b[1024], m[1024];
        ck_assert_int_eq(kvfs_path_to_backing(paths[i], b, sizeof(b)), 0);
        ck_assert_int_eq(kvfs_path_from_backing(b, m, sizeof(m)), 0);
        ck_assert_str_eq(m, paths[i]);
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("name");
    TCase *tc = tcase_create("name");
    tcase_add_test(tc, block_names);
    tcase_add_test(tc, not_block_names);
    tcase_add_test(tc, reserved_and_checks);
    tcase_add_test(tc, bucket_mapping);
    tcase_add_test(tc, path_to_backing);
    tcase_add_test(tc, path_from_backing);
    tcase_add_test(tc, round_trip);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
