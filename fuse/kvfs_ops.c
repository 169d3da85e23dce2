/* kvfs_ops: the FUSE low-level operations table. This is glue: names are
 * checked and mapped by core/kvfs_name, entries are found in the backing store
 * by core/kvfs_store, and files written through the mount are staged and
 * published by core/kvfs_publish. What lives here is the FUSE protocol side:
 * node ids, reply timeouts, file handles, and which event triggers
 * publication (the first close() by the writer, or the last release).
 *
 * Cache timeouts: a published block never changes, so its entry and
 * attributes are cached for entry_timeout/attr_timeout; directories and other
 * files for meta_timeout; a miss for negative_timeout (what bounds how soon a
 * block published on another node is seen); a file being written for 0, so
 * that every other process looks it up again and sees nothing until it is
 * published. */
#define _GNU_SOURCE
#include "kvfs_daemon.h"
#include "kvfs_evict.h"
#include "kvfs_inode.h"
#include "kvfs_passthrough.h"

#include "../core/kvfs_clock.h"
#include "../core/kvfs_fault.h"
#include "../core/kvfs_idmap.h"
#include "../core/kvfs_log.h"
#include "../core/kvfs_name.h"
#include "../core/kvfs_proc.h"
#include "../core/kvfs_publish.h"
#include "../core/kvfs_wire.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

struct kvfs_daemon kvfs_d;

enum handle_kind { H_READ, H_STAGE, H_CTL, H_DIR };

struct kvfs_handle {
    uint64_t fh; /* inherited file handle; 0: the structure's address */
    enum handle_kind kind;
    struct kvfs_inode *ino; /* referenced */
    int fd;
    /* H_STAGE: writes hold `rw` shared; publication holds it exclusively so
     * that no write is in flight while the file is published. */
    pthread_rwlock_t rw;
    pthread_mutex_t lock; /* guards pub */
    struct kvfs_pub pub;
    struct kvfs_stage stage;
    struct kvfs_inode *parent; /* referenced: where it will be published */
    char name[KVFS_NAME_MAX + 1];
    bool exclusive;    /* O_EXCL: a non-block file must not replace another */
    bool replace;      /* O_TRUNC of a published file: replaces it when published */
    bool own_inode;    /* ino is the staging file's own inode (CREATE) */
    bool backing;      /* holds a passthrough backing id of ino */
    uint64_t created;  /* when staging began (monotonic ns) */
    pid_t opener;      /* thread that created it, 0 if unknown */
    pid_t opener_tgid; /* ... and its process, recognised after that thread exited */
    /* The registry of files being written (see writer_find_pin). */
    struct kvfs_handle *wnext;
    uint64_t wparent; /* node id of parent when registered */
    bool registered;
    int pins;
    bool indexed_open; /* H_READ of a block counted open in the block index */
    bool reindex;      /* inherited as indexed_open: count it once the index is up */
    /* H_CTL */
    char *buf;
    size_t len;
    /* H_DIR */
    struct kvfs_listing list;
    /* Every handle, so that those whose RELEASE never came are released when
     * the session ends (kvfs_ops_release_all). */
    struct kvfs_handle *all_prev, *all_next;
    /* Requests being served on this handle (see handle_hold). */
    _Atomic int users;
    pthread_cond_t idle;
};

/* The kernel sends RELEASE asynchronously after the last close, and an
 * unmount that follows at once aborts the connection with those still
 * queued: the daemon would never learn of the close. */
static struct {
    pthread_mutex_t lock;
    struct kvfs_handle *head;
} all_handles = {PTHREAD_MUTEX_INITIALIZER, NULL};

static void setup_data_path(struct fuse_file_info *fi, struct kvfs_handle *h, int backing_fd,
                            bool through_daemon, bool gone);

/* File handles inherited at a takeover (see core/kvfs_idmap). */
static struct kvfs_idmap inherited_fh = KVFS_IDMAP_INIT;

static struct kvfs_handle *handle_of(struct fuse_file_info *fi) {
    return kvfs_idmap_ptr(&inherited_fh, fi->fh);
}

static uint64_t handle_fh(const struct kvfs_handle *h) {
    return h->fh ? h->fh : kvfs_idmap_id(&inherited_fh, h);
}

/* The kernel sends RELEASE once every request on a file is answered, but a
 * request may still be running here after that: one that request_timeout
 * answered early (kvfs_deadline), or one returning from the writev of its
 * reply. Each request that uses a handle holds it, and release waits until
 * none does before freeing it. */
static struct kvfs_handle *handle_hold(struct fuse_file_info *fi) {
    struct kvfs_handle *h = fi ? handle_of(fi) : NULL;
    if (h)
        atomic_fetch_add(&h->users, 1);
    return h;
}

/* The count drops under the lock release waits on: dropped outside it, the
 * last holder could still be about to lock a handle release has freed. */
static void handle_unhold(struct kvfs_handle *h) {
    if (!h)
        return;
    pthread_mutex_lock(&h->lock);
    if (atomic_fetch_sub(&h->users, 1) == 1)
        pthread_cond_broadcast(&h->idle);
    pthread_mutex_unlock(&h->lock);
}

static void handle_wait_idle(struct kvfs_handle *h) {
    pthread_mutex_lock(&h->lock);
    while (atomic_load(&h->users) > 0)
        pthread_cond_wait(&h->idle, &h->lock);
    pthread_mutex_unlock(&h->lock);
}

static struct kvfs_handle *handle_new(enum handle_kind kind, struct kvfs_inode *ino) {
    struct kvfs_handle *h = kvfs_idmap_alloc(&inherited_fh, sizeof(*h));
    if (!h)
        return NULL;
    h->kind = kind;
    h->fd = -1;
    h->ino = ino;
    pthread_rwlock_init(&h->rw, NULL);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->idle, NULL);
    if (ino)
        kvfs_inode_ref(ino);
    pthread_mutex_lock(&all_handles.lock);
    h->all_next = all_handles.head;
    if (h->all_next)
        h->all_next->all_prev = h;
    all_handles.head = h;
    pthread_mutex_unlock(&all_handles.lock);
    return h;
}

static void writer_remove(struct kvfs_handle *h);

static void handle_free(struct kvfs_handle *h) {
    pthread_mutex_lock(&all_handles.lock);
    if (h->all_prev)
        h->all_prev->all_next = h->all_next;
    else
        all_handles.head = h->all_next;
    if (h->all_next)
        h->all_next->all_prev = h->all_prev;
    pthread_mutex_unlock(&all_handles.lock);
    if (h->fh)
        kvfs_idmap_del(&inherited_fh, h->fh);
    writer_remove(h);
    if (h->indexed_open)
        kvfs_evict_closed(h->parent, h->name);
    if (h->backing)
        kvfs_pt_release(h->ino);
    if (h->fd >= 0)
        close(h->fd);
    if (h->parent)
        kvfs_inode_unref(h->parent);
    if (h->ino)
        kvfs_inode_unref(h->ino);
    free(h->buf);
    kvfs_listing_free(&h->list);
    pthread_rwlock_destroy(&h->rw);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->idle);
    free(h);
}

/* Recent misses. The kernel keeps one dentry per name: the writer's own
 * lookup miss is the dentry its CREATE turns positive, so a negative entry
 * can only outlive the write if a lookup missed after the CREATE. Only then
 * must publication invalidate it (a /dev/fuse round trip otherwise saved).
 * Slots are shared by hash: a collision can cause a needless invalidation,
 * never a missed one. */
#define MISS_SLOTS 65536
static _Atomic uint64_t miss_ns[MISS_SLOTS];

static size_t miss_slot(uint64_t parent, const char *name) {
    uint64_t h = parent * 0x9E3779B97F4A7C15ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001B3ull;
    return (size_t)(h >> 20) % MISS_SLOTS;
}

static void miss_record(uint64_t parent, const char *name) {
    atomic_store_explicit(&miss_ns[miss_slot(parent, name)], kvfs_clock_mono_ns(),
                          memory_order_relaxed);
}

static bool miss_since(uint64_t parent, const char *name, uint64_t since) {
    return atomic_load_explicit(&miss_ns[miss_slot(parent, name)], memory_order_relaxed) >= since;
}

/* Files being written, by name. A file is invisible to every lookup until it
 * is published, except to the thread that created it: that one may stat it,
 * reopen it, or rename it before closing it, as the llm-d fs backend does
 * (each of its tasks renames its temp file while the stream is still open).
 * Such a rename only changes the name the file will be published under.
 * Other threads of the same process see nothing, like other processes: an
 * I/O pool may load a block on one thread while it stores it on another. A
 * thread is recognised by the id the kernel reports, so a writer the daemon
 * cannot see (pid 0, another pid namespace) does not get this. Handles are
 * pinned while another request uses them; release waits for the pins. */
#define WRITER_SLOTS 4096
static pthread_mutex_t writers_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t writers_unpinned = PTHREAD_COND_INITIALIZER;
static struct kvfs_handle *writers[WRITER_SLOTS];

static size_t writer_slot(uint64_t parent, const char *name) {
    return miss_slot(parent, name) % WRITER_SLOTS;
}

static void writer_add_locked(struct kvfs_handle *h, uint64_t parent) {
    size_t s = writer_slot(parent, h->name);
    h->wparent = parent;
    h->wnext = writers[s];
    writers[s] = h;
    h->registered = true;
    kvfs_chan_writing(1);
}

static void writer_unlink_locked(struct kvfs_handle *h) {
    if (!h->registered)
        return;
    struct kvfs_handle **pp = &writers[writer_slot(h->wparent, h->name)];
    while (*pp && *pp != h)
        pp = &(*pp)->wnext;
    if (*pp)
        *pp = h->wnext;
    h->registered = false;
    kvfs_chan_writing(-1);
}

static void writer_add(struct kvfs_handle *h) {
    pthread_mutex_lock(&writers_lock);
    writer_add_locked(h, kvfs_inode_nodeid(h->parent));
    pthread_mutex_unlock(&writers_lock);
}

/* Unregisters H: lookups no longer find it (requests that pinned it may
 * still be using it). */
static void writer_unregister(struct kvfs_handle *h) {
    pthread_mutex_lock(&writers_lock);
    writer_unlink_locked(h);
    pthread_mutex_unlock(&writers_lock);
}

/* Unregisters H and waits until no request uses it. */
static void writer_remove(struct kvfs_handle *h) {
    pthread_mutex_lock(&writers_lock);
    writer_unlink_locked(h);
    while (h->pins > 0)
        pthread_cond_wait(&writers_unpinned, &writers_lock);
    pthread_mutex_unlock(&writers_lock);
}

