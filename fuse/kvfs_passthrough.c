/* kvfs_passthrough: kernel FUSE passthrough on libfuse 3.14.
 *
 * With passthrough (Linux 6.9+), read() and write() on an open file go from
 * the kernel straight to a backing file the daemon registered, at the backing
 * store's own speed; the daemon still serves every namespace operation and so
 * keeps atomic publication. libfuse 3.14 has no API for it, so this file
 * speaks the kernel ABI (include/uapi/linux/fuse.h, protocol 7.40) through
 * fuse_session_custom_io(): every message between the kernel and libfuse goes
 * through kvfs_read()/kvfs_writev() below, which
 *
 *  - read the kernel's INIT request to learn whether it offers passthrough;
 *  - patch libfuse's INIT reply to accept it (FUSE_INIT_EXT, the passthrough
 *    bit in flags2, max_stack_depth 1), then probe
 *    FUSE_DEV_IOC_BACKING_OPEN once, which needs CAP_SYS_ADMIN, to settle the
 *    mode;
 *  - patch an OPEN or CREATE reply, when its handler asked for it on the same
 *    thread, with FOPEN_PASSTHROUGH and the backing id.
 *
 * libfuse calls a request's handler and sends its reply on one thread, which
 * is what makes the thread-local hand-over safe. Without passthrough the
 * daemon falls back to serving data itself with FOPEN_DIRECT_IO (no double
 * page cache, 1 MiB requests) and says why in its log, stats and metrics.
 * Splice is not used in either mode: with passthrough no data reaches the
 * daemon, and without it a pipe cannot hold a whole 1 MiB request unless
 * pipe-max-size is raised, in which case libfuse silently copies anyway.
 *
 * The reader is also where a takeover (kvfs_handover) stops and starts the
 * flow of requests. libfuse drops a request it reads after its session is
 * told to exit, so the session is never stopped with readers blocked in
 * read(): kvfs_chan_pause() parks them all between requests, with no request
 * taken from the kernel and not yet answered. Readers block in read(), where
 * the kernel wakes one of them per request; the pause interrupts them with a
 * signal, which the kernel's wait lets through before any request is taken,
 * and sends it again until every reader is out, since one may have been
 * about to enter read() when the first arrived. (Waiting in poll() instead
 * would need no signal, but the kernel wakes every poller of /dev/fuse for
 * each request: with eight workers that cost more than the request itself.)
 * Should the descriptor be non-blocking (it is shared with a predecessor or
 * successor), readers wait in poll() beside an eventfd the pause writes.
 *
 * A successor never sees the kernel's INIT, which came once per connection:
 * it replays the one its predecessor received, so that libfuse negotiates
 * the same session, and keeps the reply to itself. */
#define _GNU_SOURCE
#include "kvfs_passthrough.h"
#include "kvfs_deadline.h"
#include "kvfs_daemon.h"

#include "../core/kvfs_clock.h"
#include "../core/kvfs_log.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* Kernel ABI (linux/fuse.h, 7.40); Debian 12's headers predate it. */
#define K_FUSE_INIT 26
#define K_FUSE_INIT_EXT (1u << 30)
#define K_FUSE_PASSTHROUGH_FLAGS2 (1u << 5)    /* FUSE_PASSTHROUGH >> 32 */
#define K_FUSE_DIRECT_IO_MMAP_FLAGS2 (1u << 4) /* FUSE_DIRECT_IO_ALLOW_MMAP >> 32 */
#define K_FOPEN_DIRECT_IO (1u << 0)
#define K_FOPEN_KEEP_CACHE (1u << 1)
#define K_FOPEN_PASSTHROUGH (1u << 7)

struct k_in_header {
    uint32_t len, opcode;
    uint64_t unique, nodeid;
    uint32_t uid, gid, pid;
    uint16_t total_extlen, padding;
};
struct k_init_in {
    uint32_t major, minor, max_readahead, flags, flags2;
};
struct k_out_header {
    uint32_t len;
    int32_t error;
    uint64_t unique;
};
struct k_init_out_head { /* the fields we touch, at their ABI offsets */
    uint32_t major, minor, max_readahead, flags;
    uint16_t max_background, congestion_threshold;
    uint32_t max_write, time_gran;
    uint16_t max_pages, map_alignment;
    uint32_t flags2, max_stack_depth;
};
struct k_open_out {
    uint64_t fh;
    uint32_t open_flags;
    int32_t backing_id;
};
struct k_backing_map {
    int32_t fd;
    uint32_t flags;
    uint64_t padding;
};
#define K_DEV_IOC_BACKING_OPEN _IOW(229, 1, struct k_backing_map)
#define K_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

