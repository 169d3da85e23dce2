/* Unit tests for core/kvfs_proc: reading how a closing process is leaving
 * from /proc/TID/stat text, odd command names included, and from live
 * processes. */
#include "unit_util.h"

#include "kvfs_proc.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* A stat line with FLAGS in field 9 and CODE in field 52, command COMM. */
static enum kvfs_proc_state parse(const char *comm, unsigned flags, unsigned code) {
    char line[1024];
    int n = snprintf(line, sizeof(line), "1234 (%s) R 1 1234 1234 0 -1 %u", comm, flags);
    for (int field = 10; field <= 51; field++)
        n += snprintf(line + n, sizeof(line) - n, " %d", field);
    snprintf(line + n, sizeof(line) - n, " %u\n", code);
    return kvfs_proc_parse_stat(line, strlen(line));
}

START_TEST(states) {
    ck_assert_int_eq(parse("python3", 0x400040, 0), KVFS_PROC_RUNNING);
    /* Exiting (PF_EXITING): exit(0), exit(3), SIGKILL, SIGSEGV with a core. */
    ck_assert_int_eq(parse("python3", 0x400044, 0), KVFS_PROC_EXITED);
    ck_assert_int_eq(parse("python3", 0x400044, 3 << 8), KVFS_PROC_EXITED);
    ck_assert_int_eq(parse("python3", 0x400044, SIGKILL), KVFS_PROC_KILLED);
    ck_assert_int_eq(parse("python3", 0x400044, SIGSEGV | 0x80), KVFS_PROC_KILLED);
    /* The command name may hold spaces and parentheses. */
    ck_assert_int_eq(parse("a) R 1 2 (b", 0x4, SIGKILL), KVFS_PROC_KILLED);
    ck_assert_int_eq(parse(") 4 4 4 4 4 4 4", 0x0, SIGKILL), KVFS_PROC_RUNNING);
}
END_TEST

START_TEST(malformed) {
    const char *bad[] = {"", "1234 python3 R 1", "1234 (x) R 1 2 3", "1234 (x) R 1 1 1 0 -1 -4",
                         "1234 (x) R 1 1 1 0 -1 zz 1 2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_int_eq(kvfs_proc_parse_stat(bad[i], strlen(bad[i])), KVFS_PROC_UNKNOWN);
    char line[64] = "1 (x) R 1 1 1 0 -1 4";
    /* Cut short before field 52. */
    ck_assert_int_eq(kvfs_proc_parse_stat(line, strlen(line)), KVFS_PROC_UNKNOWN);
}
END_TEST

START_TEST(live) {
    ck_assert_int_eq(kvfs_proc_state_of(getpid()), KVFS_PROC_RUNNING);
    ck_assert_int_eq(kvfs_proc_state_of(0), KVFS_PROC_UNKNOWN);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0)
        _exit(0);
    waitpid(child, NULL, 0);
    ck_assert_int_eq(kvfs_proc_state_of(child), KVFS_PROC_UNKNOWN); /* reaped */
}
END_TEST

START_TEST(tgid) {
    const char *s = "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\n";
    ck_assert_int_eq(kvfs_proc_parse_tgid(s, strlen(s)), 4242);
    const char *bad[] = {"Name:\tx\n",
                         "Name:\tx\nTgid:\t\n",
                         "Name:\tx\nTgid:\t-3\n",
                         "Name:\tx\nTgid:\t12ab\n",
                         "Name:\tx\nTgid:\t99999999999\n",
                         "Name:\tTgid: 5\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_int_eq(kvfs_proc_parse_tgid(bad[i], strlen(bad[i])), -1);
    ck_assert_int_eq(kvfs_proc_tgid(getpid()), getpid());
    ck_assert_int_eq(kvfs_proc_tgid(0), 0);
}
END_TEST

int main(void) {
    Suite *s = suite_create("proc");
    TCase *tc = tcase_create("proc");
    tcase_add_test(tc, states);
    tcase_add_test(tc, malformed);
    tcase_add_test(tc, live);
    tcase_add_test(tc, tgid);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
