/* Unit tests for core/kvfs_store: opening a backing store, finding entries
 * in buckets and plain, refusing planted links, listing, rmdir cleanup. */
#include "unit_util.h"
#include "unit_store.h"

#include "kvfs_name.h"
#include "kvfs_store.h"

#include <dirent.h>
#include <errno.h>

START_TEST(open_creates_state) {
    struct stat sb;
    char p[256];
    snprintf(p, sizeof(p), "%s/.kvfs-state/staging", dir);
    ck_assert_int_eq(stat(p, &sb), 0);
    ck_assert(S_ISDIR(sb.st_mode));
    snprintf(p, sizeof(p), "%s/.kvfs-state/format", dir);
    ck_assert_int_eq(stat(p, &sb), 0);
    /* A second open agrees with the first. */
    struct kvfs_store st2;
    char err[256];
    ck_assert_int_eq(kvfs_store_open(&st2, dir, err, sizeof(err)), 0);
    kvfs_store_close(&st2);
}
END_TEST

START_TEST(refuses_newer_layout) {
    char p[256], err[256];
    snprintf(p, sizeof(p), "%s/.kvfs-state/format", dir);
    FILE *f = fopen(p, "w");
    fputs("kvfs-layout 99\n", f);
    fclose(f);
    struct kvfs_store st2;
    ck_assert_int_lt(kvfs_store_open(&st2, dir, err, sizeof(err)), 0);
    ck_assert_msg(strstr(err, "layout 99"), "%s", err);
}
END_TEST

START_TEST(check_paths) {
    char err[256], sub[256], mnt[256];
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    snprintf(mnt, sizeof(mnt), "%s/mnt", dir);
    mkdir(sub, 0755);
    mkdir(mnt, 0755);
    ck_assert_int_eq(kvfs_store_check_paths(sub, mnt, err, sizeof(err)), 0);
    ck_assert_int_lt(kvfs_store_check_paths(sub, sub, err, sizeof(err)), 0);
    ck_assert(strstr(err, "same directory"));
    ck_assert_int_lt(kvfs_store_check_paths(dir, mnt, err, sizeof(err)), 0);
    ck_assert(strstr(err, "inside the backing"));
    ck_assert_int_lt(kvfs_store_check_paths(sub, dir, err, sizeof(err)), 0);
    ck_assert(strstr(err, "inside the mountpoint"));
    ck_assert_int_eq(kvfs_store_check_paths("/nonexistent/x", mnt, err, sizeof(err)), -ENOENT);
    ck_assert(strstr(err, "No such file"));
    char file[256];
    snprintf(file, sizeof(file), "%s/file", dir);
    write_file_at(AT_FDCWD, file, "x");
    ck_assert_int_eq(kvfs_store_check_paths(file, mnt, err, sizeof(err)), -ENOTDIR);
}
END_TEST