_Static_assert(sizeof(struct k_in_header) == 40, "fuse_in_header");
_Static_assert(sizeof(struct k_out_header) == 16, "fuse_out_header");
_Static_assert(sizeof(struct k_open_out) == 16, "fuse_open_out");
_Static_assert(offsetof(struct k_init_out_head, flags2) == 32, "fuse_init_out.flags2");
_Static_assert(offsetof(struct k_init_out_head, max_stack_depth) == 36, "max_stack_depth");

static int dev_fd = -1;
static enum kvfs_pt_policy policy = KVFS_PT_AUTO;
static bool kernel_offers;     /* the INIT request advertised passthrough */
static uint32_t kernel_flags2; /* what else it advertised in flags2 */
static bool active;            /* passthrough accepted and a probe succeeded */
static char reason[160] = "not negotiated yet";

/* The kernel's INIT request, kept for a successor, or one to replay. */
#define INIT_MAX 256
static char init_req[INIT_MAX];
static size_t init_req_len;
static _Atomic bool replay_pending;
static __thread bool replayed_here; /* this thread is serving the replayed INIT */

/* Parking the readers (see the top of the file). */
static pthread_mutex_t park_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_cond = PTHREAD_COND_INITIALIZER;
static int wake_fd = -1;
static _Atomic bool parking; /* also read, unlocked, by a spinning reader */
static bool leaving;
static unsigned busy;    /* requests handed to libfuse and not yet finished */
static unsigned polling; /* readers between leaving the lock and reading */
static __thread bool holding;
static __thread bool armed; /* holder_key set for this thread */
/* The readers between leaving the lock and reading, for the pause to kick. */
struct reader {
    pthread_t thread;
    struct reader *next, **prev;
};
static struct reader *readers;
static __thread struct reader self;
static int kick_signal;
static unsigned kick_rounds; /* how many times the pause kicked the readers */
static __thread unsigned kick_rounds_seen;
/* After a request, one idle reader polls for the next one this long before
 * it sleeps in read(): a client's requests come in bursts (LOOKUP, CREATE,
 * GETXATTR, FLUSH for one block), and waking a sleeping thread, on a CPU
 * that may have gone idle, is most of a round trip's cost in a VM. One
 * spinner at most, and only between requests. */
static unsigned spin_us;
static _Atomic bool spinning;
/* While a file is being written its FLUSH is coming, usually after a long
 * write() that the daemon takes no part in (passthrough): by then every
 * reader sleeps, and waking one on an idle virtual CPU took 170 us on the
 * GPU machine, a quarter of a 2 MiB block's whole store. So while files are
 * being written the spinner keeps at it up to spin_write_us. */
static unsigned spin_write_us;
static _Atomic int writing; /* files created and not yet published */
/* Until INIT is answered and the data mode settled (probe), one thread reads
 * and serves INIT and the others wait: a request served before the mode is
 * known would be answered without passthrough, which the kernel refuses for
 * an inode already open in passthrough (the normal case after a takeover). */
static bool settling = true;
static bool init_taken;
static __thread bool init_reader;

static __thread bool init_pending;
static __thread bool open_pending;
static __thread int open_backing_id;
static __thread bool open_direct;

bool kvfs_pt_active(void) {
    return active;
}

const char *kvfs_pt_reason(void) {
    return reason;
}

/* Backing ids live on the inode; these striped locks order the first
 * registration against concurrent opens and the last release. */
static pthread_mutex_t id_locks[64];
static pthread_once_t id_locks_once = PTHREAD_ONCE_INIT;

static void init_id_locks(void) {
    for (int i = 0; i < 64; i++)
        pthread_mutex_init(&id_locks[i], NULL);
}

static pthread_mutex_t *id_lock(struct kvfs_inode *ino) {
    pthread_once(&id_locks_once, init_id_locks);
    return &id_locks[((uintptr_t)ino >> 6) & 63];
}

int kvfs_pt_acquire(struct kvfs_inode *ino, int fd) {
    pthread_mutex_t *l = id_lock(ino);
    pthread_mutex_lock(l);
    int id = ino->backing_id;
    if (id == 0 && !ino->pt_retired) {
        id = kvfs_pt_backing_open(fd);
        if (id > 0)
            ino->backing_id = id;
    }
    if (id > 0)
        ino->backing_refs++;
    pthread_mutex_unlock(l);
    return id;
}