/* The unpublished file NAME of directory PARENT that process PID is writing,
 * pinned (writer_unpin when done), or NULL. */
static struct kvfs_handle *writer_find_pin(uint64_t parent, const char *name, pid_t pid) {
    if (pid == 0)
        return NULL;
    struct kvfs_handle *found = NULL;
    pthread_mutex_lock(&writers_lock);
    for (struct kvfs_handle *h = writers[writer_slot(parent, name)]; h; h = h->wnext)
        if (h->wparent == parent && strcmp(h->name, name) == 0 && h->opener == pid) {
            found = h;
            h->pins++;
            break;
        }
    pthread_mutex_unlock(&writers_lock);
    return found;
}

/* True if some process is writing NAME in PARENT: a miss must then not be
 * cached, or the kernel would hide the file from its writer too (the dentry
 * cache is shared by all processes). */
static bool writer_exists(uint64_t parent, const char *name) {
    bool found = false;
    pthread_mutex_lock(&writers_lock);
    for (struct kvfs_handle *h = writers[writer_slot(parent, name)]; h && !found; h = h->wnext)
        found = h->wparent == parent && strcmp(h->name, name) == 0;
    pthread_mutex_unlock(&writers_lock);
    return found;
}

/* The file H stages will never be published (a write or truncate failed;
 * its writer was killed, left, or unlinked it): its name stops resolving to
 * it, for its writer too, and its space is freed now, though descriptors
 * stay open. Called with h->rw held exclusively, or shared by a write. */
static void drop_staged(struct kvfs_handle *h) {
    writer_unregister(h);
    kvfs_stage_abandon(&kvfs_d.store, &h->stage);
}

static void writer_unpin(struct kvfs_handle *h) {
    pthread_mutex_lock(&writers_lock);
    if (--h->pins == 0)
        pthread_cond_broadcast(&writers_unpinned);
    pthread_mutex_unlock(&writers_lock);
}

/* Replies with an error, counting it as a refusal of bad input or as a
 * backing-store failure; ordinary outcomes (no such file, exists) are neither. */
static void reply_err(fuse_req_t req, int rc) {
    int e = rc < 0 ? -rc : rc;
    switch (e) {
    case 0:
        break;
    case EPERM:
    case EROFS:
    case ENAMETOOLONG:
    case EINVAL:
        kvfs_stat_inc(&kvfs_d.stats, refused);
        break;
    case ENOENT:
    case EEXIST:
    case ENOTEMPTY:
    case EISDIR:
    case ENOTDIR:
    case ESTALE:
    case ENODATA:
    case EOPNOTSUPP:
    case ERANGE:
    case EACCES:
    case EBADF:
        break;
    default:
        kvfs_stat_inc(&kvfs_d.stats, errors);
        kvfs_debug("request failed: %s", strerror(e));
        break;
    }
    fuse_reply_err(req, e);
}

static bool is_ctl(const struct kvfs_inode *ino) {
    return ino->kind == KVFS_INODE_CTL_DIR || ino->kind == KVFS_INODE_CTL_FILE;
}

/* Timeouts for a published entry (see the file comment). */
static void set_timeouts(struct fuse_entry_param *e, const char *name, mode_t mode) {
    if (S_ISREG(mode) && kvfs_name_is_block(name, NULL)) {
        e->entry_timeout = kvfs_d.cfg.entry_timeout;
        e->attr_timeout = kvfs_d.cfg.attr_timeout;
    } else {
        e->entry_timeout = kvfs_d.cfg.meta_timeout;
        e->attr_timeout = kvfs_d.cfg.meta_timeout;
    }
}

static void ctl_entry(struct kvfs_inode *ino, struct fuse_entry_param *e) {
    memset(e, 0, sizeof(*e));
    e->ino = kvfs_inode_nodeid(ino);
    e->generation = 1;
    kvfs_ctl_stat(ino, &e->attr);
    e->entry_timeout = kvfs_d.cfg.meta_timeout;
    e->attr_timeout = 0;
}

/* Looks NAME up in directory P and takes a kernel reference on the result. */
static int do_lookup(struct kvfs_inode *p, const char *name, struct fuse_entry_param *e) {
    struct stat st;
    enum kvfs_where where;
    memset(e, 0, sizeof(*e));
    int rc = kvfs_entry_stat(p->fd, name, &st, &where);
    if (rc)
        return rc;
    int fd = -1;
    enum kvfs_inode_kind kind = KVFS_INODE_FILE;
    if (S_ISDIR(st.st_mode)) {
        fd = kvfs_open_beneath(p->fd, name, O_PATH | O_DIRECTORY, 0);
        if (fd < 0)
            return fd;
        if (fstat(fd, &st) != 0) {
            rc = -errno;
            close(fd);
            return rc;
        }
        kind = KVFS_INODE_DIR;
    }
    struct kvfs_inode *ino =
        kvfs_inode_lookup(st.st_dev, st.st_ino, &st.st_ctim, kind, fd, p, name, NULL);
    if (!ino)
        return -ENOMEM;
    e->ino = kvfs_inode_nodeid(ino);
    e->generation = 1;
    e->attr = st;
    set_timeouts(e, name, st.st_mode);
    if (kind == KVFS_INODE_FILE)
        kvfs_evict_seen(p, name, &st);
    return 0;
}

/* Opens the backing file of file inode INO with FLAGS and checks that it is
 * still the file the kernel knows: -ESTALE if it was removed or replaced, so
 * that the kernel looks the name up again. With ANY_COPY (readers), a
 * published block is exempt: its content is fixed by its name, so whatever
 * file now holds the name serves as well, and a block that is gone is a
 * plain miss (-ENOENT) rather than ESTALE, which the kernel retries only once
 * and then hands to the application when eviction races it twice. */
