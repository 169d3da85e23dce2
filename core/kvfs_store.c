/* kvfs_store: backing-directory layout and confined entry access (see the
 * header for the layout and the confinement rule). */
#define _GNU_SOURCE
#include "kvfs_store.h"
#include "kvfs_log.h"
#include "kvfs_name.h"

#include <dirent.h>
#include <stdatomic.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FORMAT_FILE "format"
#define STAGING_DIR "staging"

static int set_err(char *err, size_t errlen, const char *fmt, const char *a, int e) {
    snprintf(err, errlen, fmt, a, strerror(e));
    return -e;
}

/* True if path A equals B or lies below it (both canonical). */
static bool path_within(const char *a, const char *b) {
    size_t n = strlen(b);
    if (strcmp(b, "/") == 0)
        return true;
    return strncmp(a, b, n) == 0 && (a[n] == '\0' || a[n] == '/');
}

int kvfs_store_check_paths(const char *backing, const char *mountpoint, char *err, size_t errlen) {
    char rb[PATH_MAX], rm[PATH_MAX];
    struct stat st;
    if (stat(backing, &st) != 0)
        return set_err(err, errlen, "backing directory '%s': %s", backing, errno);
    if (!S_ISDIR(st.st_mode))
        return set_err(err, errlen, "backing directory '%s': %s", backing, ENOTDIR);
    if (access(backing, W_OK | X_OK) != 0)
        return set_err(err, errlen, "backing directory '%s' is not writable: %s", backing, errno);
    if (!realpath(backing, rb))
        return set_err(err, errlen, "backing directory '%s': %s", backing, errno);
    if (!mountpoint)
        return 0;
    if (!realpath(mountpoint, rm))
        return set_err(err, errlen, "mountpoint '%s': %s", mountpoint, errno);
    if (stat(rm, &st) != 0 || !S_ISDIR(st.st_mode))
        return set_err(err, errlen, "mountpoint '%s': %s", mountpoint, ENOTDIR);
    if (strcmp(rb, rm) == 0) {
        snprintf(err, errlen, "backing directory and mountpoint are the same directory (%s)", rb);
        return -EINVAL;
    }
    if (path_within(rb, rm)) {
        snprintf(err, errlen, "backing directory '%s' is inside the mountpoint '%s'", rb, rm);
        return -EINVAL;
    }
    if (path_within(rm, rb)) {
        snprintf(err, errlen, "mountpoint '%s' is inside the backing directory '%s'", rm, rb);
        return -EINVAL;
    }
    return 0;
}

/* Creates (if missing) and opens the state directory's format file, refusing
 * a layout newer than ours. */
