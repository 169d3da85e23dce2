/* kvfs_config: command-line and -o option parsing (see the header). Written
 * by hand rather than with fuse_opt so that core/ does not depend on libfuse
 * and every bad value gets a message naming the option. */
#include "kvfs_config.h"
#include "kvfs_log.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kvfs_config_defaults(struct kvfs_config *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->entry_timeout = 3600.0;
    cfg->attr_timeout = 3600.0;
    cfg->negative_timeout = 1.0;
    cfg->meta_timeout = 1.0;
    cfg->threads = 16;
    cfg->spin_us = -1;
    cfg->spin_write_us = -1;
    cfg->log_level = KVFS_LOG_INFO;
    cfg->staging_grace = 3600;
    cfg->request_timeout = 60;
    cfg->evict_high = 95;
    cfg->evict_low = 85;
    cfg->lease_ttl = 30;
    cfg->atime_interval = 60;
    cfg->rescan_interval = 300;
    cfg->allow_other = -1;
    cfg->default_permissions = -1;
}

/* Generic mount options: accepted and handed to libfuse / the kernel. */
static const char *const forwarded_flags[] = {
    "rw",       "ro",         "suid",         "nosuid",     "dev",         "nodev",
    "exec",     "noexec",     "async",        "sync",       "dirsync",     "atime",
    "noatime",  "nodiratime", "relatime",     "norelatime", "strictatime", "nostrictatime",
    "lazytime", "nolazytime", "auto_unmount", NULL};
static const char *const forwarded_valued[] = {"fsname", "subtype", "max_read", NULL};
/* Options mount(8) and fstab use that mean nothing to a running daemon. */
static const char *const ignored_flags[] = {"defaults", "auto",    "noauto", "user", "nouser",
                                            "users",    "_netdev", "nofail", NULL};

static bool in_list(const char *const *list, const char *name, size_t len) {
    for (; *list; list++)
        if (strlen(*list) == len && strncmp(*list, name, len) == 0)
            return true;
    return false;
}

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
                                                      ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int parse_seconds(const char *name, const char *val, double *out, char *err, size_t errlen) {
    char *end;
    if (!val || !*val)
        return fail(err, errlen, "option '%s' needs a value in seconds", name);
    errno = 0;
    double v = strtod(val, &end);
    if (errno || *end || !isfinite(v) || v < 0 || v > 1e9)
        return fail(err, errlen, "option '%s': '%s' is not a number of seconds (0 to 1e9)", name,
                    val);
    *out = v;
    return 0;
}

static int parse_uint(const char *name, const char *val, unsigned lo, unsigned hi, unsigned *out,
                      char *err, size_t errlen) {
    char *end;
    char range[64];
    snprintf(range, sizeof(range), "%u to %u", lo, hi);
    if (!val || !*val)
        return fail(err, errlen, "option '%s' needs a whole number (%s)", name, range);
    errno = 0;
    unsigned long v = strtoul(val, &end, 10);
    if (errno || *end || val[0] == '-' || v < lo || v > hi) {
        return fail(err, errlen, "option '%s': '%s' is not a whole number from %s", name, val,
                    range);
    }
    *out = (unsigned)v;
    return 0;
}

static int add_fuse_opt(struct kvfs_config *cfg, const char *opt, char *err, size_t errlen) {
    size_t used = strlen(cfg->fuse_opts);
    size_t need = strlen(opt) + (used ? 1 : 0);
    if (used + need + 1 > sizeof(cfg->fuse_opts))
        return fail(err, errlen, "too many mount options (at '%s')", opt);
    if (used)
        cfg->fuse_opts[used++] = ',';
    /* libfuse splits on commas too: escape the ones inside this option. */
    for (const char *p = opt; *p; p++) {
        if (used + 3 > sizeof(cfg->fuse_opts))
            return fail(err, errlen, "too many mount options (at '%s')", opt);
        if (*p == ',' || *p == '\\')
            cfg->fuse_opts[used++] = '\\';
        cfg->fuse_opts[used++] = *p;
    }
    cfg->fuse_opts[used] = '\0';
    return 0;
}

