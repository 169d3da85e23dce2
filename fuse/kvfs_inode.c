/* kvfs_inode: the inode table (see the header). One mutex guards the hash
 * table, the reference counts and the file locations: every critical section
 * is a few pointer operations, and the FUSE workers spend their time in
 * backing-store system calls made outside it. */
#include "kvfs_inode.h"

#include "../core/kvfs_idmap.h"
#include "../core/kvfs_wire.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct kvfs_inode **buckets;
static size_t nbuckets;
static uint64_t count;
static struct kvfs_inode root;
/* Inodes detached from the table (their backing file was replaced) that the
 * kernel still holds; linked through hnext, freed on FORGET or at exit. */
static struct kvfs_inode *orphans;
/* Node ids inherited at a takeover. */
static struct kvfs_idmap inherited = KVFS_IDMAP_INIT;

static size_t slot(dev_t dev, ino_t ino, size_t n) {
    uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ull ^ (uint64_t)dev * 0xC2B2AE3D27D4EB4Full;
    return (size_t)(h >> 17) & (n - 1);
}

int kvfs_itable_init(int root_fd) {
    nbuckets = 1 << 12;
    buckets = calloc(nbuckets, sizeof(*buckets));
    if (!buckets)
        return -1;
    memset(&root, 0, sizeof(root));
    root.kind = KVFS_INODE_DIR;
    root.fd = root_fd;
    root.nlookup = 1; /* never forgotten */
    return 0;
}

/* Frees a chain of inodes linked through hnext (at exit only). */
static void free_chain(struct kvfs_inode *p) {
    while (p) {
        struct kvfs_inode *next = p->hnext;
        if (p->fd >= 0)
            close(p->fd);
        free(p->name);
        free(p->stage_name);
        free(p);
        p = next;
    }
}

void kvfs_itable_destroy(void) {
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nbuckets; i++)
        free_chain(buckets[i]);
    free_chain(orphans);
    orphans = NULL;
    free(buckets);
    buckets = NULL;
    count = 0;
    kvfs_idmap_free(&inherited);
    pthread_mutex_unlock(&lock);
}

struct kvfs_inode *kvfs_inode_root(void) {
    return &root;
}

struct kvfs_inode *kvfs_inode_get(uint64_t nodeid) {
    if (nodeid == FUSE_ROOT_ID)
        return &root;
    return kvfs_idmap_ptr(&inherited, nodeid);
}

uint64_t kvfs_inode_nodeid(const struct kvfs_inode *ino) {
    return ino == &root ? FUSE_ROOT_ID : ino->nodeid ? ino->nodeid : kvfs_idmap_id(&inherited, ino);
}

void kvfs_itable_set_tag(uint64_t tag) {
    kvfs_idmap_set_tag(&inherited, tag);
}

uint64_t kvfs_itable_tag(void) {
    return inherited.tag;
}

struct kvfs_inode *kvfs_inode_get_inherited(uint64_t nodeid) {
    return nodeid == FUSE_ROOT_ID ? &root : kvfs_idmap_get(&inherited, nodeid);
}

int kvfs_inode_adopt(struct kvfs_inode *ino, uint64_t nodeid) {
    if (nodeid == 0 || nodeid == FUSE_ROOT_ID)
        return -EINVAL;
    int rc = kvfs_idmap_put(&inherited, nodeid, ino);
    if (rc == 0)
        ino->nodeid = nodeid;
    return rc;
}

static void grow(void) {
    size_t n = nbuckets * 2;
    struct kvfs_inode **nb = calloc(n, sizeof(*nb));
    if (!nb)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < nbuckets; i++) {
        struct kvfs_inode *p = buckets[i];
        while (p) {
            struct kvfs_inode *next = p->hnext;
            size_t s = slot(p->dev, p->ino, n);
            p->hnext = nb[s];
            nb[s] = p;
            p = next;
        }
    }
    free(buckets);
    buckets = nb;
    nbuckets = n;
}

static struct kvfs_inode *find_locked(dev_t dev, ino_t ino) {
    for (struct kvfs_inode *p = buckets[slot(dev, ino, nbuckets)]; p; p = p->hnext)
        if (p->dev == dev && p->ino == ino)
            return p;
    return NULL;
}

