/* kvfs_publish: staging files, publication and the per-handle state machine
 * (see the header for the rules and why they are what they are). */
#define _GNU_SOURCE
#include "kvfs_publish.h"
#include "kvfs_fault.h"
#include "kvfs_log.h"
#include "kvfs_name.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int kvfs_stage_create(struct kvfs_store *st, int flags, mode_t mode, bool chown, uid_t uid,
                      gid_t gid, struct kvfs_stage *out) {
    memset(out, 0, sizeof(*out));
    uint64_t seq = atomic_fetch_add(&st->seq, 1);
    snprintf(out->sname, sizeof(out->sname), "%s.%d.%llu.stage", st->node, (int)getpid(),
             (unsigned long long)seq);
    int oflags = O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | (flags & O_DIRECT);
    int fd = openat(st->staging_fd, out->sname, oflags, mode & 07777);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if ((flags & O_DIRECT) && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_DIRECT) != 0)
        rc = -errno;
    if (!rc && chown && fchown(fd, uid, gid) != 0)
        rc = -errno;
    struct stat sb;
    if (!rc && fstat(fd, &sb) != 0)
        rc = -errno;
    if (rc) {
        close(fd);
        unlinkat(st->staging_fd, out->sname, 0);
        return rc;
    }
    out->fd = fd;
    out->dev = sb.st_dev;
    out->ino = sb.st_ino;
    return 0;
}

void kvfs_stage_discard(struct kvfs_store *st, struct kvfs_stage *sg) {
    if (sg->sname[0] && unlinkat(st->staging_fd, sg->sname, 0) != 0 && errno != ENOENT)
        kvfs_warn("cannot remove staging file %s: %s", sg->sname, strerror(errno));
    sg->sname[0] = '\0';
}

void kvfs_stage_abandon(struct kvfs_store *st, struct kvfs_stage *sg) {
    kvfs_stage_discard(st, sg);
    if (sg->fd >= 0 && ftruncate(sg->fd, 0) != 0)
        kvfs_warn("cannot free a failed staging file's space: %s", strerror(errno));
}

int kvfs_stage_publish(struct kvfs_store *st, struct kvfs_stage *sg, int dfd, const char *name,
                       bool exclusive, bool replace, bool durable) {
    bool block = kvfs_name_is_block(name, NULL);
    int rc = kvfs_fault(KVFS_FAULT_PUBLISH, name);
    if (!rc && durable && fdatasync(sg->fd) != 0)
        rc = -errno;
    /* A block must not shadow, or be shadowed by, a directory or symbolic
     * link of its name. */
    struct stat sb;
    if (!rc && fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(sb.st_mode))
        rc = S_ISDIR(sb.st_mode) ? -EISDIR : -EEXIST;
    int pfd = rc ? rc : kvfs_entry_parent(dfd, name, true);
    if (!rc && pfd < 0)
        rc = pfd;
    if (!rc) {
        if (!replace && (block || exclusive)) {
            if (linkat(st->staging_fd, sg->sname, pfd, name, 0) == 0)
                rc = KVFS_PUBLISHED;
            else if (errno == EEXIST && block)
                rc = KVFS_DISCARDED;
            else
                rc = -errno;
        } else {
            if (renameat(st->staging_fd, sg->sname, pfd, name) == 0) {
                rc = KVFS_PUBLISHED;
                sg->sname[0] = '\0';
            } else {
                rc = -errno;
            }
        }
        if (pfd != dfd)
            close(pfd);
    }
    if (rc < 0)
        kvfs_stage_abandon(st, sg);
    else
        kvfs_stage_discard(st, sg);
    return rc;
}

struct collect_ctx {
    time_t max_age, now;
    uint64_t *removed;
    int error;
};

static int collect_one(void *ctx, int dir, const struct dirent *de) {
    struct collect_ctx *c = ctx;
    struct stat sb;
    if (de->d_name[0] == '.' || fstatat(dir, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
        return 0; /* published or collected meanwhile */
    if (sb.st_mtime > c->now - c->max_age)
        return 0;
    if (unlinkat(dir, de->d_name, 0) == 0) {
        kvfs_info("removed stale staging file %s (%lld s old)", de->d_name,
                  (long long)(c->now - sb.st_mtime));
        (*c->removed)++;
    } else if (errno != ENOENT) {
        c->error = -errno;
        kvfs_warn("cannot remove stale staging file %s: %s", de->d_name, strerror(errno));
    }
    return 0; /* one stuck file does not stop the others */
}

int kvfs_staging_collect(struct kvfs_store *st, time_t max_age, time_t now, uint64_t *removed) {
    struct collect_ctx c = {max_age, now, removed, 0};
    int rc = kvfs_dir_each(st->staging_fd, ".", collect_one, &c);
    return rc ? rc : c.error;
}

enum kvfs_pub_action kvfs_pub_decide(const struct kvfs_pub *p, enum kvfs_pub_event ev) {
    switch (p->state) {
    case KVFS_PUB_STAGING:
        switch (ev) {
        case KVFS_EV_WRITE:
        case KVFS_EV_TRUNCATE:
            return KVFS_ACT_PROCEED;
        case KVFS_EV_FLUSH_OPENER:
            return p->written ? KVFS_ACT_PUBLISH : KVFS_ACT_NOTHING;
        case KVFS_EV_RELEASE:
            return KVFS_ACT_PUBLISH;
        case KVFS_EV_FLUSH_OTHER:
            return KVFS_ACT_NOTHING;
        case KVFS_EV_ABORT:
            return KVFS_ACT_ABORT;
        }
        break;
    case KVFS_PUB_PUBLISHED:
        return (ev == KVFS_EV_WRITE || ev == KVFS_EV_TRUNCATE) ? KVFS_ACT_REFUSE : KVFS_ACT_NOTHING;
    case KVFS_PUB_FAILED:
        return (ev == KVFS_EV_RELEASE || ev == KVFS_EV_ABORT) ? KVFS_ACT_NOTHING : KVFS_ACT_FAILED;
    case KVFS_PUB_ABORTED:
        return (ev == KVFS_EV_WRITE || ev == KVFS_EV_TRUNCATE) ? KVFS_ACT_PROCEED
                                                               : KVFS_ACT_NOTHING;
    }
    return KVFS_ACT_FAILED;
}

void kvfs_pub_wrote(struct kvfs_pub *p) {
    p->written = true;
}

void kvfs_pub_fail(struct kvfs_pub *p, int error) {
    if (p->state == KVFS_PUB_STAGING) {
        p->state = KVFS_PUB_FAILED;
        p->error = error;
    }
}

void kvfs_pub_abort(struct kvfs_pub *p) {
    if (p->state == KVFS_PUB_STAGING)
        p->state = KVFS_PUB_ABORTED;
}

void kvfs_pub_published(struct kvfs_pub *p, int result) {
    if (result >= 0) {
        p->state = KVFS_PUB_PUBLISHED;
    } else {
        p->state = KVFS_PUB_FAILED;
        p->error = result;
    }
}
