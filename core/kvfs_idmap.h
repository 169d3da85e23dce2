/* kvfs_idmap: 64-bit ids handed to the kernel that are not addresses.
 *
 * The daemon names inodes and open files to the kernel by the addresses of
 * their structures: a lookup is then a cast, with no table and no lock on the
 * path of every request. A daemon that takes over a running mount
 * (kvfs_handover) inherits ids the kernel already holds, which were addresses
 * in the previous process; this map translates those. A new structure's id
 * must never equal an inherited one still in use, and the new process's
 * allocator may well hand out the very addresses its predecessor used (it
 * does, run after run, under AddressSanitizer). So each generation of daemon
 * marks its ids with a tag in the low bits that allocations leave zero (the
 * first daemon's tag is 0: plain addresses), and kvfs_idmap_alloc retries in
 * the rare case where an id still collides with a much older generation's.
 * The map is empty, and costs one atomic load per lookup, in a daemon that
 * did not take over. */
#ifndef KVFS_IDMAP_H
#define KVFS_IDMAP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct kvfs_idmap_entry;

struct kvfs_idmap {
    pthread_mutex_t lock;
    struct kvfs_idmap_entry *slots; /* open addressing, linear probing */
    size_t cap;                     /* a power of two, or 0 */
    size_t used;                    /* slots holding an entry or a tombstone */
    _Atomic size_t count;           /* entries */
    uint64_t tag;                   /* this process's ids: address | tag */
    bool tag_shared;                /* an inherited id carries that tag too */
};

#define KVFS_IDMAP_INIT                                                                            \
    { PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, 0, 0, false }
/* Low bits of an id that carry the generation tag (allocations are aligned
 * to at least 8 bytes). */
#define KVFS_IDMAP_TAG_MASK 7u

/* The tag a successor of a daemon whose ids carried PREV uses: never PREV,
 * never 0 (the tag of the first daemon, whose ids may be anywhere). */
uint64_t kvfs_idmap_next_tag(uint64_t prev);
void kvfs_idmap_set_tag(struct kvfs_idmap *m, uint64_t tag);
/* The id of a structure this process allocated. */
uint64_t kvfs_idmap_id(const struct kvfs_idmap *m, const void *ptr);
/* The structure ID names: an inherited one, or one of this process's. An id
 * with this process's tag is resolved without the map (and its lock) unless
 * an inherited id carries the same tag (seven takeovers old). Set the tag
 * before putting inherited ids. */
void *kvfs_idmap_ptr(struct kvfs_idmap *m, uint64_t id);

/* Maps ID (never 0) to PTR, replacing any earlier mapping. 0 or -ENOMEM. */
int kvfs_idmap_put(struct kvfs_idmap *m, uint64_t id, void *ptr);
/* The pointer ID maps to, or NULL. */
void *kvfs_idmap_get(struct kvfs_idmap *m, uint64_t id);
/* Forgets ID; nothing if it is not mapped. */
void kvfs_idmap_del(struct kvfs_idmap *m, uint64_t id);
size_t kvfs_idmap_count(struct kvfs_idmap *m);
/* calloc(1, SIZE), at an address whose id is not a mapped (inherited) id. */
void *kvfs_idmap_alloc(struct kvfs_idmap *m, size_t size);
void kvfs_idmap_free(struct kvfs_idmap *m);

#endif
