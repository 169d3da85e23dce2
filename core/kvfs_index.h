/* kvfs_index: the blocks of a backing store, in memory, for eviction: each
 * block's size, last access and opens on this node, and the least recently
 * accessed unopened blocks on demand.
 *
 * A store can hold millions of blocks, so an entry is small: a dense array of
 * 24-byte records, an open-addressing table of 8-byte slots pointing into it,
 * and names packed as hex nibbles (a 64-digit hash takes 32 bytes) with the
 * extension interned. About 80 bytes per block with 64-digit names. Only
 * block names are indexed. Not thread-safe: the daemon holds one lock. */
#ifndef KVFS_INDEX_H
#define KVFS_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kvfs_index;

struct kvfs_index *kvfs_index_new(void);
void kvfs_index_free(struct kvfs_index *ix);

/* Interns a directory (its path relative to the backing root, "" for the
 * root) and returns its id, or -ENOMEM. */
int64_t kvfs_index_dir(struct kvfs_index *ix, const char *relpath);
const char *kvfs_index_dir_path(const struct kvfs_index *ix, uint32_t dir);

/* Inserts or updates block NAME of DIR; the later of the two access times is
 * kept. Returns 0, -EINVAL for a name that is not a block, or -ENOMEM. */
int kvfs_index_put(struct kvfs_index *ix, uint32_t dir, const char *name, uint64_t size,
                   uint32_t atime);

struct kvfs_index_info {
    uint64_t size;
    uint32_t atime;
    uint32_t open;
};
bool kvfs_index_get(const struct kvfs_index *ix, uint32_t dir, const char *name,
                    struct kvfs_index_info *out);
/* Records an access at ATIME (if later than the one known). */
bool kvfs_index_touch(struct kvfs_index *ix, uint32_t dir, const char *name, uint32_t atime);
/* Adds DELTA to the block's count of opens on this node (never below 0). */
bool kvfs_index_open(struct kvfs_index *ix, uint32_t dir, const char *name, int delta);
/* Removes a block; *SIZE (if given) receives its size. */
bool kvfs_index_remove(struct kvfs_index *ix, uint32_t dir, const char *name, uint64_t *size);

/* Carries this node's live state from FROM into a freshly scanned INTO: open
 * counts and later accesses, and blocks open here that the scan missed.
 * Returns 0 or -ENOMEM. */
int kvfs_index_merge_live(struct kvfs_index *into, const struct kvfs_index *from);

uint64_t kvfs_index_usage(const struct kvfs_index *ix); /* bytes of all blocks */
size_t kvfs_index_count(const struct kvfs_index *ix);
size_t kvfs_index_memory(const struct kvfs_index *ix); /* bytes it allocated */

/* Eviction candidates: blocks not open on this node, least recently
 * accessed first, until their sizes reach NEED. */
struct kvfs_victim {
    uint32_t dir;
    uint32_t atime;
    uint64_t size;
    char name[146];
};
/* Returns the number of victims in *OUT (malloc'd; free it), or -ENOMEM. */
int64_t kvfs_index_pick(const struct kvfs_index *ix, uint64_t need, struct kvfs_victim **out);

/* Bytes to free: 0 while USAGE is at most HIGH% of CAPACITY, else what brings
 * it down to LOW%. */
uint64_t kvfs_evict_need(uint64_t usage, uint64_t capacity, unsigned high, unsigned low);

#endif
