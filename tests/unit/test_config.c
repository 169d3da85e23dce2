/* Unit tests for core/kvfs_config: good and bad command lines and values. */
#include "kvfs_config.h"
#include "kvfs_log.h"

#include "unit_util.h"

#include <check.h>
#include <stdarg.h>
#include <string.h>

static int parse(struct kvfs_config *c, char *err, int argc, ...) {
    char *argv[32];
    va_list ap;
    va_start(ap, argc);
    argv[0] = "kvfs";
    for (int i = 1; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    kvfs_config_defaults(c);
    err[0] = '\0';
    return kvfs_config_parse(c, argc, argv, err, 256);
}

START_TEST(defaults) {
    struct kvfs_config c;
    char err[256];
    ck_assert_int_eq(parse(&c, err, 3, "/b", "/m"), 0);
    ck_assert_str_eq(c.backing, "/b");
    ck_assert_str_eq(c.mountpoint, "/m");
    ck_assert(!c.foreground);
    ck_assert(c.negative_timeout <= 1.0);
    ck_assert(c.entry_timeout >= 60.0);
    ck_assert_uint_eq(c.threads, 16);
    ck_assert_int_eq(c.allow_other, -1);
    kvfs_config_finish(&c, 0);
    ck_assert_int_eq(c.allow_other, 1);
    ck_assert_int_eq(c.default_permissions, 1);
    ck_assert_int_eq(parse(&c, err, 3, "/b", "/m"), 0);
    kvfs_config_finish(&c, 1000);
    ck_assert_int_eq(c.allow_other, 0);
    ck_assert_int_eq(c.default_permissions, 0);
}
END_TEST

START_TEST(good_options) {
    struct kvfs_config c;
    char err[256];
    ck_assert_int_eq(parse(&c, err, 6, "-f", "-o",
                           "entry_timeout=10,attr_timeout=2.5,negative_timeout=0,threads=4,"
                           "log_level=debug,durable,staging_grace=60,noallow_other,"
                           "request_timeout=5",
                           "/b", "/m"),
                     0);
    ck_assert(c.foreground);
    ck_assert(c.entry_timeout == 10.0);
    ck_assert(c.attr_timeout == 2.5);
    ck_assert(c.negative_timeout == 0.0);
    ck_assert_uint_eq(c.threads, 4);
    ck_assert_int_eq(c.log_level, KVFS_LOG_DEBUG);
    ck_assert(c.durable);
    ck_assert_uint_eq(c.staging_grace, 60);
    ck_assert_uint_eq(c.request_timeout, 5);
    ck_assert_int_eq(c.allow_other, 0);
    ck_assert_int_eq(c.passthrough, KVFS_PT_AUTO);
    ck_assert_int_eq(parse(&c, err, 5, "-o", "passthrough=reads", "/b", "/m"), 0);
    ck_assert_int_eq(c.passthrough, KVFS_PT_READS);
    ck_assert_int_eq(parse(&c, err, 5, "-o", "passthrough=off", "/b", "/m"), 0);
    ck_assert_int_eq(c.passthrough, KVFS_PT_OFF);
    ck_assert(!c.trust_unseen);
    ck_assert_int_eq(parse(&c, err, 5, "-o", "unseen_writers=trust", "/b", "/m"), 0);
    ck_assert(c.trust_unseen);
    ck_assert_int_eq(parse(&c, err, 5, "-o", "unseen_writers=refuse", "/b", "/m"), 0);
    ck_assert(!c.trust_unseen);
    /* -oX form, repeated -o, generic mount options forwarded, fstab ones ignored */
    ck_assert_int_eq(parse(&c, err, 7, "-othreads=2", "-o",
                           "rw,nosuid,nodev,noatime,_netdev,defaults", "/b", "/m", "-d"),
                     0);
    ck_assert_uint_eq(c.threads, 2);
    ck_assert_str_eq(c.fuse_opts, "rw,nosuid,nodev,noatime");
    ck_assert(c.fuse_debug && c.foreground);
    ck_assert_int_eq(parse(&c, err, 5, "-o", "fsname=a\\,b", "/b", "/m"), 0);
    ck_assert_str_eq(c.fuse_opts, "fsname=a\\,b");
    ck_assert_int_eq(c.spin_us, -1); /* chosen from the CPU count at start */
    ck_assert_int_eq(parse(&c, err, 5, "-o", "spin_us=0", "/b", "/m"), 0);
    ck_assert_int_eq(c.spin_us, 0);
    ck_assert_int_eq(parse(&c, err, 5, "-o", "spin_us=10000,spin_write_us=7", "/b", "/m"), 0);
    ck_assert_int_eq(c.spin_us, 10000);
    ck_assert_int_eq(c.spin_write_us, 7);
    /* suid and nosuid are forwarded as given */
    ck_assert_int_eq(parse(&c, err, 5, "-o", "nosuid,suid", "/b", "/m"), 0);
    ck_assert_str_eq(c.fuse_opts, "nosuid,suid");
}
END_TEST

START_TEST(bad_options) {
    struct kvfs_config c;
    char err[256];
    struct {
        const char *opt;
        const char *msg;
    } cases[] = {
        {"bogus", "unknown option 'bogus'"},
        {"entry_timeout=abc", "entry_timeout"},
        {"entry_timeout=-1", "entry_timeout"},
        {"entry_timeout=", "entry_timeout"},
        {"entry_timeout=nan", "entry_timeout"},
        {"threads=0", "threads"},
        {"threads=99999", "threads"},
        {"threads=4x", "threads"},
        {"threads=-3", "threads"},
        {"log_level=loud", "log_level"},
        {"passthrough=maybe", "passthrough"},
        {"passthrough", "passthrough"},
        {"unseen_writers=maybe", "unseen_writers"},
        {"unseen_writers", "unseen_writers"},
        {"durable=1", "takes no value"},
        {"nosuid=1", "takes no value"},
        {"spin_us=100001", "0 to 100000"},
        {"spin_write_us=x", "spin_write_us"},
        {"spin_us=-1", "whole number"},
        {"fsname=", "needs a value"},
        {"staging_grace=0", "staging_grace"},
        {"request_timeout=-1", "request_timeout"},
        {"request_timeout=99999999", "request_timeout"},
        {"durable,,threads=2", "empty option"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ck_assert_int_eq(parse(&c, err, 4, "-o", cases[i].opt, "/b", "/m"), -1);
        ck_assert_msg(strstr(err, cases[i].msg), "'%s' gave '%s'", cases[i].opt, err);
    }
    ck_assert_int_eq(parse(&c, err, 2, "/b"), -1);
    ck_assert(strstr(err, "MOUNTPOINT"));
    ck_assert_int_eq(parse(&c, err, 1), -1);
    ck_assert_int_eq(parse(&c, err, 4, "/b", "/m", "/x"), -1);
    ck_assert(strstr(err, "unexpected argument"));
    ck_assert_int_eq(parse(&c, err, 4, "-x", "/b", "/m"), -1);
    ck_assert(strstr(err, "unknown flag"));
    ck_assert_int_eq(parse(&c, err, 3, "/b", "-o"), -1);
}
END_TEST

START_TEST(capacity_options) {
    struct kvfs_config c;
    char err[256];
    ck_assert_int_eq(parse(&c, err, 5, "-o", "capacity=10G,evict_high=90,evict_low=70", "/b", "/m"),
                     0);
    ck_assert_uint_eq(c.capacity_bytes, 10ull << 30);
    ck_assert_uint_eq(c.evict_high, 90);
    ck_assert_uint_eq(c.evict_low, 70);
    ck_assert_int_eq(parse(&c, err, 5, "-o", "capacity=80%", "/b", "/m"), 0);
    ck_assert(c.capacity_pct == 80.0 && c.capacity_bytes == 0);
    ck_assert_int_eq(parse(&c, err, 5, "-o", "capacity=1048576", "/b", "/m"), 0);
    ck_assert_uint_eq(c.capacity_bytes, 1048576);
    ck_assert_int_eq(parse(&c, err, 5, "-o", "capacity=512KiB", "/b", "/m"), 0);
    ck_assert_uint_eq(c.capacity_bytes, 512 * 1024);
    ck_assert_int_eq(parse(&c, err, 3, "/b", "/m"), 0);
    ck_assert(c.capacity_bytes == 0 && c.capacity_pct == 0); /* no eviction by default */
    ck_assert_uint_eq(c.evict_high, 95);
    ck_assert_uint_eq(c.evict_low, 85);
    const char *bad[] = {"capacity=",    "capacity=0",     "capacity=-5G",  "capacity=12X",
                         "capacity=0%",  "capacity=101%",  "capacity=abc%", "capacity=99999999999T",
                         "evict_high=0", "evict_high=101", "evict_low=100"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_int_eq(parse(&c, err, 5, "-o", bad[i], "/b", "/m"), -1);
        ck_assert_msg(err[0] != '\0', "%s", bad[i]);
    }
    ck_assert_int_eq(parse(&c, err, 5, "-o", "metrics_addr=:9100", "/b", "/m"), 0);
    ck_assert_str_eq(c.metrics_host, "127.0.0.1");
    ck_assert_uint_eq(c.metrics_port, 9100);
    ck_assert_int_eq(parse(&c, err, 5, "-o", "metrics_addr=0.0.0.0:80", "/b", "/m"), 0);
    ck_assert_str_eq(c.metrics_host, "0.0.0.0");
    const char *badm[] = {"metrics_addr=9100", "metrics_addr=:0", "metrics_addr=:99999",
                          "metrics_addr=x:", "metrics_addr"};
    for (size_t i = 0; i < sizeof(badm) / sizeof(badm[0]); i++)
        ck_assert_int_eq(parse(&c, err, 5, "-o", badm[i], "/b", "/m"), -1);
    ck_assert_int_eq(parse(&c, err, 5, "-o", "evict_high=80,evict_low=80", "/b", "/m"), -1);
    ck_assert(strstr(err, "must be below"));
}
END_TEST

START_TEST(takeover_and_handover_socket) {
    struct kvfs_config c;
    char err[256];
    ck_assert_int_eq(parse(&c, err, 3, "/b", "/m"), 0);
    ck_assert(!c.takeover && !c.handover_off && c.handover_socket[0] == '\0');
    ck_assert_int_eq(
        parse(&c, err, 6, "--takeover", "-o", "handover_socket=/run/x.sock", "/b", "/m"), 0);
    ck_assert(c.takeover);
    ck_assert_str_eq(c.handover_socket, "/run/x.sock");
    ck_assert_int_eq(parse(&c, err, 5, "-o", "handover_socket=none", "/b", "/m"), 0);
    ck_assert(c.handover_off);
    char longp[200];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    char opt[256];
    snprintf(opt, sizeof(opt), "handover_socket=%s", longp);
    const char *bad[] = {"handover_socket=", "handover_socket", "handover_socket=rel.sock", opt};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_int_eq(parse(&c, err, 5, "-o", bad[i], "/b", "/m"), -1);
        ck_assert_msg(strstr(err, "handover_socket"), "%s: %s", bad[i], err);
    }
}
END_TEST

START_TEST(help_and_version) {
    struct kvfs_config c;
    char err[256];
    ck_assert_int_eq(parse(&c, err, 2, "--help"), 0);
    ck_assert(c.show_help);
    ck_assert_int_eq(parse(&c, err, 2, "--version"), 0);
    ck_assert(c.show_version);
}
END_TEST

int main(void) {
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, good_options);
    tcase_add_test(tc, bad_options);
    tcase_add_test(tc, capacity_options);
    tcase_add_test(tc, help_and_version);
    tcase_add_test(tc, takeover_and_handover_socket);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