/* Sets a string field; on allocation failure keeps the old value. */
static void set_str(char **field, const char *value) {
    if (!value) {
        free(*field);
        *field = NULL;
        return;
    }
    if (*field && strcmp(*field, value) == 0)
        return;
    char *copy = strdup(value);
    if (copy) {
        free(*field);
        *field = copy;
    }
}

static void free_inode(struct kvfs_inode *ino);

static void set_parent_locked(struct kvfs_inode *ino, struct kvfs_inode *parent) {
    if (ino->parent == parent)
        return;
    if (parent)
        parent->refs++;
    struct kvfs_inode *old = ino->parent;
    ino->parent = parent;
    if (old) {
        old->refs--;
        if (old->refs == 0 && old->nlookup == 0 && old != &root)
            free_inode(old);
    }
}

/* Unlinks INO from the table and frees it; called with the lock held. */
static void free_inode(struct kvfs_inode *ino) {
    struct kvfs_inode **pp =
        ino->dev == (dev_t)-1 ? &orphans : &buckets[slot(ino->dev, ino->ino, nbuckets)];
    while (*pp && *pp != ino)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = ino->hnext;
    count--;
    if (ino->nodeid)
        kvfs_idmap_del(&inherited, ino->nodeid);
    struct kvfs_inode *parent = ino->parent;
    if (ino->fd >= 0)
        close(ino->fd);
    free(ino->name);
    free(ino->stage_name);
    free(ino);
    if (parent) {
        parent->refs--;
        if (parent->refs == 0 && parent->nlookup == 0 && parent != &root)
            free_inode(parent);
    }
}

/* Adds P to the table, or to the orphans if it has no backing file any more
 * (dev (dev_t)-1); called with the lock held. */
static void insert_locked(struct kvfs_inode *p) {
    if (p->dev == (dev_t)-1) {
        p->hnext = orphans;
        orphans = p;
    } else {
        if (count + 1 > nbuckets)
            grow();
        size_t s = slot(p->dev, p->ino, nbuckets);
        p->hnext = buckets[s];
        buckets[s] = p;
    }
    count++;
}

/* Moves P to the orphans: no lookup finds it again. */
static void detach_locked(struct kvfs_inode *p) {
    if (p->dev == (dev_t)-1)
        return;
    struct kvfs_inode **pp = &buckets[slot(p->dev, p->ino, nbuckets)];
    while (*pp && *pp != p)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = p->hnext;
    p->hnext = orphans;
    orphans = p;
    p->dev = (dev_t)-1;
}

void kvfs_inode_detach(struct kvfs_inode *ino) {
    pthread_mutex_lock(&lock);
    if (ino->kind == KVFS_INODE_FILE)
        detach_locked(ino);
    pthread_mutex_unlock(&lock);
}

struct kvfs_inode *kvfs_inode_lookup(dev_t dev, ino_t ino, const struct timespec *ctime,
                                     enum kvfs_inode_kind kind, int fd, struct kvfs_inode *parent,
                                     const char *name, const char *stage_name) {
    pthread_mutex_lock(&lock);
    struct kvfs_inode *p = find_locked(dev, ino);
    /* A backing file's inode number is reused once the file is gone (evicted
     * or removed by another node): a file with another change time, or of
     * another type, gets a new node. Reusing the old one would let the
     * kernel's cached name of the gone file lead to the new file's data.
     * (Directories cannot be reused while their O_PATH descriptor is held.)
     * A staging file just created (STAGE_NAME and CTIME both given) is new by
     * definition, so a known inode of its number is always gone: change
     * times are coarse enough that under churn a reused number can carry the
     * very change time of the evicted file. */
    bool fresh = stage_name && ctime;
    bool stale = p && (fresh || p->kind != kind ||
                       (kind == KVFS_INODE_FILE && ctime &&
                        (p->ctime.tv_sec != ctime->tv_sec || p->ctime.tv_nsec != ctime->tv_nsec)));
    if (stale) {
        /* Detach the old entry so that the kernel's stale node id keeps its
         * own (and its checks against the backing file fail). */
        detach_locked(p);
        p = NULL;
    }
    if (!p) {
        p = kvfs_idmap_alloc(&inherited, sizeof(*p));
        if (!p) {
            pthread_mutex_unlock(&lock);
            if (fd >= 0)
                close(fd);
            return NULL;
        }
        p->dev = dev;
        p->ino = ino;
        p->kind = kind;
        if (ctime)
            p->ctime = *ctime;
        p->fd = fd;
        fd = -1;
        insert_locked(p);
    }
    if (fd >= 0)
        close(fd);
    p->nlookup++;
    if (kind == KVFS_INODE_FILE) {
        set_parent_locked(p, parent);
        set_str(&p->name, name);
        set_str(&p->stage_name, stage_name);
    }
    pthread_mutex_unlock(&lock);
    return p;
}

