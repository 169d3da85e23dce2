/* kvfs_log: leveled logging to stderr (foreground) or syslog (detached).
 * One global level, read without a lock: a stale read only changes whether one
 * line is printed. */
#ifndef KVFS_LOG_H
#define KVFS_LOG_H

#include <stdbool.h>

enum kvfs_log_level { KVFS_LOG_ERROR, KVFS_LOG_WARN, KVFS_LOG_INFO, KVFS_LOG_DEBUG };

void kvfs_log_set_level(enum kvfs_log_level level);
enum kvfs_log_level kvfs_log_get_level(void);
/* Sends further lines to syslog instead of stderr. */
void kvfs_log_use_syslog(bool on);
/* Parses "error", "warn", "info" or "debug"; returns the level or -1. */
int kvfs_log_parse_level(const char *name);
const char *kvfs_log_level_name(enum kvfs_log_level level);

void kvfs_log(enum kvfs_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define kvfs_error(...) kvfs_log(KVFS_LOG_ERROR, __VA_ARGS__)
#define kvfs_warn(...) kvfs_log(KVFS_LOG_WARN, __VA_ARGS__)
#define kvfs_info(...) kvfs_log(KVFS_LOG_INFO, __VA_ARGS__)
#define kvfs_debug(...)                                                                            \
    do {                                                                                           \
        if (kvfs_log_get_level() >= KVFS_LOG_DEBUG)                                                \
            kvfs_log(KVFS_LOG_DEBUG, __VA_ARGS__);                                                 \
    } while (0)

#endif
