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

/* Copies the next '/'-separated component of *P into COMP (skipping empty
 * ones) and advances *P. Returns its length, 0 at the end, or -ENAMETOOLONG. */
static int next_component(const char **p, char comp[KVFS_NAME_MAX + 1]) {
    while (**p == '/')
        (*p)++;
    size_t clen = strcspn(*p, "/");
    if (clen > KVFS_NAME_MAX)
        return -ENAMETOOLONG;
    memcpy(comp, *p, clen);
    comp[clen] = '\0';
    *p += clen;
    while (**p == '/')
        (*p)++;
    return (int)clen;
}

int kvfs_path_to_backing(const char *mount_rel, char *buf, size_t len) {
    char comp[KVFS_NAME_MAX + 1];
    size_t pos = 0;
    const char *p = mount_rel;
    if (len == 0)
        return -ENAMETOOLONG;
    buf[0] = '\0';
    int clen;
    while ((clen = next_component(&p, comp)) > 0) {
        int rc = kvfs_name_check(comp);
        if (rc)
            return rc;
        if (*p == '\0' && kvfs_name_is_block(comp, NULL)) { /* only a last component is a block */
            char rel[sizeof(KVFS_FANOUT_DIR) + KVFS_BUCKET_LEN + KVFS_NAME_MAX + 4];
            rc = kvfs_block_relpath(comp, rel, sizeof(rel));
            if (rc == 0)
                rc = append(buf, len, &pos, rel, strlen(rel));
        } else {
            rc = append(buf, len, &pos, comp, (size_t)clen);
        }
        if (rc)
            return rc;
    }
    return clen;
}

int kvfs_path_from_backing(const char *backing_rel, char *buf, size_t len) {
    char comp[KVFS_NAME_MAX + 1];
    size_t pos = 0;
    const char *p = backing_rel;
    if (len == 0)
        return -ENAMETOOLONG;
    buf[0] = '\0';
    int clen;
    while ((clen = next_component(&p, comp)) > 0) {
        if (strcmp(comp, KVFS_FANOUT_DIR) == 0) {
            /* Expect exactly "<bucket>/<block name>" and nothing after it. */
            char bucket[KVFS_NAME_MAX + 1], name[KVFS_NAME_MAX + 1], want[KVFS_BUCKET_LEN + 1];
            if (next_component(&p, bucket) <= 0 || next_component(&p, name) <= 0 || *p != '\0')
                return -EINVAL;
            if (!kvfs_bucket_is_valid(bucket) || !kvfs_name_is_block(name, NULL))
                return -EINVAL;
            kvfs_block_bucket(name, want);
            if (strcmp(want, bucket) != 0)
                return -EINVAL;
            return append(buf, len, &pos, name, strlen(name));
        }
        if (kvfs_name_is_reserved(comp))
            return -EPERM;
        int rc = append(buf, len, &pos, comp, (size_t)clen);
        if (rc)
            return rc;
    }
    return clen;
}
