/* kvfs_config: the daemon's command line.
 *
 *     kvfs [-f] [-d] [-o opt[=val],...] BACKING_DIR MOUNTPOINT
 *
 * kvfs's own options are parsed and validated here; the generic mount options
 * that mount(8) and /etc/fstab pass along (rw, nosuid, noatime, ...) are
 * collected into `fuse_opts` for libfuse. Anything else is refused, so a typo
 * never silently turns into a default. */
#ifndef KVFS_CONFIG_H
#define KVFS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How file data moves (see fuse/kvfs_passthrough.c). */
enum kvfs_pt_policy {
    KVFS_PT_AUTO,  /* kernel passthrough for reads when available */
    KVFS_PT_READS, /* the same (the name of an older mode, still accepted) */
    KVFS_PT_OFF,   /* everything through the daemon (FOPEN_DIRECT_IO) */
};

struct kvfs_config {
    const char *backing;    /* as given on the command line */
    const char *mountpoint; /* as given on the command line */
    bool foreground;        /* -f: stay in the foreground */
    bool fuse_debug;        /* -d: libfuse request tracing (implies -f) */
    bool show_help;
    bool show_version;
    bool takeover; /* --takeover: replace the daemon serving MOUNTPOINT */

    double entry_timeout;     /* s: kernel dentry cache for published blocks */
    double attr_timeout;      /* s: kernel attribute cache for published blocks */
    double negative_timeout;  /* s: kernel cache of "no such block" */
    double meta_timeout;      /* s: dentries/attributes of directories and non-block files */
    unsigned threads;         /* maximum FUSE worker threads */
    int spin_us;              /* spin_us=USEC: busy-poll for the next request; -1 default */
    int spin_write_us;        /* the same while files are being written; -1 default */
    bool clone_fd;            /* one /dev/fuse descriptor per worker */
    int log_level;            /* enum kvfs_log_level */
    bool durable;             /* fdatasync a file before publishing it */
    bool trust_unseen;        /* unseen_writers=trust: see kvfs_config.c's help */
    unsigned staging_grace;   /* s: age after which a staging file is debris */
    unsigned request_timeout; /* s: a request still unanswered is failed with EIO (0: never) */
    /* Capacity and eviction (0 capacity: nothing is ever evicted). */
    uint64_t capacity_bytes;  /* capacity=SIZE */
    double capacity_pct;      /* capacity=PCT%: of the backing filesystem's size */
    unsigned evict_high;      /* % of capacity that starts eviction */
    unsigned evict_low;       /* % of capacity eviction brings usage under */
    unsigned lease_ttl;       /* s: the eviction lease's lifetime (renewed at a third) */
    unsigned atime_interval;  /* s: at most one recorded access per block per interval */
    unsigned rescan_interval; /* s: between scans of the backing store */
    char metrics_host[64];    /* metrics_addr=[HOST]:PORT (HOST defaults to 127.0.0.1) */
    unsigned metrics_port;    /* 0: no HTTP endpoint */
    int allow_other;          /* 1 on, 0 off, -1 default (on as root) */
    int default_permissions;  /* 1 on, 0 off, -1 default (on as root) */
    int passthrough;          /* enum kvfs_pt_policy */
    /* handover_socket=PATH|none: where a successor takes over (default: derived
     * from the mountpoint; see fuse/kvfs_handover). */
    char handover_socket[108];
    bool handover_off;

    char fuse_opts[1024]; /* generic mount options forwarded to libfuse */
};

/* Fills CFG with defaults. */
void kvfs_config_defaults(struct kvfs_config *cfg);

/* Parses a size: bytes with an optional K, M, G or T suffix (powers of 1024).
 * Returns 0, or -1 if it is malformed or zero. */
int kvfs_config_parse_size(const char *s, uint64_t *out);

/* Parses ARGV. Returns 0, or -1 with a one-line message in ERR. */
int kvfs_config_parse(struct kvfs_config *cfg, int argc, char **argv, char *err, size_t errlen);

/* Applies one "name[=value]" option (what one -o item holds). Returns 0, or -1
 * with a message in ERR. */
int kvfs_config_apply_option(struct kvfs_config *cfg, const char *opt, char *err, size_t errlen);

/* Resolves the -1 defaults for a daemon running as EUID. */
void kvfs_config_finish(struct kvfs_config *cfg, unsigned euid);

/* Prints the --help text. */
void kvfs_config_usage(const char *prog, void *stream);

#endif
