/* Unit tests for core/kvfs_publish: the state machine, first-writer-wins for
 * blocks, last-writer-wins for other files, O_EXCL, and staging collection. */
#include "unit_util.h"
#include "unit_store.h"

#include "kvfs_name.h"
#include "kvfs_publish.h"

#include <errno.h>
#include <time.h>

START_TEST(state_machine) {
    struct kvfs_pub p = {KVFS_PUB_STAGING, 0, false};
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_WRITE), KVFS_ACT_PROCEED);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_TRUNCATE), KVFS_ACT_PROCEED);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_FLUSH_OTHER), KVFS_ACT_NOTHING);
    /* Nothing written yet: a close (shell redirection's dup2+close) waits. */
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_FLUSH_OPENER), KVFS_ACT_NOTHING);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_RELEASE), KVFS_ACT_PUBLISH);
    kvfs_pub_wrote(&p);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_FLUSH_OTHER), KVFS_ACT_NOTHING);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_FLUSH_OPENER), KVFS_ACT_PUBLISH);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_RELEASE), KVFS_ACT_PUBLISH);

    kvfs_pub_published(&p, KVFS_DISCARDED);
    ck_assert_int_eq(p.state, KVFS_PUB_PUBLISHED);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_WRITE), KVFS_ACT_REFUSE);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_TRUNCATE), KVFS_ACT_REFUSE);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_FLUSH_OPENER), KVFS_ACT_NOTHING);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_RELEASE), KVFS_ACT_NOTHING);

    struct kvfs_pub f = {KVFS_PUB_STAGING, 0, false};
    kvfs_pub_fail(&f, -ENOSPC);
    ck_assert_int_eq(f.state, KVFS_PUB_FAILED);
    ck_assert_int_eq(kvfs_pub_decide(&f, KVFS_EV_WRITE), KVFS_ACT_FAILED);
    ck_assert_int_eq(kvfs_pub_decide(&f, KVFS_EV_FLUSH_OPENER), KVFS_ACT_FAILED);
    ck_assert_int_eq(kvfs_pub_decide(&f, KVFS_EV_RELEASE), KVFS_ACT_NOTHING);
    kvfs_pub_fail(&f, -EIO); /* the first error is the one reported */
    ck_assert_int_eq(f.error, -ENOSPC);

    struct kvfs_pub g = {KVFS_PUB_STAGING, 0, false};
    kvfs_pub_published(&g, -EIO);
    ck_assert_int_eq(g.state, KVFS_PUB_FAILED);
    ck_assert_int_eq(g.error, -EIO);
    ck_assert_int_eq(kvfs_pub_decide(&g, KVFS_EV_ABORT), KVFS_ACT_NOTHING);
}
END_TEST

/* A killed writer, one that left without closing a block, or one that
 * unlinked its own file: nothing is ever published, whatever comes after. */
START_TEST(abort_publishes_nothing) {
    struct kvfs_pub p = {KVFS_PUB_STAGING, 0, false};
    kvfs_pub_wrote(&p);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_ABORT), KVFS_ACT_ABORT);
    kvfs_pub_abort(&p);
    ck_assert_int_eq(p.state, KVFS_PUB_ABORTED);
    /* Writes through other descriptors go on, as to an unlinked local file. */
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_WRITE), KVFS_ACT_PROCEED);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_TRUNCATE), KVFS_ACT_PROCEED);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_FLUSH_OPENER), KVFS_ACT_NOTHING);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_FLUSH_OTHER), KVFS_ACT_NOTHING);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_RELEASE), KVFS_ACT_NOTHING);
    ck_assert_int_eq(kvfs_pub_decide(&p, KVFS_EV_ABORT), KVFS_ACT_NOTHING);
    /* A published file is not aborted: its writer completed it. */
    struct kvfs_pub q = {KVFS_PUB_STAGING, 0, false};
    kvfs_pub_published(&q, KVFS_PUBLISHED);
    ck_assert_int_eq(kvfs_pub_decide(&q, KVFS_EV_ABORT), KVFS_ACT_NOTHING);
    kvfs_pub_abort(&q);
    ck_assert_int_eq(q.state, KVFS_PUB_PUBLISHED);
}
END_TEST

static void stage_with(struct kvfs_stage *sg, const char *data, int flags) {
    ck_assert_int_eq(kvfs_stage_create(&st, flags, 0640, false, 0, 0, sg), 0);
    ck_assert_int_eq(write(sg->fd, data, strlen(data)), (ssize_t)strlen(data));
}

