/* kvfs_stats: the daemon's counters and their two renderings, the
 * human-readable `stats` file and the Prometheus `metrics` file of the control
 * directory. One table describes every counter, so both renderings (and any
 * later exporter) always list the same set. Counters are relaxed atomics:
 * they are bumped on hot paths and only need to be eventually exact. */
#ifndef KVFS_STATS_H
#define KVFS_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define KVFS_STATS_COUNTERS(X)                                                                     \
    X(blocks_published, "Blocks published (first complete copy of a block name)")                  \
    X(files_published, "Non-block files published")                                                \
    X(publish_conflicts, "Publications discarded because the block already existed")               \
    X(publish_errors, "Publications that failed (the error went to close() or the log)")           \
    X(bytes_written, "Bytes written through the mount")                                            \
    X(bytes_read, "Bytes read through the daemon (passthrough reads bypass it)")                   \
    X(read_requests, "READ requests served by the daemon (none for passthrough opens)")            \
    X(write_requests, "WRITE requests served by the daemon")                                       \
    X(passthrough_opens, "Opens whose data goes straight to the backing file")                     \
    X(getxattr_requests, "GETXATTR requests (the kernel's security.capability checks included)")   \
    X(lookups, "Name lookups")                                                                     \
    X(lookup_misses, "Name lookups that found nothing")                                            \
    X(creates, "Files created (staged)")                                                           \
    X(opens, "Files opened")                                                                       \
    X(unlinks, "Files removed through the mount")                                                  \
    X(renames, "Renames through the mount")                                                        \
    X(refused, "Requests refused as bad input (reserved names, immutable files, escapes)")         \
    X(errors, "Requests that failed with an error from the backing store")                         \
    X(requests_timed_out,                                                                          \
      "Requests answered with EIO after request_timeout (a hung backing store)")                   \
    X(staging_collected, "Stale staging files removed")                                            \
    X(blocks_evicted, "Blocks removed by eviction")                                                \
    X(bytes_evicted, "Bytes removed by eviction")                                                  \
    X(eviction_runs, "Eviction passes")                                                            \
    X(eviction_ms, "Milliseconds spent in eviction passes")                                        \
    X(atime_recorded, "Block accesses recorded in the backing store")                              \
    X(scans, "Scans of the backing store completed")                                               \
    X(writes_aborted, "Files never published: their writer was killed, left or unlinked them")

struct kvfs_stats {
#define KVFS_STATS_FIELD(name, help) _Atomic uint64_t name;
    KVFS_STATS_COUNTERS(KVFS_STATS_FIELD)
#undef KVFS_STATS_FIELD
};

/* Static facts shown next to the counters. */
struct kvfs_stats_info {
    const char *version;
    const char *backing;
    const char *mountpoint;
    const char *data_mode;        /* how file data moves, e.g. "daemon-copy" */
    const char *data_mode_reason; /* why that mode was chosen */
    double uptime_s;
    uint64_t inodes;          /* inodes the kernel currently holds */
    const char *lease_holder; /* the node that may evict, or "none" */
#define KVFS_STATS_GAUGES(X)                                                                       \
    X(capacity_bytes, "Capacity the blocks are kept under (0: no eviction)")                       \
    X(usage_bytes, "Bytes of blocks in the backing store, as indexed")                             \
    X(evict_high_pct, "Percent of capacity that starts eviction")                                  \
    X(evict_low_pct, "Percent of capacity eviction brings usage under")                            \
    X(index_blocks, "Blocks in this node's index")                                                 \
    X(index_bytes, "Memory of this node's block index")
#define KVFS_STATS_GAUGE_FIELD(name, help) uint64_t name;
    KVFS_STATS_GAUGES(KVFS_STATS_GAUGE_FIELD)
#undef KVFS_STATS_GAUGE_FIELD
};

#define kvfs_stat_add(stats, field, n)                                                             \
    atomic_fetch_add_explicit(&(stats)->field, (uint64_t)(n), memory_order_relaxed)
#define kvfs_stat_inc(stats, field) kvfs_stat_add(stats, field, 1)

/* Render into BUF; return the length the full text needs (as snprintf). */
size_t kvfs_stats_format_text(const struct kvfs_stats *s, const struct kvfs_stats_info *info,
                              char *buf, size_t len);
size_t kvfs_stats_format_prometheus(const struct kvfs_stats *s, const struct kvfs_stats_info *info,
                                    char *buf, size_t len);

#endif
