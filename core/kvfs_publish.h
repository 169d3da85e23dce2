/* kvfs_publish: atomic publication of files written through the mount.
 *
 * A file created (or re-created with O_TRUNC) through the mount is written to
 * a private staging file in BACKING/.kvfs-state/staging and appears under its
 * name only when its writer closes it:
 *
 *  - a block is linked into its bucket with link(): the first complete copy
 *    of a name wins, a later writer's copy is discarded and it still gets
 *    success (blocks are content-addressed). link() is used rather than
 *    renameat2(RENAME_NOREPLACE) because NFS refuses rename flags, and it
 *    never replaces a file another node may be reading;
 *  - any other file is renamed into place: the last writer wins, atomically;
 *    with O_EXCL it is linked instead and loses with EEXIST;
 *  - a file (block or not) that its writer opened with O_TRUNC while it was
 *    published is a replacement: it is renamed over the published one, so
 *    later readers get the new content and readers holding the old one keep
 *    their bytes.
 *
 * A file is published only when its writer completed it: its close(), after
 * writes that all succeeded. A writer that is killed, that leaves without
 * closing a block, or that unlinks its own unpublished file aborts it: the
 * staging file is dropped and its space freed at once.
 *
 * The per-handle state machine (kvfs_pub_*) decides what each event on an
 * open staged file does; it is pure so the unit tests can walk every edge. */
#ifndef KVFS_PUBLISH_H
#define KVFS_PUBLISH_H

#include "kvfs_store.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

struct kvfs_stage {
    int fd;          /* read-write descriptor of the staging file */
    char sname[128]; /* its name in the staging directory */
    dev_t dev;
    ino_t ino;
};

/* Creates a staging file with MODE, owned by UID/GID when CHOWN is set.
 * O_DIRECT in FLAGS is probed on the backing store (so a client probing
 * O_DIRECT gets the backing store's answer) and then cleared, because data
 * reaches the daemon in buffers that are not aligned. */
int kvfs_stage_create(struct kvfs_store *st, int flags, mode_t mode, bool chown, uid_t uid,
                      gid_t gid, struct kvfs_stage *out);

enum kvfs_publish_result {
    KVFS_PUBLISHED = 0, /* the staged file is now visible under its name */
    KVFS_DISCARDED = 1, /* a block of that name existed; our copy was dropped */
};

/* Publishes the staged file as NAME in the backing directory DFD (see the
 * rules above; REPLACE: a replacement by O_TRUNC); DURABLE fdatasyncs it first. The staging name is
 * gone afterwards whatever the outcome; the descriptor stays open. Returns a kvfs_publish_result or
 * a negative errno (nothing was published). */
int kvfs_stage_publish(struct kvfs_store *st, struct kvfs_stage *sg, int dfd, const char *name,
                       bool exclusive, bool replace, bool durable);

/* Removes the staging file (the descriptor stays open). */
void kvfs_stage_discard(struct kvfs_store *st, struct kvfs_stage *sg);
/* Removes a failed staging file and frees its space at once, though the
 * writer (and, with passthrough, the kernel) still has it open: a writer that
 * hit ENOSPC gets its room back before its close() returns. */
void kvfs_stage_abandon(struct kvfs_store *st, struct kvfs_stage *sg);

/* Removes staging files not modified for MAX_AGE seconds before NOW; adds
 * the number removed to *REMOVED. Files of writers on other nodes that are
 * still active are younger than that and are left alone. */
int kvfs_staging_collect(struct kvfs_store *st, time_t max_age, time_t now, uint64_t *removed);

/* The state machine of one open staged file. */
enum kvfs_pub_state {
    KVFS_PUB_STAGING,   /* being written */
    KVFS_PUB_PUBLISHED, /* published (or discarded as a duplicate block): immutable */
    KVFS_PUB_FAILED,    /* a write or the publication failed: never published */
    KVFS_PUB_ABORTED,   /* its writer died or unlinked it: never published */
};
enum kvfs_pub_event {
    KVFS_EV_WRITE,
    KVFS_EV_TRUNCATE,
    KVFS_EV_FLUSH_OPENER, /* close() by the process that created it */
    KVFS_EV_FLUSH_OTHER,  /* close() by another process (a fork, a dup passed on) */
    KVFS_EV_RELEASE,      /* last reference gone */
    KVFS_EV_ABORT,        /* its writer was killed, left without closing it or unlinked it */
};
enum kvfs_pub_action {
    KVFS_ACT_PROCEED, /* do the write/truncate */
    KVFS_ACT_PUBLISH, /* publish now */
    KVFS_ACT_NOTHING, /* succeed without doing anything */
    KVFS_ACT_REFUSE,  /* fail with EPERM: the file is published and immutable */
    KVFS_ACT_FAILED,  /* fail with the error that failed the file */
    KVFS_ACT_ABORT,   /* drop the staging file now: it will never be published */
};
struct kvfs_pub {
    enum kvfs_pub_state state;
    int error;    /* negative errno, set in KVFS_PUB_FAILED */
    bool written; /* data written or size set since it was opened */
};

enum kvfs_pub_action kvfs_pub_decide(const struct kvfs_pub *p, enum kvfs_pub_event ev);
/* Records a successful write or truncate. Until one happens, close() does not
 * publish: shells open a file, dup2() it onto stdout and close the original
 * before writing, and that first close must not publish an empty file. An
 * empty file is published when its last descriptor is released. */
void kvfs_pub_wrote(struct kvfs_pub *p);
/* Records an I/O error on the staged file: it will never be published. */
void kvfs_pub_fail(struct kvfs_pub *p, int error);
/* Records an abort (after KVFS_ACT_ABORT): like an unlinked file on a local
 * filesystem, further writes succeed and go nowhere; nothing is published. */
void kvfs_pub_abort(struct kvfs_pub *p);
/* Records the result of kvfs_stage_publish. */
void kvfs_pub_published(struct kvfs_pub *p, int result);

#endif
