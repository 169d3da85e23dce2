/* kvfs_scan: every block below a directory of a backing store, into an index.
 * Used by the daemon (its start-up scan and rescans) and by kvfsctl. */
#ifndef KVFS_SCAN_H
#define KVFS_SCAN_H

#include "kvfs_index.h"

#include <stdbool.h>

/* Walks the backing directory REL below ROOT_FD (all of it for "") and puts
 * each block into IX with its size and access time. PROGRESS, if given, is
 * called once per file seen; a non-NULL STOP that becomes true ends the walk
 * with -ECANCELED. Returns 0, -ENOMEM, or -ECANCELED. Unreadable or vanished
 * directories are skipped: a shared store changes while it is walked. */
int kvfs_scan(struct kvfs_index *ix, int root_fd, const char *rel, void (*progress)(void),
              const volatile bool *stop);

#endif
