/* kvfs_lease: at most one evictor among the nodes sharing a backing store.
 *
 * The lease is one small file, BACKING/.kvfs-state/evict.lease:
 *
 *     holder NODE.PID
 *     expires MILLISECONDS-SINCE-EPOCH
 *
 * Every change writes a private temp file and renames (or links) it into
 * place, so a reader always sees a whole lease:
 *
 *  - take:     no lease file: link() the temp to it (the first node wins);
 *              an expired lease (its expiry plus a grace for clock skew has
 *              passed): rename() over it, then, after a settle delay, read it
 *              back; only the node whose name it holds may evict. Two nodes
 *              taking over at once both rename, and the later rename wins
 *              before either reads back.
 *  - renew:    the holder rewrites it with a new expiry while it is still
 *              its own (read back first); a holder that finds another name has
 *              lost the lease and stops evicting;
 *  - release:  the holder removes it (only if it is still its own).
 *
 * A dead node stops renewing, so its lease expires and another takes over.
 * Times are passed in by the caller (a fake clock in the tests). */
#ifndef KVFS_LEASE_H
#define KVFS_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVFS_LEASE_FILE "evict.lease"

struct kvfs_lease {
    int dir_fd;      /* the state directory */
    char self[96];   /* NODE.PID */
    int64_t ttl_ms;  /* how long a taken or renewed lease lasts */
    int64_t skew_ms; /* grace for clocks that disagree between nodes */
    int64_t expires; /* ours, while held */
    bool held;
};

void kvfs_lease_init(struct kvfs_lease *l, int dir_fd, const char *self, int64_t ttl_ms,
                     int64_t skew_ms);

/* Parses lease file contents (LEN bytes, not NUL-terminated). */
int kvfs_lease_parse(const char *buf, size_t len, char *holder, size_t holder_len,
                     int64_t *expires);

/* Reads the lease file: 0 with its holder and expiry, -ENOENT if there is
 * none, -EINVAL if it is malformed (treated as expired by kvfs_lease_take). */
int kvfs_lease_read(int dir_fd, char *holder, size_t holder_len, int64_t *expires);

/* Step one of taking the lease at time NOW: returns 1 if it is ours now (no
 * lease existed, or we already hold it and renewed it), 2 if we renamed over
 * an expired one and must call kvfs_lease_confirm after the settle delay, 0 if
 * another node holds a live lease, or a negative errno. */
int kvfs_lease_take(struct kvfs_lease *l, int64_t now);

/* Step two after a takeover: 1 if the lease still names us, else 0. */
int kvfs_lease_confirm(struct kvfs_lease *l);

/* Extends a held lease to NOW + ttl: 1 if still ours, 0 if lost, or -errno. */
int kvfs_lease_renew(struct kvfs_lease *l, int64_t now);

/* True if we hold the lease and it has at least MARGIN_MS left at NOW. */
bool kvfs_lease_valid(const struct kvfs_lease *l, int64_t now, int64_t margin_ms);

/* Gives the lease up (removes the file if it is still ours). */
void kvfs_lease_release(struct kvfs_lease *l);

#endif
