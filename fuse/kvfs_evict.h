/* kvfs_evict: the daemon's block index, access recording and evictor (see
 * the .c for how they work together). */
#ifndef KVFS_EVICT_H
#define KVFS_EVICT_H

#include "kvfs_inode.h"

#include "../core/kvfs_stats.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

int kvfs_evict_start(void);
void kvfs_evict_stop(void);
bool kvfs_evict_enabled(void);

/* Hooks from the operations, for block names in directory inode DIR. */
void kvfs_evict_seen(struct kvfs_inode *dir, const char *name, const struct stat *st);
void kvfs_evict_gone(struct kvfs_inode *dir, const char *name);
void kvfs_evict_opened(struct kvfs_inode *dir, const char *name, int fd);
void kvfs_evict_closed(struct kvfs_inode *dir, const char *name);
/* Before publishing SIZE bytes: 0, or -ENOSPC if eviction cannot make room. */
int kvfs_evict_admit(uint64_t size);

void kvfs_evict_fill_info(struct kvfs_stats_info *info);

#endif