int kvfs_pt_acquire_existing(struct kvfs_inode *ino, bool retire) {
    pthread_mutex_t *l = id_lock(ino);
    pthread_mutex_lock(l);
    int id = ino->backing_id;
    if (id > 0)
        ino->backing_refs++;
    else if (retire)
        ino->pt_retired = true;
    pthread_mutex_unlock(l);
    return id;
}

void kvfs_pt_release(struct kvfs_inode *ino) {
    pthread_mutex_t *l = id_lock(ino);
    pthread_mutex_lock(l);
    if (ino->backing_refs > 0 && --ino->backing_refs == 0) {
        kvfs_pt_backing_close(ino->backing_id);
        ino->backing_id = 0;
    }
    pthread_mutex_unlock(l);
}

static void set_mode(bool on, const char *why) {
    active = on;
    snprintf(reason, sizeof(reason), "%s", why);
    kvfs_d.data_mode = on ? "passthrough" : "daemon-direct-io";
    kvfs_d.data_mode_reason = reason;
    kvfs_info("data path: %s (%s)", kvfs_d.data_mode, reason);
}

int kvfs_pt_backing_open(int fd) {
    struct k_backing_map map = {.fd = fd, .flags = 0, .padding = 0};
    int id = ioctl(dev_fd, K_DEV_IOC_BACKING_OPEN, &map);
    return id < 0 ? -errno : id;
}

void kvfs_pt_backing_close(int id) {
    uint32_t bid = (uint32_t)id;
    if (ioctl(dev_fd, K_DEV_IOC_BACKING_CLOSE, &bid) != 0)
        kvfs_warn("releasing passthrough backing id %d failed: %s", id, strerror(errno));
}

void kvfs_pt_expect_init(void) {
    init_pending = true;
}

void kvfs_pt_reply_with(int backing_id, bool direct_io) {
    open_pending = true;
    open_backing_id = backing_id;
    open_direct = direct_io;
}

void kvfs_pt_reply_cancel(void) {
    open_pending = false;
}

/* Settles the mode right after the kernel accepted our INIT reply: only now
 * can FUSE_DEV_IOC_BACKING_OPEN succeed, and only with CAP_SYS_ADMIN. */