START_TEST(bucket_and_plain_entries) {
    const char *blk = "abcdef0123456789.bin";
    int pfd = kvfs_entry_parent(st.root_fd, blk, true);
    ck_assert_int_ge(pfd, 0);
    write_file_at(pfd, blk, "block");
    close(pfd);
    int rootrw = open(dir, O_RDONLY | O_DIRECTORY);
    write_file_at(rootrw, "config.json", "{}");
    mkdir(strcat(strcpy((char[256]){0}, dir), "/ns"), 0755);

    struct stat sb;
    enum kvfs_where w;
    ck_assert_int_eq(kvfs_entry_stat(st.root_fd, blk, &sb, &w), 0);
    ck_assert_int_eq(w, KVFS_IN_BUCKET);
    ck_assert_int_eq(sb.st_size, 5);
    ck_assert_int_eq(kvfs_entry_stat(st.root_fd, "config.json", &sb, &w), 0);
    ck_assert_int_eq(w, KVFS_IN_DIR);
    ck_assert_int_eq(kvfs_entry_stat(st.root_fd, "ns", &sb, &w), 0);
    ck_assert(S_ISDIR(sb.st_mode));
    ck_assert_int_eq(kvfs_entry_stat(st.root_fd, "abcdef0123456780", &sb, &w), -ENOENT);

    int fd = kvfs_entry_open(st.root_fd, blk, KVFS_IN_BUCKET, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    char buf[16] = {0};
    ck_assert_int_eq(read(fd, buf, sizeof(buf)), 5);
    ck_assert_str_eq(buf, "block");
    close(fd);

    /* mkdir of a name a block already has is refused. */
    ck_assert_int_eq(kvfs_entry_mkdir(st.root_fd, blk, 0755), -EEXIST);

    struct kvfs_listing l;
    ck_assert_int_eq(kvfs_dir_list(st.root_fd, &l), 0);
    ck_assert_uint_eq(l.n, 3); /* config.json, ns, the block; no .kvfs-* */
    int seen = 0;
    for (size_t i = 0; i < l.n; i++) {
        ck_assert(!kvfs_name_is_reserved(l.ents[i].name));
        if (strcmp(l.ents[i].name, blk) == 0) {
            ck_assert_int_eq(l.ents[i].type, DT_REG);
            seen++;
        }
    }
    ck_assert_int_eq(seen, 1);
    kvfs_listing_free(&l);

    ck_assert_int_eq(kvfs_entry_unlink(st.root_fd, blk), 0);
    ck_assert_int_eq(kvfs_entry_stat(st.root_fd, blk, &sb, &w), -ENOENT);
    ck_assert_int_eq(kvfs_entry_unlink(st.root_fd, "ns"), -EISDIR);
    close(rootrw);
}
END_TEST

START_TEST(planted_links_refused) {
    char p[512];
    int rw = open(dir, O_RDONLY | O_DIRECTORY);
    /* A symlink as a plain entry, and the fan-out dir replaced by a link. */
    ck_assert_int_eq(symlinkat("/etc/passwd", rw, "evil"), 0);
    ck_assert_int_eq(symlinkat("/etc", rw, ".kvfs-blocks"), 0);
    struct stat sb;
    enum kvfs_where w;
    /* A plain entry that is a link is reported as a link, never followed. */
    ck_assert_int_eq(kvfs_entry_stat(st.root_fd, "evil", &sb, &w), 0);
    ck_assert(S_ISLNK(sb.st_mode));
    ck_assert_int_eq(w, KVFS_IN_DIR);
    ck_assert_int_eq(kvfs_entry_open(st.root_fd, "evil", KVFS_IN_DIR, O_RDONLY), -EPERM);
    /* A link in a block's place in a bucket is refused. */
    int b = open(dir, O_RDONLY | O_DIRECTORY);
    ck_assert_int_eq(mkdirat(b, "ns", 0755), 0);
    ck_assert_int_eq(mkdirat(b, "ns/.kvfs-blocks", 0755), 0);
    ck_assert_int_eq(mkdirat(b, "ns/.kvfs-blocks/fed", 0755), 0);
    ck_assert_int_eq(symlinkat("/etc/passwd", b, "ns/.kvfs-blocks/fed/fedcba9876543210"), 0);
    ck_assert_int_eq(mkfifoat(b, "ns/.kvfs-blocks/fed/fedcba9876543211", 0644), 0);
    int ns = openat(b, "ns", O_PATH | O_DIRECTORY);
    ck_assert_int_eq(kvfs_entry_stat(ns, "fedcba9876543210", &sb, &w), -EPERM);
    ck_assert_int_eq(kvfs_entry_stat(ns, "fedcba9876543211", &sb, &w), -EPERM);
    close(ns);
    close(b);
    /* The block lookup must not follow .kvfs-blocks -> /etc. */
    ck_assert_int_eq(kvfs_entry_open(st.root_fd, "0123456789abcdef", KVFS_IN_BUCKET, O_RDONLY),
                     -EPERM);
    ck_assert_int_lt(kvfs_entry_parent(st.root_fd, "0123456789abcdef", true), 0);
    ck_assert_int_lt(kvfs_open_beneath(st.root_fd, "../../etc/passwd", O_RDONLY, 0), 0);
    ck_assert_int_lt(kvfs_open_beneath(st.root_fd, "/etc/passwd", O_RDONLY, 0), 0);
    struct kvfs_listing l;
    ck_assert_int_eq(kvfs_dir_list(st.root_fd, &l), 0);
    /* The link is listed as a link; the linked fan-out dir is not followed. */
    ck_assert_uint_eq(l.n, 2);
    for (size_t i = 0; i < l.n; i++) {
        if (strcmp(l.ents[i].name, "evil") == 0)
            ck_assert_int_eq(l.ents[i].type, DT_LNK);
        else
            ck_assert_str_eq(l.ents[i].name, "ns");
    }
    kvfs_listing_free(&l);
    snprintf(p, sizeof(p), "%s/.kvfs-blocks", dir);
    unlink(p);
    close(rw);
}
END_TEST

START_TEST(rmdir_clears_empty_buckets) {
    ck_assert_int_eq(kvfs_entry_mkdir(st.root_fd, "ns", 0755), 0);
    int ns = kvfs_open_beneath(st.root_fd, "ns", O_PATH | O_DIRECTORY, 0);
    ck_assert_int_ge(ns, 0);
    int b = kvfs_entry_parent(ns, "0123456789abcdef", true);
    ck_assert_int_ge(b, 0);
    write_file_at(b, "0123456789abcdef", "x");
    ck_assert_int_eq(kvfs_entry_rmdir(st.root_fd, "ns"), -ENOTEMPTY);
    ck_assert_int_eq(unlinkat(b, "0123456789abcdef", 0), 0);
    close(b);
    close(ns);
    ck_assert_int_eq(kvfs_entry_rmdir(st.root_fd, "ns"), 0);
    struct stat sb;
    enum kvfs_where w;
    ck_assert_int_eq(kvfs_entry_stat(st.root_fd, "ns", &sb, &w), -ENOENT);
}
END_TEST

int main(void) {
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("store");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, open_creates_state);
    tcase_add_test(tc, refuses_newer_layout);
    tcase_add_test(tc, check_paths);
    tcase_add_test(tc, bucket_and_plain_entries);
    tcase_add_test(tc, planted_links_refused);
    tcase_add_test(tc, rmdir_clears_empty_buckets);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
