/* kvfs_index: the in-memory block index (see the header for its layout and
 * why it is that compact). */
#include "kvfs_index.h"
#include "kvfs_name.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A name's hex digits are packed two per byte; CASE says how to unpack. */
enum { CASE_LOWER = 0, CASE_UPPER = 1, CASE_RAW = 2 /* mixed: stored as text */ };

struct entry {
    uint64_t size;
    uint32_t atime;
    uint32_t dir;
    uint32_t name_off; /* in the name arena */
    uint16_t open;
    uint8_t digits;   /* hex digits (16..128), or the text length for CASE_RAW */
    uint8_t ext_case; /* extension id (high 6 bits) and case (low 2 bits) */
};

struct slot {
    uint32_t idx; /* entry index + 1; 0 empty, UINT32_MAX deleted */
    uint32_t tag; /* low bits of the hash, to skip most compares */
};

struct kvfs_index {
    struct entry *ents;
    size_t n, cap;
    struct slot *slots;
    size_t nslots, used; /* used: live + deleted slots */
    unsigned char *names;
    size_t names_len, names_cap, names_garbage;
    char *exts[64]; /* interned extensions; ext id 0 is "no extension" */
    size_t next;
    char **dirs;
    size_t ndirs, dirs_cap;
    uint64_t usage;
};

#define DELETED UINT32_MAX

struct kvfs_index *kvfs_index_new(void) {
    struct kvfs_index *ix = calloc(1, sizeof(*ix));
    if (!ix)
        return NULL;
    ix->nslots = 1024;
    ix->slots = calloc(ix->nslots, sizeof(*ix->slots));
    ix->next = 1;
    if (!ix->slots) {
        free(ix);
        return NULL;
    }
    return ix;
}

void kvfs_index_free(struct kvfs_index *ix) {
    if (!ix)
        return;
    for (size_t i = 0; i < ix->ndirs; i++)
        free(ix->dirs[i]);
    for (size_t i = 1; i < ix->next; i++)
        free(ix->exts[i]);
    free(ix->dirs);
    free(ix->ents);
    free(ix->slots);
    free(ix->names);
    free(ix);
}

int64_t kvfs_index_dir(struct kvfs_index *ix, const char *relpath) {
    /* Few directories per node change over time; a linear scan from the most
     * recent one is enough and keeps the memory small. */
    for (size_t i = ix->ndirs; i-- > 0;)
        if (strcmp(ix->dirs[i], relpath) == 0)
            return (int64_t)i;
    if (ix->ndirs == ix->dirs_cap) {
        size_t cap = ix->dirs_cap ? ix->dirs_cap * 2 : 64;
        char **d = realloc(ix->dirs, cap * sizeof(*d));
        if (!d)
            return -ENOMEM;
        ix->dirs = d;
        ix->dirs_cap = cap;
    }
    char *copy = strdup(relpath);
    if (!copy)
        return -ENOMEM;
    ix->dirs[ix->ndirs] = copy;
    return (int64_t)ix->ndirs++;
}

const char *kvfs_index_dir_path(const struct kvfs_index *ix, uint32_t dir) {
    return dir < ix->ndirs ? ix->dirs[dir] : NULL;
}