int kvfs_config_parse_size(const char *s, uint64_t *out) {
    char *end;
    if (!*s || *s == '-')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    int shift = 0;
    switch (*end) {
    case 'K':
    case 'k':
        shift = 10;
        end++;
        break;
    case 'M':
    case 'm':
        shift = 20;
        end++;
        break;
    case 'G':
    case 'g':
        shift = 30;
        end++;
        break;
    case 'T':
    case 't':
        shift = 40;
        end++;
        break;
    default:
        break;
    }
    if (*end == 'i' || *end == 'B') /* KiB, KB */
        end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
    if (*end || v == 0 || (shift && v > (UINT64_MAX >> shift)))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

int kvfs_config_apply_option(struct kvfs_config *cfg, const char *opt, char *err, size_t errlen) {
    const char *eq = strchr(opt, '=');
    size_t nlen = eq ? (size_t)(eq - opt) : strlen(opt);
    const char *val = eq ? eq + 1 : NULL;
    char name[64];
    if (nlen == 0)
        return fail(err, errlen, "empty option in '%s'", opt);
    if (nlen >= sizeof(name))
        return fail(err, errlen, "unknown option '%s'", opt);
    memcpy(name, opt, nlen);
    name[nlen] = '\0';

    struct {
        const char *name;
        double *field;
    } secs[] = {{"entry_timeout", &cfg->entry_timeout},
                {"attr_timeout", &cfg->attr_timeout},
                {"negative_timeout", &cfg->negative_timeout},
                {"meta_timeout", &cfg->meta_timeout}};
    for (size_t i = 0; i < sizeof(secs) / sizeof(secs[0]); i++)
        if (strcmp(name, secs[i].name) == 0)
            return parse_seconds(name, val, secs[i].field, err, errlen);

    struct {
        const char *name;
        int *field;
        int value;
    } flags[] = {{"allow_other", &cfg->allow_other, 1},
                 {"noallow_other", &cfg->allow_other, 0},
                 {"default_permissions", &cfg->default_permissions, 1},
                 {"nodefault_permissions", &cfg->default_permissions, 0}};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (strcmp(name, flags[i].name) == 0) {
            if (val)
                return fail(err, errlen, "option '%s' takes no value", name);
            *flags[i].field = flags[i].value;
            return 0;
        }
    }

    if (strcmp(name, "threads") == 0)
        return parse_uint(name, val, 1, 1024, &cfg->threads, err, errlen);
    if (strcmp(name, "spin_us") == 0 || strcmp(name, "spin_write_us") == 0) {
        unsigned us;
        if (parse_uint(name, val, 0, 100000, &us, err, errlen) != 0)
            return -1;
        *(strcmp(name, "spin_us") == 0 ? &cfg->spin_us : &cfg->spin_write_us) = (int)us;
        return 0;
    }
    struct {
        const char *name;
        unsigned *field;
        unsigned lo, hi;
    } uints[] = {{"evict_high", &cfg->evict_high, 1, 100},
                 {"evict_low", &cfg->evict_low, 0, 99},
                 {"evict_lease_ttl", &cfg->lease_ttl, 2, 3600},
                 {"atime_interval", &cfg->atime_interval, 0, 86400},
                 {"request_timeout", &cfg->request_timeout, 0, 86400},
                 {"rescan_interval", &cfg->rescan_interval, 1, 86400}};
    for (size_t i = 0; i < sizeof(uints) / sizeof(uints[0]); i++)
        if (strcmp(name, uints[i].name) == 0)
            return parse_uint(name, val, uints[i].lo, uints[i].hi, uints[i].field, err, errlen);
    if (strcmp(name, "capacity") == 0) {
        size_t vlen = val ? strlen(val) : 0;
        if (vlen > 1 && val[vlen - 1] == '%') {
            char *end;
            errno = 0;
            double pct = strtod(val, &end);
            if (errno || end != val + vlen - 1 || !(pct > 0 && pct <= 100))
                return fail(err, errlen, "option 'capacity': '%s' is not a percentage in (0, 100]",
                            val);
            cfg->capacity_pct = pct;
            cfg->capacity_bytes = 0;
            return 0;
        }
        if (!val || kvfs_config_parse_size(val, &cfg->capacity_bytes) != 0)
            return fail(err, errlen,
                        "option 'capacity': '%s' is not a size (bytes, K, M, G, T) or a percentage",
                        val ? val : "");
        cfg->capacity_pct = 0;
        return 0;
    }
    if (strcmp(name, "metrics_addr") == 0) {
        const char *colon = val ? strrchr(val, ':') : NULL;
        size_t hl = colon ? (size_t)(colon - val) : 0;
        unsigned port;
        char perr[8];
        if (!colon || hl >= sizeof(cfg->metrics_host) ||
            parse_uint(name, colon + 1, 1, 65535, &port, perr, sizeof(perr)) != 0)
            return fail(err, errlen, "option 'metrics_addr': '%s' is not [HOST]:PORT",
                        val ? val : "");
        if (hl == 0)
            snprintf(cfg->metrics_host, sizeof(cfg->metrics_host), "127.0.0.1");
        else
            snprintf(cfg->metrics_host, sizeof(cfg->metrics_host), "%.*s", (int)hl, val);
        cfg->metrics_port = port;
        return 0;
    }
    if (strcmp(name, "handover_socket") == 0) {
        if (!val || !*val)
            return fail(err, errlen, "option 'handover_socket' needs a path or 'none'");
        if (strcmp(val, "none") == 0) {
            cfg->handover_off = true;
            cfg->handover_socket[0] = '\0';
            return 0;
        }
        if (val[0] != '/' || strlen(val) >= sizeof(cfg->handover_socket) - 12)
            return fail(err, errlen,
                        "option 'handover_socket': '%s' is not an absolute path of at most %zu "
                        "bytes",
                        val, sizeof(cfg->handover_socket) - 13);
        cfg->handover_off = false;
        snprintf(cfg->handover_socket, sizeof(cfg->handover_socket), "%s", val);
        return 0;
    }
    if (strcmp(name, "staging_grace") == 0)
        return parse_uint(name, val, 1, 365u * 86400u, &cfg->staging_grace, err, errlen);
    if (strcmp(name, "log_level") == 0) {
        int lvl = val ? kvfs_log_parse_level(val) : -1;
        if (lvl < 0)
            return fail(err, errlen,
                        "option 'log_level': '%s' is not one of error, warn, info, debug",
                        val ? val : "");
        cfg->log_level = lvl;
        return 0;
    }
    if (strcmp(name, "passthrough") == 0) {
        static const char *const policies[] = {"auto", "reads", "off"};
        for (int i = 0; val && i < 3; i++) {
            if (strcmp(val, policies[i]) == 0) {
                cfg->passthrough = i;
                return 0;
            }
        }
        return fail(err, errlen, "option 'passthrough': '%s' is not one of auto, reads, off",
                    val ? val : "");
    }
    if (strcmp(name, "unseen_writers") == 0) {
        if (val && (strcmp(val, "refuse") == 0 || strcmp(val, "trust") == 0)) {
            cfg->trust_unseen = val[0] == 't';
            return 0;
        }
        return fail(err, errlen, "option 'unseen_writers': '%s' is not one of refuse, trust",
                    val ? val : "");
    }
    if (strcmp(name, "durable") == 0 || strcmp(name, "clone_fd") == 0) {
        if (val)
            return fail(err, errlen, "option '%s' takes no value", name);
        if (name[0] == 'd')
            cfg->durable = true;
        else
            cfg->clone_fd = true;
        return 0;
    }
    if (in_list(forwarded_flags, name, nlen)) {
        if (val)
            return fail(err, errlen, "option '%s' takes no value", name);
        return add_fuse_opt(cfg, opt, err, errlen);
    }
    if (in_list(forwarded_valued, name, nlen)) {
        if (!val || !*val)
            return fail(err, errlen, "option '%s' needs a value", name);
        return add_fuse_opt(cfg, opt, err, errlen);
    }
    if (in_list(ignored_flags, name, nlen))
        return 0;
    return fail(err, errlen, "unknown option '%s' (see kvfs --help)", name);
}