void kvfs_inode_forget(struct kvfs_inode *ino, uint64_t n) {
    if (ino == &root || ino->kind == KVFS_INODE_CTL_DIR || ino->kind == KVFS_INODE_CTL_FILE)
        return;
    pthread_mutex_lock(&lock);
    ino->nlookup = n > ino->nlookup ? 0 : ino->nlookup - n;
    if (ino->nlookup == 0 && ino->refs == 0)
        free_inode(ino);
    pthread_mutex_unlock(&lock);
}

void kvfs_inode_ref(struct kvfs_inode *ino) {
    pthread_mutex_lock(&lock);
    ino->refs++;
    pthread_mutex_unlock(&lock);
}

void kvfs_inode_unref(struct kvfs_inode *ino) {
    if (ino == &root || ino->kind == KVFS_INODE_CTL_DIR || ino->kind == KVFS_INODE_CTL_FILE)
        return;
    pthread_mutex_lock(&lock);
    ino->refs--;
    if (ino->refs == 0 && ino->nlookup == 0)
        free_inode(ino);
    pthread_mutex_unlock(&lock);
}

bool kvfs_inode_location(struct kvfs_inode *ino, struct kvfs_inode **parent, char *name,
                         char *stage) {
    pthread_mutex_lock(&lock);
    bool ok = ino->parent && ino->name;
    if (ok) {
        *parent = ino->parent;
        ino->parent->refs++;
        strncpy(name, ino->name, 255);
        name[255] = '\0';
        if (ino->stage_name) {
            strncpy(stage, ino->stage_name, 127);
            stage[127] = '\0';
        } else {
            stage[0] = '\0';
        }
    }
    pthread_mutex_unlock(&lock);
    return ok;
}

void kvfs_inode_move(struct kvfs_inode *ino, struct kvfs_inode *parent, const char *name) {
    pthread_mutex_lock(&lock);
    set_parent_locked(ino, parent);
    set_str(&ino->name, name);
    set_str(&ino->stage_name, NULL);
    pthread_mutex_unlock(&lock);
}

void kvfs_inode_retarget(struct kvfs_inode *ino, struct kvfs_inode *parent, const char *name) {
    pthread_mutex_lock(&lock);
    set_parent_locked(ino, parent);
    set_str(&ino->name, name);
    pthread_mutex_unlock(&lock);
}

void kvfs_inode_move_key(dev_t dev, ino_t ino, struct kvfs_inode *parent, const char *name) {
    pthread_mutex_lock(&lock);
    struct kvfs_inode *p = find_locked(dev, ino);
    if (p && p->kind == KVFS_INODE_FILE) {
        set_parent_locked(p, parent);
        set_str(&p->name, name);
    }
    pthread_mutex_unlock(&lock);
}

void kvfs_itable_reset_index_dirs(void) {
    pthread_mutex_lock(&lock);
    root.index_dir = 0;
    for (size_t i = 0; i < nbuckets; i++)
        for (struct kvfs_inode *p = buckets[i]; p; p = p->hnext)
            p->index_dir = 0;
    pthread_mutex_unlock(&lock);
}

/* ---- handing the table over ---- */

/* An inode's record; orphans (dev (dev_t)-1) are told apart by their dev. */
static void save_one(struct kvfs_wire_out *w, struct kvfs_fdset *fds, struct kvfs_inode *p) {
    kvfs_wire_put_u64(w, kvfs_inode_nodeid(p));
    kvfs_wire_put_u64(w, (uint64_t)p->dev);
    kvfs_wire_put_u64(w, (uint64_t)p->ino);
    kvfs_wire_put_u64(w, (uint64_t)p->ctime.tv_sec);
    kvfs_wire_put_u64(w, (uint64_t)p->ctime.tv_nsec);
    kvfs_wire_put_u64(w, (uint64_t)p->kind);
    kvfs_wire_put_u64(w, p->nlookup);
    kvfs_wire_put_u64(w, p->parent ? kvfs_inode_nodeid(p->parent) : 0);
    kvfs_wire_put_str(w, p->name);
    kvfs_wire_put_str(w, p->stage_name);
    kvfs_wire_put_u64(w, p->is_block);
    kvfs_wire_put_u64(w, (uint64_t)p->backing_id);
    kvfs_wire_put_u64(w, p->backing_refs);
    kvfs_wire_put_u64(w, p->pt_retired);
    kvfs_wire_put_fd(w, fds, p->fd);
}

