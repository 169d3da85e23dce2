/* kvfs_scan: the backing-store walk shared by the daemon and kvfsctl (see the
 * header). Directories are entered with kvfs_open_beneath, so a planted link
 * never leads the walk out of the store, and kvfs's own names are skipped
 * except the fan-out buckets, whose blocks are what is indexed. */
#define _GNU_SOURCE
#include "kvfs_scan.h"
#include "kvfs_name.h"
#include "kvfs_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct walk {
    struct kvfs_index *ix;
    char rel[PATH_MAX];
    uint32_t dir;
    int depth;
    void (*progress)(void);
    const volatile bool *stop;
};

static int walk_dir(struct walk *w, int dfd);

static int put_block(void *ctx, int bdir, const struct dirent *de) {
    struct walk *w = ctx;
    struct stat st;
    if (w->progress)
        w->progress();
    if (!kvfs_name_is_block(de->d_name, NULL) ||
        fstatat(bdir, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
        return 0;
    int rc = kvfs_index_put(w->ix, w->dir, de->d_name, (uint64_t)st.st_size, (uint32_t)st.st_atime);
    return rc == -ENOMEM ? rc : 0;
}

static int walk_bucket(void *ctx, int fan, const struct dirent *de) {
    if (!kvfs_bucket_is_valid(de->d_name))
        return 0;
    int rc = kvfs_dir_each(fan, de->d_name, put_block, ctx);
    return rc == -ENOMEM ? rc : 0;
}

static int walk_entry(void *ctx, int dfd, const struct dirent *de) {
    struct walk *w = ctx;
    if (w->stop && *w->stop)
        return -ECANCELED;
    if (kvfs_name_is_reserved(de->d_name) || (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN))
        return 0;
    int sub = kvfs_open_beneath(dfd, de->d_name, O_PATH | O_DIRECTORY, 0);
    if (sub < 0)
        return 0; /* not a directory, or gone */
    size_t len = strlen(w->rel);
    int n = snprintf(w->rel + len, sizeof(w->rel) - len, "%s%s", len ? "/" : "", de->d_name);
    int rc = 0;
    if (n > 0 && (size_t)n < sizeof(w->rel) - len && w->depth < 64) {
        uint32_t saved = w->dir;
        w->depth++;
        rc = walk_dir(w, sub);
        w->depth--;
        w->dir = saved;
    }
    w->rel[len] = '\0';
    close(sub);
    return rc;
}

static int walk_dir(struct walk *w, int dfd) {
    int64_t id = kvfs_index_dir(w->ix, w->rel);
    if (id < 0)
        return (int)id;
    w->dir = (uint32_t)id;
    int rc = kvfs_dir_each(dfd, KVFS_FANOUT_DIR, walk_bucket, w);
    if (rc == -ENOMEM || rc == -ECANCELED)
        return rc;
    rc = kvfs_dir_each(dfd, ".", walk_entry, w);
    return rc == -ENOMEM || rc == -ECANCELED ? rc : 0;
}

int kvfs_scan(struct kvfs_index *ix, int root_fd, const char *rel, void (*progress)(void),
              const volatile bool *stop) {
    struct walk w = {.ix = ix, .progress = progress, .stop = stop};
    snprintf(w.rel, sizeof(w.rel), "%s", rel);
    int dfd = rel[0] ? kvfs_open_beneath(root_fd, rel, O_PATH | O_DIRECTORY, 0)
                     : fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
    if (dfd < 0)
        return rel[0] ? dfd : -errno;
    int rc = walk_dir(&w, dfd);
    close(dfd);
    return rc;
}