/* Splits one -o argument on commas; "\," escapes a comma inside a value. */
static int apply_option_list(struct kvfs_config *cfg, const char *list, char *err, size_t errlen) {
    char opt[1024];
    size_t n = 0;
    for (const char *p = list;; p++) {
        if (*p == '\\' && p[1] == ',') {
            p++;
        } else if (*p == ',' || *p == '\0') {
            opt[n] = '\0';
            if (n == 0 && *p == ',')
                return fail(err, errlen, "empty option in '-o %s'", list);
            if (n > 0 && kvfs_config_apply_option(cfg, opt, err, errlen) != 0)
                return -1;
            n = 0;
            if (*p == '\0')
                return 0;
            continue;
        }
        if (n + 1 >= sizeof(opt))
            return fail(err, errlen, "option too long in '-o %s'", list);
        opt[n++] = *p;
    }
}

int kvfs_config_parse(struct kvfs_config *cfg, int argc, char **argv, char *err, size_t errlen) {
    const char *pos[2];
    int npos = 0;
    bool no_more_flags = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!no_more_flags && a[0] == '-' && a[1] != '\0') {
            if (strcmp(a, "--") == 0) {
                no_more_flags = true;
            } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                cfg->show_help = true;
            } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
                cfg->show_version = true;
            } else if (strcmp(a, "--takeover") == 0) {
                cfg->takeover = true;
            } else if (strcmp(a, "-f") == 0) {
                cfg->foreground = true;
            } else if (strcmp(a, "-d") == 0 || strcmp(a, "--debug") == 0) {
                cfg->fuse_debug = true;
                cfg->foreground = true;
            } else if (strcmp(a, "-s") == 0) {
                cfg->threads = 1;
            } else if (strcmp(a, "-o") == 0) {
                if (i + 1 >= argc)
                    return fail(err, errlen, "'-o' needs a list of options");
                if (apply_option_list(cfg, argv[++i], err, errlen) != 0)
                    return -1;
            } else if (strncmp(a, "-o", 2) == 0) {
                if (apply_option_list(cfg, a + 2, err, errlen) != 0)
                    return -1;
            } else {
                return fail(err, errlen, "unknown flag '%s' (see kvfs --help)", a);
            }
        } else {
            if (npos == 2)
                return fail(err, errlen, "unexpected argument '%s': give BACKING_DIR MOUNTPOINT",
                            a);
            pos[npos++] = a;
        }
    }
    if (cfg->show_help || cfg->show_version)
        return 0;
    if (npos < 2)
        return fail(err, errlen,
                    "missing %s (usage: kvfs [-f] [-o opt,...] BACKING_DIR MOUNTPOINT)",
                    npos == 0 ? "BACKING_DIR and MOUNTPOINT" : "MOUNTPOINT");
    if (cfg->evict_low >= cfg->evict_high)
        return fail(err, errlen, "evict_low (%u%%) must be below evict_high (%u%%)", cfg->evict_low,
                    cfg->evict_high);
    cfg->backing = pos[0];
    cfg->mountpoint = pos[1];
    return 0;
}

