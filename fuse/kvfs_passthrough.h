/* kvfs_passthrough: kernel FUSE passthrough on libfuse 3.14 (see the .c). */
#ifndef KVFS_PASSTHROUGH_H
#define KVFS_PASSTHROUGH_H

#include "../core/kvfs_config.h"
#include "kvfs_inode.h"

#include <fuse_lowlevel.h>
#include <stdbool.h>

/* Routes the session's /dev/fuse traffic through kvfs (after mounting). */
int kvfs_pt_install(struct fuse_session *se, enum kvfs_pt_policy policy);
/* How long an idle reader polls for the next request before it sleeps, and
 * how long while files are being written (their FLUSH is coming). */
void kvfs_chan_set_spin(unsigned idle_us, unsigned write_us);
/* DELTA files began (+1) or ended (-1) being written. */
void kvfs_chan_writing(int delta);
/* Called from the init handler: the next reply on this thread is INIT's. */
void kvfs_pt_expect_init(void);

bool kvfs_pt_active(void); /* passthrough is in use for reads */
const char *kvfs_pt_reason(void);

/* The next OPEN/CREATE reply on this thread gets FOPEN_PASSTHROUGH with
 * BACKING_ID (and FOPEN_DIRECT_IO when DIRECT_IO: data through the daemon,
 * the inode's backing file only for mmap). */
void kvfs_pt_reply_with(int backing_id, bool direct_io);
void kvfs_pt_reply_cancel(void);

/* The kernel accepts one backing file per open inode, and refuses (EIO) an
 * open without FOPEN_PASSTHROUGH of an inode that has one: the first open
 * registers its descriptor, later ones share that id, the last close
 * releases it. Returns the id, 0 if the inode is retired from passthrough,
 * or a negative errno. */
int kvfs_pt_acquire(struct kvfs_inode *ino, int fd);
/* Shares the inode's current id if it has one; 0 if none. With RETIRE (the
 * inode's own file is gone, so nothing can be registered for it and this
 * open is served through the daemon), also retires the inode: two opens of
 * it racing through the daemon cannot know which reply the kernel applies
 * first, so once one is answered without passthrough, none may get it. */
int kvfs_pt_acquire_existing(struct kvfs_inode *ino, bool retire);
void kvfs_pt_release(struct kvfs_inode *ino);

/* Taking over (kvfs_handover). Pause parks every reader between requests and
 * returns once no request is being served (-ETIMEDOUT, resumed, if that
 * takes longer than TIMEOUT_S); resume lets them read again; leave makes the
 * parked readers return so that an exited session's loop ends. */
int kvfs_chan_pause(unsigned timeout_s);
void kvfs_chan_resume(void);
void kvfs_chan_leave(void);
/* The kernel's INIT request as received (for a successor): its length. */
size_t kvfs_pt_init_request(void *buf, size_t cap);
/* In a successor, before the loop: libfuse is handed REQ as INIT and its
 * reply goes nowhere. 0 or -EINVAL for something that is not an INIT. */
int kvfs_pt_replay_init(const void *req, size_t len);
enum kvfs_pt_policy kvfs_pt_policy(void);

int kvfs_pt_backing_open(int fd);
void kvfs_pt_backing_close(int id);

#endif
