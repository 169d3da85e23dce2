/* kvfsctl: the operator's tool for kvfs. Works on a mount and, where it makes
 * sense, on a backing directory with no daemon running:
 *
 *   kvfsctl ls PATH              blocks of a directory: size, last access
 *   kvfsctl stat PATH|HASH       one block: where it is stored, size, times, xattrs
 *   kvfsctl du [PATH]            usage per directory below PATH
 *   kvfsctl stats MOUNT          the daemon's counters
 *   kvfsctl evict PATH --to PCT  evict least recently used blocks down to PCT% of
 *                                the capacity (under the eviction lease)
 *   kvfsctl gc [PATH] [--older SEC]  remove staging files left by crashes
 *
 * --json gives machine-readable output. A long scan draws a progress line on
 * a terminal and stays quiet when its output is piped. Every error is one line
 * on stderr and a non-zero exit. Everything below a mount is resolved to the
 * backing directory its daemon reports in .kvfs/stats, so the tool reads the
 * store directly and never depends on the daemon being responsive. */
#define _GNU_SOURCE
#include "../core/kvfs_config.h"
#include "../core/kvfs_index.h"
#include "../core/kvfs_lease.h"
#include "../core/kvfs_name.h"
#include "../core/kvfs_publish.h"
#include "../core/kvfs_scan.h"
#include "../core/kvfs_store.h"
#include "../core/kvfs_version.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