static void probe(void) {
    if (policy == KVFS_PT_OFF) {
        set_mode(false, "passthrough=off was given");
        return;
    }
    if (!kernel_offers) {
        set_mode(false, "the kernel does not offer FUSE passthrough (Linux 6.9+ with "
                        "CONFIG_FUSE_PASSTHROUGH)");
        return;
    }
    int fd = openat(kvfs_d.store.state_fd, "format", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    int id = fd < 0 ? -errno : kvfs_pt_backing_open(fd);
    if (fd >= 0)
        close(fd);
    if (id < 0) {
        char why[160];
        snprintf(why, sizeof(why), "registering a backing file failed: %s%s", strerror(-id),
                 id == -EPERM ? " (passthrough needs CAP_SYS_ADMIN)" : "");
        set_mode(false, why);
        return;
    }
    kvfs_pt_backing_close(id);
    set_mode(true, "kernel passthrough for reads; writes through the daemon, which sees "
                   "every write fail");
}

/* A worker that libfuse ends after a request (only with max_idle_threads
 * set) never comes back to read: its request counts as finished when the
 * thread exits. */
static pthread_key_t holder_key;
static pthread_once_t holder_once = PTHREAD_ONCE_INIT;

/* The request this thread handed to libfuse is finished; called with the
 * park lock held. */
static void finish_held_locked(void) {
    if (holding) {
        holding = false;
        if (--busy == 0 && parking)
            pthread_cond_broadcast(&park_cond);
    }
}

/* INIT is served and the data mode known: the other readers may go on.
 * Called with the park lock held. */
static void settle_locked(void) {
    settling = init_reader = false;
    pthread_cond_broadcast(&park_cond);
}

static void holder_exit(void *arg) {
    (void)arg;
    pthread_mutex_lock(&park_lock);
    finish_held_locked();
    pthread_mutex_unlock(&park_lock);
}

static void holder_key_init(void) {
    pthread_key_create(&holder_key, holder_exit);
}

/* This thread enters or leaves the window in which it may block reading;
 * called with the park lock held. */
static void enter_read_locked(void) {
    polling++;
    kick_rounds_seen = kick_rounds;
    self.thread = pthread_self();
    self.next = readers;
    self.prev = &readers;
    if (readers)
        readers->prev = &self.next;
    readers = &self;
}

static void leave_read_locked(void) {
    *self.prev = self.next;
    if (self.next)
        self.next->prev = self.prev;
    if (--polling == 0 && parking)
        pthread_cond_broadcast(&park_cond);
}

static void read_cancelled(void *arg) {
    (void)arg;
    pthread_mutex_lock(&park_lock);
    leave_read_locked();
    pthread_mutex_unlock(&park_lock);
}

static void kicked(int sig) {
    (void)sig; /* only to make read() or poll() return EINTR */
}

/* Spins (see spin_us) until a request is queued, the time is up or a pause
 * begins. Returns false if a pause began. */
static bool spin_for_request(int fd) {
    unsigned us = atomic_load(&writing) > 0 && spin_write_us > spin_us ? spin_write_us : spin_us;
    if (!us || atomic_exchange(&spinning, true))
        return !parking;
    uint64_t until = kvfs_clock_mono_ns() + (uint64_t)us * 1000u;
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    while (!parking && poll(&pf, 1, 0) == 0 && kvfs_clock_mono_ns() < until)
        ;
    atomic_store(&spinning, false);
    return !parking;
}

/* Waits for a request, the only place a reader may be cancelled. A blocking
 * descriptor waits in read(); a non-blocking one in poll(), then reads. */
static ssize_t wait_request(int fd, void *buf, size_t len, int cancel_state, int *err) {
    ssize_t n = -1;
    if (!spin_for_request(fd)) {
        *err = EINTR;
        return -1;
    }
    pthread_cleanup_push(read_cancelled, NULL);
    pthread_setcancelstate(cancel_state, NULL);
    n = read(fd, buf, len);
    *err = errno;
    if (n < 0 && *err == EAGAIN) {
        struct pollfd pf[2] = {{.fd = fd, .events = POLLIN}, {.fd = wake_fd, .events = POLLIN}};
        int pr = poll(pf, 2, -1);
        *err = pr < 0 ? errno : EAGAIN;
        if (pr > 0 && (pf[0].revents & (POLLIN | POLLERR | POLLHUP)) && !(pf[1].revents & POLLIN)) {
            pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
            n = read(fd, buf, len);
            *err = errno;
        }
    }
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    pthread_cleanup_pop(0);
    return n;
}

/* One read from the kernel, never blocked with the park lock free. */
static ssize_t read_request(int fd, void *buf, size_t len) {
    if (!armed) {
        pthread_once(&holder_once, holder_key_init);
        pthread_setspecific(holder_key, &holder_key); /* any non-NULL value arms it */
        armed = true;
    }
    /* libfuse cancels idle readers when its loop ends; a reader may only be
     * cancelled waiting for a request, never holding the park lock or with a
     * request read and not yet handed over. */
    int cancel_state;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel_state);
    pthread_mutex_lock(&park_lock);
    finish_held_locked();
    if (init_reader)
        settle_locked(); /* back for more: INIT was served (even if libfuse refused it) */
    for (;;) {
        while (((parking || (settling && init_taken && !init_reader)) && !leaving))
            pthread_cond_wait(&park_cond, &park_lock);
        if (settling && !init_taken)
            init_taken = init_reader = true;
        if (leaving) {
            pthread_mutex_unlock(&park_lock);
            pthread_setcancelstate(cancel_state, NULL);
            errno = EINTR;
            return -1;
        }
        if (atomic_exchange(&replay_pending, false)) {
            memcpy(buf, init_req, init_req_len < len ? init_req_len : len);
            busy++;
            holding = true;
            replayed_here = true;
            pthread_mutex_unlock(&park_lock);
            pthread_setcancelstate(cancel_state, NULL);
            return (ssize_t)(init_req_len < len ? init_req_len : len);
        }
        enter_read_locked();
        pthread_mutex_unlock(&park_lock);
        int e;
        ssize_t n = wait_request(fd, buf, len, cancel_state, &e);
        pthread_mutex_lock(&park_lock);
        leave_read_locked();
        if (n > 0) {
            busy++;
            holding = true;
            bool kicked_here = kick_rounds != kick_rounds_seen;
            pthread_mutex_unlock(&park_lock);
            /* A kick sent while this thread was reading may still be pending:
             * it would make the first blocking system call of the request's
             * handler fail with EINTR. Any system call's return delivers it
             * (to the empty handler) first. */
            if (kicked_here)
                (void)syscall(SYS_getppid);
            pthread_setcancelstate(cancel_state, NULL);
            return n;
        }
        if (n == 0 || (e != EAGAIN && e != EINTR)) {
            pthread_mutex_unlock(&park_lock);
            pthread_setcancelstate(cancel_state, NULL);
            errno = e;
            return n; /* ENODEV: unmounted or aborted */
        }
    }
}