static int open_file_inode(struct kvfs_inode *ino, int flags, struct stat *st, bool any_copy) {
    struct kvfs_inode *parent;
    char name[KVFS_NAME_MAX + 1], stage[128];
    if (!kvfs_inode_location(ino, &parent, name, stage))
        return -ESTALE;
    int fd;
    if (stage[0]) {
        fd = openat(kvfs_d.store.staging_fd, stage, flags | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            fd = -errno;
    } else {
        fd = kvfs_entry_open_any(parent->fd, name, flags);
    }
    kvfs_inode_unref(parent);
    any_copy = any_copy && !stage[0] && kvfs_name_is_block(name, NULL);
    if (fd < 0)
        return fd == -ENOENT && !any_copy ? -ESTALE : fd;
    if (fstat(fd, st) != 0 ||
        !(S_ISREG(st->st_mode) || ((flags & O_PATH) && S_ISLNK(st->st_mode))) ||
        (!any_copy && (st->st_dev != ino->dev || st->st_ino != ino->ino))) {
        close(fd);
        return -ESTALE;
    }
    return fd;
}

/* An O_PATH descriptor for any backing inode (close it if it differs from
 * the directory's own descriptor). */
static int path_fd(struct kvfs_inode *ino, struct stat *st) {
    if (ino->kind == KVFS_INODE_DIR) {
        if (fstat(ino->fd, st) != 0)
            return -errno;
        return ino->fd;
    }
    return open_file_inode(ino, O_PATH, st, false);
}

static void put_path_fd(struct kvfs_inode *ino, int fd) {
    if (fd >= 0 && fd != ino->fd)
        close(fd);
}

static double attr_timeout_of(struct kvfs_inode *ino, mode_t mode) {
    if (ino->kind == KVFS_INODE_FILE && S_ISREG(mode)) {
        char name[KVFS_NAME_MAX + 1], stage[128];
        struct kvfs_inode *parent;
        if (!kvfs_inode_location(ino, &parent, name, stage))
            return 0;
        kvfs_inode_unref(parent);
        if (stage[0])
            return 0;
        if (kvfs_name_is_block(name, NULL))
            return kvfs_d.cfg.attr_timeout;
    }
    return kvfs_d.cfg.meta_timeout;
}

/* ---- lifecycle ---- */

static void op_init(void *userdata, struct fuse_conn_info *conn) {
    (void)userdata;
    /* Blocks are immutable: the kernel must not drop cached data whenever
     * mtime looks different, nor buffer writes (write-through is the point,
     * and the writeback cache conflicts with passthrough). */
    conn->want &= ~(unsigned)(FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_WRITEBACK_CACHE);
    unsigned wanted = FUSE_CAP_EXPLICIT_INVAL_DATA | FUSE_CAP_ATOMIC_O_TRUNC |
                      FUSE_CAP_READDIRPLUS | FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_ASYNC_READ;
    conn->want |= conn->capable & wanted;
    conn->max_background = 64;
    conn->congestion_threshold = 48;
    kvfs_pt_expect_init();
}

/* ---- names ---- */

/* The entry of an unpublished file for the process writing it: never cached
 * by the kernel, so that every other process asks again and misses. */
static int lookup_own(struct kvfs_handle *w, struct kvfs_inode *p, const char *name,
                      struct fuse_entry_param *e) {
    memset(e, 0, sizeof(*e));
    if (fstat(w->fd, &e->attr) != 0)
        return -errno;
    struct kvfs_inode *ino = kvfs_inode_lookup(e->attr.st_dev, e->attr.st_ino, NULL,
                                               KVFS_INODE_FILE, -1, p, name, w->stage.sname);
    if (!ino)
        return -ENOMEM;
    e->ino = kvfs_inode_nodeid(ino);
    e->generation = 1;
    return 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
    struct kvfs_inode *p = kvfs_inode_get(parent);
    struct fuse_entry_param e;
    kvfs_stat_inc(&kvfs_d.stats, lookups);
    if (p->kind == KVFS_INODE_CTL_DIR ||
        (p == kvfs_inode_root() && strcmp(name, KVFS_CTL_DIR) == 0)) {
        struct kvfs_inode *c =
            p->kind == KVFS_INODE_CTL_DIR ? kvfs_ctl_lookup(name) : kvfs_ctl_dir();
        if (!c) {
            kvfs_stat_inc(&kvfs_d.stats, lookup_misses);
            reply_err(req, ENOENT);
            return;
        }
        ctl_entry(c, &e);
        fuse_reply_entry(req, &e);
        return;
    }
    if (strlen(name) > KVFS_NAME_MAX) {
        kvfs_debug("lookup of a name longer than %d bytes refused", KVFS_NAME_MAX);
        reply_err(req, ENAMETOOLONG);
        return;
    }
    struct kvfs_handle *w = writer_find_pin(parent, name, fuse_req_ctx(req)->pid);
    if (w) {
        int wrc = lookup_own(w, p, name, &e);
        writer_unpin(w);
        if (wrc == 0) {
            if (fuse_reply_entry(req, &e) != 0)
                kvfs_inode_forget(kvfs_inode_get(e.ino), 1);
            return;
        }
    }
    int rc = kvfs_name_is_reserved(name) ? -ENOENT : do_lookup(p, name, &e);
    if (rc == -ENOENT) {
        kvfs_stat_inc(&kvfs_d.stats, lookup_misses);
        memset(&e, 0, sizeof(e));
        e.entry_timeout = writer_exists(parent, name) ? 0 : kvfs_d.cfg.negative_timeout;
        miss_record(parent, name);
        fuse_reply_entry(req, &e);
        return;
    }
    if (rc) {
        reply_err(req, rc);
        return;
    }
    if (fuse_reply_entry(req, &e) != 0)
        kvfs_inode_forget(kvfs_inode_get(e.ino), 1);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
    kvfs_inode_forget(kvfs_inode_get(ino), nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
    for (size_t i = 0; i < count; i++)
        kvfs_inode_forget(kvfs_inode_get(forgets[i].ino), forgets[i].nlookup);
    fuse_reply_none(req);
}

/* The attributes of INO through a descriptor one of its open handles holds:
 * what fstat() on an open file gets once its name was unlinked, replaced or
 * evicted, with nlink 0 as a local filesystem reports it (mmap loaders stat
 * the descriptor they map). */
static int stat_open_handle(struct kvfs_inode *ino, struct stat *st) {
    int rc = -ESTALE;
    pthread_mutex_lock(&all_handles.lock);
    for (struct kvfs_handle *h = all_handles.head; h; h = h->all_next) {
        /* Not a replacing writer's handle: it holds the new file. */
        if (h->ino == ino && h->fd >= 0 &&
            (h->kind == H_READ || (h->kind == H_STAGE && h->own_inode))) {
            rc = fstat(h->fd, st) == 0 ? 0 : -errno;
            break;
        }
    }
    pthread_mutex_unlock(&all_handles.lock);
    if (rc == 0)
        st->st_nlink = 0;
    return rc;
}

static void serve_getattr(fuse_req_t req, fuse_ino_t nodeid, struct fuse_file_info *fi) {
    struct kvfs_inode *ino = kvfs_inode_get(nodeid);
    struct stat st;
    if (is_ctl(ino)) {
        kvfs_ctl_stat(ino, &st);
        fuse_reply_attr(req, &st, 0);
        return;
    }
    struct kvfs_handle *h = fi ? handle_of(fi) : NULL;
    if (h && h->fd >= 0 && (h->kind == H_STAGE || h->kind == H_READ)) {
        if (fstat(h->fd, &st) != 0) {
            reply_err(req, errno);
            return;
        }
        fuse_reply_attr(req, &st, h->kind == H_STAGE ? 0 : attr_timeout_of(ino, st.st_mode));
        return;
    }
    int fd = path_fd(ino, &st);
    if (fd == -ESTALE && ino->kind == KVFS_INODE_FILE && stat_open_handle(ino, &st) == 0) {
        fuse_reply_attr(req, &st, 0);
        return;
    }
    if (fd < 0) {
        reply_err(req, fd);
        return;
    }
    put_path_fd(ino, fd);
    fuse_reply_attr(req, &st, attr_timeout_of(ino, st.st_mode));
}

static void serve_setattr(fuse_req_t req, fuse_ino_t nodeid, struct stat *attr, int to_set,
                          struct fuse_file_info *fi) {
    struct kvfs_inode *ino = kvfs_inode_get(nodeid);
    if (is_ctl(ino)) {
        reply_err(req, EROFS);
        return;
    }
    struct kvfs_handle *h = fi ? handle_of(fi) : NULL;
    struct stat st;
    int rc = 0;
    if (to_set & FUSE_SET_ATTR_SIZE) {
        /* Only a file still being written may change size. */
        if (!h || h->kind != H_STAGE) {
            kvfs_debug("truncate of a published file refused");
            reply_err(req, EPERM);
            return;
        }
        pthread_rwlock_wrlock(&h->rw);
        pthread_mutex_lock(&h->lock);
        enum kvfs_pub_action act = kvfs_pub_decide(&h->pub, KVFS_EV_TRUNCATE);
        if (act == KVFS_ACT_PROCEED) {
            rc = ftruncate(h->fd, attr->st_size) == 0 ? 0 : -errno;
            if (rc)
                kvfs_pub_fail(&h->pub, rc);
            else
                kvfs_pub_wrote(&h->pub);
        } else {
            rc = act == KVFS_ACT_REFUSE ? -EPERM : h->pub.error;
        }
        pthread_mutex_unlock(&h->lock);
        if (rc && act == KVFS_ACT_PROCEED)
            drop_staged(h);
        pthread_rwlock_unlock(&h->rw);
        if (rc) {
            reply_err(req, rc);
            return;
        }
    }
    int fd = (h && h->fd >= 0) ? h->fd : path_fd(ino, &st);
    if (fd < 0) {
        reply_err(req, fd);
        return;
    }
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    if (!rc && (to_set & FUSE_SET_ATTR_MODE))
        rc = chmod(proc, attr->st_mode & 07777) == 0 ? 0 : -errno;
    if (!rc && (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
        uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
        gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;
        rc = fchownat(fd, "", uid, gid, AT_EMPTY_PATH) == 0 ? 0 : -errno;
    }
    if (!rc && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
        struct timespec tv[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
        if (to_set & FUSE_SET_ATTR_ATIME_NOW)
            tv[0].tv_nsec = UTIME_NOW;
        else if (to_set & FUSE_SET_ATTR_ATIME)
            tv[0] = attr->st_atim;
        if (to_set & FUSE_SET_ATTR_MTIME_NOW)
            tv[1].tv_nsec = UTIME_NOW;
        else if (to_set & FUSE_SET_ATTR_MTIME)
            tv[1] = attr->st_mtim;
        rc = utimensat(AT_FDCWD, proc, tv, 0) == 0 ? 0 : -errno;
    }
    if (!rc && fstatat(fd, "", &st, AT_EMPTY_PATH) != 0)
        rc = -errno;
    if (!(h && h->fd >= 0))
        put_path_fd(ino, fd);
    if (rc) {
        reply_err(req, rc);
        return;
    }
    fuse_reply_attr(req, &st, (h && h->kind == H_STAGE) ? 0 : attr_timeout_of(ino, st.st_mode));
}

/* Checks a name a client wants to create in directory P. */
static int check_new_name(struct kvfs_inode *p, const char *name) {
    if (is_ctl(p) || (p == kvfs_inode_root() && strcmp(name, KVFS_CTL_DIR) == 0))
        return -EROFS;
    if (p->kind != KVFS_INODE_DIR)
        return -ENOTDIR;
    int rc = kvfs_name_check(name);
    if (rc == -EPERM)
        kvfs_debug("refusing to create '%s': names starting with %s are reserved", name,
                   KVFS_RESERVED_PREFIX);
    else if (rc == -ENAMETOOLONG)
        kvfs_debug("refusing a name longer than %d bytes", KVFS_NAME_MAX);
    return rc;
}

/* Checks a name a client wants to remove or rename from directory P: kvfs's
 * own names are invisible (ENOENT), the control directory read-only. */
static int check_old_name(struct kvfs_inode *p, const char *name) {
    if (is_ctl(p) || (p == kvfs_inode_root() && strcmp(name, KVFS_CTL_DIR) == 0))
        return -EROFS;
    if (p->kind != KVFS_INODE_DIR)
        return -ENOTDIR;
    if (strlen(name) > KVFS_NAME_MAX)
        return -ENAMETOOLONG;
    return kvfs_name_is_reserved(name) ? -ENOENT : 0;
}

/* Replies to a request that made NAME in P (RC: how making it went): as
 * root, the entry is given to the requester, then looked up for the reply. */
static void reply_made(fuse_req_t req, struct kvfs_inode *p, const char *name, int rc) {
    if (!rc && kvfs_d.is_root) {
        const struct fuse_ctx *ctx = fuse_req_ctx(req);
        if (fchownat(p->fd, name, ctx->uid, ctx->gid, AT_SYMLINK_NOFOLLOW) != 0)
            rc = -errno;
    }
    struct fuse_entry_param e;
    if (!rc)
        rc = do_lookup(p, name, &e);
    if (rc) {
        reply_err(req, rc);
        return;
    }
    if (fuse_reply_entry(req, &e) != 0)
        kvfs_inode_forget(kvfs_inode_get(e.ino), 1);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
    struct kvfs_inode *p = kvfs_inode_get(parent);
    int rc = check_new_name(p, name);
    if (!rc)
        rc = kvfs_entry_mkdir(p->fd, name, mode & 07777);
    reply_made(req, p, name, rc);
}

static void abort_handle(struct kvfs_handle *h, const char *why);

/* unlink() of its own unpublished file by the process writing it: succeeds
 * and aborts the file, as removing a file being written does on a local
 * filesystem. Returns 1 if W was published meanwhile (unlink it normally). */
static int unlink_own(struct kvfs_handle *w) {
    pthread_rwlock_wrlock(&w->rw);
    pthread_mutex_lock(&w->lock);
    enum kvfs_pub_action act = kvfs_pub_decide(&w->pub, KVFS_EV_ABORT);
    bool unpublished = w->pub.state != KVFS_PUB_PUBLISHED;
    if (act == KVFS_ACT_ABORT)
        kvfs_pub_abort(&w->pub);
    pthread_mutex_unlock(&w->lock);
    if (act == KVFS_ACT_ABORT)
        abort_handle(w, "removed it");
    pthread_rwlock_unlock(&w->rw);
    return unpublished ? 0 : 1;
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
    struct kvfs_inode *p = kvfs_inode_get(parent);
    int rc = check_old_name(p, name);
    if (!rc) {
        struct kvfs_handle *w = writer_find_pin(parent, name, fuse_req_ctx(req)->pid);
        int own = w ? unlink_own(w) : 1;
        if (w)
            writer_unpin(w);
        if (own == 0) {
            kvfs_stat_inc(&kvfs_d.stats, unlinks);
            reply_err(req, 0);
            return;
        }
    }
    if (!rc)
        rc = kvfs_entry_unlink(p->fd, name);
    if (!rc) {
        kvfs_stat_inc(&kvfs_d.stats, unlinks);
        kvfs_evict_gone(p, name);
    }
    reply_err(req, rc);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
    struct kvfs_inode *p = kvfs_inode_get(parent);
    int rc = check_old_name(p, name);
    if (!rc)
        rc = kvfs_entry_rmdir(p->fd, name);
    reply_err(req, rc);
}

/* Renames regular file NAME (found at WHERE in P) to NEWNAME in NP. A block
 * destination follows the publication rule: link, and if a block of that name
 * already exists, keep it and drop the source. */
static int rename_file(struct kvfs_inode *p, const char *name, enum kvfs_where where,
                       const struct stat *src, struct kvfs_inode *np, const char *newname,
                       unsigned flags) {
    /* A symbolic link stays a plain entry whatever its name. */
    bool link_src = S_ISLNK(src->st_mode);
    bool block_dst = !link_src && kvfs_name_is_block(newname, NULL);
    struct stat dst;
    enum kvfs_where dwhere;
    int rc = kvfs_entry_stat(np->fd, newname, &dst, &dwhere);
    if (rc == 0 && S_ISDIR(dst.st_mode))
        return -EISDIR;
    if (rc == 0 && link_src && dwhere == KVFS_IN_BUCKET)
        return -EEXIST; /* a link must not be shadowed by the block it would replace */
    if (rc == 0 && dst.st_dev == src->st_dev && dst.st_ino == src->st_ino)
        return 0; /* the same file: nothing to do */
    if (rc == 0 && (flags & RENAME_NOREPLACE))
        return -EEXIST;
    if (rc && rc != -ENOENT)
        return rc;
    int spfd = where == KVFS_IN_BUCKET ? kvfs_entry_parent(p->fd, name, false) : p->fd;
    if (spfd < 0)
        return spfd;
    int dpfd = link_src ? np->fd : kvfs_entry_parent(np->fd, newname, true);
    if (dpfd < 0) {
        rc = dpfd;
    } else if (block_dst || (flags & RENAME_NOREPLACE)) {
        if (linkat(spfd, name, dpfd, newname, 0) == 0) {
            rc = unlinkat(spfd, name, 0) == 0 ? 0 : -errno;
        } else if (errno == EEXIST && block_dst && !(flags & RENAME_NOREPLACE)) {
            /* First complete block wins; the renamed copy is dropped. */
            kvfs_stat_inc(&kvfs_d.stats, publish_conflicts);
            rc = unlinkat(spfd, name, 0) == 0 ? 0 : -errno;
        } else {
            rc = -errno;
        }
    } else {
        rc = renameat(spfd, name, dpfd, newname) == 0 ? 0 : -errno;
    }
    if (dpfd >= 0 && dpfd != np->fd)
        close(dpfd);
    if (spfd != p->fd)
        close(spfd);
    return rc;
}

/* Renames the unpublished file of W to NP/NEWNAME: it will be published under
 * that name. Returns 1 if W was published meanwhile (rename it normally). */
static int rename_own(struct kvfs_handle *w, struct kvfs_inode *np, const char *newname,
                      unsigned flags) {
    struct stat dst;
    enum kvfs_where where;
    int found = kvfs_entry_stat(np->fd, newname, &dst, &where);
    if (found == 0 && S_ISDIR(dst.st_mode))
        return -EISDIR;
    if (found == 0 && (flags & RENAME_NOREPLACE))
        return -EEXIST;
    pthread_rwlock_wrlock(&w->rw);
    pthread_mutex_lock(&w->lock);
    int rc = 1;
    if (w->pub.state == KVFS_PUB_STAGING) {
        kvfs_inode_ref(np);
        kvfs_inode_unref(w->parent);
        pthread_mutex_lock(&writers_lock);
        writer_unlink_locked(w);
        w->parent = np;
        snprintf(w->name, sizeof(w->name), "%s", newname);
        writer_add_locked(w, kvfs_inode_nodeid(np));
        pthread_mutex_unlock(&writers_lock);
        w->exclusive = (flags & RENAME_NOREPLACE) != 0;
        kvfs_inode_retarget(w->ino, np, newname);
        rc = 0;
    }
    pthread_mutex_unlock(&w->lock);
    pthread_rwlock_unlock(&w->rw);
    return rc;
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags) {
    struct kvfs_inode *p = kvfs_inode_get(parent);
    struct kvfs_inode *np = kvfs_inode_get(newparent);
    int rc = check_old_name(p, name);
    if (!rc)
        rc = check_new_name(np, newname);
    if (!rc && (flags & ~(unsigned)RENAME_NOREPLACE))
        rc = -EINVAL; /* RENAME_EXCHANGE/WHITEOUT have no atomic equivalent on shared storage */
    if (!rc) {
        struct kvfs_handle *w = writer_find_pin(parent, name, fuse_req_ctx(req)->pid);
        int own = w ? rename_own(w, np, newname, flags) : 1;
        if (w)
            writer_unpin(w);
        if (own <= 0) {
            if (own == 0)
                kvfs_stat_inc(&kvfs_d.stats, renames);
            reply_err(req, own);
            return;
        }
    }
    struct stat src;
    enum kvfs_where where;
    if (!rc)
        rc = kvfs_entry_stat(p->fd, name, &src, &where);
    if (!rc && S_ISDIR(src.st_mode)) {
        struct stat dst;
        enum kvfs_where dwhere;
        if (kvfs_entry_stat(np->fd, newname, &dst, &dwhere) == 0 && dwhere == KVFS_IN_BUCKET)
            rc = -ENOTDIR;
        else
            rc = renameat2(p->fd, name, np->fd, newname, flags) == 0 ? 0 : -errno;
    } else if (!rc) {
        rc = rename_file(p, name, where, &src, np, newname, flags);
        if (!rc) {
            kvfs_inode_move_key(src.st_dev, src.st_ino, np, newname);
            kvfs_evict_gone(p, name);
            kvfs_evict_seen(np, newname, &src);
        }
    }
    if (!rc)
        kvfs_stat_inc(&kvfs_d.stats, renames);
    reply_err(req, rc);
}

static void op_refuse_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
                           const char *newname) {
    (void)ino, (void)newparent;
    kvfs_debug("hard link '%s' refused: kvfs stores no links", newname);
    reply_err(req, EPERM);
}

/* Symbolic links are stored as links among a directory's plain entries
 * (never in a block bucket). The daemon never follows one: every backing path
 * is resolved without following links, and only the kernel, on the client's
 * side of the mount, follows what READLINK returns. */
static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
    struct kvfs_inode *p = kvfs_inode_get(parent);
    int rc = check_new_name(p, name);
    struct stat st;
    enum kvfs_where where;
    if (!rc && strlen(link) >= PATH_MAX)
        rc = -ENAMETOOLONG;
    if (!rc) {
        int found = kvfs_entry_stat(p->fd, name, &st, &where);
        rc = found == 0 || found == -EPERM ? -EEXIST : found == -ENOENT ? 0 : found;
    }
    if (!rc)
        rc = symlinkat(link, p->fd, name) == 0 ? 0 : -errno;
    reply_made(req, p, name, rc);
}

static void op_readlink(fuse_req_t req, fuse_ino_t nodeid) {
    struct kvfs_inode *ino = kvfs_inode_get(nodeid);
    struct kvfs_inode *parent;
    char name[KVFS_NAME_MAX + 1], stage[128], target[PATH_MAX];
    struct stat st;
    int rc = -EINVAL;
    ssize_t n = -1;
    if (ino->kind == KVFS_INODE_FILE && kvfs_inode_location(ino, &parent, name, stage)) {
        /* Only the link this node id names: not another file of its name. */
        rc = fstatat(parent->fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0                 ? -errno
             : !S_ISLNK(st.st_mode) || st.st_dev != ino->dev || st.st_ino != ino->ino ? -ESTALE
                                                                                      : 0;
        if (!rc && (n = readlinkat(parent->fd, name, target, sizeof(target) - 1)) < 0)
            rc = -errno;
        kvfs_inode_unref(parent);
    }
    if (rc) {
        reply_err(req, rc);
        return;
    }
    target[n] = '\0';
    fuse_reply_readlink(req, target);
}

static void op_refuse_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                            dev_t rdev) {
    (void)parent, (void)mode, (void)rdev;
    kvfs_debug("special file '%s' refused: kvfs stores regular files only", name);
    reply_err(req, EPERM);
}

/* ---- files ---- */

/* True if thread PID belongs to process TGID. A pid the daemon cannot see
 * (0: another pid namespace, only with unseen_writers=trust) counts as the
 * opener's, so that such a writer has its file published by close(). The
 * thread group's directory stays while any of its threads lives, the one
 * closing included. */
static bool same_process(pid_t pid, pid_t tgid) {
    if (pid == 0 || tgid == 0 || pid == tgid)
        return true;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d", (int)tgid, (int)pid);
    return access(path, F_OK) == 0;
}

/* Publishes a staged handle; called with h->rw held exclusively. */
static int publish_handle(struct kvfs_handle *h, const char *why) {
    writer_unregister(h); /* from now on its name resolves in the backing store */
    int rc = 0;
    struct stat st;
    bool block = kvfs_name_is_block(h->name, NULL);
    if (block && kvfs_evict_enabled()) {
        /* The capacity: refuse what eviction cannot make room for. */
        rc = fstat(h->fd, &st) == 0 ? kvfs_evict_admit((uint64_t)st.st_size) : -errno;
        if (rc == -ENOSPC)
            kvfs_warn("not publishing '%s': over capacity and nothing can be evicted", h->name);
    }
    if (rc)
        drop_staged(h);
    else
        rc = kvfs_stage_publish(&kvfs_d.store, &h->stage, h->parent->fd, h->name, h->exclusive,
                                h->replace, kvfs_d.cfg.durable);
    pthread_mutex_lock(&h->lock);
    kvfs_pub_published(&h->pub, rc);
    pthread_mutex_unlock(&h->lock);
    if (rc == KVFS_PUBLISHED && block && fstat(h->fd, &st) == 0)
        kvfs_evict_seen(h->parent, h->name, &st);
    if (rc == KVFS_PUBLISHED) {
        if (block)
            kvfs_stat_inc(&kvfs_d.stats, blocks_published);
        else
            kvfs_stat_inc(&kvfs_d.stats, files_published);
        kvfs_debug("published '%s' at %s", h->name, why);
    } else if (rc == KVFS_DISCARDED) {
        kvfs_stat_inc(&kvfs_d.stats, publish_conflicts);
        kvfs_debug("block '%s' already published; this copy was discarded", h->name);
    } else {
        kvfs_stat_inc(&kvfs_d.stats, publish_errors);
        kvfs_warn("publishing '%s' failed at %s: %s", h->name, why, strerror(-rc));
    }
    if (h->own_inode) {
        kvfs_inode_move(h->ino, h->parent, h->name);
        kvfs_inode_detach(h->ino); /* readers get their own node (see there) */
    }
    /* A writer that reopened a gone inode (retired from passthrough) or
     * replaced a published file leaves the kernel's entry pointing to the old
     * inode; and another process that missed this name while it was being
     * written holds a negative entry. Either way, drop the entry so that the
     * name is looked up again now. */
    bool retired = !h->own_inode && h->ino && (h->ino->pt_retired || h->replace);
    if ((rc == KVFS_PUBLISHED || rc == KVFS_DISCARDED) &&
        (retired ||
         (rc == KVFS_PUBLISHED && miss_since(kvfs_inode_nodeid(h->parent), h->name, h->created)))) {
        fuse_lowlevel_notify_inval_entry(kvfs_d.se, kvfs_inode_nodeid(h->parent), h->name,
                                         strlen(h->name));
    }
    return rc < 0 ? rc : 0;
}

/* Creates a staged handle for PARENT/NAME. */
static int stage_handle(fuse_req_t req, struct kvfs_inode *ino, struct kvfs_inode *parent,
                        const char *name, int flags, mode_t mode, struct kvfs_handle **out) {
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    if (ctx->pid == 0 && !kvfs_d.cfg.trust_unseen) {
        kvfs_warn("refusing to write '%s' for a process in a pid namespace this daemon cannot "
                  "see: its death could not be told from its close() (run the daemon in the "
                  "host's pid namespace, or -o unseen_writers=trust)",
                  name);
        return -EPERM;
    }
    int rc = kvfs_fault(KVFS_FAULT_CREATE, name);
    if (rc)
        return rc;
    struct kvfs_handle *h = handle_new(H_STAGE, ino);
    if (!h)
        return -ENOMEM;
    rc = kvfs_stage_create(&kvfs_d.store, flags, mode, kvfs_d.is_root, ctx->uid, ctx->gid,
                           &h->stage);
    if (rc) {
        handle_free(h);
        return rc;
    }
    h->fd = h->stage.fd;
    h->parent = parent;
    kvfs_inode_ref(parent);
    snprintf(h->name, sizeof(h->name), "%s", name);
    h->exclusive = (flags & O_EXCL) != 0;
    h->opener = ctx->pid;
    h->opener_tgid = kvfs_proc_tgid(ctx->pid);
    h->created = kvfs_clock_mono_ns();
    h->pub.state = KVFS_PUB_STAGING;
    *out = h;
    return 0;
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi) {
    struct kvfs_inode *p = kvfs_inode_get(parent);
    int rc = check_new_name(p, name);
    struct stat st;
    enum kvfs_where where;
    if (!rc) {
        int found = kvfs_entry_stat(p->fd, name, &st, &where);
        if (found == 0 && S_ISDIR(st.st_mode))
            rc = -EISDIR;
        else if (found == 0 && (fi->flags & O_EXCL))
            rc = -EEXIST;
        else if (found && found != -ENOENT)
            rc = found;
    }
    struct kvfs_handle *h = NULL;
    if (!rc)
        rc = stage_handle(req, NULL, p, name, fi->flags, mode, &h);
    if (rc) {
        reply_err(req, rc);
        return;
    }
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    if (fstat(h->fd, &e.attr) != 0) {
        rc = -errno;
        kvfs_stage_discard(&kvfs_d.store, &h->stage);
        handle_free(h);
        reply_err(req, rc);
        return;
    }
    struct kvfs_inode *ino = kvfs_inode_lookup(e.attr.st_dev, e.attr.st_ino, &e.attr.st_ctim,
                                               KVFS_INODE_FILE, -1, p, name, h->stage.sname);
    if (!ino) {
        kvfs_stage_discard(&kvfs_d.store, &h->stage);
        handle_free(h);
        reply_err(req, ENOMEM);
        return;
    }
    h->ino = ino;
    h->own_inode = true;
    kvfs_inode_ref(ino);
    writer_add(h);
    e.ino = kvfs_inode_nodeid(ino);
    e.generation = 1;
    e.entry_timeout = 0; /* invisible to every other lookup until published */
    /* Only the writer holds this inode (any other process must look the name
     * up and misses), so caching its attributes is safe, and it saves the
     * GETATTR round trip the kernel makes before the first write. */
    e.attr_timeout = kvfs_d.cfg.meta_timeout;
    fi->fh = handle_fh(h);
    /* Writes go through the daemon, never passthrough: only here can a
     * failed write (ENOSPC, EIO) be seen, and the direct I/O this path uses
     * makes the kernel refuse shared mappings of the file, whose writes could
     * otherwise change it after publication. */
    setup_data_path(fi, h, -1, true, false);
    kvfs_stat_inc(&kvfs_d.stats, creates);
    if (fuse_reply_create(req, &e, fi) != 0) {
        /* The caller is gone (interrupted): no RELEASE will come. */
        kvfs_stage_discard(&kvfs_d.store, &h->stage);
        handle_free(h);
        kvfs_inode_forget(ino, 1);
    }
}

/* Chooses how a new handle's data moves, and arms the reply patch (call it
 * right before fuse_reply_open/create). Without passthrough, through the
 * daemon with direct I/O, so that the data sits once in the backing store's
 * page cache rather than twice. With it, every open of an inode carries the
 * inode's one backing id (registered from BACKING_FD, the file its reads
 * come from), even an open served THROUGH_DAEMON: the kernel fails with EIO
 * an open without FOPEN_PASSTHROUGH of an inode that is open in passthrough,
 * and two opens racing through the daemon cannot know which reply the kernel
 * applies first. FOPEN_DIRECT_IO then takes precedence for reads and writes
 * (the kernel serves only mmap from the backing file). GONE: the inode's own
 * file is no longer at its name (BACKING_FD is -1, or another copy of the
 * block), so none is registered: an id the inode already has is shared, and
 * without one the inode is retired from passthrough (see
 * kvfs_pt_acquire_existing), so no racing open can get one the kernel would
 * apply before this reply. */
static void setup_data_path(struct fuse_file_info *fi, struct kvfs_handle *h, int backing_fd,
                            bool through_daemon, bool gone) {
    static _Atomic bool warned;
    fi->direct_io = 1;
    fi->keep_cache = 0;
    if (kvfs_pt_active()) {
        int id = backing_fd >= 0 && !gone ? kvfs_pt_acquire(h->ino, backing_fd)
                                          : kvfs_pt_acquire_existing(h->ino, gone);
        if (id > 0) {
            h->backing = true;
            fi->direct_io = through_daemon;
            if (!through_daemon)
                kvfs_stat_inc(&kvfs_d.stats, passthrough_opens);
            kvfs_pt_reply_with(id, through_daemon);
            return;
        }
        if (id < 0 && !atomic_exchange(&warned, true))
            kvfs_warn("passthrough refused for an open (%s); serving it through the daemon",
                      strerror(-id));
    }
    kvfs_pt_reply_cancel();
}

/* Read faults are matched by name, so a fault-injection build names every
 * read handle; otherwise only eviction needs the name. */
#ifdef KVFS_FAULT_INJECTION
#define NAME_READERS true
#else
#define NAME_READERS false
#endif

static void op_open(fuse_req_t req, fuse_ino_t nodeid, struct fuse_file_info *fi) {
    struct kvfs_inode *ino = kvfs_inode_get(nodeid);
    int acc = fi->flags & O_ACCMODE;
    /* O_APPEND alone does not write: a read-only open is a read-only open. */
    bool writing = acc != O_RDONLY || (fi->flags & O_TRUNC);
    struct kvfs_handle *h = NULL;
    int rc = 0, pub_fd = -1;
    bool foreign = false; /* a reader got another copy of the block than its inode's */
    if (ino->kind == KVFS_INODE_CTL_FILE) {
        if (writing) {
            kvfs_debug("write to the control directory refused");
            reply_err(req, EROFS);
            return;
        }
        h = handle_new(H_CTL, ino);
        rc = h ? kvfs_ctl_render(ino, &h->buf, &h->len) : -ENOMEM;
        fi->direct_io = 1;
    } else if (ino->kind != KVFS_INODE_FILE) {
        rc = -EISDIR;
    } else if (writing) {
        struct kvfs_inode *parent;
        char name[KVFS_NAME_MAX + 1], stage[128];
        if (!(fi->flags & O_TRUNC) || acc == O_RDONLY) {
            kvfs_debug("open for writing without O_TRUNC refused: published files are immutable");
            rc = -EPERM;
        } else if (!kvfs_inode_location(ino, &parent, name, stage)) {
            rc = -ESTALE;
        } else {
            /* O_TRUNC on a published file stages a new version; the
             * published one stays readable until that is published. With
             * passthrough, the published file is what the inode's backing
             * id must be registered from (see setup_data_path). */
            struct stat st = {.st_mode = S_IFREG | 0644};
            int fd = stage[0]
                         ? -EPERM
                         : open_file_inode(ino, kvfs_pt_active() ? O_RDONLY : O_PATH, &st, false);
            if (fd == -EACCES && !stage[0])
                fd = open_file_inode(ino, O_PATH, &st, false);
            if (fd >= 0 || fd == -ESTALE) {
                /* ESTALE: evicted or replaced since the lookup. The writer
                 * replaces the whole file anyway, so it writes a new one
                 * under the name rather than fail (the kernel retries an
                 * ESTALE open only once, and eviction can race twice). */
                rc = stage_handle(req, ino, parent, name, fi->flags, st.st_mode, &h);
                if (rc == 0)
                    h->replace = true;
                pub_fd = fd;
            } else {
                rc = fd; /* EPERM: reopening an unpublished file for writing */
            }
            kvfs_inode_unref(parent);
        }
    } else {
        struct stat st;
        int fd = open_file_inode(ino, O_RDONLY | (fi->flags & O_DIRECT), &st, true);
        if (fd >= 0 && (fi->flags & O_DIRECT))
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_DIRECT);
        foreign = fd >= 0 && (st.st_dev != ino->dev || st.st_ino != ino->ino);
        if (fd < 0) {
            rc = fd;
        } else if (!(h = handle_new(H_READ, ino))) {
            close(fd);
            rc = -ENOMEM;
        } else {
            h->fd = fd;
            fi->noflush = 1;
            /* Count the block open here (never evicted while open) and record
             * the access in the backing store. */
            char stg[128];
            struct kvfs_inode *par;
            if ((kvfs_evict_enabled() || NAME_READERS) &&
                kvfs_inode_location(ino, &par, h->name, stg)) {
                if (kvfs_evict_enabled() && !stg[0] && kvfs_name_is_block(h->name, NULL)) {
                    h->parent = par; /* the handle keeps this reference */
                    h->indexed_open = true;
                    kvfs_evict_opened(par, h->name, fd);
                } else {
                    kvfs_inode_unref(par);
                }
            }
        }
    }
    if (rc) {
        if (h)
            handle_free(h);
        if (pub_fd >= 0)
            close(pub_fd);
        reply_err(req, rc);
        return;
    }
    kvfs_stat_inc(&kvfs_d.stats, opens);
    fi->fh = handle_fh(h);
    if (h->kind == H_READ)
        setup_data_path(fi, h, h->fd, false, foreign);
    else if (h->kind == H_STAGE)
        setup_data_path(fi, h, pub_fd, true, pub_fd == -ESTALE);
    if (pub_fd >= 0)
        close(pub_fd); /* a registered backing file keeps its own reference */
    if (fuse_reply_open(req, fi) != 0) {
        if (h->kind == H_STAGE)
            kvfs_stage_discard(&kvfs_d.store, &h->stage);
        handle_free(h);
    }
}

/* Each worker thread reuses one read buffer. libfuse ends idle workers, so the
 * buffer is freed by a thread-exit destructor rather than left behind. */
struct read_buf {
    char *p;
    size_t cap;
};
static pthread_key_t read_key;
static pthread_once_t read_key_once = PTHREAD_ONCE_INIT;

static void read_buf_free(void *v) {
    struct read_buf *b = v;
    free(b->p);
    free(b);
}

static void read_key_init(void) {
    pthread_key_create(&read_key, read_buf_free);
}

/* This thread's buffer of at least SIZE bytes, or NULL. */
static char *thread_read_buf(size_t size) {
    pthread_once(&read_key_once, read_key_init);
    struct read_buf *b = pthread_getspecific(read_key);
    if (!b) {
        b = calloc(1, sizeof(*b));
        if (!b || pthread_setspecific(read_key, b) != 0) {
            free(b);
            return NULL;
        }
    }
    if (b->cap < size) {
        char *p = realloc(b->p, size);
        if (!p)
            return NULL;
        b->p = p;
        b->cap = size;
    }
    return b->p;
}

static void serve_read(fuse_req_t req, fuse_ino_t nodeid, size_t size, off_t off,
                       struct fuse_file_info *fi) {
    (void)nodeid;
    struct kvfs_handle *h = handle_of(fi);
    if (h->kind == H_CTL) {
        /* Sent from h->buf: op_read holds the handle, so a RELEASE that
         * follows the reply cannot free it while writev is returning. */
        size_t start = (size_t)off < h->len ? (size_t)off : h->len;
        size_t n = h->len - start < size ? h->len - start : size;
        fuse_reply_buf(req, h->buf + start, n);
        return;
    }
    char *read_buf = thread_read_buf(size);
    if (!read_buf) {
        reply_err(req, ENOMEM);
        return;
    }
    ssize_t n = kvfs_fault(KVFS_FAULT_READ, h->name);
    if (n == 0 && (n = pread(h->fd, read_buf, size, off)) < 0)
        n = -errno;
    if (n < 0) {
        reply_err(req, (int)-n);
        return;
    }
    kvfs_stat_inc(&kvfs_d.stats, read_requests);
    kvfs_stat_add(&kvfs_d.stats, bytes_read, n);
    fuse_reply_buf(req, read_buf, (size_t)n);
}

static void serve_write_buf(fuse_req_t req, fuse_ino_t nodeid, struct fuse_bufvec *in, off_t off,
                            struct fuse_file_info *fi) {
    (void)nodeid;
    struct kvfs_handle *h = handle_of(fi);
    if (h->kind != H_STAGE) {
        reply_err(req, EBADF);
        return;
    }
    pthread_rwlock_rdlock(&h->rw);
    pthread_mutex_lock(&h->lock);
    enum kvfs_pub_action act = kvfs_pub_decide(&h->pub, KVFS_EV_WRITE);
    int err = act == KVFS_ACT_REFUSE ? -EPERM : h->pub.error;
    pthread_mutex_unlock(&h->lock);
    if (act != KVFS_ACT_PROCEED) {
        pthread_rwlock_unlock(&h->rw);
        if (act == KVFS_ACT_REFUSE)
            kvfs_debug("write to published file '%s' refused", h->name);
        reply_err(req, err);
        return;
    }
    struct fuse_bufvec dst = FUSE_BUFVEC_INIT(fuse_buf_size(in));
    dst.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
    dst.buf[0].fd = h->fd;
    dst.buf[0].pos = off;
    ssize_t n = kvfs_fault(KVFS_FAULT_WRITE, h->name);
    if (n == 0)
        n = fuse_buf_copy(&dst, in, 0);
    if (n < 0) {
        /* A failed write fails the whole file: it must never be published
         * with a hole, even if the writer ignores this error. */
        pthread_mutex_lock(&h->lock);
        kvfs_pub_fail(&h->pub, (int)n);
        pthread_mutex_unlock(&h->lock);
        drop_staged(h);
        pthread_rwlock_unlock(&h->rw);
        kvfs_warn("write to '%s' failed: %s; it will not be published", h->name, strerror((int)-n));
        reply_err(req, (int)n);
        return;
    }
    pthread_mutex_lock(&h->lock);
    kvfs_pub_wrote(&h->pub);
    pthread_mutex_unlock(&h->lock);
    pthread_rwlock_unlock(&h->rw);
    kvfs_stat_inc(&kvfs_d.stats, write_requests);
    kvfs_stat_add(&kvfs_d.stats, bytes_written, n);
    fuse_reply_write(req, (size_t)n);
}

/* What a close() by thread PID means for the file H stages. A process that
 * is being killed publishes nothing, whoever opened the file: it may have
 * been halfway through a write. One that exits without having closed the
 * block it opened never completed it; a plain file is published as on any
 * filesystem (a shell redirect). */
static enum kvfs_pub_event flush_event(struct kvfs_handle *h, pid_t pid) {
    bool opener = pid == h->opener || same_process(pid, h->opener_tgid);
    switch (kvfs_proc_state_of(pid)) {
    case KVFS_PROC_KILLED:
        return KVFS_EV_ABORT;
    case KVFS_PROC_EXITED:
        if (opener && kvfs_name_is_block(h->name, NULL))
            return KVFS_EV_ABORT;
        break;
    case KVFS_PROC_UNKNOWN:
        /* Only a writer the daemon cannot see (unseen_writers=trust), since
         * the thread is waiting for this reply: nothing can be known. */
    case KVFS_PROC_RUNNING:
        break;
    }
    return opener ? KVFS_EV_FLUSH_OPENER : KVFS_EV_FLUSH_OTHER;
}

/* Drops the staging file of H, whose writer died or unlinked it: its space
 * is freed now, and its name is free for the next writer. Called with h->rw
 * held exclusively. */
static void abort_handle(struct kvfs_handle *h, const char *why) {
    drop_staged(h);
    kvfs_stat_inc(&kvfs_d.stats, writes_aborted);
    kvfs_info("'%s' was not published: its writer %s", h->name, why);
}

static void serve_flush(fuse_req_t req, fuse_ino_t nodeid, struct fuse_file_info *fi) {
    (void)nodeid;
    struct kvfs_handle *h = handle_of(fi);
    if (h->kind != H_STAGE) {
        reply_err(req, 0);
        return;
    }
    pthread_rwlock_wrlock(&h->rw);
    /* The state changes only under h->rw held exclusively, as here: the
     * closing process is looked up in /proc only while that can matter. */
    pthread_mutex_lock(&h->lock);
    bool staging = h->pub.state == KVFS_PUB_STAGING;
    pthread_mutex_unlock(&h->lock);
    enum kvfs_pub_event ev = staging ? flush_event(h, fuse_req_ctx(req)->pid) : KVFS_EV_FLUSH_OTHER;
    pthread_mutex_lock(&h->lock);
    enum kvfs_pub_action act = kvfs_pub_decide(&h->pub, ev);
    int rc = act == KVFS_ACT_FAILED ? h->pub.error : 0;
    /* Not a quiet abort (as an unlink is): whoever holds the file still
     * learns that it was lost, at its next write or close. */
    if (act == KVFS_ACT_ABORT)
        kvfs_pub_fail(&h->pub, -EIO);
    pthread_mutex_unlock(&h->lock);
    if (act == KVFS_ACT_PUBLISH)
        rc = publish_handle(h, "close");
    else if (act == KVFS_ACT_ABORT)
        abort_handle(h, "was killed or left without closing it");
    pthread_rwlock_unlock(&h->rw);
    reply_err(req, rc);
}

/* The last close of a handle: a writer's file is published if that is still
 * due, its staging file removed otherwise. */
static void release_handle(struct kvfs_handle *h) {
    handle_wait_idle(h);
    if (h->kind == H_STAGE) {
        pthread_rwlock_wrlock(&h->rw);
        pthread_mutex_lock(&h->lock);
        enum kvfs_pub_action act = kvfs_pub_decide(&h->pub, KVFS_EV_RELEASE);
        pthread_mutex_unlock(&h->lock);
        if (act == KVFS_ACT_PUBLISH)
            publish_handle(h, "release"); /* its error is logged and counted */
        kvfs_stage_discard(&kvfs_d.store, &h->stage);
        pthread_rwlock_unlock(&h->rw);
    }
    handle_free(h);
}

static void op_release(fuse_req_t req, fuse_ino_t nodeid, struct fuse_file_info *fi) {
    (void)nodeid;
    release_handle(handle_of(fi));
    reply_err(req, 0);
}

static void serve_fsync(fuse_req_t req, fuse_ino_t nodeid, int datasync,
                        struct fuse_file_info *fi) {
    (void)nodeid;
    struct kvfs_handle *h = handle_of(fi);
    int rc = 0;
    if (h->fd >= 0)
        rc = (datasync ? fdatasync(h->fd) : fsync(h->fd)) == 0 ? 0 : -errno;
    reply_err(req, rc);
}

/* ---- directories ---- */

static void op_opendir(fuse_req_t req, fuse_ino_t nodeid, struct fuse_file_info *fi) {
    struct kvfs_inode *ino = kvfs_inode_get(nodeid);
    if (ino->kind != KVFS_INODE_DIR && ino->kind != KVFS_INODE_CTL_DIR) {
        reply_err(req, ENOTDIR);
        return;
    }
    struct kvfs_handle *h = handle_new(H_DIR, ino);
    if (!h) {
        reply_err(req, ENOMEM);
        return;
    }
    fi->fh = handle_fh(h);
    if (fuse_reply_open(req, fi) != 0)
        handle_free(h);
}

/* Fills the snapshot of a directory listing (at offset 0: opendir or rewind). */
static int load_listing(struct kvfs_handle *h) {
    kvfs_listing_free(&h->list);
    if (h->ino->kind == KVFS_INODE_CTL_DIR) {
        for (int i = 0; kvfs_ctl_names[i]; i++) {
            struct kvfs_listing *l = &h->list;
            struct kvfs_dirent *e = realloc(l->ents, (l->n + 1) * sizeof(*e));
            char *n = strdup(kvfs_ctl_names[i]);
            if (!e || !n) {
                free(n);
                if (e)
                    l->ents = e;
                return -ENOMEM;
            }
            l->ents = e;
            l->ents[l->n].name = n;
            l->ents[l->n++].type = DT_REG;
        }
        return 0;
    }
    return kvfs_dir_list(h->ino->fd, &h->list);
}

/* Entry I of a listing: ".", "..", the control directory (at the root),
 * then the snapshot. */
static const char *listing_name(struct kvfs_handle *h, size_t i, unsigned char *type) {
    *type = DT_DIR;
    if (i == 0)
        return ".";
    if (i == 1)
        return "..";
    i -= 2;
    if (h->ino == kvfs_inode_root()) {
        if (i == 0)
            return KVFS_CTL_DIR;
        i--;
    }
    if (i >= h->list.n)
        return NULL;
    *type = h->list.ents[i].type;
    return h->list.ents[i].name;
}

static void do_readdir(fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi,
                       bool plus) {
    struct kvfs_handle *h = handle_of(fi);
    pthread_mutex_lock(&h->lock);
    if (off == 0) {
        int rc = load_listing(h);
        if (rc) {
            pthread_mutex_unlock(&h->lock);
            reply_err(req, rc);
            return;
        }
    }
    char *buf = malloc(size);
    if (!buf) {
        pthread_mutex_unlock(&h->lock);
        reply_err(req, ENOMEM);
        return;
    }
    size_t pos = 0;
    unsigned char type;
    const char *name;
    for (size_t i = (size_t)off; (name = listing_name(h, i, &type)); i++) {
        size_t n;
        if (!plus) {
            struct stat st = {.st_ino = 1, .st_mode = (mode_t)type << 12};
            n = fuse_add_direntry(req, buf + pos, size - pos, name, &st, (off_t)(i + 1));
        } else {
            struct fuse_entry_param e;
            memset(&e, 0, sizeof(e));
            bool counted = false;
            if (i < 2) {
                e.attr.st_ino = 1;
                e.attr.st_mode = S_IFDIR;
            } else if (h->ino->kind == KVFS_INODE_CTL_DIR) {
                ctl_entry(kvfs_ctl_lookup(name), &e);
            } else if (h->ino == kvfs_inode_root() && strcmp(name, KVFS_CTL_DIR) == 0) {
                ctl_entry(kvfs_ctl_dir(), &e);
            } else if (do_lookup(h->ino, name, &e) == 0) {
                counted = true;
            } else {
                continue; /* removed since the snapshot */
            }
            n = fuse_add_direntry_plus(req, buf + pos, size - pos, name, &e, (off_t)(i + 1));
            if (n > size - pos && counted)
                kvfs_inode_forget(kvfs_inode_get(e.ino), 1);
        }
        if (n > size - pos)
            break;
        pos += n;
    }
    pthread_mutex_unlock(&h->lock);
    fuse_reply_buf(req, buf, pos);
    free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t nodeid, size_t size, off_t off,
                       struct fuse_file_info *fi) {
    (void)nodeid;
    struct kvfs_handle *h = handle_hold(fi);
    do_readdir(req, size, off, fi, false);
    handle_unhold(h);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t nodeid, size_t size, off_t off,
                           struct fuse_file_info *fi) {
    (void)nodeid;
    struct kvfs_handle *h = handle_hold(fi);
    do_readdir(req, size, off, fi, true);
    handle_unhold(h);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t nodeid, struct fuse_file_info *fi) {
    (void)nodeid;
    release_handle(handle_of(fi));
    reply_err(req, 0);
}

/* The first of all handles, or NULL; for draining the list as its members
 * are freed. */
static struct kvfs_handle *first_handle(void) {
    pthread_mutex_lock(&all_handles.lock);
    struct kvfs_handle *h = all_handles.head;
    pthread_mutex_unlock(&all_handles.lock);
    return h;
}

void kvfs_ops_release_all(void) {
    struct kvfs_handle *h;
    while ((h = first_handle())) {
        kvfs_debug("released at unmount: a handle whose RELEASE never came");
        release_handle(h);
    }
}

/* ---- handing the open files over (kvfs_handover) ---- */

static void save_handle(struct kvfs_wire_out *w, struct kvfs_fdset *fds, struct kvfs_handle *h) {
    kvfs_wire_put_u64(w, handle_fh(h));
    kvfs_wire_put_u64(w, (uint64_t)h->kind);
    kvfs_wire_put_u64(w, h->ino ? kvfs_inode_nodeid(h->ino) : 0);
    kvfs_wire_put_fd(w, fds, h->fd);
    kvfs_wire_put_u64(w, (uint64_t)h->pub.state);
    kvfs_wire_put_u64(w, (uint64_t)-h->pub.error);
    kvfs_wire_put_u64(w, h->pub.written);
    kvfs_wire_put_str(w, h->stage.sname);
    kvfs_wire_put_u64(w, (uint64_t)h->stage.dev);
    kvfs_wire_put_u64(w, (uint64_t)h->stage.ino);
    kvfs_wire_put_u64(w, h->parent ? kvfs_inode_nodeid(h->parent) : 0);
    kvfs_wire_put_str(w, h->name);
    kvfs_wire_put_u64(w, h->exclusive);
    kvfs_wire_put_u64(w, h->own_inode);
    kvfs_wire_put_u64(w, h->backing);
    kvfs_wire_put_u64(w, h->replace);
    kvfs_wire_put_u64(w, h->created);
    kvfs_wire_put_u64(w, (uint64_t)h->opener);
    kvfs_wire_put_u64(w, (uint64_t)h->opener_tgid);
    /* Registered under its parent's node id (writer_add): restored the same way. */
    kvfs_wire_put_u64(w, h->registered);
    kvfs_wire_put_u64(w, h->indexed_open);
    kvfs_wire_put_u64(w, h->buf ? h->len : 0);
    kvfs_wire_put_bytes(w, h->buf, h->buf ? h->len : 0);
    kvfs_wire_put_u64(w, h->list.n);
    for (size_t i = 0; i < h->list.n; i++) {
        kvfs_wire_put_str(w, h->list.ents[i].name);
        kvfs_wire_put_u64(w, h->list.ents[i].type);
    }
}

int kvfs_ops_save(struct kvfs_wire_out *w, struct kvfs_fdset *fds) {
    pthread_mutex_lock(&all_handles.lock);
    uint64_t n = 0;
    for (struct kvfs_handle *h = all_handles.head; h; h = h->all_next)
        n++;
    kvfs_wire_put_u64(w, n);
    for (struct kvfs_handle *h = all_handles.head; h; h = h->all_next)
        save_handle(w, fds, h);
    pthread_mutex_unlock(&all_handles.lock);
    /* Recent misses decide whether a publication must invalidate a negative
     * entry; losing them would leave such entries until negative_timeout. */
    kvfs_wire_put_bytes(w, miss_ns, sizeof(miss_ns));
    return w->err;
}

static struct kvfs_inode *restored_inode(uint64_t nodeid, bool dir) {
    struct kvfs_inode *ino = kvfs_inode_get_inherited(nodeid);
    if (!ino || (dir && ino->kind != KVFS_INODE_DIR))
        return NULL;
    return ino;
}

static int restore_handle(struct kvfs_wire_in *r, int *fds, size_t nfds) {
    uint64_t fh = kvfs_wire_get_u64(r);
    enum handle_kind kind = (enum handle_kind)kvfs_wire_get_max(r, H_DIR);
    uint64_t ino_id = kvfs_wire_get_u64(r);
    int fd = kvfs_wire_get_fd(r, fds, nfds);
    if (!kvfs_wire_in_ok(r))
        return r->err;
    struct kvfs_inode *ino = restored_inode(ino_id, false);
    struct kvfs_handle *h = NULL;
    int rc = !ino || fh == 0 || kvfs_idmap_get(&inherited_fh, fh) ? -EBADMSG : 0;
    if (rc == 0 && !(h = handle_new(kind, ino)))
        rc = -ENOMEM;
    if (rc == 0 && (rc = kvfs_idmap_put(&inherited_fh, fh, h)) != 0)
        handle_free(h);
    if (rc) {
        if (fd >= 0)
            close(fd);
        return rc;
    }
    h->fh = fh;
    h->fd = fd;
    h->pub.state = (enum kvfs_pub_state)kvfs_wire_get_max(r, KVFS_PUB_ABORTED);
    h->pub.error = -(int)kvfs_wire_get_max(r, 4095);
    h->pub.written = kvfs_wire_get_max(r, 1);
    kvfs_wire_get_str_into(r, h->stage.sname, sizeof(h->stage.sname));
    h->stage.dev = (dev_t)kvfs_wire_get_u64(r);
    h->stage.ino = (ino_t)kvfs_wire_get_u64(r);
    h->stage.fd = kind == H_STAGE ? h->fd : -1;
    uint64_t parent_id = kvfs_wire_get_u64(r);
    kvfs_wire_get_str_into(r, h->name, sizeof(h->name));
    h->exclusive = kvfs_wire_get_max(r, 1);
    h->own_inode = kvfs_wire_get_max(r, 1);
    h->backing = kvfs_wire_get_max(r, 1);
    h->replace = kvfs_wire_get_max(r, 1);
    h->created = kvfs_wire_get_u64(r);
    h->opener = (pid_t)kvfs_wire_get_max(r, INT32_MAX);
    h->opener_tgid = (pid_t)kvfs_wire_get_max(r, INT32_MAX);
    bool registered = kvfs_wire_get_max(r, 1);
    bool indexed = kvfs_wire_get_max(r, 1);
    size_t len = (size_t)kvfs_wire_get_max(r, r->left);
    if (len && kvfs_wire_in_ok(r) && !(h->buf = malloc(len)))
        r->err = -ENOMEM;
    if (h->buf) {
        kvfs_wire_get_bytes(r, h->buf, len);
        h->len = len;
    }
    size_t n = (size_t)kvfs_wire_get_max(r, r->left / 16);
    if (n && kvfs_wire_in_ok(r) && !(h->list.ents = calloc(n, sizeof(*h->list.ents))))
        r->err = -ENOMEM;
    for (size_t i = 0; i < n && kvfs_wire_in_ok(r); i++) {
        h->list.ents[i].name = kvfs_wire_get_str(r, KVFS_NAME_MAX);
        h->list.ents[i].type = (unsigned char)kvfs_wire_get_max(r, 255);
        if (kvfs_wire_in_ok(r) && !h->list.ents[i].name)
            r->err = -EBADMSG;
        h->list.n = h->list.cap = i + 1;
    }
    if (parent_id && kvfs_wire_in_ok(r)) {
        h->parent = restored_inode(parent_id, true);
        if (h->parent)
            kvfs_inode_ref(h->parent);
        else
            r->err = -EBADMSG;
    }
    /* What a kind needs to be served: a descriptor for files, a place to
     * publish for writers. */
    if (kvfs_wire_in_ok(r) && (kind == H_READ || kind == H_STAGE) &&
        (h->fd < 0 || ino->kind != KVFS_INODE_FILE))
        r->err = -EBADMSG;
    if (kvfs_wire_in_ok(r) && (kind == H_STAGE || registered) && !h->parent)
        r->err = -EBADMSG;
    if (!kvfs_wire_in_ok(r)) {
        h->backing = false; /* the inode's count was restored with it */
        handle_free(h);
        return r->err;
    }
    if (registered)
        writer_add(h);
    /* Counted open again once the block index is up (kvfs_ops_reindex). */
    h->indexed_open = false;
    h->reindex = indexed && h->parent;
    return 0;
}

void kvfs_ops_set_tag(uint64_t tag) {
    kvfs_idmap_set_tag(&inherited_fh, tag);
}

int kvfs_ops_restore(struct kvfs_wire_in *r, int *fds, size_t nfds) {
    uint64_t n = kvfs_wire_get_max(r, r->left / 64);
    for (uint64_t i = 0; i < n; i++) {
        int rc = restore_handle(r, fds, nfds);
        if (rc)
            return rc;
    }
    uint64_t misses[MISS_SLOTS];
    kvfs_wire_get_bytes(r, misses, sizeof(misses));
    if (!kvfs_wire_in_ok(r))
        return r->err;
    for (size_t i = 0; i < MISS_SLOTS; i++)
        atomic_store_explicit(&miss_ns[i], misses[i], memory_order_relaxed);
    return 0;
}

void kvfs_ops_reindex(void) {
    pthread_mutex_lock(&all_handles.lock);
    for (struct kvfs_handle *h = all_handles.head; h; h = h->all_next) {
        if (h->reindex && kvfs_evict_enabled()) {
            h->indexed_open = true;
            kvfs_evict_opened(h->parent, h->name, h->fd);
        }
        h->reindex = false;
    }
    pthread_mutex_unlock(&all_handles.lock);
}

void kvfs_ops_drop_all(void) {
    struct kvfs_handle *h;
    while ((h = first_handle())) {
        /* The successor owns the backing ids and the index counts now. */
        h->backing = false;
        h->indexed_open = false;
        handle_free(h);
    }
    kvfs_idmap_free(&inherited_fh);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t nodeid, int datasync,
                        struct fuse_file_info *fi) {
    (void)fi;
    struct kvfs_inode *ino = kvfs_inode_get(nodeid);
    int rc = 0;
    if (ino->kind == KVFS_INODE_DIR) {
        int fd = kvfs_open_beneath(ino->fd, ".", O_RDONLY | O_DIRECTORY, 0);
        rc = fd;
        if (fd >= 0) {
            rc = (datasync ? fdatasync(fd) : fsync(fd)) == 0 ? 0 : -errno;
            close(fd);
        }
    }
    reply_err(req, rc);
}

static void op_statfs(fuse_req_t req, fuse_ino_t nodeid) {
    (void)nodeid;
    struct statvfs sv;
    if (fstatvfs(kvfs_d.store.root_fd, &sv) != 0) {
        reply_err(req, errno);
        return;
    }
    fuse_reply_statfs(req, &sv);
}

/* ---- extended attributes: user.* only, stored on the backing file ---- */

static bool user_xattr(const char *name) {
    return strncmp(name, "user.", 5) == 0;
}

/* Runs an xattr call on the backing file of NODEID through /proc/self/fd,
 * which works on O_PATH descriptors. */
static int xattr_target(fuse_ino_t nodeid, char *proc, size_t len, int *fd) {
    struct kvfs_inode *ino = kvfs_inode_get(nodeid);
    struct stat st;
    if (is_ctl(ino))
        return -EROFS;
    *fd = path_fd(ino, &st);
    if (*fd < 0)
        return *fd;
    snprintf(proc, len, "/proc/self/fd/%d", *fd);
    return 0;
}

static void op_setxattr(fuse_req_t req, fuse_ino_t nodeid, const char *name, const char *value,
                        size_t size, int flags) {
    char proc[64];
    int fd = -1;
    int rc = user_xattr(name) ? xattr_target(nodeid, proc, sizeof(proc), &fd) : -EOPNOTSUPP;
    if (!rc)
        rc = setxattr(proc, name, value, size, flags) == 0 ? 0 : -errno;
    put_path_fd(kvfs_inode_get(nodeid), fd);
    reply_err(req, rc);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t nodeid, const char *name, size_t size) {
    char proc[64];
    kvfs_stat_inc(&kvfs_d.stats, getxattr_requests);
    int fd = -1;
    int rc = user_xattr(name) ? xattr_target(nodeid, proc, sizeof(proc), &fd) : -ENODATA;
    if (rc == -EROFS)
        rc = -ENODATA;
    char *buf = NULL;
    ssize_t n = 0;
    if (!rc && size > 0 && !(buf = malloc(size)))
        rc = -ENOMEM;
    if (!rc) {
        n = getxattr(proc, name, buf, size);
        if (n < 0)
            rc = -errno;
    }
    put_path_fd(kvfs_inode_get(nodeid), fd);
    if (rc)
        reply_err(req, rc);
    else if (size == 0)
        fuse_reply_xattr(req, (size_t)n);
    else
        fuse_reply_buf(req, buf, (size_t)n);
    free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t nodeid, size_t size) {
    char proc[64];
    int fd = -1;
    int rc = xattr_target(nodeid, proc, sizeof(proc), &fd);
    if (rc == -EROFS) {
        size == 0 ? fuse_reply_xattr(req, 0) : fuse_reply_buf(req, NULL, 0);
        return;
    }
    char *all = NULL, *out = NULL;
    ssize_t n = 0;
    if (!rc) {
        n = listxattr(proc, NULL, 0);
        if (n < 0)
            rc = -errno;
    }
    if (!rc && n > 0) {
        all = malloc((size_t)n);
        out = malloc((size_t)n);
        if (!all || !out)
            rc = -ENOMEM;
        else if ((n = listxattr(proc, all, (size_t)n)) < 0)
            rc = -errno;
    }
    put_path_fd(kvfs_inode_get(nodeid), fd);
    size_t used = 0;
    for (ssize_t i = 0; !rc && i < n; i += (ssize_t)strlen(all + i) + 1) {
        if (user_xattr(all + i)) {
            size_t l = strlen(all + i) + 1;
            memcpy(out + used, all + i, l);
            used += l;
        }
    }
    if (rc)
        reply_err(req, rc);
    else if (size == 0)
        fuse_reply_xattr(req, used);
    else if (used > size)
        reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, out, used);
    free(all);
    free(out);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t nodeid, const char *name) {
    char proc[64];
    int fd = -1;
    int rc = user_xattr(name) ? xattr_target(nodeid, proc, sizeof(proc), &fd) : -EOPNOTSUPP;
    if (!rc)
        rc = removexattr(proc, name) == 0 ? 0 : -errno;
    put_path_fd(kvfs_inode_get(nodeid), fd);
    reply_err(req, rc);
}

