/* Unit tests for core/kvfs_wire: what is written reads back, and every
 * truncation or bad length of a record is an error, never an overread. */
#include "unit_util.h"

#include "kvfs_wire.h"

static void write_sample(struct kvfs_wire_out *w) {
    kvfs_wire_put_u64(w, 7);
    kvfs_wire_put_str(w, "abc");
    kvfs_wire_put_str(w, NULL);
    kvfs_wire_put_str(w, "");
    kvfs_wire_put_bytes(w, "xyz", 3);
    kvfs_wire_put_u64(w, UINT64_MAX - 1);
}

START_TEST(round_trip) {
    struct kvfs_wire_out w = {0};
    write_sample(&w);
    ck_assert_int_eq(w.err, 0);
    struct kvfs_wire_in r;
    kvfs_wire_in_init(&r, w.buf, w.len);
    ck_assert_uint_eq(kvfs_wire_get_max(&r, 10), 7);
    char *s = kvfs_wire_get_str(&r, 16);
    ck_assert_str_eq(s, "abc");
    free(s);
    ck_assert_ptr_null(kvfs_wire_get_str(&r, 16));
    char small[8];
    kvfs_wire_get_str_into(&r, small, sizeof(small));
    ck_assert_str_eq(small, "");
    char b[3];
    kvfs_wire_get_bytes(&r, b, 3);
    ck_assert(memcmp(b, "xyz", 3) == 0);
    ck_assert_uint_eq(kvfs_wire_get_u64(&r), UINT64_MAX - 1);
    ck_assert(kvfs_wire_in_ok(&r));
    ck_assert_uint_eq(r.left, 0);
    kvfs_wire_out_free(&w);
}
END_TEST

/* Every prefix of a valid record fails somewhere, and reads nothing past it. */
START_TEST(truncations_fail) {
    struct kvfs_wire_out w = {0};
    write_sample(&w);
    for (size_t n = 0; n < w.len; n++) {
        char *copy = malloc(n ? n : 1);
        memcpy(copy, w.buf, n);
        struct kvfs_wire_in r;
        kvfs_wire_in_init(&r, copy, n);
        kvfs_wire_get_u64(&r);
        free(kvfs_wire_get_str(&r, 16));
        free(kvfs_wire_get_str(&r, 16));
        free(kvfs_wire_get_str(&r, 16));
        char b[3];
        kvfs_wire_get_bytes(&r, b, 3);
        kvfs_wire_get_u64(&r);
        ck_assert_msg(!kvfs_wire_in_ok(&r), "prefix of %zu bytes accepted", n);
        free(copy);
    }
    kvfs_wire_out_free(&w);
}
END_TEST

START_TEST(bad_values_fail) {
    struct kvfs_wire_out w = {0};
    kvfs_wire_put_u64(&w, 11);
    kvfs_wire_put_str(&w, "toolong");
    kvfs_wire_put_u64(&w, 3);
    kvfs_wire_put_bytes(&w, "a\0b", 3); /* a string with a NUL in it */
    struct kvfs_wire_in r;
    kvfs_wire_in_init(&r, w.buf, w.len);
    ck_assert_uint_eq(kvfs_wire_get_max(&r, 10), 0);
    ck_assert(!kvfs_wire_in_ok(&r));
    kvfs_wire_in_init(&r, w.buf + 8, w.len - 8);
    ck_assert_ptr_null(kvfs_wire_get_str(&r, 4));
    ck_assert(!kvfs_wire_in_ok(&r));
    kvfs_wire_in_init(&r, w.buf + 23, w.len - 23);
    ck_assert_ptr_null(kvfs_wire_get_str(&r, 16));
    ck_assert(!kvfs_wire_in_ok(&r));
    kvfs_wire_out_free(&w);
}
END_TEST

/* Descriptors travel beside a record by index; each is taken once. */
START_TEST(descriptors_by_index) {
    struct kvfs_wire_out w = {0};
    struct kvfs_fdset set = {0};
    ck_assert_int_eq(kvfs_wire_put_fd(&w, &set, 7), 0);
    ck_assert_int_eq(kvfs_wire_put_fd(&w, &set, -1), 0);
    ck_assert_int_eq(kvfs_wire_put_fd(&w, &set, 9), 0);
    kvfs_wire_put_u64(&w, 0); /* names index 0 again */
    kvfs_wire_put_u64(&w, 5); /* out of range */
    ck_assert_uint_eq(set.n, 2);
    int fds[2] = {set.fds[0], set.fds[1]};
    struct kvfs_wire_in r;
    kvfs_wire_in_init(&r, w.buf, w.len);
    ck_assert_int_eq(kvfs_wire_get_fd(&r, fds, 2), 7);
    ck_assert_int_eq(kvfs_wire_get_fd(&r, fds, 2), -1);
    ck_assert_int_eq(kvfs_wire_get_fd(&r, fds, 2), 9);
    ck_assert(kvfs_wire_in_ok(&r));
    ck_assert_int_eq(fds[0], -1); /* taken over */
    ck_assert_int_eq(kvfs_wire_get_fd(&r, fds, 2), -1);
    ck_assert(!kvfs_wire_in_ok(&r));
    kvfs_wire_in_init(&r, w.buf + 32, 8);
    ck_assert_int_eq(kvfs_wire_get_fd(&r, fds, 2), -1);
    ck_assert(!kvfs_wire_in_ok(&r));
    kvfs_fdset_free(&set);
    kvfs_wire_out_free(&w);
}
END_TEST

int main(void) {
    Suite *s = suite_create("wire");
    TCase *tc = tcase_create("wire");
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, truncations_fail);
    tcase_add_test(tc, bad_values_fail);
    tcase_add_test(tc, descriptors_by_index);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