void kvfs_config_finish(struct kvfs_config *cfg, unsigned euid) {
    if (cfg->allow_other < 0)
        cfg->allow_other = euid == 0;
    if (cfg->default_permissions < 0)
        cfg->default_permissions = euid == 0;
}

void kvfs_config_usage(const char *prog, void *stream) {
    fprintf((FILE *)stream,
            "usage: %s [-f] [-d] [--takeover] [-o opt[=val],...] BACKING_DIR MOUNTPOINT\n"
            "\n"
            "Mounts a hash-keyed KV-cache block namespace over BACKING_DIR (a directory on\n"
            "shared POSIX storage) at MOUNTPOINT. Writes go through to BACKING_DIR and a\n"
            "file becomes visible, on every node, only once its writer closes it.\n"
            "\n"
            "  -f                     stay in the foreground\n"
            "  -d                     trace FUSE requests (implies -f)\n"
            "  -s                     single worker thread (same as -o threads=1)\n"
            "  --takeover             replace the daemon serving MOUNTPOINT (an upgrade or a\n"
            "                         restart with other options) without unmounting: open\n"
            "                         files and cached names stay valid, callers only pause\n"
            "  -h, --help             this text\n"
            "  -V, --version          print the version\n"
            "\n"
            "kvfs options (-o):\n"
            "  entry_timeout=SEC      kernel name cache for published blocks (3600)\n"
            "  attr_timeout=SEC       kernel attribute cache for published blocks (3600)\n"
            "  negative_timeout=SEC   how long a miss is cached; bounds how soon a block\n"
            "                         published on another node is seen here (1)\n"
            "  meta_timeout=SEC       name/attribute cache for directories and non-block\n"
            "                         files (1)\n"
            "  threads=N              maximum FUSE worker threads, 1 to 1024 (16)\n"
            "  clone_fd               one /dev/fuse descriptor per worker thread\n"
            "  spin_us=USEC           after a request, one idle worker polls USEC\n"
            "                         microseconds for the next before sleeping (50 with 4\n"
            "                         or more CPUs, else 0)\n"
            "  spin_write_us=USEC     the same while files are being written, whose close\n"
            "                         is coming (5000 with 4 or more CPUs, else 0)\n"
            "  log_level=LEVEL        error, warn, info or debug (info)\n"
            "  passthrough=MODE       auto: kernel passthrough for reads when the kernel and\n"
            "                         privileges allow (writes always go through the\n"
            "                         daemon); reads: the same; off: all data through the\n"
            "                         daemon (auto)\n"
            "  capacity=SIZE|PCT%%     keep the blocks under SIZE (K/M/G/T) or PCT%% of the\n"
            "                         backing filesystem, evicting the least recently used\n"
            "                         (none by default: nothing is ever evicted)\n"
            "  evict_high=PCT         start evicting above PCT%% of the capacity (95)\n"
            "  evict_low=PCT          evict until usage is under PCT%% of it (85)\n"
            "  evict_lease_ttl=SEC    lifetime of the lease that lets one node evict (30)\n"
            "  atime_interval=SEC     record a block's access at most once per SEC (60)\n"
            "  rescan_interval=SEC    rescan the backing store for other nodes' blocks (300)\n"
            "  metrics_addr=[HOST]:PORT  serve Prometheus metrics over HTTP (HOST defaults to\n"
            "                         127.0.0.1)\n"
            "  durable                fdatasync each file before publishing it (needed on\n"
            "                         NFS for other nodes to see data with the name)\n"
            "  unseen_writers=MODE    refuse (default): a writer in a pid namespace this\n"
            "                         daemon cannot see gets EPERM, since kvfs could not\n"
            "                         tell its close() from its death; trust: accept it and\n"
            "                         publish at its close() even if it was killed\n"
            "  staging_grace=SEC      age after which an unpublished staging file left by a\n"
            "                         crash is removed (3600)\n"
            "  request_timeout=SEC    answer a request still unfinished after SEC with EIO,\n"
            "                         so a hung backing store fails callers instead of\n"
            "                         hanging them (60; 0: wait forever)\n"
            "  handover_socket=PATH   where a --takeover successor reaches this daemon\n"
            "                         (/run/kvfs/handover-HASH.sock as root,\n"
            "                         $XDG_RUNTIME_DIR/kvfs/... otherwise; none: refuse)\n"
            "  allow_other, noallow_other, default_permissions, nodefault_permissions\n"
            "                         (allow_other and default_permissions are on as root)\n"
            "\n"
            "Generic mount options (passed to the kernel): rw, ro, [no]suid, [no]dev,\n"
            "[no]exec, [no]atime, relatime, sync, async, dirsync, auto_unmount, fsname=,\n"
            "subtype=, max_read=. Ignored (fstab): defaults, auto, noauto, user, nouser,\n"
            "users, _netdev, nofail.\n",
            prog);
}