/* ---- requests on an open handle, each holding it while it is served ---- */

static void op_getattr(fuse_req_t req, fuse_ino_t nodeid, struct fuse_file_info *fi) {
    struct kvfs_handle *h = handle_hold(fi);
    serve_getattr(req, nodeid, fi);
    handle_unhold(h);
}

static void op_setattr(fuse_req_t req, fuse_ino_t nodeid, struct stat *attr, int to_set,
                       struct fuse_file_info *fi) {
    struct kvfs_handle *h = handle_hold(fi);
    serve_setattr(req, nodeid, attr, to_set, fi);
    handle_unhold(h);
}

static void op_read(fuse_req_t req, fuse_ino_t nodeid, size_t size, off_t off,
                    struct fuse_file_info *fi) {
    struct kvfs_handle *h = handle_hold(fi);
    serve_read(req, nodeid, size, off, fi);
    handle_unhold(h);
}

static void op_write_buf(fuse_req_t req, fuse_ino_t nodeid, struct fuse_bufvec *in, off_t off,
                         struct fuse_file_info *fi) {
    struct kvfs_handle *h = handle_hold(fi);
    serve_write_buf(req, nodeid, in, off, fi);
    handle_unhold(h);
}

static void op_flush(fuse_req_t req, fuse_ino_t nodeid, struct fuse_file_info *fi) {
    struct kvfs_handle *h = handle_hold(fi);
    serve_flush(req, nodeid, fi);
    handle_unhold(h);
}

static void op_fsync(fuse_req_t req, fuse_ino_t nodeid, int datasync, struct fuse_file_info *fi) {
    struct kvfs_handle *h = handle_hold(fi);
    serve_fsync(req, nodeid, datasync, fi);
    handle_unhold(h);
}

const struct fuse_lowlevel_ops kvfs_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .rename = op_rename,
    .link = op_refuse_link,
    .symlink = op_symlink,
    .readlink = op_readlink,
    .mknod = op_refuse_mknod,
    .create = op_create,
    .open = op_open,
    .read = op_read,
    .write_buf = op_write_buf,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
};
