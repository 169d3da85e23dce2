/* kvfs_idmap: 64-bit ids handed to the kernel that are not addresses.
 *
 * The daemon names inodes and open files to the kernel by the addresses of
 * their structures: a lookup is then a cast, with no table and no lock on the
 * path of every request. A daemon that takes over a running mount
 * (kvfs_handover) inherits ids the kernel already holds, which were addresses
 * in the previous process; this map translates those, and kvfs_idmap_alloc
 * keeps a new structure from being placed at an address that is an inherited
 * id still in use. The map is empty, and costs one atomic load per lookup,
 * in a daemon that did not take over. */
#ifndef KVFS_IDMAP_H
#define KVFS_IDMAP_H

#include <pthread.h>
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
};

#define KVFS_IDMAP_INIT                                                                            \
    { PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, 0 }

/* Maps ID (never 0) to PTR, replacing any earlier mapping. 0 or -ENOMEM. */
int kvfs_idmap_put(struct kvfs_idmap *m, uint64_t id, void *ptr);
/* The pointer ID maps to, or NULL. */
void *kvfs_idmap_get(struct kvfs_idmap *m, uint64_t id);
/* Forgets ID; nothing if it is not mapped. */
void kvfs_idmap_del(struct kvfs_idmap *m, uint64_t id);
size_t kvfs_idmap_count(struct kvfs_idmap *m);
/* calloc(1, SIZE), at an address that is not a mapped id. */
void *kvfs_idmap_alloc(struct kvfs_idmap *m, size_t size);
void kvfs_idmap_free(struct kvfs_idmap *m);

#endif