static void expect_content(int dirfd, const char *name, const char *want) {
    struct stat sb;
    enum kvfs_where w;
    ck_assert_int_eq(kvfs_entry_stat(dirfd, name, &sb, &w), 0);
    int fd = kvfs_entry_open(dirfd, name, w, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    char buf[64] = {0};
    ck_assert_int_eq(read(fd, buf, sizeof(buf) - 1), (ssize_t)strlen(want));
    ck_assert_str_eq(buf, want);
    close(fd);
}

static int staging_count(void) {
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ls -A '%s/.kvfs-state/staging' | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    ck_assert_int_eq(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

START_TEST(block_first_writer_wins) {
    const char *blk = "00112233445566778899aabbccddeeff.bin";
    struct kvfs_stage a, b;
    stage_with(&a, "first", 0);
    stage_with(&b, "second", 0);
    ck_assert_int_eq(staging_count(), 2);
    /* Nothing under the final name before publication. */
    struct stat sb;
    enum kvfs_where w;
    ck_assert_int_eq(kvfs_entry_stat(st.root_fd, blk, &sb, &w), -ENOENT);
    ck_assert_int_eq(kvfs_stage_publish(&st, &a, st.root_fd, blk, false, false, false),
                     KVFS_PUBLISHED);
    ck_assert_int_eq(kvfs_stage_publish(&st, &b, st.root_fd, blk, false, false, true),
                     KVFS_DISCARDED);
    expect_content(st.root_fd, blk, "first");
    ck_assert_int_eq(kvfs_entry_stat(st.root_fd, blk, &sb, &w), 0);
    ck_assert_int_eq(w, KVFS_IN_BUCKET);
    ck_assert_int_eq(sb.st_mode & 0777, 0640);
    ck_assert_int_eq(staging_count(), 0);
    close(a.fd);
    close(b.fd);
}
END_TEST

START_TEST(file_last_writer_wins) {
    struct kvfs_stage a, b, c;
    stage_with(&a, "one", 0);
    stage_with(&b, "two", 0);
    ck_assert_int_eq(kvfs_stage_publish(&st, &a, st.root_fd, "config.json", false, false, false),
                     KVFS_PUBLISHED);
    ck_assert_int_eq(kvfs_stage_publish(&st, &b, st.root_fd, "config.json", false, false, false),
                     KVFS_PUBLISHED);
    expect_content(st.root_fd, "config.json", "two");
    /* O_EXCL loses with EEXIST and publishes nothing. */
    stage_with(&c, "three", O_EXCL);
    ck_assert_int_eq(kvfs_stage_publish(&st, &c, st.root_fd, "config.json", true, false, false),
                     -EEXIST);
    expect_content(st.root_fd, "config.json", "two");
    ck_assert_int_eq(staging_count(), 0);
    close(a.fd);
    close(b.fd);
    close(c.fd);
}
END_TEST

/* O_TRUNC of a published block replaces it: later readers get the new
 * bytes, a reader holding the old file keeps the old ones. */
START_TEST(replacement_replaces_a_block) {
    const char *blk = "00112233445566778899aabbccddeeff.bin";
    struct kvfs_stage a, b;
    stage_with(&a, "first", 0);
    ck_assert_int_eq(kvfs_stage_publish(&st, &a, st.root_fd, blk, false, false, false),
                     KVFS_PUBLISHED);
    struct stat sb;
    enum kvfs_where w;
    ck_assert_int_eq(kvfs_entry_stat(st.root_fd, blk, &sb, &w), 0);
    int old = kvfs_entry_open(st.root_fd, blk, w, O_RDONLY);
    ck_assert_int_ge(old, 0);
    stage_with(&b, "second", 0);
    ck_assert_int_eq(kvfs_stage_publish(&st, &b, st.root_fd, blk, false, true, false),
                     KVFS_PUBLISHED);
    expect_content(st.root_fd, blk, "second");
    char buf[16] = {0};
    ck_assert_int_eq(pread(old, buf, sizeof(buf) - 1, 0), 5);
    ck_assert_str_eq(buf, "first");
    ck_assert_int_eq(staging_count(), 0);
    close(old);
    close(a.fd);
    close(b.fd);
}
END_TEST

START_TEST(publish_errors_publish_nothing) {
    struct kvfs_stage a;
    stage_with(&a, "data", 0);
    /* A directory of the block's name blocks publication. */
    int rw = open(dir, O_RDONLY | O_DIRECTORY);
    ck_assert_int_eq(mkdirat(rw, "0123456789abcdef", 0755), 0);
    ck_assert_int_eq(
        kvfs_stage_publish(&st, &a, st.root_fd, "0123456789abcdef", false, false, false), -EISDIR);
    ck_assert_int_eq(staging_count(), 0);
    close(a.fd);
    close(rw);
}
END_TEST

START_TEST(o_direct_probe) {
    struct kvfs_stage a;
    int rc = kvfs_stage_create(&st, O_DIRECT, 0644, false, 0, 0, &a);
    /* Whatever the backing store answers, a success leaves a usable
     * descriptor without O_DIRECT (unaligned writes must work). */
    if (rc == 0) {
        ck_assert_int_eq(fcntl(a.fd, F_GETFL) & O_DIRECT, 0);
        ck_assert_int_eq(write(a.fd, "x", 1), 1);
        kvfs_stage_discard(&st, &a);
        close(a.fd);
    } else {
        ck_assert_int_eq(rc, -EINVAL);
    }
    ck_assert_int_eq(staging_count(), 0);
}
END_TEST

START_TEST(collect_by_age) {
    struct kvfs_stage old, fresh;
    stage_with(&old, "old", 0);
    stage_with(&fresh, "fresh", 0);
    struct timespec t[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
    ck_assert_int_eq(futimens(old.fd, t), 0);
    uint64_t removed = 0;
    ck_assert_int_eq(kvfs_staging_collect(&st, 3600, time(NULL), &removed), 0);
    ck_assert_uint_eq(removed, 1);
    ck_assert_int_eq(staging_count(), 1);
    ck_assert_int_eq(faccessat(st.staging_fd, fresh.sname, F_OK, 0), 0);
    ck_assert_int_ne(faccessat(st.staging_fd, old.sname, F_OK, 0), 0);
    close(old.fd);
    kvfs_stage_discard(&st, &fresh);
    close(fresh.fd);
}
END_TEST

int main(void) {
    Suite *s = suite_create("publish");
    TCase *tc = tcase_create("publish");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, state_machine);
    tcase_add_test(tc, abort_publishes_nothing);
    tcase_add_test(tc, block_first_writer_wins);
    tcase_add_test(tc, replacement_replaces_a_block);
    tcase_add_test(tc, file_last_writer_wins);
    tcase_add_test(tc, publish_errors_publish_nothing);
    tcase_add_test(tc, o_direct_probe);
    tcase_add_test(tc, collect_by_age);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
