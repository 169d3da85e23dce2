/* kvfs_ctl: the read-only control directory MOUNT/.kvfs. Its files are
 * rendered when opened, so a reader always gets one consistent snapshot, and
 * served with direct I/O so that no stale copy lingers in the page cache. */
#include "kvfs_daemon.h"
#include "kvfs_evict.h"
#include "kvfs_inode.h"

#include "../core/kvfs_version.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *const kvfs_ctl_names[] = {"stats", "metrics", NULL};
enum { CTL_STATS, CTL_METRICS, CTL_COUNT };

static struct kvfs_inode ctl_dir;
static struct kvfs_inode ctl_files[CTL_COUNT];

/* st_ino values far above what backing filesystems hand out. */
#define CTL_INO_BASE 0x7f00000000000000ull

void kvfs_ctl_init(void) {
    ctl_dir.kind = KVFS_INODE_CTL_DIR;
    ctl_dir.fd = -1;
    for (int i = 0; i < CTL_COUNT; i++) {
        ctl_files[i].kind = KVFS_INODE_CTL_FILE;
        ctl_files[i].fd = -1;
        ctl_files[i].ctl_id = i;
    }
}

struct kvfs_inode *kvfs_ctl_dir(void) {
    return &ctl_dir;
}

struct kvfs_inode *kvfs_ctl_lookup(const char *name) {
    for (int i = 0; i < CTL_COUNT; i++)
        if (strcmp(name, kvfs_ctl_names[i]) == 0)
            return &ctl_files[i];
    return NULL;
}

static void fill_info(struct kvfs_stats_info *info) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    info->version = KVFS_VERSION;
    info->backing = kvfs_d.backing_real;
    info->mountpoint = kvfs_d.mount_real;
    info->data_mode = kvfs_d.data_mode;
    info->data_mode_reason = kvfs_d.data_mode_reason;
    info->uptime_s = (double)(now.tv_sec - kvfs_d.started.tv_sec);
    info->inodes = kvfs_itable_count();
    kvfs_evict_fill_info(info);
}

int kvfs_ctl_render(const struct kvfs_inode *ino, char **buf, size_t *len) {
    struct kvfs_stats_info info;
    fill_info(&info);
    size_t cap = 4096;
    for (;;) {
        char *b = malloc(cap);
        if (!b)
            return -ENOMEM;
        size_t need = ino->ctl_id == CTL_STATS
                          ? kvfs_stats_format_text(&kvfs_d.stats, &info, b, cap)
                          : kvfs_stats_format_prometheus(&kvfs_d.stats, &info, b, cap);
        if (need < cap) {
            *buf = b;
            *len = need;
            return 0;
        }
        free(b);
        cap = need + 1;
    }
}

int kvfs_ctl_render_metrics(char **buf, size_t *len) {
    return kvfs_ctl_render(&ctl_files[CTL_METRICS], buf, len);
}

void kvfs_ctl_stat(const struct kvfs_inode *ino, struct stat *st) {
    memset(st, 0, sizeof(*st));
    st->st_uid = 0;
    st->st_gid = 0;
    st->st_mtim = st->st_ctim = st->st_atim = (struct timespec){time(NULL), 0};
    if (ino->kind == KVFS_INODE_CTL_DIR) {
        st->st_ino = CTL_INO_BASE;
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
        return;
    }
    st->st_ino = CTL_INO_BASE + 1 + (unsigned)ino->ctl_id;
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    char *buf;
    size_t len;
    if (kvfs_ctl_render(ino, &buf, &len) == 0) {
        st->st_size = (off_t)len;
        free(buf);
    }
}
