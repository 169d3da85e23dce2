/* kvfs-bench: kvfs's cost over its own backing store, measured in one run.
 *
 * Every workload runs on the backing directory directly (the baseline: what a
 * client without kvfs must do to publish atomically, i.e. write a temp file
 * and rename it) and through a kvfs mount of that same directory, interleaved
 * round by round (the order alternates) so that drift in the machine's state
 * hits both sides alike. It prints the median of each side and their ratio.
 *
 *   write:   T threads create, write and close N blocks of S bytes
 *   read:    T threads read them back, cold (page cache dropped, where
 *            permitted) and warm
 *   meta:    one thread: stat of a present block, stat of a missing one,
 *            create+write+close of a small block and of an S-byte block,
 *            open+close */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct opts {
    const char *backing, *mount;
    int blocks, threads, rounds, meta_ops;
    size_t size, small;
    bool json, cold;
};

enum side { BASE, KVFS };
static const char *const side_name[] = {"backing", "kvfs"};

struct result {
    const char *name, *unit;
    bool higher_better;
    double v[2][64]; /* per side, per round */
    int n[2];
};

static struct opts o = {NULL, NULL, 64, 4, 3, 2000, 2 << 20, 4096, false, true};
static char *payload;
static char dirs[2][PATH_MAX + 64];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *path) {
    fprintf(stderr, "kvfs-bench: %s%s%s: %s\n", what, path ? " " : "", path ? path : "",
            strerror(errno));
    exit(1);
}

static size_t parse_size(const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double mult = 1;
    if (*end == 'K' || *end == 'k')
        mult = 1024, end++;
    else if (*end == 'M' || *end == 'm')
        mult = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        mult = 1024.0 * 1024 * 1024, end++;
    if (errno || *end || v <= 0) {
        fprintf(stderr, "kvfs-bench: bad size '%s'\n", s);
        exit(2);
    }
    return (size_t)(v * mult);
}

static int parse_int(const char *s, int lo, int hi, const char *what) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi) {
        fprintf(stderr, "kvfs-bench: %s must be a whole number from %d to %d, not '%s'\n", what, lo,
                hi, s);
        exit(2);
    }
    return (int)v;
}

/* A block name spread over kvfs's fan-out buckets like a real hash. */
static void block_name(char *buf, size_t len, int round, int i, const char *tag) {
    uint64_t x = ((uint64_t)round << 32 | (uint64_t)i) * 0x9E3779B97F4A7C15ull;
    uint64_t y = x ^ (x >> 29) ^ 0xC2B2AE3D27D4EB4Full;
    snprintf(buf, len, "%016llx%016llx%s", (unsigned long long)x, (unsigned long long)y, tag);
}

static void write_all(int fd, const char *buf, size_t n, const char *path) {
    while (n) {
        ssize_t w = write(fd, buf, n);
        if (w < 0)
            die("write", path);
        buf += w;
        n -= (size_t)w;
    }
}

/* Stores one block: through kvfs by its final name (published at close), on
 * the backing directory as a temp file renamed into place. */
static void store(enum side s, const char *dir, const char *name, size_t size) {
    char path[2 * PATH_MAX], tmp[2 * PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (s == KVFS) {
        int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            die("create", path);
        write_all(fd, payload, size, path);
        if (close(fd) != 0)
            die("close", path);
        return;
    }
    snprintf(tmp, sizeof(tmp), "%s/%s.%d.tmp", dir, name, (int)gettid());
    int fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0)
        die("create", tmp);
    write_all(fd, payload, size, tmp);
    if (close(fd) != 0)
        die("close", tmp);
    if (rename(tmp, path) != 0)
        die("rename", tmp);
}

static size_t load(const char *dir, const char *name, char *buf, size_t size) {
    char path[2 * PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die("open", path);
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, buf, size);
        if (r < 0)
            die("read", path);
        if (r == 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != size) {
        fprintf(stderr, "kvfs-bench: %s: read %zu bytes, expected %zu\n", path, got, size);
        exit(1);
    }
    return got;
}

