/* kvfs_evict: the daemon's block index, access-time recording and evictor.
 *
 * The index (core/kvfs_index) is filled by a scan of the backing store that
 * starts with the daemon without delaying the mount, kept current by this
 * node's lookups, publications, removals, opens and closes, and rebuilt by a
 * rescan every rescan_interval so that blocks other nodes published or
 * evicted are seen.
 *
 * Accesses are recorded in the backing store itself: opening a block for
 * reading sets its backing file's atime (at most once per atime_interval per
 * block), so every node's evictor sees every node's reads whatever the
 * shared filesystem's atime mount options.
 *
 * With a capacity, the evictor thread checks usage every second. Above the
 * high watermark, and only while it holds the lease (core/kvfs_lease: at
 * most one evicting node per backing store), it removes the least recently
 * accessed blocks not open on this node, whole files with unlink(), until
 * usage is under the low watermark. A reader on any node therefore gets a
 * whole block or ENOENT. Publication of a block that would cross the capacity
 * fails with ENOSPC unless eviction can make room. */
#define _GNU_SOURCE
#include "kvfs_evict.h"
#include "kvfs_daemon.h"

#include "../core/kvfs_clock.h"
#include "../core/kvfs_index.h"
#include "../core/kvfs_lease.h"
#include "../core/kvfs_log.h"
#include "../core/kvfs_name.h"
#include "../core/kvfs_scan.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* the index and the fields below */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static struct kvfs_index *ix;
static bool stopping, scanned;
static uint64_t capacity;
static struct kvfs_lease lease;
static char holder[128] = "none";
static pthread_t scan_tid, evict_tid;
static bool scan_running, evict_running;

