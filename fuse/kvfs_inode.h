/* kvfs_inode: the daemon's inode table.
 *
 * The kernel names inodes by 64-bit node ids; ours are the addresses of
 * struct kvfs_inode (the root is FUSE_ROOT_ID), except those inherited from
 * the daemon this one took over from (core/kvfs_idmap). As in libfuse's
 * passthrough_hp, inodes are keyed by the backing file's (st_dev, st_ino), so
 * a published file keeps the node id its staging file had (link() and
 * rename() keep the inode) and a replaced file gets a new one.
 *
 * Directories hold an O_PATH descriptor: they are few, and every operation
 * inside them is relative to it. Files hold none (there can be millions, and a
 * held descriptor would keep an evicted block's space allocated); they keep
 * their parent and name instead, and are reopened through kvfs_store, which
 * checks that (dev, ino) still match. */
#ifndef KVFS_INODE_H
#define KVFS_INODE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

enum kvfs_inode_kind {
    KVFS_INODE_DIR,
    KVFS_INODE_FILE,
    KVFS_INODE_CTL_DIR,  /* the control directory */
    KVFS_INODE_CTL_FILE, /* a virtual file in it */
};

struct kvfs_inode {
    struct kvfs_inode *hnext; /* hash chain */
    uint64_t nodeid;          /* inherited node id; 0: the structure's address */
    dev_t dev;
    ino_t ino;
    struct timespec ctime; /* files: the backing file's change time when first seen */
    enum kvfs_inode_kind kind;
    uint64_t nlookup; /* references the kernel holds (LOOKUP minus FORGET) */
    uint64_t refs;    /* references the daemon holds (open handles, children) */
    int fd;           /* directories: O_PATH descriptor */
    /* Files, guarded by the table lock: */
    struct kvfs_inode *parent; /* referenced */
    char *name;                /* name in parent, as seen through the mount */
    char *stage_name;          /* set while this is an unpublished staging file */
    bool is_block;
    int ctl_id; /* control files: which one */
    /* Passthrough (kvfs_passthrough.c): the kernel's id for this inode's
     * backing file while it is open, and how many handles use it. */
    int backing_id;
    uint32_t backing_refs;
    /* Its own backing file is gone (evicted, replaced) and an open of it was
     * answered through the daemon: no backing id is registered for it again
     * (see kvfs_pt_acquire_existing). */
    bool pt_retired;
    /* Directories: id + 1 in the block index (kvfs_evict.c), 0 if not known. */
    int64_t index_dir;
};

/* Initialises the table with the root directory's descriptor. */
int kvfs_itable_init(int root_fd);
void kvfs_itable_destroy(void);

struct kvfs_inode *kvfs_inode_root(void);
/* Maps a node id from the kernel to an inode (NULL if 0). */
struct kvfs_inode *kvfs_inode_get(uint64_t nodeid);
uint64_t kvfs_inode_nodeid(const struct kvfs_inode *ino);

/* Finds or creates the inode for the backing file (DEV, INO), adds one kernel
 * lookup, and (for files) records PARENT/NAME as where to find it. FD is an
 * O_PATH descriptor for directories (taken over, or closed if the inode
 * already had one); -1 for files. STAGE_NAME marks an unpublished file; with
 * CTIME too, one just created, which never matches a known inode.
 * Returns NULL on allocation failure (FD is closed). */
struct kvfs_inode *kvfs_inode_lookup(dev_t dev, ino_t ino, const struct timespec *ctime,
                                     enum kvfs_inode_kind kind, int fd, struct kvfs_inode *parent,
                                     const char *name, const char *stage_name);

/* Drops N kernel lookups. */
void kvfs_inode_forget(struct kvfs_inode *ino, uint64_t n);
/* Daemon references, for as long as a handle uses the inode. */
void kvfs_inode_ref(struct kvfs_inode *ino);
void kvfs_inode_unref(struct kvfs_inode *ino);

/* A file inode's location, copied under the lock: a referenced parent (unref
 * it when done) and NAME (at least 256 bytes); STAGE receives the staging name
 * or "" (at least 128 bytes). Returns false if the inode has no location. */
bool kvfs_inode_location(struct kvfs_inode *ino, struct kvfs_inode **parent, char *name,
                         char *stage);
/* Records that a file now lives at PARENT/NAME (after publication or rename)
 * and is no longer a staging file. */
void kvfs_inode_move(struct kvfs_inode *ino, struct kvfs_inode *parent, const char *name);
/* Records that an unpublished file will be published at PARENT/NAME (it stays
 * a staging file). */
void kvfs_inode_retarget(struct kvfs_inode *ino, struct kvfs_inode *parent, const char *name);
/* Detaches file inode INO from its backing file: the next lookup of the file
 * gets a new node id, while the kernel's INO keeps what it cached. A writer's
 * inode is detached when its file is published, so that no reader shares the
 * writer's page cache, which a shared mapping the writer keeps can still
 * change (writes back from it are refused after publication). */
void kvfs_inode_detach(struct kvfs_inode *ino);
/* kvfs_inode_move for whichever inode (if any) holds the backing file (DEV, INO). */
void kvfs_inode_move_key(dev_t dev, ino_t ino, struct kvfs_inode *parent, const char *name);

/* Forgets every directory's block-index id (the index was rebuilt). */
void kvfs_itable_reset_index_dirs(void);

/* Handing the table to a successor (kvfs_handover), with no request in
 * flight: every inode the kernel or a handle holds, directories' descriptors
 * added to FDS. Restore rebuilds it under the same node ids, taking over the
 * descriptors it uses (from FDS, which has NFDS), and counts none of the
 * references handles hold (kvfs_inode_ref does, as handles are restored).
 * 0 or a negative errno. */
struct kvfs_wire_out;
struct kvfs_wire_in;
struct kvfs_fdset;
int kvfs_itable_save(struct kvfs_wire_out *w, struct kvfs_fdset *fds);
int kvfs_itable_restore(struct kvfs_wire_in *r, int *fds, size_t nfds);
/* Gives a static inode (the control directory's) the node id the kernel
 * knows it by. */
int kvfs_inode_adopt(struct kvfs_inode *ino, uint64_t nodeid);
/* The generation tag of this process's node ids (core/kvfs_idmap). */
void kvfs_itable_set_tag(uint64_t tag);
uint64_t kvfs_itable_tag(void);
/* The root or an inode restored or adopted under NODEID; NULL otherwise
 * (never a cast of an unknown id). */
struct kvfs_inode *kvfs_inode_get_inherited(uint64_t nodeid);

/* Inodes currently in the table (for stats). */
uint64_t kvfs_itable_count(void);

#endif