struct job {
    enum side side;
    int round, first, count;
    bool write;
    pthread_barrier_t *start;
};

static void *worker(void *arg) {
    struct job *j = arg;
    char name[64];
    char *buf = j->write ? NULL : malloc(o.size);
    if (!j->write && !buf)
        die("malloc", NULL);
    pthread_barrier_wait(j->start);
    for (int i = j->first; i < j->first + j->count; i++) {
        block_name(name, sizeof(name), j->round, i, ".bin");
        if (j->write)
            store(j->side, dirs[j->side], name, o.size);
        else
            load(dirs[j->side], name, buf, o.size);
    }
    free(buf);
    return NULL;
}

/* Runs N blocks over T threads; returns GB/s. */
static double parallel(enum side s, int round, bool write) {
    pthread_t tids[256];
    struct job jobs[256];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)o.threads + 1);
    int per = o.blocks / o.threads, extra = o.blocks % o.threads, first = 0;
    for (int t = 0; t < o.threads; t++) {
        jobs[t] = (struct job){s, round, first, per + (t < extra), write, &start};
        first += jobs[t].count;
        if (pthread_create(&tids[t], NULL, worker, &jobs[t]) != 0)
            die("pthread_create", NULL);
    }
    pthread_barrier_wait(&start);
    double t0 = now();
    for (int t = 0; t < o.threads; t++)
        pthread_join(tids[t], NULL);
    double dt = now() - t0;
    pthread_barrier_destroy(&start);
    return (double)o.blocks * (double)o.size / dt / 1e9;
}

static bool drop_caches(void) {
    sync();
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = write(fd, "3", 1) == 1;
    close(fd);
    return ok;
}

static void remove_round(enum side s, int round) {
    char name[64], path[2 * PATH_MAX];
    for (int i = 0; i < o.blocks; i++) {
        block_name(name, sizeof(name), round, i, ".bin");
        snprintf(path, sizeof(path), "%s/%s", dirs[s], name);
        if (unlink(path) != 0)
            die("unlink", path);
    }
}

/* Per-op latency in microseconds of the metadata workloads. */
enum meta { STAT_PRESENT, STAT_MISSING, CREATE_SMALL, CREATE_BLOCK, OPEN_CLOSE, META_COUNT };
static const char *const meta_name[] = {"stat present block", "stat missing block",
                                        "create+write+close small block",
                                        "create+write+close+publish block", "open+close block"};

static double meta(enum side s, enum meta m, int round) {
    char name[64], path[2 * PATH_MAX];
    struct stat st;
    int ops = m == CREATE_BLOCK ? (o.meta_ops / 10 > 20 ? o.meta_ops / 10 : 20) : o.meta_ops;
    /* Present blocks: the round's data set, written and read before. A
     * passthrough read makes the kernel drop a file's cached atime, so the
     * first stat after it costs one GETATTR round trip; an untimed pass takes
     * that here, and the timed loop measures stat of a block at rest. */
    if (m == STAT_PRESENT)
        for (int i = 0; i < o.blocks; i++) {
            block_name(name, sizeof(name), round, i, ".bin");
            snprintf(path, sizeof(path), "%s/%s", dirs[s], name);
            if (stat(path, &st) != 0)
                die("stat", path);
        }
    double t0 = now();
    for (int i = 0; i < ops; i++) {
        switch (m) {
        case STAT_PRESENT:
        case OPEN_CLOSE:
            block_name(name, sizeof(name), round, i % o.blocks, ".bin");
            snprintf(path, sizeof(path), "%s/%s", dirs[s], name);
            if (m == STAT_PRESENT) {
                if (stat(path, &st) != 0)
                    die("stat", path);
            } else {
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                    die("open", path);
                close(fd);
            }
            break;
        case STAT_MISSING:
            block_name(name, sizeof(name), 1000 + round, i, ".bin");
            snprintf(path, sizeof(path), "%s/%s", dirs[s], name);
            if (stat(path, &st) == 0 || errno != ENOENT)
                die("stat of a missing block", path);
            break;
        case CREATE_SMALL:
        case CREATE_BLOCK:
            block_name(name, sizeof(name), 2000 + round * 2 + (m == CREATE_BLOCK), i, ".bin");
            store(s, dirs[s], name, m == CREATE_SMALL ? o.small : o.size);
            break;
        default:
            break;
        }
    }
    double us = (now() - t0) / ops * 1e6;
    if (m == CREATE_SMALL || m == CREATE_BLOCK) {
        for (int i = 0; i < ops; i++) {
            block_name(name, sizeof(name), 2000 + round * 2 + (m == CREATE_BLOCK), i, ".bin");
            snprintf(path, sizeof(path), "%s/%s", dirs[s], name);
            unlink(path);
        }
    }
    return us;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n) {
    double tmp[64];
    memcpy(tmp, v, sizeof(double) * (size_t)n);
    qsort(tmp, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static void read_stat_line(const char *key, char *out, size_t len) {
    char path[PATH_MAX], line[512];
    snprintf(path, sizeof(path), "%s/.kvfs/stats", o.mount);
    FILE *f = fopen(path, "r");
    snprintf(out, len, "unknown");
    if (!f)
        return;
    size_t kl = strlen(key);
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ') {
            line[strcspn(line, "\n")] = '\0';
            snprintf(out, len, "%s", line + kl + 1);
        }
    }
    fclose(f);
}