#define MS 1000000ull /* nanoseconds */

/* One attempt: parks the readers and waits until UNTIL (monotonic ns) for
 * the requests in flight to finish. Called with the park lock held; returns
 * with it held and the readers parked if it succeeded. */
static bool park_until(uint64_t until) {
    parking = true;
    eventfd_write(wake_fd, 1); /* stays readable until resumed */
    for (;;) {
        if (!busy && !polling)
            return true;
        uint64_t now = kvfs_clock_mono_ns();
        if (now >= until)
            return false;
        /* A reader may have been just about to block when kicked: kick again
         * each millisecond until none is left reading. */
        for (struct reader *r = readers; r; r = r->next)
            pthread_kill(r->thread, kick_signal);
        kick_rounds++;
        struct timespec tick = kvfs_clock_after_ns(until - now < MS ? until - now : MS);
        pthread_cond_timedwait(&park_cond, &park_lock, &tick);
    }
}

static void unpark_locked(void) {
    parking = false;
    eventfd_t v;
    eventfd_read(wake_fd, &v);
    pthread_cond_broadcast(&park_cond);
}

/* A request in flight may itself wait for another one: a FLUSH that drops a
 * name from the kernel's cache (fuse_lowlevel_notify_inval_entry) waits for
 * the directory's lock, which a LOOKUP waiting in the queue holds. Parked
 * readers would never serve that LOOKUP, so each attempt is short, and
 * between attempts the readers serve for a moment. */
#define PAUSE_ATTEMPT (100 * MS)
#define PAUSE_GAP (5 * MS)

int kvfs_chan_pause(unsigned timeout_s) {
    uint64_t until = kvfs_clock_mono_ns() + (uint64_t)timeout_s * 1000 * MS;
    pthread_mutex_lock(&park_lock);
    for (;;) {
        uint64_t now = kvfs_clock_mono_ns();
        if (park_until(now + PAUSE_ATTEMPT < until ? now + PAUSE_ATTEMPT : until)) {
            pthread_mutex_unlock(&park_lock);
            return 0;
        }
        unpark_locked();
        if (kvfs_clock_mono_ns() + PAUSE_GAP >= until)
            break;
        struct timespec gap = kvfs_clock_after_ns(PAUSE_GAP);
        pthread_cond_timedwait(&park_cond, &park_lock, &gap); /* serve for a moment */
    }
    pthread_mutex_unlock(&park_lock);
    return -ETIMEDOUT;
}

void kvfs_chan_resume(void) {
    pthread_mutex_lock(&park_lock);
    unpark_locked();
    pthread_mutex_unlock(&park_lock);
}

void kvfs_chan_leave(void) {
    pthread_mutex_lock(&park_lock);
    leaving = true;
    pthread_cond_broadcast(&park_cond);
    pthread_mutex_unlock(&park_lock);
}

size_t kvfs_pt_init_request(void *buf, size_t cap) {
    size_t n = init_req_len < cap ? init_req_len : cap;
    memcpy(buf, init_req, n);
    return n;
}

enum kvfs_pt_policy kvfs_pt_policy(void) {
    return policy;
}

int kvfs_pt_replay_init(const void *buf, size_t len) {
    if (len < sizeof(struct k_in_header) + sizeof(struct k_init_in) || len > INIT_MAX)
        return -EINVAL;
    const struct k_in_header *h = buf;
    if (h->opcode != K_FUSE_INIT || h->len != len)
        return -EINVAL;
    memcpy(init_req, buf, len);
    init_req_len = len;
    atomic_store(&replay_pending, true);
    return 0;
}

