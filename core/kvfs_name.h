/* kvfs_name: which names are blocks, which are reserved, and where a block
 * lives in the backing store.
 *
 * A block is a regular file named HASH or HASH.EXT (16 to 128 hex digits, an
 * optional extension of 1 to 16 letters or digits). In the backing store it is
 * placed under a fan-out bucket of the directory it appears in:
 *
 *     mount:   NS/0123abcd....bin
 *     backing: NS/.kvfs-blocks/012/0123abcd....bin
 *
 * so that a namespace holding millions of blocks never has one huge directory.
 * Every name starting with ".kvfs" is reserved for kvfs at every level, which
 * keeps the buckets, the state folder and the control directory apart from
 * anything a client can create. Pure string functions: no I/O here. */
#ifndef KVFS_NAME_H
#define KVFS_NAME_H

#include <stdbool.h>
#include <stddef.h>

#define KVFS_HASH_MIN 16
#define KVFS_HASH_MAX 128
#define KVFS_EXT_MAX 16
#define KVFS_RESERVED_PREFIX ".kvfs"
#define KVFS_FANOUT_DIR ".kvfs-blocks"
#define KVFS_BUCKET_LEN 3
#define KVFS_STATE_DIR ".kvfs-state"
#define KVFS_CTL_DIR ".kvfs"
#define KVFS_NAME_MAX 255

/* True if NAME is a block name; *hash_len receives the length of its hash. */
bool kvfs_name_is_block(const char *name, size_t *hash_len);

/* True if NAME is reserved for kvfs (starts with ".kvfs"). */
bool kvfs_name_is_reserved(const char *name);

/* Checks a name a client wants to create: 0, -EINVAL (empty, ".", "..",
 * contains '/'), -ENAMETOOLONG, or -EPERM (reserved). */
int kvfs_name_check(const char *name);

/* Writes the bucket of block NAME (lowercase, KVFS_BUCKET_LEN digits + NUL). */
void kvfs_block_bucket(const char *name, char bucket[KVFS_BUCKET_LEN + 1]);

/* True if BUCKET is a well-formed bucket directory name. */
bool kvfs_bucket_is_valid(const char *bucket);

/* Writes "<fan-out dir>/<bucket>/NAME" for block NAME: its path relative to
 * the backing directory it appears in. Returns 0 or -ENAMETOOLONG. */
int kvfs_block_relpath(const char *name, char *buf, size_t len);

/* Maps a path relative to the mount root to its path relative to the backing
 * root ("a/b/HASH" -> "a/b/.kvfs-blocks/has/HASH"). Each component is checked
 * with kvfs_name_check. Returns 0 or a negative errno. */
int kvfs_path_to_backing(const char *mount_rel, char *buf, size_t len);

/* The reverse: a backing-relative path to the path shown through the mount.
 * Returns -EPERM for kvfs's own state, -EINVAL for a file that is not a block
 * of the bucket it sits in, -ENAMETOOLONG if BUF is too small. */
int kvfs_path_from_backing(const char *backing_rel, char *buf, size_t len);

#endif