static void usage(FILE *f) {
    fprintf(f, "usage: kvfs-bench --backing DIR --mount DIR [-n BLOCKS] [-s SIZE] [-t THREADS]\n"
               "                  [--rounds R] [--meta-ops K] [--small SIZE] [--no-cold] [--json]\n"
               "\n"
               "DIR of --mount must be a kvfs mount of the --backing DIR. Sizes take K/M/G.\n"
               "Defaults: -n 64 -s 2M -t 4 --rounds 3 --meta-ops 2000 --small 4K.\n");
}

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        {"backing", required_argument, NULL, 'b'},  {"mount", required_argument, NULL, 'm'},
        {"blocks", required_argument, NULL, 'n'},   {"size", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 't'},  {"rounds", required_argument, NULL, 'r'},
        {"meta-ops", required_argument, NULL, 'k'}, {"small", required_argument, NULL, 'S'},
        {"no-cold", no_argument, NULL, 'C'},        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "b:m:n:s:t:r:k:S:Cjh", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            o.backing = optarg;
            break;
        case 'm':
            o.mount = optarg;
            break;
        case 'n':
            o.blocks = parse_int(optarg, 1, 1 << 20, "--blocks");
            break;
        case 's':
            o.size = parse_size(optarg);
            break;
        case 't':
            o.threads = parse_int(optarg, 1, 256, "--threads");
            break;
        case 'r':
            o.rounds = parse_int(optarg, 1, 64, "--rounds");
            break;
        case 'k':
            o.meta_ops = parse_int(optarg, 1, 10000000, "--meta-ops");
            break;
        case 'S':
            o.small = parse_size(optarg);
            break;
        case 'C':
            o.cold = false;
            break;
        case 'j':
            o.json = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!o.backing || !o.mount || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (o.threads > o.blocks)
        o.threads = o.blocks;
    char data_mode[128], backing_of_mount[PATH_MAX], real_backing[PATH_MAX];
    read_stat_line("data_mode", data_mode, sizeof(data_mode));
    read_stat_line("backing", backing_of_mount, sizeof(backing_of_mount));
    if (!realpath(o.backing, real_backing))
        die("backing directory", o.backing);
    if (strcmp(backing_of_mount, real_backing) != 0) {
        fprintf(stderr, "kvfs-bench: %s is not a kvfs mount of %s (its stats say backing %s)\n",
                o.mount, real_backing, backing_of_mount);
        return 2;
    }
    size_t big = o.size > o.small ? o.size : o.small;
    if (posix_memalign((void **)&payload, 4096, big) != 0)
        die("posix_memalign", NULL);
    for (size_t i = 0; i < big; i++)
        payload[i] = (char)(i * 131 + (i >> 12));
    snprintf(dirs[BASE], sizeof(dirs[BASE]), "%s/kvfs-bench-base-%d", o.backing, (int)getpid());
    snprintf(dirs[KVFS], sizeof(dirs[KVFS]), "%s/kvfs-bench-%d", o.mount, (int)getpid());
    for (int s = 0; s < 2; s++)
        if (mkdir(dirs[s], 0755) != 0)
            die("mkdir", dirs[s]);

    struct result res[3 + META_COUNT];
    memset(res, 0, sizeof(res));
    res[0] = (struct result){.name = "write+publish", .unit = "GB/s", .higher_better = true};
    res[1] = (struct result){.name = "read cold", .unit = "GB/s", .higher_better = true};
    res[2] = (struct result){.name = "read warm", .unit = "GB/s", .higher_better = true};
    for (int m = 0; m < META_COUNT; m++)
        res[3 + m] = (struct result){.name = meta_name[m], .unit = "us", .higher_better = false};
    bool cold_ok = o.cold;

    for (int r = 0; r < o.rounds; r++) {
        enum side order[2] = {r % 2 ? KVFS : BASE, r % 2 ? BASE : KVFS};
        for (int k = 0; k < 2; k++) {
            enum side s = order[k];
            res[0].v[s][res[0].n[s]++] = parallel(s, r, true);
        }
        for (int k = 0; k < 2; k++) {
            enum side s = order[k];
            if (cold_ok && !drop_caches()) {
                cold_ok = false;
                fprintf(stderr,
                        "kvfs-bench: cannot drop the page cache (not root?): no cold reads\n");
            }
            if (cold_ok)
                res[1].v[s][res[1].n[s]++] = parallel(s, r, false);
            res[2].v[s][res[2].n[s]++] = parallel(s, r, false);
        }
        for (int m = 0; m < META_COUNT; m++)
            for (int k = 0; k < 2; k++) {
                enum side s = order[k];
                res[3 + m].v[s][res[3 + m].n[s]++] = meta(s, (enum meta)m, r);
            }
        for (int s = 0; s < 2; s++)
            remove_round((enum side)s, r);
    }
    for (int s = 0; s < 2; s++)
        rmdir(dirs[s]);

    if (o.json) {
        printf("{\"config\":{\"backing\":\"%s\",\"mount\":\"%s\",\"blocks\":%d,\"size\":%zu,"
               "\"threads\":%d,\"rounds\":%d,\"meta_ops\":%d,\"small\":%zu},\"data_mode\":\"%s\","
               "\"results\":[",
               real_backing, o.mount, o.blocks, o.size, o.threads, o.rounds, o.meta_ops, o.small,
               data_mode);
    } else {
        printf("kvfs-bench: %d blocks of %zu bytes, %d threads, %d rounds (medians); kvfs data "
               "path: %s\n",
               o.blocks, o.size, o.threads, o.rounds, data_mode);
        printf("%-34s %12s %12s %8s\n", "workload", side_name[BASE], side_name[KVFS], "kvfs/base");
    }
    bool first = true;
    for (size_t i = 0; i < sizeof(res) / sizeof(res[0]); i++) {
        if (res[i].n[BASE] == 0)
            continue;
        double b = median(res[i].v[BASE], res[i].n[BASE]);
        double k = median(res[i].v[KVFS], res[i].n[KVFS]);
        double ratio = k / b;
        if (o.json) {
            printf("%s{\"name\":\"%s\",\"unit\":\"%s\",\"backing\":%.4f,\"kvfs\":%.4f,"
                   "\"ratio\":%.4f}",
                   first ? "" : ",", res[i].name, res[i].unit, b, k, ratio);
            first = false;
        } else {
            char bs[32], ks[32];
            snprintf(bs, sizeof(bs), "%.2f %s", b, res[i].unit);
            snprintf(ks, sizeof(ks), "%.2f %s", k, res[i].unit);
            printf("%-34s %12s %12s %7.2fx\n", res[i].name, bs, ks, ratio);
        }
    }
    if (o.json)
        printf("]}\n");
    free(payload);
    return 0;
}
