/* kvfs_stats: rendering of the counter table (see the header). */
#include "kvfs_stats.h"

#include <stdarg.h>
#include <stdio.h>

struct out {
    char *buf;
    size_t len;
    size_t used; /* what the whole text needs, even past LEN */
};

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = o->used < o->len ? o->len - o->used : 0;
    int n = vsnprintf(room ? o->buf + o->used : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->used += (size_t)n;
}

#define LOAD(s, f) atomic_load_explicit(&(s)->f, memory_order_relaxed)

size_t kvfs_stats_format_text(const struct kvfs_stats *s, const struct kvfs_stats_info *info,
                              char *buf, size_t len) {
    struct out o = {buf, len, 0};
    put(&o, "version %s\n", info->version);
    put(&o, "backing %s\n", info->backing);
    put(&o, "mountpoint %s\n", info->mountpoint);
    put(&o, "data_mode %s\n", info->data_mode);
    put(&o, "data_mode_reason %s\n", info->data_mode_reason);
    put(&o, "uptime_seconds %.0f\n", info->uptime_s);
    put(&o, "inodes %llu\n", (unsigned long long)info->inodes);
    put(&o, "lease_holder %s\n", info->lease_holder ? info->lease_holder : "none");
#define KVFS_STATS_GAUGE_TEXT(name, help)                                                          \
    put(&o, "%s %llu\n", #name, (unsigned long long)info->name);
    KVFS_STATS_GAUGES(KVFS_STATS_GAUGE_TEXT)
#undef KVFS_STATS_GAUGE_TEXT
#define KVFS_STATS_TEXT(name, help) put(&o, "%s %llu\n", #name, (unsigned long long)LOAD(s, name));
    KVFS_STATS_COUNTERS(KVFS_STATS_TEXT)
#undef KVFS_STATS_TEXT
    return o.used;
}

size_t kvfs_stats_format_prometheus(const struct kvfs_stats *s, const struct kvfs_stats_info *info,
                                    char *buf, size_t len) {
    struct out o = {buf, len, 0};
    put(&o, "# HELP kvfs_info Static facts about this kvfs daemon.\n# TYPE kvfs_info gauge\n");
    put(&o, "kvfs_info{version=\"%s\",data_mode=\"%s\"} 1\n", info->version, info->data_mode);
    put(&o,
        "# HELP kvfs_uptime_seconds Seconds since the daemon started.\n"
        "# TYPE kvfs_uptime_seconds gauge\nkvfs_uptime_seconds %.0f\n",
        info->uptime_s);
    put(&o,
        "# HELP kvfs_inodes Inodes the kernel currently holds.\n"
        "# TYPE kvfs_inodes gauge\nkvfs_inodes %llu\n",
        (unsigned long long)info->inodes);
#define KVFS_STATS_GAUGE_PROM(name, help)                                                          \
    put(&o, "# HELP kvfs_%s %s.\n# TYPE kvfs_%s gauge\nkvfs_%s %llu\n", #name, help, #name, #name, \
        (unsigned long long)info->name);
    KVFS_STATS_GAUGES(KVFS_STATS_GAUGE_PROM)
#undef KVFS_STATS_GAUGE_PROM
#define KVFS_STATS_PROM(name, help)                                                                \
    put(&o, "# HELP kvfs_%s_total %s.\n# TYPE kvfs_%s_total counter\nkvfs_%s_total %llu\n", #name, \
        help, #name, #name, (unsigned long long)LOAD(s, name));
    KVFS_STATS_COUNTERS(KVFS_STATS_PROM)
#undef KVFS_STATS_PROM
    return o.used;
}
