/* kvfs_name: block names, reserved names and the fan-out mapping. See the
 * header for the layout; everything here is string work so that the daemon,
 * kvfsctl and the unit tests share exactly one definition of it. */
#include "kvfs_name.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static bool is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_alnum(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool kvfs_name_is_block(const char *name, size_t *hash_len) {
    size_t n = 0;
    while (is_hex(name[n]))
        n++;
    if (n < KVFS_HASH_MIN || n > KVFS_HASH_MAX)
        return false;
    if (name[n] == '.') {
        size_t e = 0;
        while (is_alnum(name[n + 1 + e]))
            e++;
        if (e == 0 || e > KVFS_EXT_MAX || name[n + 1 + e] != '\0')
            return false;
    } else if (name[n] != '\0') {
        return false;
    }
    if (hash_len)
        *hash_len = n;
    return true;
}

bool kvfs_name_is_reserved(const char *name) {
    return strncmp(name, KVFS_RESERVED_PREFIX, sizeof(KVFS_RESERVED_PREFIX) - 1) == 0;
}

int kvfs_name_check(const char *name) {
    size_t len = strlen(name);
    if (len == 0 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || strchr(name, '/'))
        return -EINVAL;
    if (len > KVFS_NAME_MAX)
        return -ENAMETOOLONG;
    if (kvfs_name_is_reserved(name))
        return -EPERM;
    return 0;
}

void kvfs_block_bucket(const char *name, char bucket[KVFS_BUCKET_LEN + 1]) {
    for (int i = 0; i < KVFS_BUCKET_LEN; i++)
        bucket[i] = (char)tolower((unsigned char)name[i]);
    bucket[KVFS_BUCKET_LEN] = '\0';
}

bool kvfs_bucket_is_valid(const char *bucket) {
    for (int i = 0; i < KVFS_BUCKET_LEN; i++) {
        char c = bucket[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return bucket[KVFS_BUCKET_LEN] == '\0';
}

int kvfs_block_relpath(const char *name, char *buf, size_t len) {
    char bucket[KVFS_BUCKET_LEN + 1];
    kvfs_block_bucket(name, bucket);
    int n = snprintf(buf, len, "%s/%s/%s", KVFS_FANOUT_DIR, bucket, name);
    return (n < 0 || (size_t)n >= len) ? -ENAMETOOLONG : 0;
}

/* Appends "/" (unless at the start) and STR to BUF at *pos. */
static int append(char *buf, size_t len, size_t *pos, const char *str, size_t slen) {
    size_t need = (*pos ? 1 : 0) + slen;
    if (*pos + need + 1 > len)
        return -ENAMETOOLONG;
    if (*pos)
        buf[(*pos)++] = '/';
    memcpy(buf + *pos, str, slen);
    *pos += slen;
    buf[*pos] = '\0';
    return 0;
}

int kvfs_path_to_backing(const char *mount_rel, char *buf, size_t len) {
    char comp[KVFS_NAME_MAX + 2];
    size_t pos = 0;
    const char *p = mount_rel;
    if (len == 0)
        return -ENAMETOOLONG;
    buf[0] = '\0';
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *end = strchr(p, '/');
        size_t clen = end ? (size_t)(end - p) : strlen(p);
        if (clen > KVFS_NAME_MAX)
            return -ENAMETOOLONG;
        memcpy(comp, p, clen);
        comp[clen] = '\0';
        int rc = kvfs_name_check(comp);
        if (rc)
            return rc;
        p += clen;
        bool last = (*p == '\0' || strspn(p, "/") == strlen(p));
        if (last && kvfs_name_is_block(comp, NULL)) {
            char rel[sizeof(KVFS_FANOUT_DIR) + KVFS_BUCKET_LEN + KVFS_NAME_MAX + 4];
            rc = kvfs_block_relpath(comp, rel, sizeof(rel));
            if (rc == 0)
                rc = append(buf, len, &pos, rel, strlen(rel));
        } else {
            rc = append(buf, len, &pos, comp, clen);
        }
        if (rc)
            return rc;
    }
    return 0;
}

int kvfs_path_from_backing(const char *backing_rel, char *buf, size_t len) {
    char comp[KVFS_NAME_MAX + 2];
    size_t pos = 0;
    const char *p = backing_rel;
    if (len == 0)
        return -ENAMETOOLONG;
    buf[0] = '\0';
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *end = strchr(p, '/');
        size_t clen = end ? (size_t)(end - p) : strlen(p);
        if (clen > KVFS_NAME_MAX)
            return -ENAMETOOLONG;
        memcpy(comp, p, clen);
        comp[clen] = '\0';
        p += clen;
        if (strcmp(comp, KVFS_FANOUT_DIR) == 0) {
            /* Expect exactly "<bucket>/<block name>" and nothing after it. */
            char bucket[KVFS_NAME_MAX + 2], name[KVFS_NAME_MAX + 2];
            while (*p == '/')
                p++;
            const char *e1 = strchr(p, '/');
            if (!e1 || (size_t)(e1 - p) > KVFS_NAME_MAX)
                return -EINVAL;
            memcpy(bucket, p, (size_t)(e1 - p));
            bucket[e1 - p] = '\0';
            p = e1 + 1;
            size_t nlen = strcspn(p, "/");
            if (nlen == 0 || nlen > KVFS_NAME_MAX || p[nlen] != '\0')
                return -EINVAL;
            memcpy(name, p, nlen);
            name[nlen] = '\0';
            char want[KVFS_BUCKET_LEN + 1];
            if (!kvfs_bucket_is_valid(bucket) || !kvfs_name_is_block(name, NULL))
                return -EINVAL;
            kvfs_block_bucket(name, want);
            if (strcmp(want, bucket) != 0)
                return -EINVAL;
            return append(buf, len, &pos, name, nlen);
        }
        if (kvfs_name_is_reserved(comp))
            return -EPERM;
        int rc = append(buf, len, &pos, comp, clen);
        if (rc)
            return rc;
    }
    return 0;
}
