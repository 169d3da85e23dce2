/* Unit tests for core/kvfs_lease with a fake clock: first taker wins, a live
 * lease is respected, an expired one is taken over, a simultaneous takeover
 * leaves exactly one holder, renewal detects a lost lease. */
#include "unit_util.h"

#include "kvfs_lease.h"

#include <dirent.h>
#include <errno.h>

static const char *dir;
static int dfd;

static void setup(void) {
    dir = scratch_dir();
    dfd = open(dir, O_RDONLY | O_DIRECTORY);
    ck_assert_int_ge(dfd, 0);
}

static void teardown(void) {
    close(dfd);
    remove_tree(dir);
}

enum { TTL = 10000, SKEW = 2000 };

START_TEST(first_taker_wins_and_live_lease_is_respected) {
    struct kvfs_lease a, b;
    kvfs_lease_init(&a, dfd, "nodeA.1", TTL, SKEW);
    kvfs_lease_init(&b, dfd, "nodeB.2", TTL, SKEW);
    ck_assert_int_eq(kvfs_lease_take(&a, 1000), 1);
    ck_assert_int_eq(kvfs_lease_take(&b, 1001), 0);
    char who[128];
    int64_t exp;
    ck_assert_int_eq(kvfs_lease_read(dfd, who, sizeof(who), &exp), 0);
    ck_assert_str_eq(who, "nodeA.1");
    ck_assert_int_eq(exp, 1000 + TTL);
    ck_assert(kvfs_lease_valid(&a, 5000, 1000));
    ck_assert(!kvfs_lease_valid(&a, 10500, 1000)); /* too close to expiry to start work */
    ck_assert(!kvfs_lease_valid(&b, 5000, 0));
    /* Renewed in time, B still cannot take it, even past the first expiry. */
    ck_assert_int_eq(kvfs_lease_renew(&a, 8000), 1);
    ck_assert_int_eq(kvfs_lease_take(&b, 1000 + TTL + SKEW + 1), 0);
    kvfs_lease_release(&a);
    ck_assert_int_eq(kvfs_lease_read(dfd, who, sizeof(who), &exp), -ENOENT);
    ck_assert_int_eq(kvfs_lease_take(&b, 20000), 1);
}
END_TEST

START_TEST(expired_lease_is_taken_over) {
    struct kvfs_lease a, b;
    kvfs_lease_init(&a, dfd, "nodeA.1", TTL, SKEW);
    kvfs_lease_init(&b, dfd, "nodeB.2", TTL, SKEW);
    ck_assert_int_eq(kvfs_lease_take(&a, 0), 1);
    /* A dies (stops renewing). Within the skew grace nothing changes. */
    ck_assert_int_eq(kvfs_lease_take(&b, TTL + SKEW), 0);
    ck_assert_int_eq(kvfs_lease_take(&b, TTL + SKEW + 1), 2);
    ck_assert_int_eq(kvfs_lease_confirm(&b), 1);
    ck_assert(kvfs_lease_valid(&b, TTL + SKEW + 2, 0));
    /* A comes back: its renewal finds the lease lost, and it stops. */
    ck_assert_int_eq(kvfs_lease_renew(&a, TTL + SKEW + 3), 0);
    ck_assert(!kvfs_lease_valid(&a, TTL + SKEW + 3, 0));
    ck_assert_int_eq(kvfs_lease_take(&a, TTL + SKEW + 4), 0);
    /* A release by a non-holder leaves B's lease alone. */
    kvfs_lease_release(&a);
    char who[128];
    int64_t exp;
    ck_assert_int_eq(kvfs_lease_read(dfd, who, sizeof(who), &exp), 0);
    ck_assert_str_eq(who, "nodeB.2");
}
END_TEST

START_TEST(simultaneous_takeover_leaves_one_holder) {
    struct kvfs_lease a, b, c;
    kvfs_lease_init(&a, dfd, "nodeA.1", TTL, SKEW);
    kvfs_lease_init(&b, dfd, "nodeB.2", TTL, SKEW);
    kvfs_lease_init(&c, dfd, "nodeC.3", TTL, SKEW);
    ck_assert_int_eq(kvfs_lease_take(&c, 0), 1);
    int64_t later = TTL + SKEW + 100; /* C died */
    ck_assert_int_eq(kvfs_lease_take(&a, later), 2);
    /* A node that read the expired lease at the same moment as A renames its
     * own over A's before A reads back. */
    write_file_at(dfd, "late", "holder nodeB.2\nexpires 999999\n");
    ck_assert_int_eq(renameat(dfd, "late", dfd, KVFS_LEASE_FILE), 0);
    ck_assert_int_eq(kvfs_lease_confirm(&a), 0); /* A must not evict */
    ck_assert(!kvfs_lease_valid(&a, later, 0));
    /* A node that arrives later respects the fresh lease. */
    ck_assert_int_eq(kvfs_lease_take(&c, later + 1), 0);
}
END_TEST

START_TEST(malformed_lease_counts_as_expired) {
    write_file_at(dfd, KVFS_LEASE_FILE, "garbage");
    char who[128];
    int64_t exp;
    ck_assert_int_eq(kvfs_lease_read(dfd, who, sizeof(who), &exp), -EINVAL);
    struct kvfs_lease a;
    kvfs_lease_init(&a, dfd, "nodeA.1", TTL, SKEW);
    ck_assert_int_eq(kvfs_lease_take(&a, 5), 2);
    ck_assert_int_eq(kvfs_lease_confirm(&a), 1);
    /* No temp files are left behind. */
    DIR *d = fdopendir(dup(dfd));
    struct dirent *de;
    int files = 0;
    while ((de = readdir(d)))
        files += de->d_name[0] != '.';
    closedir(d);
    ck_assert_int_eq(files, 1);
}
END_TEST

int main(void) {
    Suite *s = suite_create("lease");
    TCase *tc = tcase_create("lease");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, first_taker_wins_and_live_lease_is_respected);
    tcase_add_test(tc, expired_lease_is_taken_over);
    tcase_add_test(tc, simultaneous_takeover_leaves_one_holder);
    tcase_add_test(tc, malformed_lease_counts_as_expired);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
