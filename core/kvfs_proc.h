/* kvfs_proc: how a process that closes a file is leaving, from /proc.
 *
 * The kernel sends FLUSH for every close(), the implicit closes of an exiting
 * process included, and the request names the closing thread. A process that
 * is exiting has PF_EXITING in the flags of /proc/TID/stat, and its exit code
 * (field 52, in waitpid()'s form) is set before its files are closed. That is
 * how kvfs tells a writer's own close() from the closes of a writer that was
 * killed or left without closing: those must publish nothing. */
#ifndef KVFS_PROC_H
#define KVFS_PROC_H

#include <stddef.h>
#include <sys/types.h>

enum kvfs_proc_state {
    KVFS_PROC_RUNNING, /* not exiting: an ordinary close() */
    KVFS_PROC_EXITED,  /* exiting by exit(): its open files are closed for it */
    KVFS_PROC_KILLED,  /* exiting on a signal (SIGKILL, SIGSEGV, the OOM killer) */
    KVFS_PROC_UNKNOWN, /* no such thread visible here, or unreadable */
};

/* Parses the text of a /proc/TID/stat file. */
enum kvfs_proc_state kvfs_proc_parse_stat(const char *text, size_t len);

/* Reads /proc/TID/stat of thread TID (0: not visible in this pid namespace). */
enum kvfs_proc_state kvfs_proc_state_of(pid_t tid);

/* The thread group (process) of thread TID, from the text of its
 * /proc/TID/status, or -1. A FUSE request names a thread; the process that
 * opened a file must still be recognised once that thread has exited. */
pid_t kvfs_proc_parse_tgid(const char *text, size_t len);
/* The same from /proc/TID/status; TID itself if that cannot be read. */
pid_t kvfs_proc_tgid(pid_t tid);

#endif
