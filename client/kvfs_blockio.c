/* kvfs_blockio: storing, loading and finding one block file.
 *
 * On a kvfs mount a store writes the final name: kvfs stages it and publishes
 * it atomically when it is closed, and refuses a second copy of a block that
 * exists. Anywhere else it writes a private temp name and link()s it into
 * place, which is atomic on every POSIX filesystem (NFS included) and, like
 * kvfs, never replaces a block another reader may have open. Either way the
 * first complete copy of a block wins and later ones report "existed". */
#define _GNU_SOURCE
#include "kvfs_client_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include "kvfs_hash.h"

#define FUSE_SUPER_MAGIC 0x65735546

int kvfs_io_check_name(const char *name) {
    size_t len = strlen(name);
    if (len == 0 || len >= PATH_MAX || name[0] == '/')
        return -EINVAL;
    for (const char *p = name; *p;) {
        size_t c = strcspn(p, "/");
        if (c == 0 || (c == 1 && p[0] == '.') || (c == 2 && p[0] == '.' && p[1] == '.'))
            return -EINVAL;
        if (c > NAME_MAX)
            return -ENAMETOOLONG;
        p += c;
        if (*p == '/')
            p++;
    }
    return 0;
}

/* mkdir -p of NAME's parent directories below ROOT_FD. */
static int make_parents(int root_fd, const char *name) {
    char path[PATH_MAX + 128];
    snprintf(path, sizeof(path), "%s", name);
    for (char *p = strchr(path, '/'); p; p = strchr(p + 1, '/')) {
        *p = '\0';
        if (mkdirat(root_fd, path, 0755) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    return 0;
}

static int open_create(int root_fd, const char *name) {
    int fd = openat(root_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == ENOENT) {
        int rc = make_parents(root_fd, name);
        if (rc)
            return rc;
        fd = openat(root_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    }
    return fd < 0 ? -errno : fd;
}

/* Blocks are hashed in pieces just before they are written, or just after
 * they are read, while each piece is still in the CPU cache: one pass over
 * memory instead of two. */
#define PIECE (512u << 10) /* fits a core's L2 */

static int pwrite_all(int fd, const char *p, size_t len, off_t off) {
    while (len) {
        ssize_t w = pwrite(fd, p, len, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        off += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Writes the payload (hashing it on the way) and then the header. */
static int write_block(int fd, char *buf, size_t plen, const struct kvfs_layout *l) {
    struct kvfs_hash st;
    kvfs_hash_reset(&st);
    const char *payload = buf + KVFS_HEADER_SIZE;
    for (size_t off = 0; off < plen; off += PIECE) {
        size_t n = plen - off < PIECE ? plen - off : PIECE;
        kvfs_hash_update(&st, payload + off, n);
        int rc = pwrite_all(fd, payload + off, n, (off_t)(KVFS_HEADER_SIZE + off));
        if (rc)
            return rc;
    }
    kvfs_header_encode(buf, l, plen, kvfs_hash_digest(&st));
    return pwrite_all(fd, buf, KVFS_HEADER_SIZE, 0);
}

int kvfs_io_store(int root_fd, const char *name, char *buf, size_t plen,
                  const struct kvfs_layout *l, bool direct) {
    static _Atomic unsigned long seq;
    char tmp[PATH_MAX + 64];
    const char *target = name;
    if (!direct) {
        snprintf(tmp, sizeof(tmp), "%s.tmp.%d.%lu", name, (int)gettid(),
                 (unsigned long)atomic_fetch_add(&seq, 1));
        target = tmp;
    }
    int fd = open_create(root_fd, target);
    if (fd == -EEXIST && direct)
        return KVFS_RESULT_EXISTED;
    if (fd < 0)
        return fd;
    int rc = write_block(fd, buf, plen, l);
    /* On kvfs, close() publishes and reports the publication's error. */
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc) {
        /* Never leave a partial block under any name (on kvfs a failed write
         * may still have been published by close(); its checksum would catch
         * it, but it must not linger). */
        unlinkat(root_fd, target, 0);
        return rc;
    }
    if (direct)
        return 0;
    if (linkat(root_fd, tmp, root_fd, name, 0) != 0)
        rc = errno == EEXIST ? KVFS_RESULT_EXISTED : -errno;
    unlinkat(root_fd, tmp, 0);
    return rc;
}

static int read_all(int fd, char *p, size_t len, size_t *got) {
    *got = 0;
    while (*got < len) {
        ssize_t r = read(fd, p + *got, len - *got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        *got += (size_t)r;
    }
    return 0;
}

int kvfs_io_load(int root_fd, const char *name, void *vbuf, size_t len,
                 const struct kvfs_layout *layout) {
    char *buf = vbuf;
    int fd = openat(root_fd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    size_t got = 0;
    int rc = fstat(fd, &st) == 0 ? 0 : -errno;
    if (rc == 0)
        rc = read_all(fd, buf, KVFS_HEADER_SIZE < len ? KVFS_HEADER_SIZE : len, &got);
    uint64_t plen = 0, want_sum = 0;
    if (rc == 0) {
        if (got < KVFS_HEADER_SIZE)
            rc = kvfs_block_verify(buf, got, layout); /* SHORT or FORMAT */
        else
            rc = kvfs_header_check(buf, got, layout, &plen, &want_sum);
    }
    if (rc == 0 && (size_t)st.st_size != KVFS_HEADER_SIZE + plen)
        rc = (size_t)st.st_size < KVFS_HEADER_SIZE + plen ? KVFS_E_SHORT : KVFS_E_CORRUPT;
    if (rc == 0 && KVFS_HEADER_SIZE + plen > len)
        rc = KVFS_E_LAYOUT;
    struct kvfs_hash hs;
    kvfs_hash_reset(&hs);
    for (size_t off = 0; rc == 0 && off < plen; off += PIECE) {
        size_t n = plen - off < PIECE ? plen - off : PIECE, piece = 0;
        char *p = buf + KVFS_HEADER_SIZE + off;
        rc = read_all(fd, p, n, &piece);
        if (rc == 0 && piece < n)
            rc = KVFS_E_SHORT; /* shrank while we read it */
        if (rc == 0)
            kvfs_hash_update(&hs, p, n);
    }
    close(fd);
    if (rc == 0 && kvfs_hash_digest(&hs) != want_sum)
        rc = KVFS_E_CORRUPT;
    return rc;
}

int kvfs_io_exists(int root_fd, const char *name) {
    if (faccessat(root_fd, name, F_OK, 0) == 0)
        return 1;
    return errno == ENOENT ? 0 : -errno;
}

bool kvfs_io_is_kvfs_mount(const char *path) {
    struct statfs sf;
    char real[PATH_MAX];
    if (statfs(path, &sf) != 0 || sf.f_type != FUSE_SUPER_MAGIC || !realpath(path, real))
        return false;
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f)
        return false;
    char line[8192], best_type[64] = "";
    size_t best = 0;
    while (fgets(line, sizeof(line), f)) {
        /* id parent major:minor root mountpoint options... - fstype source ... */
        char mnt[PATH_MAX], type[64];
        char *sep = strstr(line, " - ");
        if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 ||
            sscanf(sep + 3, "%63s", type) != 1)
            continue;
        size_t n = strlen(mnt);
        bool covers = strcmp(mnt, "/") == 0 ||
                      (strncmp(real, mnt, n) == 0 && (real[n] == '\0' || real[n] == '/'));
        if (covers && n >= best) {
            best = n;
            snprintf(best_type, sizeof(best_type), "%s", type);
        }
    }
    fclose(f);
    return strcmp(best_type, "fuse.kvfs") == 0;
}
