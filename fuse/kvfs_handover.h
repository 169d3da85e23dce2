/* kvfs_handover: replacing a running daemon without unmounting (see the .c). */
#ifndef KVFS_HANDOVER_H
#define KVFS_HANDOVER_H

#include <stdbool.h>
#include <stddef.h>

/* What the old daemon stops before its state is saved (the threads that
 * change it or write to /dev/fuse besides the request workers) and starts
 * again if the successor fails. */
struct kvfs_handover_hooks {
    void (*pause)(void);
    void (*resume)(void);
};

/* The socket a daemon serving MOUNT_REAL listens on when handover_socket is
 * not given: /run/kvfs/ (as root) or $XDG_RUNTIME_DIR/kvfs/, named after a
 * hash of the mountpoint. Empty if neither applies. */
void kvfs_handover_default_path(const char *mount_real, char *path, size_t len);

/* The running daemon: listens on PATH for a successor. 0 or -errno (the
 * daemon then runs on, but cannot be replaced). */
int kvfs_handover_listen(const char *path, const struct kvfs_handover_hooks *hooks);
/* Stops listening; removes the socket unless a successor has taken it. */
void kvfs_handover_stop(void);
/* True once a successor has taken the mount over: the session's loop has
 * been told to end, and nothing may be released or unmounted. */
bool kvfs_handover_done(void);

/* The successor, before its session starts: connects to PATH, receives the
 * mount's /dev/fuse descriptor (*DEV_FD) and the daemon state, and restores
 * the inode table, the open files, the counters and the replayed INIT.
 * Returns the connection (for kvfs_handover_commit) or -1 with ERR set;
 * nothing has changed for the running daemon then. */
int kvfs_handover_take(const char *path, int *dev_fd, int *policy, char *mount_real, size_t mlen,
                       char *err, size_t errlen);
/* Once the successor is ready to serve: tells the old daemon, which stops
 * for good, and waits for its word. 0, or -errno if the old daemon did not
 * let go (it serves on, and the successor must exit without serving). */
int kvfs_handover_commit(int conn);

#endif
