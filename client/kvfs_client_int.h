/* Internal interfaces of libkvfs (not installed). */
#ifndef KVFS_CLIENT_INT_H
#define KVFS_CLIENT_INT_H

#include "kvfs_client.h"

#include <stdbool.h>
#include <stddef.h>

/* kvfs_blockio.c: one block file at a time, relative to ROOT_FD. */
int kvfs_io_check_name(const char *name);
/* Writes the block whose payload is at BUF + KVFS_HEADER_SIZE; fills in the
 * header at BUF (checksum included). */
int kvfs_io_store(int root_fd, const char *name, char *buf, size_t plen,
                  const struct kvfs_layout *l, bool direct);
int kvfs_io_load(int root_fd, const char *name, void *buf, size_t len,
                 const struct kvfs_layout *layout);
int kvfs_io_exists(int root_fd, const char *name);
bool kvfs_io_is_kvfs_mount(const char *path);

/* kvfs_numa.c */
/* Pins the calling thread, the INDEX-th I/O thread, to one CPU of NODE. */
int kvfs_numa_pin_thread(int node, int index);
void *kvfs_numa_alloc(int node, size_t bytes);
void kvfs_numa_free(void *p, size_t bytes);

#endif
