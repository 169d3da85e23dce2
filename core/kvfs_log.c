/* kvfs_log: see the header. Lines are formatted into one buffer and written
 * with a single write() so that lines from concurrent FUSE workers never
 * interleave. */
#include "kvfs_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static volatile int current_level = KVFS_LOG_INFO;
static volatile bool to_syslog;

void kvfs_log_set_level(enum kvfs_log_level level) {
    current_level = level;
}

enum kvfs_log_level kvfs_log_get_level(void) {
    return (enum kvfs_log_level)current_level;
}

void kvfs_log_use_syslog(bool on) {
    if (on && !to_syslog)
        openlog("kvfs", LOG_PID, LOG_DAEMON);
    to_syslog = on;
}

int kvfs_log_parse_level(const char *name) {
    for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

const char *kvfs_log_level_name(enum kvfs_log_level level) {
    return level_names[level];
}

void kvfs_log(enum kvfs_log_level level, const char *fmt, ...) {
    if ((int)level > current_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (to_syslog) {
        static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
        syslog(prio[level], "%s", msg);
        return;
    }
    char line[1200];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ kvfs[%d] %s: %s\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, (int)getpid(), level_names[level], msg);
    if (n > (int)sizeof(line) - 1)
        n = (int)sizeof(line) - 1;
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