static int check_format(struct kvfs_store *st, char *err, size_t errlen) {
    char want[128];
    int wlen = snprintf(want, sizeof(want), "kvfs-layout %d\nfanout %s/%d-hex-digits\n",
                        KVFS_LAYOUT_VERSION, KVFS_FANOUT_DIR, KVFS_BUCKET_LEN);
    int fd = openat(st->state_fd, FORMAT_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        /* Write it under a private name and link it in: two daemons starting
         * at once on one backing store both succeed and agree. */
        char tmp[160];
        snprintf(tmp, sizeof(tmp), FORMAT_FILE ".%s.%d", st->node, (int)getpid());
        int tfd = openat(st->state_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (tfd < 0)
            return set_err(err, errlen, "cannot write %s/format: %s", KVFS_STATE_DIR, errno);
        ssize_t w = write(tfd, want, (size_t)wlen);
        int e = w == wlen ? 0 : (w < 0 ? errno : EIO);
        close(tfd);
        if (!e && linkat(st->state_fd, tmp, st->state_fd, FORMAT_FILE, 0) != 0 && errno != EEXIST)
            e = errno;
        unlinkat(st->state_fd, tmp, 0);
        if (e)
            return set_err(err, errlen, "cannot write %s/format: %s", KVFS_STATE_DIR, e);
        fd = openat(st->state_fd, FORMAT_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0)
        return set_err(err, errlen, "cannot read %s/format: %s", KVFS_STATE_DIR, errno);
    char have[128] = {0};
    ssize_t r = read(fd, have, sizeof(have) - 1);
    close(fd);
    int version = 0;
    if (r <= 0 || sscanf(have, "kvfs-layout %d", &version) != 1) {
        snprintf(err, errlen, "%s/format is unreadable or corrupt", KVFS_STATE_DIR);
        return -EINVAL;
    }
    if (version != KVFS_LAYOUT_VERSION) {
        snprintf(err, errlen, "backing store uses kvfs layout %d; this kvfs understands %d",
                 version, KVFS_LAYOUT_VERSION);
        return -EINVAL;
    }
    return 0;
}

static void node_name(char *buf, size_t len) {
    char host[256] = "node";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    size_t j = 0;
    for (size_t i = 0; host[i] && j + 1 < len && j < 48; i++) {
        char c = host[i];
        bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  c == '-' || c == '_';
        buf[j++] = ok ? c : '_';
    }
    buf[j] = '\0';
    if (j == 0)
        snprintf(buf, len, "node");
}

int kvfs_store_open(struct kvfs_store *st, const char *backing, char *err, size_t errlen) {
    memset(st, 0, sizeof(*st));
    st->root_fd = st->state_fd = st->staging_fd = -1;
    node_name(st->node, sizeof(st->node));
    st->root_fd = open(backing, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (st->root_fd < 0)
        return set_err(err, errlen, "backing directory '%s': %s", backing, errno);
    if (mkdirat(st->root_fd, KVFS_STATE_DIR, 0755) != 0 && errno != EEXIST) {
        int e = errno;
        kvfs_store_close(st);
        return set_err(err, errlen, "cannot create the state folder in '%s': %s", backing, e);
    }
    st->state_fd =
        openat(st->root_fd, KVFS_STATE_DIR, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    bool ok =
        st->state_fd >= 0 && (mkdirat(st->state_fd, STAGING_DIR, 0755) == 0 || errno == EEXIST);
    if (ok)
        st->staging_fd =
            openat(st->state_fd, STAGING_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (st->staging_fd < 0) {
        int e = errno;
        kvfs_store_close(st);
        return set_err(err, errlen, "cannot open the state folder in '%s': %s", backing, e);
    }
    int rc = check_format(st, err, errlen);
    if (rc) {
        kvfs_store_close(st);
        return rc;
    }
    return 0;
}

void kvfs_store_close(struct kvfs_store *st) {
    int *fds[] = {&st->staging_fd, &st->state_fd, &st->root_fd};
    for (size_t i = 0; i < 3; i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
}

/* The same as openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), one component
 * at a time, for kernels before 5.6 (and valgrind, which lacks openat2). */
static int open_beneath_walk(int dfd, const char *path, int flags, mode_t mode) {
    char comp[KVFS_NAME_MAX + 1];
    int cur = dfd;
    const char *p = path;
    for (;;) {
        size_t n = strcspn(p, "/");
        if (n == 0 || n > KVFS_NAME_MAX || (n == 2 && p[0] == '.' && p[1] == '.')) {
            if (cur != dfd)
                close(cur);
            return n > KVFS_NAME_MAX ? -ENAMETOOLONG : -EPERM;
        }
        memcpy(comp, p, n);
        comp[n] = '\0';
        bool last = p[n] == '\0';
        int fd = last ? openat(cur, comp, flags | O_NOFOLLOW | O_CLOEXEC, mode)
                      : openat(cur, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        if (cur != dfd)
            close(cur);
        if (fd < 0)
            return (e == ELOOP || (e == ENOTDIR && !last)) ? -EPERM : -e;
        if (last)
            return fd;
        cur = fd;
        p += n + 1;
    }
}

int kvfs_open_beneath(int dfd, const char *path, int flags, mode_t mode) {
    static _Atomic bool no_openat2;
    struct open_how how = {
        .flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC),
        .mode = (flags & O_CREAT) ? mode : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    long fd = -1;
    if (!atomic_load(&no_openat2)) {
        fd = syscall(SYS_openat2, dfd, path, &how, sizeof(how));
        if (fd >= 0)
            return (int)fd;
        if (errno == ENOSYS)
            atomic_store(&no_openat2, true);
    }
    int e = errno;
    if (atomic_load(&no_openat2)) {
        int r = open_beneath_walk(dfd, strcmp(path, ".") == 0 ? "." : path, flags, mode);
        if (r != -EPERM)
            return r;
        e = ELOOP;
    }
    if (e == ELOOP || e == EXDEV) {
        kvfs_debug("refusing '%s': a symbolic link or an escape from the backing directory", path);
        return -EPERM;
    }
    return -e;
}

int kvfs_dir_each(int dfd, const char *path, int (*fn)(void *ctx, int dir, const struct dirent *de),
                  void *ctx) {
    int fd = kvfs_open_beneath(dfd, path, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return fd;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = -errno;
        close(fd);
        return e;
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (errno = 0, de = readdir(d))) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            rc = fn(ctx, dirfd(d), de);
    }
    if (rc == 0 && errno)
        rc = -errno;
    closedir(d);
    return rc;
}

static int stat_plain(int dfd, const char *name, struct stat *st) {
    if (fstatat(dfd, name, st, AT_SYMLINK_NOFOLLOW) != 0)
        return -errno;
    if (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode) && !S_ISLNK(st->st_mode)) {
        kvfs_debug("refusing '%s': not a regular file, directory or symbolic link in the "
                   "backing store",
                   name);
        return -EPERM;
    }
    return 0;
}

int kvfs_entry_stat(int dfd, const char *name, struct stat *st, enum kvfs_where *where) {
    if (kvfs_name_is_block(name, NULL)) {
        char rel[PATH_MAX];
        int rc = kvfs_block_relpath(name, rel, sizeof(rel));
        if (rc)
            return rc;
        int fd = kvfs_open_beneath(dfd, rel, O_PATH, 0);
        if (fd >= 0) {
            rc = fstat(fd, st) == 0 ? 0 : -errno;
            close(fd);
            if (rc)
                return rc;
            if (!S_ISREG(st->st_mode)) {
                kvfs_debug("refusing block '%s': not a regular file in the backing store", name);
                return -EPERM;
            }
            *where = KVFS_IN_BUCKET;
            return 0;
        } else if (fd != -ENOENT && fd != -ENOTDIR) {
            return fd;
        }
    }
    *where = KVFS_IN_DIR;
    return stat_plain(dfd, name, st);
}

int kvfs_entry_open(int dfd, const char *name, enum kvfs_where where, int flags) {
    if (where == KVFS_IN_BUCKET) {
        char rel[PATH_MAX];
        int rc = kvfs_block_relpath(name, rel, sizeof(rel));
        if (rc)
            return rc;
        return kvfs_open_beneath(dfd, rel, flags, 0);
    }
    return kvfs_open_beneath(dfd, name, flags, 0);
}

int kvfs_entry_open_any(int dfd, const char *name, int flags) {
    if (kvfs_name_is_block(name, NULL)) {
        int fd = kvfs_entry_open(dfd, name, KVFS_IN_BUCKET, flags);
        if (fd != -ENOENT && fd != -ENOTDIR)
            return fd;
    }
    return kvfs_open_beneath(dfd, name, flags, 0);
}

/* Opens (and with CREATE, makes) the directory NAME below DFD. */
static int open_subdir(int dfd, const char *name, bool create, mode_t mode) {
    int fd = kvfs_open_beneath(dfd, name, O_PATH | O_DIRECTORY, 0);
    if (fd == -ENOENT && create) {
        if (mkdirat(dfd, name, mode) != 0 && errno != EEXIST)
            return -errno;
        fd = kvfs_open_beneath(dfd, name, O_PATH | O_DIRECTORY, 0);
    }
    return fd;
}

int kvfs_entry_parent(int dfd, const char *name, bool create) {
    if (!kvfs_name_is_block(name, NULL))
        return dfd;
    mode_t mode = 0755;
    struct stat st;
    if (create && fstat(dfd, &st) == 0)
        mode = st.st_mode & 07777;
    int fan = open_subdir(dfd, KVFS_FANOUT_DIR, create, mode);
    if (fan < 0)
        return fan;
    char bucket[KVFS_BUCKET_LEN + 1];
    kvfs_block_bucket(name, bucket);
    int bfd = open_subdir(fan, bucket, create, mode);
    close(fan);
    return bfd;
}

int kvfs_entry_unlink(int dfd, const char *name) {
    struct stat st;
    enum kvfs_where where;
    int rc = kvfs_entry_stat(dfd, name, &st, &where);
    if (rc)
        return rc;
    if (S_ISDIR(st.st_mode))
        return -EISDIR;
    int pfd = where == KVFS_IN_BUCKET ? kvfs_entry_parent(dfd, name, false) : dfd;
    if (pfd < 0)
        return pfd;
    rc = unlinkat(pfd, name, 0) == 0 ? 0 : -errno;
    if (pfd != dfd)
        close(pfd);
    return rc;
}

int kvfs_entry_mkdir(int dfd, const char *name, mode_t mode) {
    struct stat st;
    enum kvfs_where where;
    if (kvfs_name_is_block(name, NULL) && kvfs_entry_stat(dfd, name, &st, &where) == 0)
        return -EEXIST;
    return mkdirat(dfd, name, mode) == 0 ? 0 : -errno;
}

/* Removes DIR/.kvfs-blocks if it holds nothing but empty buckets. Returns 0,
 * -ENOTEMPTY if a block remains, or another error. */
static int remove_bucket(void *ctx, int dir, const struct dirent *de) {
    (void)ctx;
    return unlinkat(dir, de->d_name, AT_REMOVEDIR) == 0 ? 0
                                                        : (errno == EEXIST ? -ENOTEMPTY : -errno);
}

static int clear_fanout(int dfd) {
    int rc = kvfs_dir_each(dfd, KVFS_FANOUT_DIR, remove_bucket, NULL);
    if (rc == -ENOENT)
        return 0;
    if (rc == 0 && unlinkat(dfd, KVFS_FANOUT_DIR, AT_REMOVEDIR) != 0 && errno != ENOENT)
        rc = (errno == EEXIST) ? -ENOTEMPTY : -errno;
    return rc;
}

int kvfs_entry_rmdir(int dfd, const char *name) {
    if (unlinkat(dfd, name, AT_REMOVEDIR) == 0)
        return 0;
    if (errno != ENOTEMPTY && errno != EEXIST)
        return -errno;
    int sub = kvfs_open_beneath(dfd, name, O_PATH | O_DIRECTORY, 0);
    if (sub < 0)
        return sub;
    int rc = clear_fanout(sub);
    close(sub);
    if (rc)
        return rc;
    return unlinkat(dfd, name, AT_REMOVEDIR) == 0 ? 0 : (errno == EEXIST ? -ENOTEMPTY : -errno);
}

static int listing_add(struct kvfs_listing *l, const char *name, unsigned char type) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct kvfs_dirent *e = realloc(l->ents, cap * sizeof(*e));
        if (!e)
            return -ENOMEM;
        l->ents = e;
        l->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return -ENOMEM;
    l->ents[l->n].name = copy;
    l->ents[l->n].type = type;
    l->n++;
    return 0;
}

/* The type of entry DE of DFD, asking the filesystem when readdir did not say. */
static unsigned char entry_type(int dfd, const struct dirent *de) {
    if (de->d_type != DT_UNKNOWN)
        return de->d_type;
    struct stat st;
    if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return DT_UNKNOWN;
    return S_ISREG(st.st_mode)   ? DT_REG
           : S_ISDIR(st.st_mode) ? DT_DIR
           : S_ISLNK(st.st_mode) ? DT_LNK
                                 : DT_UNKNOWN;
}

struct bucket_ctx {
    struct kvfs_listing *out;
    const char *bucket;
};

static int add_block(void *ctx, int dir, const struct dirent *de) {
    struct bucket_ctx *c = ctx;
    char want[KVFS_BUCKET_LEN + 1];
    if (!kvfs_name_is_block(de->d_name, NULL))
        return 0;
    kvfs_block_bucket(de->d_name, want);
    if (strcmp(want, c->bucket) != 0 || entry_type(dir, de) != DT_REG)
        return 0;
    return listing_add(c->out, de->d_name, DT_REG);
}

/* A missing, planted or odd bucket is simply not listed. */
static int skip_unusable(int rc) {
    return rc == -ENOENT || rc == -EPERM || rc == -ENOTDIR ? 0 : rc;
}

static int add_bucket(void *ctx, int dir, const struct dirent *de) {
    if (!kvfs_bucket_is_valid(de->d_name))
        return 0;
    struct bucket_ctx c = {ctx, de->d_name};
    return skip_unusable(kvfs_dir_each(dir, de->d_name, add_block, &c));
}

static int add_plain(void *ctx, int dir, const struct dirent *de) {
    if (kvfs_name_is_reserved(de->d_name))
        return 0;
    unsigned char type = entry_type(dir, de);
    return type == DT_REG || type == DT_DIR || type == DT_LNK ? listing_add(ctx, de->d_name, type)
                                                              : 0;
}

int kvfs_dir_list(int dfd, struct kvfs_listing *out) {
    memset(out, 0, sizeof(*out));
    int rc = kvfs_dir_each(dfd, ".", add_plain, out);
    if (rc == 0)
        rc = skip_unusable(kvfs_dir_each(dfd, KVFS_FANOUT_DIR, add_bucket, out));
    if (rc)
        kvfs_listing_free(out);
    return rc;
}

void kvfs_listing_free(struct kvfs_listing *l) {
    for (size_t i = 0; i < l->n; i++)
        free(l->ents[i].name);
    free(l->ents);
    memset(l, 0, sizeof(*l));
}
