/* kvfs_deadline: request deadlines (-o request_timeout=SEC).
 *
 * A hung backing store (an NFS server gone, a stuck Lustre OST) blocks the
 * daemon thread that serves a request in a system call that cannot be
 * interrupted, and the process that made the request waits with it, in
 * uninterruptible sleep, for as long as the store hangs: on a GPU node that
 * is every vLLM pod using the mount. With a deadline, a watchdog answers any
 * request the daemon has worked on for longer than SEC seconds with EIO, so
 * the caller gets an error (vLLM then recomputes) and can go on.
 *
 * The answer is written to /dev/fuse directly, keyed by the request's unique
 * id, not through libfuse's request object: the stuck thread still owns that
 * object and replies through it when (if) its system call returns; the
 * kernel then finds no such request, libfuse gets ENOENT, and the operation
 * handlers treat a failed reply as "the caller is gone" (an open's handle is
 * freed, a create's staging file removed). Requests the kernel expects no
 * answer to (FORGET, INTERRUPT, ...) never get one. */
#ifndef KVFS_DEADLINE_H
#define KVFS_DEADLINE_H

#include <stdint.h>

/* Called by the /dev/fuse reader for each request read from FD. */
void kvfs_deadline_begin(int fd, uint64_t unique, uint32_t opcode);
/* Called before the reply to UNIQUE is written. */
void kvfs_deadline_end(uint64_t unique);
/* Starts the watchdog (SECONDS 0: no deadlines). 0 or -errno. */
int kvfs_deadline_start(unsigned seconds);
/* Stops it and frees its bookkeeping. */
void kvfs_deadline_stop(void);

#endif
