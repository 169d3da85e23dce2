/* kvfs_store: the backing directory and how entries are found in it.
 *
 * Layout of BACKING_DIR:
 *
 *     .kvfs-state/format            layout version (refuses a newer layout)
 *     .kvfs-state/staging/          files being written, not yet published
 *     NS/...                        client directories and non-block files
 *     NS/.kvfs-blocks/BKT/NAME      block NAME of directory NS (BKT = first
 *                                   three hex digits of NAME, lowercase)
 *
 * Every lookup below a directory descriptor resolves at most one component
 * with *at() calls and O_NOFOLLOW, or several with openat2() and
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, so no path through this module can
 * leave the backing directory, whatever links are planted in it. Functions
 * return 0 (or a descriptor) on success and a negative errno on failure. */
#ifndef KVFS_STORE_H
#define KVFS_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#define KVFS_LAYOUT_VERSION 1

struct kvfs_store {
    int root_fd;    /* O_PATH descriptor of BACKING_DIR */
    int state_fd;   /* BACKING_DIR/.kvfs-state */
    int staging_fd; /* BACKING_DIR/.kvfs-state/staging (opened for reading: listed by GC) */
    char node[64];  /* this host's name, part of every staging file name */
    _Atomic uint64_t seq;
};

enum kvfs_where {
    KVFS_IN_BUCKET, /* a block in the directory's fan-out bucket */
    KVFS_IN_DIR,    /* a plain entry of the directory */
};

/* Refuses a backing dir that is missing, not a directory, not writable, equal
 * to the mountpoint or nested with it either way (MOUNTPOINT may be NULL:
 * only the backing directory is checked). */
int kvfs_store_check_paths(const char *backing, const char *mountpoint, char *err, size_t errlen);

/* Opens BACKING (creating .kvfs-state if needed). */
int kvfs_store_open(struct kvfs_store *st, const char *backing, char *err, size_t errlen);
void kvfs_store_close(struct kvfs_store *st);

/* openat2(DFD, PATH) confined below DFD, symlinks refused (-EPERM). */
int kvfs_open_beneath(int dfd, const char *path, int flags, mode_t mode);

/* Finds NAME below the backing directory DFD: a block in its bucket first,
 * then a plain entry. Regular files, directories and (plain entries only)
 * symbolic links are reported, links never followed; anything else (a
 * device, a FIFO, a link planted in a bucket) gives -EPERM. */
int kvfs_entry_stat(int dfd, const char *name, struct stat *st, enum kvfs_where *where);

/* Opens NAME found at WHERE with FLAGS (O_PATH allowed); O_NOFOLLOW implied. */
int kvfs_entry_open(int dfd, const char *name, enum kvfs_where where, int flags);
/* Opens NAME wherever it is (its bucket first for a block name): one lookup
 * instead of kvfs_entry_stat + kvfs_entry_open. The caller checks its type. */
int kvfs_entry_open_any(int dfd, const char *name, int flags);

/* Returns the directory descriptor a regular file called NAME belongs in: the
 * bucket for a block name (created when CREATE is set, with the mode of DFD),
 * or DFD itself. Close the result only if it differs from DFD. */
int kvfs_entry_parent(int dfd, const char *name, bool create);

/* Removes the regular file NAME. */
int kvfs_entry_unlink(int dfd, const char *name);

/* Creates directory NAME (refused if a block of that name exists). */
int kvfs_entry_mkdir(int dfd, const char *name, mode_t mode);

/* Removes directory NAME, first clearing empty fan-out buckets inside it. */
int kvfs_entry_rmdir(int dfd, const char *name);

/* Calls FN for each entry of directory PATH below DFD (but "." and ".."),
 * with the directory's descriptor; stops at the first non-zero result and
 * returns it, or a negative errno. */
struct dirent;
int kvfs_dir_each(int dfd, const char *path, int (*fn)(void *ctx, int dir, const struct dirent *de),
                  void *ctx);

/* A directory as seen through the mount: plain entries and bucketed blocks,
 * without kvfs's reserved names and without entries of other types. */
struct kvfs_dirent {
    char *name;
    unsigned char type; /* DT_REG or DT_DIR */
};
struct kvfs_listing {
    struct kvfs_dirent *ents;
    size_t n, cap;
};
int kvfs_dir_list(int dfd, struct kvfs_listing *out);
void kvfs_listing_free(struct kvfs_listing *l);

#endif