static int hexval(char c) {
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* The packed form of a block name: returns its arena bytes in BUF and fills
 * DIGITS and EXT_CASE, or -EINVAL / -ENOMEM (a new extension). */
static int pack(struct kvfs_index *ix, bool intern, const char *name, unsigned char *buf,
                size_t *len, uint8_t *digits, uint8_t *ext_case) {
    size_t hl;
    if (!kvfs_name_is_block(name, &hl))
        return -EINVAL;
    bool lower = true, upper = true;
    for (size_t i = 0; i < hl; i++) {
        if (name[i] >= 'a' && name[i] <= 'f')
            upper = false;
        else if (name[i] >= 'A' && name[i] <= 'F')
            lower = false;
    }
    unsigned ext = 0;
    if (name[hl] == '.') {
        while (ext + 1 < ix->next && strcmp(ix->exts[ext + 1], name + hl + 1) != 0)
            ext++;
        ext++;
        if (ext == ix->next) {
            if (!intern)
                return -ENOENT;
            if (ix->next == 64 || !(ix->exts[ix->next] = strdup(name + hl + 1)))
                return -ENOMEM;
            ix->next++;
        }
    }
    if (!lower && !upper) {
        memcpy(buf, name, hl);
        *len = hl;
        *digits = (uint8_t)hl;
        *ext_case = (uint8_t)(ext << 2 | CASE_RAW);
        return 0;
    }
    memset(buf, 0, (hl + 1) / 2);
    for (size_t i = 0; i < hl; i++)
        buf[i / 2] |= (unsigned char)(hexval(name[i]) << ((i & 1) ? 0 : 4));
    *len = (hl + 1) / 2;
    *digits = (uint8_t)hl;
    *ext_case = (uint8_t)(ext << 2 | (lower ? CASE_LOWER : CASE_UPPER));
    return 0;
}

static size_t packed_len(const struct entry *e) {
    return (e->ext_case & 3) == CASE_RAW ? e->digits : (size_t)(e->digits + 1) / 2;
}

static uint64_t hash(uint32_t dir, const unsigned char *p, size_t len, uint8_t digits,
                     uint8_t ext_case) {
    uint64_t h = 0xcbf29ce484222325ull ^ dir;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    h = (h ^ digits) * 0x100000001b3ull;
    h = (h ^ ext_case) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static uint64_t entry_hash(const struct kvfs_index *ix, const struct entry *e) {
    return hash(e->dir, ix->names + e->name_off, packed_len(e), e->digits, e->ext_case);
}

/* The slot of a key, or the first free one after it. */
static size_t probe(const struct kvfs_index *ix, uint64_t h, uint32_t dir, const unsigned char *p,
                    size_t len, uint8_t digits, uint8_t ext_case, bool *found) {
    size_t mask = ix->nslots - 1, i = (size_t)h & mask, free_at = SIZE_MAX;
    uint32_t tag = (uint32_t)(h >> 32);
    for (;; i = (i + 1) & mask) {
        const struct slot *s = &ix->slots[i];
        if (s->idx == 0) {
            *found = false;
            return free_at != SIZE_MAX ? free_at : i;
        }
        if (s->idx == DELETED) {
            if (free_at == SIZE_MAX)
                free_at = i;
            continue;
        }
        const struct entry *e = &ix->ents[s->idx - 1];
        if (s->tag == tag && e->dir == dir && e->digits == digits && e->ext_case == ext_case &&
            memcmp(ix->names + e->name_off, p, len) == 0) {
            *found = true;
            return i;
        }
    }
}

static int rehash(struct kvfs_index *ix, size_t nslots) {
    struct slot *s = calloc(nslots, sizeof(*s));
    if (!s)
        return -ENOMEM;
    /* Compact the name arena at the same time. */
    unsigned char *names = NULL;
    size_t nlen = 0;
    if (ix->names_garbage) {
        names = malloc(ix->names_len - ix->names_garbage + 1);
        if (!names) {
            free(s);
            return -ENOMEM;
        }
    }
    free(ix->slots);
    ix->slots = s;
    ix->nslots = nslots;
    ix->used = ix->n;
    for (size_t k = 0; k < ix->n; k++) {
        struct entry *e = &ix->ents[k];
        if (names) {
            memcpy(names + nlen, ix->names + e->name_off, packed_len(e));
            e->name_off = (uint32_t)nlen;
            nlen += packed_len(e);
        }
    }
    if (names) {
        free(ix->names);
        ix->names = names;
        ix->names_len = ix->names_cap = nlen;
        ix->names_garbage = 0;
    }
    for (size_t k = 0; k < ix->n; k++) {
        uint64_t h = entry_hash(ix, &ix->ents[k]);
        size_t i = (size_t)h & (nslots - 1);
        while (s[i].idx)
            i = (i + 1) & (nslots - 1);
        s[i].idx = (uint32_t)k + 1;
        s[i].tag = (uint32_t)(h >> 32);
    }
    return 0;
}

struct key {
    unsigned char buf[KVFS_HASH_MAX];
    size_t len;
    uint8_t digits, ext_case;
    uint64_t h;
};

static int make_key(struct kvfs_index *ix, bool intern, uint32_t dir, const char *name,
                    struct key *k) {
    int rc = pack(ix, intern, name, k->buf, &k->len, &k->digits, &k->ext_case);
    if (rc == 0)
        k->h = hash(dir, k->buf, k->len, k->digits, k->ext_case);
    return rc;
}

static struct entry *find(const struct kvfs_index *ix, uint32_t dir, const char *name,
                          size_t *slot) {
    struct key k;
    if (make_key((struct kvfs_index *)ix, false, dir, name, &k) != 0)
        return NULL;
    bool found;
    size_t i = probe(ix, k.h, dir, k.buf, k.len, k.digits, k.ext_case, &found);
    if (!found)
        return NULL;
    if (slot)
        *slot = i;
    return &ix->ents[ix->slots[i].idx - 1];
}

int kvfs_index_put(struct kvfs_index *ix, uint32_t dir, const char *name, uint64_t size,
                   uint32_t atime) {
    struct key k;
    int rc = make_key(ix, true, dir, name, &k);
    if (rc)
        return rc;
    bool found;
    size_t i = probe(ix, k.h, dir, k.buf, k.len, k.digits, k.ext_case, &found);
    if (found) {
        struct entry *e = &ix->ents[ix->slots[i].idx - 1];
        ix->usage += size - e->size;
        e->size = size;
        if (atime > e->atime)
            e->atime = atime;
        return 0;
    }
    if ((ix->used + 1) * 10 > ix->nslots * 7) {
        rc = rehash(ix, ix->n * 10 > ix->nslots * 5 ? ix->nslots * 2 : ix->nslots);
        if (rc)
            return rc;
        i = probe(ix, k.h, dir, k.buf, k.len, k.digits, k.ext_case, &found);
    }
    if (ix->n == ix->cap) {
        size_t cap = ix->cap ? ix->cap + ix->cap / 2 : 1024;
        struct entry *e = realloc(ix->ents, cap * sizeof(*e));
        if (!e)
            return -ENOMEM;
        ix->ents = e;
        ix->cap = cap;
    }
    if (ix->names_len + k.len > ix->names_cap) {
        size_t cap = ix->names_cap ? ix->names_cap + ix->names_cap / 2 : 65536;
        if (cap < ix->names_len + k.len)
            cap = ix->names_len + k.len;
        unsigned char *nm = realloc(ix->names, cap);
        if (!nm)
            return -ENOMEM;
        ix->names = nm;
        ix->names_cap = cap;
    }
    memcpy(ix->names + ix->names_len, k.buf, k.len);
    ix->ents[ix->n] =
        (struct entry){size, atime, dir, (uint32_t)ix->names_len, 0, k.digits, k.ext_case};
    ix->names_len += k.len;
    if (ix->slots[i].idx == 0)
        ix->used++;
    ix->slots[i].idx = (uint32_t)++ix->n;
    ix->slots[i].tag = (uint32_t)(k.h >> 32);
    ix->usage += size;
    return 0;
}

bool kvfs_index_get(const struct kvfs_index *ix, uint32_t dir, const char *name,
                    struct kvfs_index_info *out) {
    const struct entry *e = find(ix, dir, name, NULL);
    if (e && out)
        *out = (struct kvfs_index_info){e->size, e->atime, e->open};
    return e != NULL;
}

bool kvfs_index_touch(struct kvfs_index *ix, uint32_t dir, const char *name, uint32_t atime) {
    struct entry *e = find(ix, dir, name, NULL);
    if (e && atime > e->atime)
        e->atime = atime;
    return e != NULL;
}

bool kvfs_index_open(struct kvfs_index *ix, uint32_t dir, const char *name, int delta) {
    struct entry *e = find(ix, dir, name, NULL);
    if (!e)
        return false;
    int v = (int)e->open + delta;
    e->open = (uint16_t)(v < 0 ? 0 : v > 65535 ? 65535 : v);
    return true;
}

bool kvfs_index_remove(struct kvfs_index *ix, uint32_t dir, const char *name, uint64_t *size) {
    size_t slot;
    struct entry *e = find(ix, dir, name, &slot);
    if (!e)
        return false;
    size_t k = ix->slots[slot].idx - 1;
    if (size)
        *size = e->size;
    ix->usage -= e->size;
    ix->names_garbage += packed_len(e);
    ix->slots[slot].idx = DELETED;
    /* Keep the array dense: move the last entry into the hole. */
    size_t last = ix->n - 1;
    if (k != last) {
        uint64_t h = entry_hash(ix, &ix->ents[last]);
        size_t mask = ix->nslots - 1, i = (size_t)h & mask;
        while (ix->slots[i].idx != last + 1)
            i = (i + 1) & mask;
        ix->slots[i].idx = (uint32_t)k + 1;
        ix->ents[k] = ix->ents[last];
    }
    ix->n--;
    return true;
}

uint64_t kvfs_index_usage(const struct kvfs_index *ix) {
    return ix->usage;
}

size_t kvfs_index_count(const struct kvfs_index *ix) {
    return ix->n;
}

size_t kvfs_index_memory(const struct kvfs_index *ix) {
    size_t m = sizeof(*ix) + ix->cap * sizeof(struct entry) + ix->nslots * sizeof(struct slot) +
               ix->names_cap + ix->dirs_cap * sizeof(char *);
    for (size_t i = 0; i < ix->ndirs; i++)
        m += strlen(ix->dirs[i]) + 1;
    return m;
}

/* The text of an entry's name. */
static void unpack(const struct kvfs_index *ix, const struct entry *e, char *out) {
    const unsigned char *p = ix->names + e->name_off;
    size_t n = e->digits;
    int c = e->ext_case & 3;
    if (c == CASE_RAW) {
        memcpy(out, p, n);
    } else {
        const char *digits = c == CASE_LOWER ? "0123456789abcdef" : "0123456789ABCDEF";
        for (size_t i = 0; i < n; i++)
            out[i] = digits[(p[i / 2] >> ((i & 1) ? 0 : 4)) & 15];
    }
    out[n] = '\0';
    unsigned ext = e->ext_case >> 2;
    if (ext) {
        out[n] = '.';
        strcpy(out + n + 1, ix->exts[ext]);
    }
}

int kvfs_index_merge_live(struct kvfs_index *into, const struct kvfs_index *from) {
    if (!from)
        return 0;
    char name[160];
    for (size_t k = 0; k < from->n; k++) {
        const struct entry *e = &from->ents[k];
        int64_t d = kvfs_index_dir(into, from->dirs[e->dir]);
        if (d < 0)
            return (int)d;
        unpack(from, e, name);
        struct kvfs_index_info in;
        if (kvfs_index_get(into, (uint32_t)d, name, &in)) {
            kvfs_index_touch(into, (uint32_t)d, name, e->atime);
            kvfs_index_open(into, (uint32_t)d, name, (int)e->open);
        } else if (e->open > 0) {
            int rc = kvfs_index_put(into, (uint32_t)d, name, e->size, e->atime);
            if (rc)
                return rc;
            kvfs_index_open(into, (uint32_t)d, name, (int)e->open);
        }
    }
    return 0;
}

struct cand {
    uint32_t atime;
    uint32_t idx;
};

static int cmp_cand(const void *a, const void *b) {
    const struct cand *x = a, *y = b;
    if (x->atime != y->atime)
        return x->atime < y->atime ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

int64_t kvfs_index_pick(const struct kvfs_index *ix, uint64_t need, struct kvfs_victim **out) {
    *out = NULL;
    if (need == 0 || ix->n == 0)
        return 0;
    struct cand *c = malloc(ix->n * sizeof(*c));
    if (!c)
        return -ENOMEM;
    size_t nc = 0;
    for (size_t k = 0; k < ix->n; k++)
        if (ix->ents[k].open == 0)
            c[nc++] = (struct cand){ix->ents[k].atime, (uint32_t)k};
    qsort(c, nc, sizeof(*c), cmp_cand);
    size_t take = 0;
    uint64_t got = 0;
    while (take < nc && got < need)
        got += ix->ents[c[take++].idx].size;
    struct kvfs_victim *v = take ? malloc(take * sizeof(*v)) : NULL;
    if (take && !v) {
        free(c);
        return -ENOMEM;
    }
    for (size_t i = 0; i < take; i++) {
        const struct entry *e = &ix->ents[c[i].idx];
        v[i].dir = e->dir;
        v[i].atime = e->atime;
        v[i].size = e->size;
        unpack(ix, e, v[i].name);
    }
    free(c);
    *out = v;
    return (int64_t)take;
}

uint64_t kvfs_evict_need(uint64_t usage, uint64_t capacity, unsigned high, unsigned low) {
    if (capacity == 0)
        return 0;
    /* Fractions of capacity without overflow for any realistic size. */
    uint64_t hi = capacity / 100 * high + capacity % 100 * high / 100;
    uint64_t lo = capacity / 100 * low + capacity % 100 * low / 100;
    return usage > hi ? usage - lo : 0;
}