static uint32_t now_s(void) {
    return (uint32_t)time(NULL);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The index id of directory inode DIR (its path relative to the backing
 * root, found once through /proc and kept on the inode). Under lock. */
static int64_t dir_id_locked(struct kvfs_inode *dir) {
    if (dir->index_dir > 0)
        return dir->index_dir - 1;
    char proc[64], path[PATH_MAX];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", dir->fd);
    ssize_t n = readlink(proc, path, sizeof(path) - 1);
    if (n < 0)
        return -errno;
    path[n] = '\0';
    size_t bl = strlen(kvfs_d.backing_real);
    if (strncmp(path, kvfs_d.backing_real, bl) != 0 || (path[bl] != '/' && path[bl] != '\0'))
        return -EXDEV;
    const char *rel = path[bl] == '/' ? path + bl + 1 : "";
    int64_t id = kvfs_index_dir(ix, rel);
    if (id >= 0)
        dir->index_dir = id + 1;
    return id;
}

bool kvfs_evict_enabled(void) {
    return capacity > 0;
}

void kvfs_evict_seen(struct kvfs_inode *dir, const char *name, const struct stat *st) {
    if (!ix || !kvfs_name_is_block(name, NULL))
        return;
    pthread_mutex_lock(&lock);
    int64_t d = dir_id_locked(dir);
    if (d >= 0)
        kvfs_index_put(ix, (uint32_t)d, name, (uint64_t)st->st_size, (uint32_t)st->st_atime);
    uint64_t usage = kvfs_index_usage(ix);
    pthread_mutex_unlock(&lock);
    if (capacity && kvfs_evict_need(usage, capacity, kvfs_d.cfg.evict_high, kvfs_d.cfg.evict_low))
        pthread_cond_signal(&wake);
}

void kvfs_evict_gone(struct kvfs_inode *dir, const char *name) {
    if (!ix || !kvfs_name_is_block(name, NULL))
        return;
    pthread_mutex_lock(&lock);
    int64_t d = dir_id_locked(dir);
    if (d >= 0)
        kvfs_index_remove(ix, (uint32_t)d, name, NULL);
    pthread_mutex_unlock(&lock);
}

void kvfs_evict_opened(struct kvfs_inode *dir, const char *name, int fd) {
    if (!ix || !kvfs_name_is_block(name, NULL))
        return;
    uint32_t now = now_s();
    struct stat st;
    bool have_st = fstat(fd, &st) == 0;
    pthread_mutex_lock(&lock);
    int64_t d = dir_id_locked(dir);
    if (d >= 0) {
        if (have_st && !kvfs_index_get(ix, (uint32_t)d, name, NULL))
            kvfs_index_put(ix, (uint32_t)d, name, (uint64_t)st.st_size, (uint32_t)st.st_atime);
        kvfs_index_open(ix, (uint32_t)d, name, 1);
        kvfs_index_touch(ix, (uint32_t)d, name, now);
    }
    pthread_mutex_unlock(&lock);
    /* In the backing store too, so that every node's evictor sees it; at most
     * once per atime_interval per block (the file's own atime says when). */
    if (have_st && (int64_t)now >= (int64_t)st.st_atime + kvfs_d.cfg.atime_interval) {
        struct timespec t[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
        if (futimens(fd, t) == 0)
            kvfs_stat_inc(&kvfs_d.stats, atime_recorded);
        else
            kvfs_debug("recording an access of '%s' failed: %s", name, strerror(errno));
    }
}

void kvfs_evict_closed(struct kvfs_inode *dir, const char *name) {
    if (!ix || !kvfs_name_is_block(name, NULL))
        return;
    pthread_mutex_lock(&lock);
    int64_t d = dir_id_locked(dir);
    if (d >= 0)
        kvfs_index_open(ix, (uint32_t)d, name, -1);
    pthread_mutex_unlock(&lock);
}

int kvfs_evict_admit(uint64_t size) {
    if (!capacity || !ix)
        return 0;
    pthread_mutex_lock(&lock);
    uint64_t usage = kvfs_index_usage(ix);
    int rc = 0;
    if (usage + size > capacity) {
        /* Room that eviction could make: every block not open here. */
        struct kvfs_victim *v;
        int64_t n = kvfs_index_pick(ix, usage + size - capacity, &v);
        uint64_t freeable = 0;
        for (int64_t i = 0; i < n; i++)
            freeable += v[i].size;
        free(v);
        if (n < 0 || usage + size - freeable > capacity)
            rc = -ENOSPC;
    }
    pthread_mutex_unlock(&lock);
    if (rc == 0)
        pthread_cond_signal(&wake);
    return rc;
}

/* ---- scanning ---- */

/* Builds a fresh index of the whole backing store and swaps it in, carrying
 * over this node's open counts and any newer access it recorded. */
static int rescan(void) {
    struct kvfs_index *fresh = kvfs_index_new();
    if (!fresh)
        return -ENOMEM;
    int rc = kvfs_scan(fresh, kvfs_d.store.root_fd, "", NULL, &stopping);
    if (rc == 0) {
        pthread_mutex_lock(&lock);
        rc = kvfs_index_merge_live(fresh, ix);
        if (rc == 0) {
            struct kvfs_index *old = ix;
            ix = fresh;
            fresh = old;
            scanned = true;
            kvfs_itable_reset_index_dirs(); /* cached directory ids were the old index's */
        }
        pthread_mutex_unlock(&lock);
    }
    kvfs_index_free(fresh);
    if (rc == 0)
        kvfs_stat_inc(&kvfs_d.stats, scans);
    pthread_cond_signal(&wake);
    return rc;
}

static void *scan_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    while (!stopping) {
        pthread_mutex_unlock(&lock);
        int rc = rescan();
        if (rc && rc != -ECANCELED)
            kvfs_warn("scanning the backing store failed: %s", strerror(-rc));
        pthread_mutex_lock(&lock);
        struct timespec until =
            kvfs_clock_after_ns((uint64_t)kvfs_d.cfg.rescan_interval * 1000000000u);
        while (!stopping && pthread_cond_timedwait(&wake, &lock, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* ---- evicting ---- */

/* Removes the victims while the lease holds; returns bytes freed. */
static uint64_t evict_victims(const struct kvfs_victim *v, int64_t n, uint64_t need) {
    uint64_t freed = 0;
    for (int64_t i = 0; i < n && freed < need; i++) {
        if (!kvfs_lease_valid(&lease, now_ms(), lease.ttl_ms / 3))
            break;
        pthread_mutex_lock(&lock);
        struct kvfs_index_info in;
        const char *rel = kvfs_index_dir_path(ix, v[i].dir);
        bool still = rel && kvfs_index_get(ix, v[i].dir, v[i].name, &in) && in.open == 0;
        char relcopy[PATH_MAX];
        snprintf(relcopy, sizeof(relcopy), "%s", rel ? rel : "");
        pthread_mutex_unlock(&lock);
        if (!still)
            continue; /* opened, or removed, since it was picked */
        int dfd = relcopy[0]
                      ? kvfs_open_beneath(kvfs_d.store.root_fd, relcopy, O_PATH | O_DIRECTORY, 0)
                      : kvfs_d.store.root_fd;
        int rc = dfd < 0 ? dfd : kvfs_entry_unlink(dfd, v[i].name);
        if (dfd >= 0 && dfd != kvfs_d.store.root_fd)
            close(dfd);
        if (rc == 0 || rc == -ENOENT) {
            pthread_mutex_lock(&lock);
            kvfs_index_remove(ix, v[i].dir, v[i].name, NULL);
            pthread_mutex_unlock(&lock);
            if (rc == 0) {
                freed += v[i].size;
                kvfs_stat_inc(&kvfs_d.stats, blocks_evicted);
                kvfs_stat_add(&kvfs_d.stats, bytes_evicted, v[i].size);
            }
        } else {
            kvfs_warn("evicting '%s/%s' failed: %s", relcopy, v[i].name, strerror(-rc));
        }
    }
    return freed;
}

static void note_holder(void) {
    char who[128] = "none";
    int64_t exp;
    if (kvfs_lease_read(kvfs_d.store.state_fd, who, sizeof(who), &exp) != 0)
        snprintf(who, sizeof(who), "none");
    pthread_mutex_lock(&lock);
    snprintf(holder, sizeof(holder), "%s", who);
    pthread_mutex_unlock(&lock);
}

/* Takes the lease (or renews it); true if this node may evict now. */
static bool take_lease(void) {
    int64_t now = now_ms();
    if (lease.held) {
        if (now + lease.ttl_ms * 2 / 3 >= lease.expires) /* renew at a third of its life */
            kvfs_lease_renew(&lease, now);
    } else {
        int rc = kvfs_lease_take(&lease, now);
        if (rc == 2) {
            /* Took over an expired lease: let a concurrent taker's rename land. */
            struct timespec settle = {1, 0};
            nanosleep(&settle, NULL);
            kvfs_lease_confirm(&lease);
        }
    }
    note_holder();
    return kvfs_lease_valid(&lease, now_ms(), lease.ttl_ms / 3);
}

/* One eviction pass while holding the lease: a fresh scan first (this node's
 * index may miss what other nodes published or removed), then the least
 * recently accessed blocks until usage is under the low watermark. */
static void evict_pass(void) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = rescan();
    if (rc == -ECANCELED) /* stopped: shutting down, or handing over to a successor */
        return;
    if (rc)
        kvfs_warn("scan before eviction failed: %s", strerror(-rc));
    pthread_mutex_lock(&lock);
    uint64_t need = kvfs_evict_need(kvfs_index_usage(ix), capacity, kvfs_d.cfg.evict_high,
                                    kvfs_d.cfg.evict_low);
    struct kvfs_victim *v = NULL;
    int64_t n = need ? kvfs_index_pick(ix, need, &v) : 0;
    pthread_mutex_unlock(&lock);
    uint64_t freed = n > 0 ? evict_victims(v, n, need) : 0;
    free(v);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    uint64_t ms = (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
    kvfs_stat_inc(&kvfs_d.stats, eviction_runs);
    kvfs_stat_add(&kvfs_d.stats, eviction_ms, ms);
    kvfs_info("eviction: %llu bytes over the low watermark, %lld blocks picked, %llu bytes "
              "freed in %llu ms",
              (unsigned long long)need, (long long)n, (unsigned long long)freed,
              (unsigned long long)ms);
}

static void *evict_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    while (!stopping) {
        struct timespec until = kvfs_clock_after_ns(1000000000u);
        pthread_cond_timedwait(&wake, &lock, &until);
        if (stopping || !scanned)
            continue;
        uint64_t need = kvfs_evict_need(kvfs_index_usage(ix), capacity, kvfs_d.cfg.evict_high,
                                        kvfs_d.cfg.evict_low);
        pthread_mutex_unlock(&lock);
        if (need > 0 && take_lease()) {
            evict_pass();
        } else if (lease.held) {
            /* Nothing to do: let whichever node needs it next take it. */
            kvfs_lease_release(&lease);
            note_holder();
        } else {
            note_holder();
        }
        pthread_mutex_lock(&lock);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

int kvfs_evict_start(void) {
    const struct kvfs_config *cfg = &kvfs_d.cfg;
    if (cfg->capacity_bytes == 0 && cfg->capacity_pct == 0)
        return 0; /* no capacity: nothing is ever evicted, and nothing indexed */
    /* Started again after a stop (a handover that did not happen): a new
     * index, which the inodes' directory ids do not point into yet. */
    pthread_mutex_lock(&lock);
    stopping = false;
    scanned = false;
    pthread_mutex_unlock(&lock);
    kvfs_itable_reset_index_dirs();
    ix = kvfs_index_new();
    if (!ix)
        return -ENOMEM;
    capacity = cfg->capacity_bytes;
    if (cfg->capacity_pct > 0) {
        struct statvfs sv;
        if (fstatvfs(kvfs_d.store.root_fd, &sv) != 0)
            return -errno;
        capacity = (uint64_t)((double)sv.f_blocks * (double)sv.f_frsize * cfg->capacity_pct / 100);
    }
    char self[96];
    snprintf(self, sizeof(self), "%s.%d", kvfs_d.store.node, (int)getpid());
    kvfs_lease_init(&lease, kvfs_d.store.state_fd, self, (int64_t)cfg->lease_ttl * 1000, 2000);
    scan_running = pthread_create(&scan_tid, NULL, scan_main, NULL) == 0;
    evict_running = scan_running && pthread_create(&evict_tid, NULL, evict_main, NULL) == 0;
    if (!evict_running)
        return -EAGAIN;
    kvfs_info("capacity %llu bytes; evicting above %u%% down to %u%%", (unsigned long long)capacity,
              cfg->evict_high, cfg->evict_low);
    return 0;
}

void kvfs_evict_stop(void) {
    pthread_mutex_lock(&lock);
    stopping = true;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
    if (scan_running)
        pthread_join(scan_tid, NULL);
    if (evict_running)
        pthread_join(evict_tid, NULL);
    scan_running = evict_running = false;
    kvfs_lease_release(&lease);
    kvfs_index_free(ix);
    ix = NULL;
}

void kvfs_evict_fill_info(struct kvfs_stats_info *info) {
    static char holder_copy[128];
    pthread_mutex_lock(&lock);
    info->capacity_bytes = capacity;
    info->usage_bytes = ix ? kvfs_index_usage(ix) : 0;
    info->index_blocks = ix ? kvfs_index_count(ix) : 0;
    info->index_bytes = ix ? kvfs_index_memory(ix) : 0;
    snprintf(holder_copy, sizeof(holder_copy), "%s", holder);
    pthread_mutex_unlock(&lock);
    info->lease_holder = holder_copy;
    info->evict_high_pct = kvfs_d.cfg.evict_high;
    info->evict_low_pct = kvfs_d.cfg.evict_low;
}