static ssize_t kvfs_read(int fd, void *buf, size_t len, void *userdata) {
    (void)userdata;
    ssize_t n = read_request(fd, buf, len);
    if (n >= (ssize_t)sizeof(struct k_in_header) && !replayed_here) {
        const struct k_in_header *h = buf;
        kvfs_deadline_begin(fd, h->unique, h->opcode);
    }
    if (n >= (ssize_t)(sizeof(struct k_in_header) + sizeof(struct k_init_in))) {
        const struct k_in_header *h = buf;
        if (h->opcode == K_FUSE_INIT) {
            const struct k_init_in *in = (const void *)(h + 1);
            if (!replayed_here) {
                init_req_len = (size_t)n < INIT_MAX ? (size_t)n : INIT_MAX;
                memcpy(init_req, buf, init_req_len);
            }
            kernel_flags2 = (in->flags & K_FUSE_INIT_EXT) ? in->flags2 : 0;
            kernel_offers = (kernel_flags2 & K_FUSE_PASSTHROUGH_FLAGS2) != 0;
        }
    }
    return n;
}

static ssize_t kvfs_writev(int fd, struct iovec *iov, int count, void *userdata) {
    (void)userdata;
    const struct k_out_header *oh = iov[0].iov_base;
    bool ok = count >= 2 && oh->error == 0;
    kvfs_deadline_end(oh->unique);
    if (init_pending) {
        init_pending = false;
        struct k_init_out_head init;
        if (ok && kernel_flags2 && iov[1].iov_len >= sizeof(init)) {
            memcpy(&init, iov[1].iov_base, sizeof(init));
            init.flags |= K_FUSE_INIT_EXT;
            /* Direct I/O opens (the daemon path) may still be mmapped. */
            init.flags2 |= kernel_flags2 & K_FUSE_DIRECT_IO_MMAP_FLAGS2;
            if (policy != KVFS_PT_OFF && kernel_offers) {
                init.flags2 |= K_FUSE_PASSTHROUGH_FLAGS2;
                init.max_stack_depth = 1;
            }
            memcpy(iov[1].iov_base, &init, sizeof(init));
        }
        ssize_t n = 0;
        int e = errno;
        if (replayed_here) {
            /* The kernel got its reply from our predecessor. */
            for (int i = 0; i < count; i++)
                n += (ssize_t)iov[i].iov_len;
            replayed_here = false;
        } else {
            n = writev(fd, iov, count);
            e = errno;
        }
        probe();
        pthread_mutex_lock(&park_lock);
        settle_locked();
        pthread_mutex_unlock(&park_lock);
        errno = e;
        return n;
    }
    if (open_pending) {
        open_pending = false;
        struct iovec *last = &iov[count - 1];
        if (ok && last->iov_len >= sizeof(struct k_open_out)) {
            struct k_open_out out;
            char *p = (char *)last->iov_base + last->iov_len - sizeof(out);
            memcpy(&out, p, sizeof(out));
            out.open_flags &= ~(K_FOPEN_KEEP_CACHE | K_FOPEN_DIRECT_IO);
            out.open_flags |= K_FOPEN_PASSTHROUGH | (open_direct ? K_FOPEN_DIRECT_IO : 0);
            out.backing_id = open_backing_id;
            memcpy(p, &out, sizeof(out));
        }
    }
    return writev(fd, iov, count);
}

void kvfs_chan_set_spin(unsigned idle_us, unsigned write_us) {
    spin_us = idle_us;
    spin_write_us = write_us;
}

void kvfs_chan_writing(int delta) {
    atomic_fetch_add(&writing, delta);
}

int kvfs_pt_install(struct fuse_session *se, enum kvfs_pt_policy pol) {
    static const struct fuse_custom_io io = {
        .writev = kvfs_writev,
        .read = kvfs_read,
    };
    policy = pol;
    dev_fd = fuse_session_fd(se);
    if (wake_fd < 0)
        wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd < 0)
        return -1;
    /* Readers block (see the top of the file); a predecessor may have left
     * the shared descriptor non-blocking. */
    int fl = fcntl(dev_fd, F_GETFL);
    if (fl >= 0 && (fl & O_NONBLOCK))
        fcntl(dev_fd, F_SETFL, fl & ~O_NONBLOCK);
    if (!kick_signal) {
        struct sigaction sa = {.sa_handler = kicked}; /* no SA_RESTART */
        sigemptyset(&sa.sa_mask);
        kick_signal = SIGRTMIN + 2;
        if (sigaction(kick_signal, &sa, NULL) != 0)
            return -1;
    }
    return fuse_session_custom_io(se, &io, dev_fd);
}