int kvfs_itable_save(struct kvfs_wire_out *w, struct kvfs_fdset *fds) {
    pthread_mutex_lock(&lock);
    uint64_t n = count;
    kvfs_wire_put_u64(w, root.nlookup);
    kvfs_wire_put_u64(w, n);
    uint64_t saved = 0;
    for (size_t i = 0; i < nbuckets; i++)
        for (struct kvfs_inode *p = buckets[i]; p; p = p->hnext, saved++)
            save_one(w, fds, p);
    for (struct kvfs_inode *p = orphans; p; p = p->hnext, saved++)
        save_one(w, fds, p);
    pthread_mutex_unlock(&lock);
    if (saved != n)
        return -EPROTO; /* the count and the table disagree: a bug, not sent */
    return w->err;
}

int kvfs_itable_restore(struct kvfs_wire_in *r, int *fds, size_t nfds) {
    root.nlookup = kvfs_wire_get_u64(r);
    uint64_t n = kvfs_wire_get_max(r, r->left / 64);
    struct kvfs_inode **made = calloc(n ? n : 1, sizeof(*made));
    uint64_t *parents = calloc(n ? n : 1, sizeof(*parents));
    if (!made || !parents) {
        free(made);
        free(parents);
        return -ENOMEM;
    }
    int rc = 0;
    pthread_mutex_lock(&lock);
    for (uint64_t i = 0; i < n && rc == 0 && kvfs_wire_in_ok(r); i++) {
        uint64_t nodeid = kvfs_wire_get_u64(r);
        struct kvfs_inode *p = kvfs_idmap_alloc(&inherited, sizeof(*p));
        if (!p) {
            rc = -ENOMEM;
            break;
        }
        p->dev = (dev_t)kvfs_wire_get_u64(r);
        p->ino = (ino_t)kvfs_wire_get_u64(r);
        p->ctime.tv_sec = (time_t)kvfs_wire_get_u64(r);
        p->ctime.tv_nsec = (long)kvfs_wire_get_max(r, 999999999);
        p->kind = (enum kvfs_inode_kind)kvfs_wire_get_max(r, KVFS_INODE_FILE);
        p->nlookup = kvfs_wire_get_u64(r);
        parents[i] = kvfs_wire_get_u64(r);
        p->name = kvfs_wire_get_str(r, 255);
        p->stage_name = kvfs_wire_get_str(r, 127);
        p->is_block = kvfs_wire_get_max(r, 1);
        p->backing_id = (int)kvfs_wire_get_max(r, INT32_MAX);
        p->backing_refs = (uint32_t)kvfs_wire_get_max(r, UINT32_MAX);
        p->pt_retired = kvfs_wire_get_max(r, 1);
        p->fd = kvfs_wire_get_fd(r, fds, nfds); /* directories only, checked below */
        if (nodeid == 0 || nodeid == FUSE_ROOT_ID || kvfs_idmap_get(&inherited, nodeid) ||
            (p->kind == KVFS_INODE_DIR) != (p->fd >= 0))
            r->err = -EBADMSG;
        if (!kvfs_wire_in_ok(r) || (rc = kvfs_inode_adopt(p, nodeid)) != 0) {
            if (p->fd >= 0)
                close(p->fd);
            free(p->name);
            free(p->stage_name);
            free(p);
            break;
        }
        made[i] = p;
        insert_locked(p);
    }
    if (rc == 0 && !kvfs_wire_in_ok(r))
        rc = r->err;
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        if (!parents[i])
            continue;
        struct kvfs_inode *par = kvfs_inode_get_inherited(parents[i]);
        if (!par || par->kind != KVFS_INODE_DIR)
            rc = -EBADMSG;
        else
            set_parent_locked(made[i], par);
    }
    pthread_mutex_unlock(&lock);
    free(made);
    free(parents);
    return rc;
}

uint64_t kvfs_itable_count(void) {
    pthread_mutex_lock(&lock);
    uint64_t n = count;
    pthread_mutex_unlock(&lock);
    return n;
}
