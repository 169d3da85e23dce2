/* kvfs_daemon: state shared by the FUSE glue of one mount. */
#ifndef KVFS_DAEMON_H
#define KVFS_DAEMON_H

#include "../core/kvfs_config.h"
#include "../core/kvfs_stats.h"
#include "../core/kvfs_store.h"

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <time.h>

struct kvfs_daemon {
    struct kvfs_config cfg;
    struct kvfs_store store;
    struct kvfs_stats stats;
    struct fuse_session *se;
    struct timespec started; /* CLOCK_MONOTONIC */
    bool is_root;            /* running with euid 0: chown created files to their creator */
    char backing_real[4096];
    char mount_real[4096];
    const char *data_mode;
    const char *data_mode_reason;
};

extern struct kvfs_daemon kvfs_d;

/* The operations table (kvfs_ops.c). */
extern const struct fuse_lowlevel_ops kvfs_ops;
/* Once no request is served any more: releases the handles whose RELEASE
 * never came (an unmount right after a close drops the queued RELEASE), as
 * if it had come, so nothing due is left unpublished, no staging file is
 * left behind and no backing id stays registered. */
void kvfs_ops_release_all(void);
/* Handing the open files to a successor (kvfs_handover), with no request in
 * flight: save adds their descriptors to FDS; restore rebuilds them under the
 * same file handles (after kvfs_itable_restore), reindex then counts the
 * open blocks in the new block index, and drop_all frees the old process's
 * copies without releasing anything the successor now owns. */
struct kvfs_wire_out;
struct kvfs_wire_in;
struct kvfs_fdset;
int kvfs_ops_save(struct kvfs_wire_out *w, struct kvfs_fdset *fds);
int kvfs_ops_restore(struct kvfs_wire_in *r, int *fds, size_t nfds);
void kvfs_ops_reindex(void);
/* The generation tag of this process's file handles (core/kvfs_idmap). */
void kvfs_ops_set_tag(uint64_t tag);
void kvfs_ops_drop_all(void);

/* Control directory (kvfs_ctl.c). */
void kvfs_ctl_init(void);
struct kvfs_inode *kvfs_ctl_dir(void);
/* Looks NAME up in the control directory: the file's inode or NULL. */
struct kvfs_inode *kvfs_ctl_lookup(const char *name);
/* Fills ST for a control-directory inode. */
void kvfs_ctl_stat(const struct kvfs_inode *ino, struct stat *st);
/* Renders a control file's current content (malloc'd) into *BUF. */
int kvfs_ctl_render(const struct kvfs_inode *ino, char **buf, size_t *len);
/* The metrics text (malloc'd), as MOUNT/.kvfs/metrics shows it. */
int kvfs_ctl_render_metrics(char **buf, size_t *len);
/* Names in the control directory, NULL-terminated. */
extern const char *const kvfs_ctl_names[];

#endif
