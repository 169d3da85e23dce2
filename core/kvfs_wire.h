/* kvfs_wire: a flat binary record format for state handed from one daemon
 * process to the next (kvfs_handover). Writers append fixed-width integers
 * (host order: both ends run on one machine) and length-prefixed byte
 * strings; readers take them back with every length checked. Errors are
 * sticky, so a sequence of calls is checked once at its end: a truncated or
 * malformed record can make a reader fail, never read out of bounds. */
#ifndef KVFS_WIRE_H
#define KVFS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kvfs_wire_out {
    char *buf;
    size_t len, cap;
    int err; /* 0 or -ENOMEM */
};

void kvfs_wire_put_u64(struct kvfs_wire_out *w, uint64_t v);
void kvfs_wire_put_bytes(struct kvfs_wire_out *w, const void *p, size_t n);
/* A string or NULL (which reads back as NULL). */
void kvfs_wire_put_str(struct kvfs_wire_out *w, const char *s);
void kvfs_wire_out_free(struct kvfs_wire_out *w);

struct kvfs_wire_in {
    const char *p;
    size_t left;
    int err; /* 0 or -EBADMSG */
};

void kvfs_wire_in_init(struct kvfs_wire_in *r, const void *buf, size_t len);
uint64_t kvfs_wire_get_u64(struct kvfs_wire_in *r);
/* A u64 that must be at most MAX. */
uint64_t kvfs_wire_get_max(struct kvfs_wire_in *r, uint64_t max);
/* Exactly N bytes into DST. */
void kvfs_wire_get_bytes(struct kvfs_wire_in *r, void *dst, size_t n);
/* A string of at most MAX bytes, malloc'd (NULL for a NULL string; on error
 * NULL with r->err set, -ENOMEM or -EBADMSG). Embedded NULs are refused. */
char *kvfs_wire_get_str(struct kvfs_wire_in *r, size_t max);
/* A string into DST (capacity CAP, including the NUL); "" for NULL. */
void kvfs_wire_get_str_into(struct kvfs_wire_in *r, char *dst, size_t cap);
bool kvfs_wire_in_ok(const struct kvfs_wire_in *r);

/* Descriptors that go with a record (passed beside it, SCM_RIGHTS), named in
 * the record by their index. */
struct kvfs_fdset {
    int *fds;
    size_t n, cap;
};
/* Adds FD (not duplicated; the set does not own it): its index, or -ENOMEM. */
int64_t kvfs_fdset_add(struct kvfs_fdset *s, int fd);
void kvfs_fdset_free(struct kvfs_fdset *s);
/* A descriptor in a record: FD (or -1 for none) is added to FDS and its
 * index written. 0, or -ENOMEM (also left in w->err). */
int kvfs_wire_put_fd(struct kvfs_wire_out *w, struct kvfs_fdset *fds, int fd);
/* Takes the descriptor a record names out of FDS (NFDS of them; its slot
 * becomes -1, so the caller owns it): the descriptor, or -1 for none. An
 * index out of range or already taken sets r->err. */
int kvfs_wire_get_fd(struct kvfs_wire_in *r, int *fds, size_t nfds);

#endif
