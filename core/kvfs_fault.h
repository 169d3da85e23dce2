/* kvfs_fault: fault injection for tests, compiled in only with
 * -DKVFS_FAULT_INJECTION=ON.
 *
 * A storage system's error paths run rarely in production and must still be
 * right: a failed write or fsync must fail the writer and publish nothing. A
 * real failing disk is hard to get in CI, so the daemon can be told to fail
 * chosen operations on chosen names with a chosen errno, the way SQLite's
 * tests make I/O fail. In a normal build every hook is an inline `return 0`
 * and the environment variable is refused, so production code pays nothing
 * and cannot be made to fail on purpose.
 *
 * The spec (environment variable KVFS_FAULTS) is a comma-separated list of
 * SITE:ERRNO[:PREFIX]: operation SITE on any name starting with PREFIX (every
 * name if none) fails with ERRNO (a name such as EIO, or a number). ERRNO
 * HANG or HANG<N> instead stalls the operation N seconds (5) and then lets it
 * proceed, as a backing store that stops answering for a while does. */
#ifndef KVFS_FAULT_H
#define KVFS_FAULT_H

#include <stddef.h>

enum kvfs_fault_site {
    KVFS_FAULT_CREATE,   /* creating a file's staging file */
    KVFS_FAULT_WRITE,    /* a write through the daemon (not through passthrough) */
    KVFS_FAULT_PUBLISH,  /* fsync/link at publication, i.e. at close() */
    KVFS_FAULT_READ,     /* a read through the daemon */
    KVFS_FAULT_TAKEOVER, /* a successor, once it holds the state, before it
                          * tells the old daemon it is ready (kvfs_handover) */
    KVFS_FAULT_NSITES
};

#define KVFS_FAULTS_ENV "KVFS_FAULTS"

#ifdef KVFS_FAULT_INJECTION
/* Parses SPEC (NULL or "" clears every fault); on error writes a message to
 * ERR and returns -EINVAL, leaving the faults as they were. */
int kvfs_fault_setup(const char *spec, char *err, size_t errlen);
/* Returns -errno if operation SITE on NAME (may be NULL) is to fail, else 0. */
int kvfs_fault(enum kvfs_fault_site site, const char *name);
#else
static inline int kvfs_fault(enum kvfs_fault_site site, const char *name) {
    (void)site;
    (void)name;
    return 0;
}
#endif

#endif
