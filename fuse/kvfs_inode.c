/* kvfs_inode: the inode table (see the header). One mutex guards the hash
 * table, the reference counts and the file locations: every critical section
 * is a few pointer operations, and the FUSE workers spend their time in
 * backing-store system calls made outside it. */
#include "kvfs_inode.h"

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
    pthread_mutex_unlock(&lock);
}

struct kvfs_inode *kvfs_inode_root(void) {
    return &root;
}

struct kvfs_inode *kvfs_inode_get(uint64_t nodeid) {
    if (nodeid == FUSE_ROOT_ID)
        return &root;
    return (struct kvfs_inode *)(uintptr_t)nodeid;
}

uint64_t kvfs_inode_nodeid(const struct kvfs_inode *ino) {
    return ino == &root ? FUSE_ROOT_ID : (uint64_t)(uintptr_t)ino;
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
        struct kvfs_inode **pp = &buckets[slot(dev, ino, nbuckets)];
        while (*pp != p)
            pp = &(*pp)->hnext;
        *pp = p->hnext;
        p->hnext = orphans;
        orphans = p;
        p->dev = (dev_t)-1;
        p = NULL;
    }
    if (!p) {
        p = calloc(1, sizeof(*p));
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
        if (count + 1 > nbuckets)
            grow();
        size_t s = slot(dev, ino, nbuckets);
        p->hnext = buckets[s];
        buckets[s] = p;
        count++;
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

uint64_t kvfs_itable_count(void) {
    pthread_mutex_lock(&lock);
    uint64_t n = count;
    pthread_mutex_unlock(&lock);
    return n;
}
