/* kvfs_wire: see the header. */
#include "kvfs_wire.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define NULL_STR UINT64_MAX

void kvfs_wire_put_bytes(struct kvfs_wire_out *w, const void *p, size_t n) {
    if (w->err)
        return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + n)
            cap *= 2;
        char *b = realloc(w->buf, cap);
        if (!b) {
            w->err = -ENOMEM;
            return;
        }
        w->buf = b;
        w->cap = cap;
    }
    if (n)
        memcpy(w->buf + w->len, p, n);
    w->len += n;
}

void kvfs_wire_put_u64(struct kvfs_wire_out *w, uint64_t v) {
    kvfs_wire_put_bytes(w, &v, sizeof(v));
}

void kvfs_wire_put_str(struct kvfs_wire_out *w, const char *s) {
    if (!s) {
        kvfs_wire_put_u64(w, NULL_STR);
        return;
    }
    size_t n = strlen(s);
    kvfs_wire_put_u64(w, n);
    kvfs_wire_put_bytes(w, s, n);
}

void kvfs_wire_out_free(struct kvfs_wire_out *w) {
    free(w->buf);
    memset(w, 0, sizeof(*w));
}

void kvfs_wire_in_init(struct kvfs_wire_in *r, const void *buf, size_t len) {
    r->p = buf;
    r->left = len;
    r->err = 0;
}

void kvfs_wire_get_bytes(struct kvfs_wire_in *r, void *dst, size_t n) {
    if (r->err || n > r->left) {
        r->err = r->err ? r->err : -EBADMSG;
        memset(dst, 0, n);
        return;
    }
    memcpy(dst, r->p, n);
    r->p += n;
    r->left -= n;
}

uint64_t kvfs_wire_get_u64(struct kvfs_wire_in *r) {
    uint64_t v;
    kvfs_wire_get_bytes(r, &v, sizeof(v));
    return v;
}

uint64_t kvfs_wire_get_max(struct kvfs_wire_in *r, uint64_t max) {
    uint64_t v = kvfs_wire_get_u64(r);
    if (!r->err && v > max)
        r->err = -EBADMSG;
    return r->err ? 0 : v;
}

char *kvfs_wire_get_str(struct kvfs_wire_in *r, size_t max) {
    uint64_t n = kvfs_wire_get_u64(r);
    if (r->err || n == NULL_STR)
        return NULL;
    if (n > max || n > r->left || memchr(r->p, '\0', (size_t)n)) {
        r->err = -EBADMSG;
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (!s) {
        r->err = -ENOMEM;
        return NULL;
    }
    kvfs_wire_get_bytes(r, s, (size_t)n);
    s[n] = '\0';
    return s;
}

void kvfs_wire_get_str_into(struct kvfs_wire_in *r, char *dst, size_t cap) {
    char *s = kvfs_wire_get_str(r, cap - 1);
    snprintf(dst, cap, "%s", s ? s : "");
    free(s);
}

bool kvfs_wire_in_ok(const struct kvfs_wire_in *r) {
    return r->err == 0;
}

int64_t kvfs_fdset_add(struct kvfs_fdset *s, int fd) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        int *f = realloc(s->fds, cap * sizeof(*f));
        if (!f)
            return -ENOMEM;
        s->fds = f;
        s->cap = cap;
    }
    s->fds[s->n] = fd;
    return (int64_t)s->n++;
}

void kvfs_fdset_free(struct kvfs_fdset *s) {
    free(s->fds);
    memset(s, 0, sizeof(*s));
}

#define NO_FD UINT64_MAX

int kvfs_wire_put_fd(struct kvfs_wire_out *w, struct kvfs_fdset *fds, int fd) {
    int64_t i = -1;
    if (fd >= 0 && (i = kvfs_fdset_add(fds, fd)) < 0) {
        if (!w->err)
            w->err = (int)i;
        return (int)i;
    }
    kvfs_wire_put_u64(w, i < 0 ? NO_FD : (uint64_t)i);
    return 0;
}

int kvfs_wire_get_fd(struct kvfs_wire_in *r, int *fds, size_t nfds) {
    uint64_t i = kvfs_wire_get_u64(r);
    if (!kvfs_wire_in_ok(r) || i == NO_FD)
        return -1;
    if (i >= nfds || fds[i] < 0) {
        r->err = -EBADMSG;
        return -1;
    }
    int fd = fds[i];
    fds[i] = -1;
    return fd;
}
