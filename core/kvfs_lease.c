/* kvfs_lease: the eviction lease in the backing store (protocol in the
 * header). Plain files and link()/rename() only, so it works on NFS, CephFS,
 * Lustre and Storage Scale alike. */
#define _GNU_SOURCE
#include "kvfs_lease.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void kvfs_lease_init(struct kvfs_lease *l, int dir_fd, const char *self, int64_t ttl_ms,
                     int64_t skew_ms) {
    memset(l, 0, sizeof(*l));
    l->dir_fd = dir_fd;
    snprintf(l->self, sizeof(l->self), "%s", self);
    l->ttl_ms = ttl_ms;
    l->skew_ms = skew_ms;
}

int kvfs_lease_parse(const char *buf, size_t len, char *holder, size_t holder_len,
                     int64_t *expires) {
    char text[256], who[128];
    size_t n = len < sizeof(text) - 1 ? len : sizeof(text) - 1;
    memcpy(text, buf, n);
    text[n] = '\0';
    int64_t exp;
    if (sscanf(text, "holder %127s\nexpires %" SCNd64, who, &exp) != 2)
        return -EINVAL;
    snprintf(holder, holder_len, "%s", who);
    *expires = exp;
    return 0;
}

int kvfs_lease_read(int dir_fd, char *holder, size_t holder_len, int64_t *expires) {
    int fd = openat(dir_fd, KVFS_LEASE_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char buf[256];
    ssize_t n = read(fd, buf, sizeof(buf));
    int e = errno;
    close(fd);
    if (n < 0)
        return -e;
    return kvfs_lease_parse(buf, (size_t)n, holder, holder_len, expires);
}

/* Writes a lease naming us, expiring at EXPIRES, to a private temp file. */
static int write_temp(struct kvfs_lease *l, int64_t expires, char *tmp, size_t tmp_len) {
    static _Atomic unsigned seq;
    snprintf(tmp, tmp_len, "%s.%s.%u", KVFS_LEASE_FILE, l->self, atomic_fetch_add(&seq, 1));
    int fd = openat(l->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    char buf[256];
    int len = snprintf(buf, sizeof(buf), "holder %s\nexpires %" PRId64 "\n", l->self, expires);
    int rc = write(fd, buf, (size_t)len) == len ? 0 : -EIO;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc)
        unlinkat(l->dir_fd, tmp, 0);
    return rc;
}

static bool names_us(struct kvfs_lease *l) {
    char who[128];
    int64_t exp;
    return kvfs_lease_read(l->dir_fd, who, sizeof(who), &exp) == 0 && strcmp(who, l->self) == 0;
}

int kvfs_lease_take(struct kvfs_lease *l, int64_t now) {
    if (l->held)
        return kvfs_lease_renew(l, now);
    char who[128], tmp[256];
    int64_t exp = 0;
    int rc = kvfs_lease_read(l->dir_fd, who, sizeof(who), &exp);
    if (rc == 0 && now <= exp + l->skew_ms && strcmp(who, l->self) != 0)
        return 0; /* alive elsewhere */
    if (rc != 0 && rc != -ENOENT && rc != -EINVAL)
        return rc;
    int64_t expires = now + l->ttl_ms;
    rc = write_temp(l, expires, tmp, sizeof(tmp));
    if (rc)
        return rc;
    int result;
    if (kvfs_lease_read(l->dir_fd, who, sizeof(who), &exp) == -ENOENT) {
        /* No lease at all: link() makes the first of several nodes the holder. */
        result = linkat(l->dir_fd, tmp, l->dir_fd, KVFS_LEASE_FILE, 0) == 0 ? 1
                 : errno == EEXIST                                          ? 0
                                                                            : -errno;
    } else {
        result = renameat(l->dir_fd, tmp, l->dir_fd, KVFS_LEASE_FILE) == 0 ? 2 : -errno;
    }
    unlinkat(l->dir_fd, tmp, 0);
    if (result > 0) {
        l->expires = expires;
        l->held = result == 1;
    }
    return result;
}

int kvfs_lease_confirm(struct kvfs_lease *l) {
    l->held = names_us(l);
    return l->held ? 1 : 0;
}

int kvfs_lease_renew(struct kvfs_lease *l, int64_t now) {
    if (!l->held || !names_us(l)) {
        l->held = false;
        return 0;
    }
    char tmp[256];
    int64_t expires = now + l->ttl_ms;
    int rc = write_temp(l, expires, tmp, sizeof(tmp));
    if (rc)
        return rc;
    rc = renameat(l->dir_fd, tmp, l->dir_fd, KVFS_LEASE_FILE) == 0 ? 1 : -errno;
    unlinkat(l->dir_fd, tmp, 0);
    if (rc == 1)
        l->expires = expires;
    return rc;
}

bool kvfs_lease_valid(const struct kvfs_lease *l, int64_t now, int64_t margin_ms) {
    return l->held && now + margin_ms < l->expires;
}

void kvfs_lease_release(struct kvfs_lease *l) {
    if (l->held && names_us(l))
        unlinkat(l->dir_fd, KVFS_LEASE_FILE, 0);
    l->held = false;
}