static bool json;

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("kvfsctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* A path resolved to the backing store: its root and the path below it. */
struct where {
    char root[PATH_MAX];  /* backing directory */
    char rel[PATH_MAX];   /* below it, as the mount shows it ("" for the root) */
    char mount[PATH_MAX]; /* the mount it came through, or "" */
};

/* Finds the kvfs mount containing REAL (by its .kvfs/stats) and its backing. */
static bool find_mount(const char *real, struct where *w) {
    char probe[PATH_MAX];
    snprintf(probe, sizeof(probe), "%s", real);
    for (;;) {
        char stats[PATH_MAX + 32];
        snprintf(stats, sizeof(stats), "%s/.kvfs/stats", strcmp(probe, "/") ? probe : "");
        FILE *f = fopen(stats, "r");
        if (f) {
            char line[PATH_MAX + 32];
            bool found = false;
            while (fgets(line, sizeof(line), f)) {
                if (strncmp(line, "backing ", 8) == 0) {
                    line[strcspn(line, "\n")] = '\0';
                    snprintf(w->root, sizeof(w->root), "%s", line + 8);
                    found = true;
                }
            }
            fclose(f);
            if (found) {
                snprintf(w->mount, sizeof(w->mount), "%s", probe);
                size_t n = strlen(probe);
                const char *rest = real + n;
                while (*rest == '/')
                    rest++;
                snprintf(w->rel, sizeof(w->rel), "%s", rest);
                return true;
            }
        }
        char *slash = strrchr(probe, '/');
        if (!slash || slash == probe)
            return false;
        *slash = '\0';
    }
}

/* Resolves PATH (on a mount, or in a backing directory). A backing directory
 * is recognised by its .kvfs-state folder. */
static void resolve(const char *path, struct where *w) {
    char real[PATH_MAX];
    memset(w, 0, sizeof(*w));
    if (!realpath(path, real))
        die("%s: %s", path, strerror(errno));
    if (find_mount(real, w))
        return;
    char probe[PATH_MAX];
    snprintf(probe, sizeof(probe), "%s", real);
    for (;;) {
        char state[PATH_MAX + 16];
        struct stat st;
        snprintf(state, sizeof(state), "%s/" KVFS_STATE_DIR, probe);
        if (stat(state, &st) == 0 && S_ISDIR(st.st_mode)) {
            snprintf(w->root, sizeof(w->root), "%s", probe);
            const char *rest = real + strlen(probe);
            while (*rest == '/')
                rest++;
            char mapped[PATH_MAX];
            /* A path inside the backing store maps back to the mount's view. */
            if (kvfs_path_from_backing(rest, mapped, sizeof(mapped)) != 0)
                die("%s: not a kvfs path (kvfs's own state or a misplaced file)", path);
            snprintf(w->rel, sizeof(w->rel), "%s", mapped);
            return;
        }
        char *slash = strrchr(probe, '/');
        if (!slash || slash == probe)
            die("%s: not on a kvfs mount nor in a kvfs backing directory", path);
        *slash = '\0';
    }
}

static int open_root(const struct where *w) {
    int fd = open(w->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        die("backing directory %s: %s", w->root, strerror(errno));
    return fd;
}

static int open_dir(int root, const char *rel) {
    int fd = rel[0] ? kvfs_open_beneath(root, rel, O_PATH | O_DIRECTORY, 0)
                    : fcntl(root, F_DUPFD_CLOEXEC, 0);
    if (fd < 0 && !rel[0])
        fd = -errno;
    if (fd < 0)
        die("%s: %s", rel[0] ? rel : ".", strerror(-fd));
    return fd;
}

static void iso_time(time_t t, char *buf, size_t len) {
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

/* ---- progress on a terminal ---- */

static bool tty;
static unsigned long progress_n;

static void progress(const char *what) {
    if (!tty || ++progress_n % 1000)
        return;
    fprintf(stderr, "\r%s: %lu files scanned", what, progress_n);
}

static void progress_done(void) {
    if (tty && progress_n >= 1000)
        fprintf(stderr, "\r\033[K");
}

/* ---- ls ---- */

static int cmd_ls(const char *path) {
    struct where w;
    resolve(path, &w);
    int root = open_root(&w), dir = open_dir(root, w.rel);
    struct kvfs_listing l;
    int rc = kvfs_dir_list(dir, &l);
    if (rc)
        die("%s: %s", path, strerror(-rc));
    if (json)
        printf("[");
    bool first = true;
    for (size_t i = 0; i < l.n; i++) {
        struct stat st;
        enum kvfs_where where;
        if (l.ents[i].type != DT_REG || kvfs_entry_stat(dir, l.ents[i].name, &st, &where) != 0)
            continue;
        progress("ls");
        char at[32];
        iso_time(st.st_atime, at, sizeof(at));
        if (json) {
            printf("%s{\"name\":", first ? "" : ",");
            first = false;
            json_str(l.ents[i].name);
            printf(",\"block\":%s,\"size\":%lld,\"atime\":\"%s\"}",
                   kvfs_name_is_block(l.ents[i].name, NULL) ? "true" : "false",
                   (long long)st.st_size, at);
        } else {
            printf("%12lld  %s  %s\n", (long long)st.st_size, at, l.ents[i].name);
        }
    }
    progress_done();
    if (json)
        printf("]\n");
    kvfs_listing_free(&l);
    return 0;
}

/* ---- stat ---- */

static int cmd_stat(const char *arg) {
    char path[PATH_MAX];
    if (!strchr(arg, '/') && kvfs_name_is_block(arg, NULL))
        snprintf(path, sizeof(path), "./%s", arg); /* a hash: in this directory */
    else
        snprintf(path, sizeof(path), "%s", arg);
    struct where w;
    resolve(path, &w); /* a mount path, or a backing path (bucket included) */
    char name[NAME_MAX + 1];
    char *slash = strrchr(w.rel, '/');
    snprintf(name, sizeof(name), "%s", slash ? slash + 1 : w.rel);
    if (slash)
        *slash = '\0';
    else
        w.rel[0] = '\0';
    int root = open_root(&w), dir = open_dir(root, w.rel);
    struct stat st;
    enum kvfs_where where;
    int rc = kvfs_entry_stat(dir, name, &st, &where);
    if (rc)
        die("%s: %s", arg, strerror(-rc));
    char stored[PATH_MAX * 2], rel[PATH_MAX + NAME_MAX + 2];
    snprintf(rel, sizeof(rel), "%s%s%s", w.rel, w.rel[0] ? "/" : "", name);
    if (kvfs_path_to_backing(rel, stored, sizeof(stored)) != 0 || where == KVFS_IN_DIR)
        snprintf(stored, sizeof(stored), "%s", rel);
    char full[PATH_MAX * 3];
    snprintf(full, sizeof(full), "%s/%s", w.root, stored);
    char at[32], mt[32], ct[32];
    iso_time(st.st_atime, at, sizeof(at));
    iso_time(st.st_mtime, mt, sizeof(mt));
    iso_time(st.st_ctime, ct, sizeof(ct));
    char xl[4096];
    ssize_t xn = listxattr(full, xl, sizeof(xl));
    if (json) {
        printf("{\"name\":");
        json_str(name);
        printf(",\"block\":%s,\"stored\":", kvfs_name_is_block(name, NULL) ? "true" : "false");
        json_str(full);
        printf(",\"size\":%lld,\"atime\":\"%s\",\"mtime\":\"%s\",\"ctime\":\"%s\",\"xattrs\":{",
               (long long)st.st_size, at, mt, ct);
    } else {
        printf("name     %s%s\nstored   %s\nsize     %lld\naccess   %s\nmodify   %s\nchange   %s\n",
               name, kvfs_name_is_block(name, NULL) ? " (block)" : "", full, (long long)st.st_size,
               at, mt, ct);
    }
    bool first = true;
    for (ssize_t i = 0; i < xn; i += (ssize_t)strlen(xl + i) + 1) {
        if (strncmp(xl + i, "user.", 5) != 0)
            continue;
        char val[1024];
        ssize_t vn = getxattr(full, xl + i, val, sizeof(val) - 1);
        val[vn < 0 ? 0 : vn] = '\0';
        if (json) {
            printf("%s", first ? "" : ",");
            json_str(xl + i);
            putchar(':');
            json_str(val);
        } else {
            printf("xattr    %s=%s\n", xl + i, val);
        }
        first = false;
    }
    if (json)
        printf("}}\n");
    close(dir);
    close(root);
    return 0;
}

/* ---- du ---- */

/* Scans every block below W into a fresh index. */
static void tick(void) {
    progress("scan");
}

static struct kvfs_index *scan(const struct where *w, int root) {
    struct kvfs_index *ix = kvfs_index_new();
    if (!ix)
        die("out of memory");
    int rc = kvfs_scan(ix, root, w->rel, tick, NULL);
    progress_done();
    if (rc)
        die("scan of %s: %s", w->root, strerror(-rc));
    return ix;
}

static int cmd_du(const char *path) {
    struct where w;
    resolve(path, &w);
    int root = open_root(&w);
    struct kvfs_index *ix = scan(&w, root);
    /* Per directory: pick everything (need = all bytes) and sum by directory. */
    struct kvfs_victim *v;
    int64_t n = kvfs_index_pick(ix, UINT64_MAX, &v);
    if (n < 0)
        die("out of memory");
    size_t ndirs = 0;
    while (kvfs_index_dir_path(ix, (uint32_t)ndirs))
        ndirs++;
    uint64_t *bytes = calloc(ndirs + 1, sizeof(*bytes)),
             *blocks = calloc(ndirs + 1, sizeof(*blocks));
    for (int64_t i = 0; i < n; i++) {
        bytes[v[i].dir] += v[i].size;
        blocks[v[i].dir]++;
    }
    if (json)
        printf("{\"total_bytes\":%llu,\"total_blocks\":%lld,\"directories\":[",
               (unsigned long long)kvfs_index_usage(ix), (long long)n);
    bool first = true;
    for (size_t d = 0; d < ndirs; d++) {
        if (!blocks[d])
            continue;
        const char *p = kvfs_index_dir_path(ix, (uint32_t)d);
        if (json) {
            printf("%s{\"path\":", first ? "" : ",");
            json_str(p[0] ? p : ".");
            printf(",\"bytes\":%llu,\"blocks\":%llu}", (unsigned long long)bytes[d],
                   (unsigned long long)blocks[d]);
        } else {
            printf("%14llu  %8llu  %s\n", (unsigned long long)bytes[d],
                   (unsigned long long)blocks[d], p[0] ? p : ".");
        }
        first = false;
    }
    if (json)
        printf("]}\n");
    else
        printf("%14llu  %8lld  total\n", (unsigned long long)kvfs_index_usage(ix), (long long)n);
    free(v);
    free(bytes);
    free(blocks);
    kvfs_index_free(ix);
    return 0;
}

/* ---- stats ---- */

static int cmd_stats(const char *path) {
    struct where w;
    resolve(path, &w);
    if (!w.mount[0])
        die("%s: stats need a mount (a daemon), not a backing directory", path);
    char file[PATH_MAX + 32];
    snprintf(file, sizeof(file), "%s/.kvfs/stats", w.mount);
    FILE *f = fopen(file, "r");
    if (!f)
        die("%s: %s", file, strerror(errno));
    char line[PATH_MAX + 64];
    bool first = true;
    if (json)
        printf("{");
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (!json) {
            puts(line);
            continue;
        }
        char *sp = strchr(line, ' ');
        if (!sp)
            continue;
        *sp = '\0';
        printf("%s", first ? "" : ",");
        json_str(line);
        putchar(':');
        char *end;
        strtoull(sp + 1, &end, 10);
        if (*end == '\0' && sp[1])
            printf("%s", sp + 1);
        else
            json_str(sp + 1);
        first = false;
    }
    if (json)
        printf("}\n");
    fclose(f);
    return 0;
}

/* ---- evict ---- */

static uint64_t stat_value(const struct where *w, const char *key) {
    char file[PATH_MAX + 32], line[512];
    snprintf(file, sizeof(file), "%s/.kvfs/stats", w->mount);
    FILE *f = fopen(file, "r");
    uint64_t v = 0;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ')
            v = strtoull(line + kl + 1, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

static int cmd_evict(const char *path, double to_pct, uint64_t capacity) {
    struct where w;
    resolve(path, &w);
    if (!capacity && w.mount[0])
        capacity = stat_value(&w, "capacity_bytes");
    if (!capacity)
        die("%s: no capacity known (the mount has none; give --capacity SIZE)", path);
    int root = open_root(&w);
    int state = kvfs_open_beneath(root, KVFS_STATE_DIR, O_PATH | O_DIRECTORY, 0);
    if (state < 0)
        die("%s: no kvfs state folder: %s", w.root, strerror(-state));
    char host[64] = "host", self[128];
    gethostname(host, sizeof(host) - 1);
    snprintf(self, sizeof(self), "kvfsctl.%s.%d", host, (int)getpid());
    struct kvfs_lease lease;
    kvfs_lease_init(&lease, state, self, 60000, 2000);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int rc = kvfs_lease_take(&lease, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    if (rc == 2) {
        sleep(1);
        rc = kvfs_lease_confirm(&lease);
    }
    if (rc <= 0) {
        char who[128] = "?";
        int64_t exp;
        kvfs_lease_read(state, who, sizeof(who), &exp);
        die("another node is evicting (lease held by %s); try again later", who);
    }
    struct where all = w;
    all.rel[0] = '\0'; /* usage is the whole store's */
    struct kvfs_index *ix = scan(&all, root);
    uint64_t usage = kvfs_index_usage(ix);
    uint64_t target = (uint64_t)((double)capacity * to_pct / 100.0);
    uint64_t need = usage > target ? usage - target : 0;
    struct kvfs_victim *v = NULL;
    int64_t n = need ? kvfs_index_pick(ix, need, &v) : 0;
    uint64_t freed = 0, removed = 0;
    for (int64_t i = 0; i < n && freed < need; i++) {
        int dir = open_dir(root, kvfs_index_dir_path(ix, v[i].dir));
        int r = kvfs_entry_unlink(dir, v[i].name);
        close(dir);
        if (r == 0) {
            freed += v[i].size;
            removed++;
        } else if (r != -ENOENT) {
            fprintf(stderr, "kvfsctl: removing %s: %s\n", v[i].name, strerror(-r));
        }
    }
    kvfs_lease_release(&lease);
    if (json)
        printf("{\"usage_before\":%llu,\"target\":%llu,\"blocks_evicted\":%llu,"
               "\"bytes_evicted\":%llu}\n",
               (unsigned long long)usage, (unsigned long long)target, (unsigned long long)removed,
               (unsigned long long)freed);
    else
        printf("usage %llu bytes, target %llu (%.1f%% of %llu): evicted %llu blocks, %llu bytes\n",
               (unsigned long long)usage, (unsigned long long)target, to_pct,
               (unsigned long long)capacity, (unsigned long long)removed,
               (unsigned long long)freed);
    free(v);
    kvfs_index_free(ix);
    return 0;
}

/* ---- gc ---- */

static int cmd_gc(const char *path, unsigned older) {
    struct where w;
    resolve(path, &w);
    char err[512];
    struct kvfs_store st;
    if (kvfs_store_open(&st, w.root, err, sizeof(err)) != 0)
        die("%s", err);
    uint64_t removed = 0;
    int rc = kvfs_staging_collect(&st, older, time(NULL), &removed);
    kvfs_store_close(&st);
    if (rc)
        die("collecting staging files: %s", strerror(-rc));
    if (json)
        printf("{\"staging_removed\":%llu}\n", (unsigned long long)removed);
    else
        printf("removed %llu staging files older than %u s\n", (unsigned long long)removed, older);
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: kvfsctl [--json] COMMAND ...\n"
               "  ls PATH                       blocks of a directory: size, last access\n"
               "  stat PATH|HASH                one block: where it is stored, times, xattrs\n"
               "  du [PATH]                     usage per directory below PATH\n"
               "  stats MOUNT                   the daemon's counters\n"
               "  evict PATH --to PCT [--capacity SIZE]\n"
               "                                evict down to PCT%% of the capacity now\n"
               "  gc [PATH] [--older SEC]       remove staging files older than SEC (3600)\n"
               "PATH is on a kvfs mount or in a backing directory.\n");
}

int main(int argc, char **argv) {
    tty = isatty(STDERR_FILENO);
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("kvfsctl %s\n", KVFS_VERSION);
            return 0;
        } else {
            die("unknown option '%s' (see kvfsctl --help)", argv[i]);
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[i++];
    /* Options after the command. */
    const char *arg = NULL;
    double to = -1;
    uint64_t capacity = 0;
    unsigned older = 3600;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc) {
            char *end;
            to = strtod(argv[++i], &end);
            if (*end == '%')
                end++;
            if (*end || !(to >= 0 && to <= 100))
                die("--to: '%s' is not a percentage from 0 to 100", argv[i]);
        } else if (strcmp(argv[i], "--capacity") == 0 && i + 1 < argc) {
            if (kvfs_config_parse_size(argv[++i], &capacity) != 0)
                die("--capacity: '%s' is not a size (bytes, K, M, G, T)", argv[i]);
        } else if (strcmp(argv[i], "--older") == 0 && i + 1 < argc) {
            char *end;
            unsigned long v = strtoul(argv[++i], &end, 10);
            if (*end || argv[i][0] == '-' || v > 365ul * 86400)
                die("--older: '%s' is not a number of seconds", argv[i]);
            older = (unsigned)v;
        } else if (argv[i][0] == '-') {
            die("unknown option '%s' for %s (see kvfsctl --help)", argv[i], cmd);
        } else if (!arg) {
            arg = argv[i];
        } else {
            die("unexpected argument '%s'", argv[i]);
        }
    }
    if (strcmp(cmd, "ls") == 0)
        return arg ? cmd_ls(arg) : (die("ls needs a PATH"), 1);
    if (strcmp(cmd, "stat") == 0)
        return arg ? cmd_stat(arg) : (die("stat needs a PATH or HASH"), 1);
    if (strcmp(cmd, "du") == 0)
        return cmd_du(arg ? arg : ".");
    if (strcmp(cmd, "stats") == 0)
        return arg ? cmd_stats(arg) : (die("stats needs a MOUNT"), 1);
    if (strcmp(cmd, "evict") == 0) {
        if (!arg || to < 0)
            die("evict needs PATH and --to PCT");
        return cmd_evict(arg, to, capacity);
    }
    if (strcmp(cmd, "gc") == 0)
        return cmd_gc(arg ? arg : ".", older);
    die("unknown command '%s' (see kvfsctl --help)", cmd);
}
