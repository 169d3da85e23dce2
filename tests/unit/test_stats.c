/* Unit tests for core/kvfs_stats: both renderings list every counter, and a
 * short buffer still reports the full length. */
#include "unit_util.h"

#include "kvfs_stats.h"

START_TEST(renderings) {
    struct kvfs_stats s;
    memset(&s, 0, sizeof(s));
    kvfs_stat_add(&s, bytes_written, 12345);
    kvfs_stat_inc(&s, blocks_published);
    struct kvfs_stats_info info;
    memset(&info, 0, sizeof(info));
    info.version = "1.2.3";
    info.backing = "/b";
    info.mountpoint = "/m";
    info.data_mode = "daemon-copy";
    info.data_mode_reason = "test";
    info.uptime_s = 7;
    info.inodes = 3;
    info.lease_holder = "nodeA.1";
    info.capacity_bytes = 1000;
    info.usage_bytes = 420;
    char buf[8192];
    size_t n = kvfs_stats_format_text(&s, &info, buf, sizeof(buf));
    ck_assert_uint_lt(n, sizeof(buf));
    ck_assert(strstr(buf, "bytes_written 12345\n"));
    ck_assert(strstr(buf, "blocks_published 1\n"));
    ck_assert(strstr(buf, "data_mode daemon-copy\n"));
    ck_assert(strstr(buf, "lease_holder nodeA.1\n"));
    ck_assert(strstr(buf, "capacity_bytes 1000\n"));
    ck_assert(strstr(buf, "usage_bytes 420\n"));
#define CHECK_TEXT(name, help) ck_assert_msg(strstr(buf, #name " "), "missing " #name);
    KVFS_STATS_COUNTERS(CHECK_TEXT)
    n = kvfs_stats_format_prometheus(&s, &info, buf, sizeof(buf));
    ck_assert_uint_lt(n, sizeof(buf));
    ck_assert(strstr(buf, "kvfs_bytes_written_total 12345\n"));
    ck_assert(strstr(buf, "# TYPE kvfs_blocks_published_total counter\n"));
    ck_assert(strstr(buf, "# TYPE kvfs_usage_bytes gauge\nkvfs_usage_bytes 420\n"));
#define CHECK_PROM(name, help)                                                                     \
    ck_assert_msg(strstr(buf, "kvfs_" #name "_total "), "missing " #name);
    KVFS_STATS_COUNTERS(CHECK_PROM)
    char small[16];
    size_t full = kvfs_stats_format_text(&s, &info, small, sizeof(small));
    ck_assert_uint_eq(full, kvfs_stats_format_text(&s, &info, buf, sizeof(buf)));
}
END_TEST

int main(void) {
    Suite *s = suite_create("stats");
    TCase *tc = tcase_create("stats");
    tcase_add_test(tc, renderings);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
