/* kvfs_idmap: inherited kernel ids (see the header). Open addressing with
 * linear probing and tombstones: entries are only ever added in bulk at a
 * takeover and then removed one by one as the kernel forgets them, so the
 * table never needs to grow on a hot path. */
#include "kvfs_idmap.h"

#include <errno.h>
#include <stdlib.h>

#define TOMBSTONE ((void *)1)

struct kvfs_idmap_entry {
    uint64_t id; /* 0: never used */
    void *ptr;   /* TOMBSTONE: removed */
};

static size_t slot_of(uint64_t id, size_t cap) {
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 16) & (cap - 1);
}

/* The slot holding ID, or NULL; called with the lock held. */
static struct kvfs_idmap_entry *find_locked(struct kvfs_idmap *m, uint64_t id) {
    if (!m->cap)
        return NULL;
    for (size_t i = slot_of(id, m->cap), n = 0; n < m->cap; i = (i + 1) & (m->cap - 1), n++) {
        struct kvfs_idmap_entry *e = &m->slots[i];
        if (e->id == 0)
            return NULL;
        if (e->id == id && e->ptr != TOMBSTONE)
            return e;
    }
    return NULL;
}

static void insert_locked(struct kvfs_idmap *m, uint64_t id, void *ptr) {
    for (size_t i = slot_of(id, m->cap);; i = (i + 1) & (m->cap - 1)) {
        struct kvfs_idmap_entry *e = &m->slots[i];
        if (e->id == 0) {
            e->id = id;
            e->ptr = ptr;
            m->used++;
            return;
        }
    }
}

/* Rebuilds the table with room for twice the live entries, dropping
 * tombstones. */
static int rehash_locked(struct kvfs_idmap *m, size_t want) {
    size_t cap = 64;
    while (cap < want * 2)
        cap *= 2;
    struct kvfs_idmap_entry *old = m->slots;
    size_t oldcap = m->cap;
    struct kvfs_idmap_entry *s = calloc(cap, sizeof(*s));
    if (!s)
        return -ENOMEM;
    m->slots = s;
    m->cap = cap;
    m->used = 0;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].id && old[i].ptr != TOMBSTONE)
            insert_locked(m, old[i].id, old[i].ptr);
    free(old);
    return 0;
}

int kvfs_idmap_put(struct kvfs_idmap *m, uint64_t id, void *ptr) {
    if (id == 0 || ptr == NULL || ptr == TOMBSTONE)
        return -EINVAL;
    pthread_mutex_lock(&m->lock);
    struct kvfs_idmap_entry *e = find_locked(m, id);
    int rc = 0;
    if (e) {
        e->ptr = ptr;
    } else {
        size_t live = atomic_load(&m->count);
        if ((m->used + 1) * 4 > m->cap * 3)
            rc = rehash_locked(m, live + 1);
        if (rc == 0) {
            if ((id & KVFS_IDMAP_TAG_MASK) == m->tag)
                m->tag_shared = true;
            insert_locked(m, id, ptr);
            atomic_fetch_add(&m->count, 1);
        }
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

void *kvfs_idmap_get(struct kvfs_idmap *m, uint64_t id) {
    if (atomic_load_explicit(&m->count, memory_order_acquire) == 0)
        return NULL;
    pthread_mutex_lock(&m->lock);
    struct kvfs_idmap_entry *e = find_locked(m, id);
    void *p = e ? e->ptr : NULL;
    pthread_mutex_unlock(&m->lock);
    return p;
}

void kvfs_idmap_del(struct kvfs_idmap *m, uint64_t id) {
    if (atomic_load_explicit(&m->count, memory_order_acquire) == 0)
        return;
    pthread_mutex_lock(&m->lock);
    struct kvfs_idmap_entry *e = find_locked(m, id);
    if (e) {
        e->ptr = TOMBSTONE;
        if (atomic_fetch_sub(&m->count, 1) == 1) {
            /* The last inherited id is gone: back to the plain table. */
            free(m->slots);
            m->slots = NULL;
            m->cap = 0;
            m->used = 0;
        }
    }
    pthread_mutex_unlock(&m->lock);
}

size_t kvfs_idmap_count(struct kvfs_idmap *m) {
    return atomic_load(&m->count);
}

uint64_t kvfs_idmap_next_tag(uint64_t prev) {
    return prev % KVFS_IDMAP_TAG_MASK + 1; /* 1..7, then 1 again */
}

void kvfs_idmap_set_tag(struct kvfs_idmap *m, uint64_t tag) {
    m->tag = tag & KVFS_IDMAP_TAG_MASK;
}

uint64_t kvfs_idmap_id(const struct kvfs_idmap *m, const void *ptr) {
    return (uint64_t)(uintptr_t)ptr | m->tag;
}

void *kvfs_idmap_ptr(struct kvfs_idmap *m, uint64_t id) {
    if ((id & KVFS_IDMAP_TAG_MASK) == m->tag && !m->tag_shared)
        return (void *)(uintptr_t)(id & ~(uint64_t)KVFS_IDMAP_TAG_MASK);
    void *p = kvfs_idmap_get(m, id);
    return p ? p : (void *)(uintptr_t)(id & ~(uint64_t)KVFS_IDMAP_TAG_MASK);
}

void *kvfs_idmap_alloc(struct kvfs_idmap *m, size_t size) {
    void *p = calloc(1, size);
    if (!p || atomic_load(&m->count) == 0)
        return p;
    /* Hold every colliding block until one does not collide, so that the
     * allocator cannot hand the same address back. With generation tags a
     * collision needs an id of the same tag, seven takeovers old, still in
     * use: rare. */
    void *held[64];
    int n = 0;
    while (p && kvfs_idmap_get(m, kvfs_idmap_id(m, p))) {
        if (n == 64) {
            free(p);
            p = NULL;
            break;
        }
        held[n++] = p;
        p = calloc(1, size);
    }
    while (n > 0)
        free(held[--n]);
    return p;
}

void kvfs_idmap_free(struct kvfs_idmap *m) {
    pthread_mutex_lock(&m->lock);
    free(m->slots);
    m->slots = NULL;
    m->cap = 0;
    m->used = 0;
    atomic_store(&m->count, 0);
    pthread_mutex_unlock(&m->lock);
}
