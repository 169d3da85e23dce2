/* kvfs_handover: replacing a running daemon (an upgrade, a restart with other
 * options) while the mount stays valid for every process using it.
 *
 * A FUSE mount lives as long as some process holds its /dev/fuse descriptor,
 * so the old daemon hands that descriptor to its successor over a Unix
 * socket (SCM_RIGHTS) and exits without unmounting. What the kernel holds
 * must stay meaningful too: node ids of every inode it has looked up, file
 * handles of every open file, passthrough backing ids registered on the
 * connection. The old daemon therefore hands over, beside the descriptor,
 * its inode table and open files (with their descriptors: directories,
 * published files being read, staging files being written) under the same
 * ids, and the successor maps those ids to its own structures
 * (core/kvfs_idmap). Backing ids belong to the connection and simply stay.
 *
 * The exchange, on a SOCK_SEQPACKET socket that only root or the daemon's
 * own user may use:
 *   successor -> HELLO (the backing directory it was started on)
 *   old: parks its request readers (kvfs_chan_pause: every request taken
 *        from the kernel has been answered; new ones queue in the kernel),
 *        stops its background threads, writes its state to a memfd
 *   old -> STATE (the /dev/fuse descriptor and the memfd), then the state's
 *          descriptors in batches
 *   successor: restores, starts its threads, but reads nothing yet
 *   successor -> READY;  old: commits, never to read again
 *   old -> BYE;  successor starts serving; old exits, unmounting nothing.
 * Until it sends BYE the old daemon can still go back to serving (a refused
 * or failed successor, a timeout), and the successor reads nothing from the
 * kernel before BYE, so at no moment do both serve. Processes using the
 * mount see a pause, not an error. */
#define _GNU_SOURCE
#include "kvfs_handover.h"
#include "kvfs_daemon.h"
#include "kvfs_inode.h"
#include "kvfs_passthrough.h"

#include "../core/kvfs_idmap.h"
#include "../core/kvfs_log.h"
#include "../core/kvfs_wire.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAGIC 0x4b56465348414e44ull /* "KVFSHAND" */
#define VERSION 4
#define STATE_END 0x454e44535441ull
#define FDS_PER_MSG 200
/* How long the old daemon waits for the successor's READY. */
#define READY_TIMEOUT_MS 120000

enum msg_type { MSG_HELLO = 1, MSG_STATE, MSG_FDS, MSG_READY, MSG_BYE, MSG_REFUSED };

struct msg {
    uint64_t magic;
    uint32_t type;
    int32_t status; /* 0 or a negative errno */
    uint64_t a, b;  /* STATE: state size, descriptors to follow; FDS: first, count */
    char text[4096 - 32];
};

static int listen_fd = -1;
static char listen_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static struct stat listen_st;
static pthread_t listen_tid;
static bool listening;
static _Atomic bool done;
static struct kvfs_handover_hooks hooks;

bool kvfs_handover_done(void) {
    return done;
}

void kvfs_handover_default_path(const char *mount_real, char *path, size_t len) {
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    char dir[64 + 4096];
    if (geteuid() == 0)
        snprintf(dir, sizeof(dir), "/run/kvfs");
    else if (xdg && xdg[0] == '/')
        snprintf(dir, sizeof(dir), "%s/kvfs", xdg);
    else {
        path[0] = '\0';
        return;
    }
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)mount_real; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    snprintf(path, len, "%s/handover-%016llx.sock", dir, (unsigned long long)h);
}

static int send_msg(int fd, const struct msg *m, const int *fds, size_t nfds) {
    size_t tlen = strnlen(m->text, sizeof(m->text));
    struct iovec iov = {.iov_base = (void *)m, .iov_len = offsetof(struct msg, text) + tlen + 1};
    if (iov.iov_len > sizeof(*m))
        iov.iov_len = sizeof(*m);
    union {
        char buf[CMSG_SPACE(sizeof(int) * FDS_PER_MSG)];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds) {
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    return sendmsg(fd, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

/* Receives one message (and up to FDS_PER_MSG descriptors into FDS, *NFDS),
 * waiting at most TIMEOUT_MS (-1: forever). */
static int recv_msg(int fd, struct msg *m, int *fds, size_t *nfds, int timeout_ms) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int pr = poll(&pf, 1, timeout_ms);
    if (pr == 0)
        return -ETIMEDOUT;
    if (pr < 0)
        return -errno;
    union {
        char buf[CMSG_SPACE(sizeof(int) * FDS_PER_MSG)];
        struct cmsghdr align;
    } u;
    memset(m, 0, sizeof(*m));
    struct iovec iov = {.iov_base = m, .iov_len = sizeof(*m)};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0)
        return -errno;
    size_t got = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int d;
            memcpy(&d, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (fds && got < FDS_PER_MSG)
                fds[got++] = d;
            else
                close(d);
        }
    }
    if (nfds)
        *nfds = got;
    else
        for (size_t i = 0; i < got; i++)
            close(fds[i]);
    m->text[sizeof(m->text) - 1] = '\0';
    if (n == 0)
        return -ECONNRESET;
    if ((size_t)n < offsetof(struct msg, text) || m->magic != MAGIC ||
        (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        for (size_t i = 0; fds && i < got; i++)
            close(fds[i]);
        if (nfds)
            *nfds = 0;
        return -EBADMSG;
    }
    return 0;
}

/* Tells the other side that the handover will not happen, and why: the old
 * daemon refusing a successor, or a successor giving up (the old daemon then
 * serves on). */
static void send_refusal(int conn, int status, const char *why) {
    struct msg m = {.magic = MAGIC, .type = MSG_REFUSED, .status = status};
    snprintf(m.text, sizeof(m.text), "%s", why);
    send_msg(conn, &m, NULL, 0);
}

static void refuse(int conn, int status, const char *fmt, const char *arg) {
    char why[sizeof(((struct msg *)0)->text)];
    snprintf(why, sizeof(why), fmt, arg);
    kvfs_warn("handover refused: %s", why);
    send_refusal(conn, status, why);
}

/* ---- the old daemon ---- */

static int save_state(struct kvfs_wire_out *w, struct kvfs_fdset *fds) {
    kvfs_wire_put_u64(w, MAGIC);
    kvfs_wire_put_u64(w, VERSION);
    kvfs_wire_put_str(w, kvfs_d.backing_real);
    kvfs_wire_put_str(w, kvfs_d.mount_real);
    kvfs_wire_put_u64(w, kvfs_itable_tag());
    kvfs_wire_put_u64(w, (uint64_t)kvfs_pt_policy());
    char init[256];
    size_t ilen = kvfs_pt_init_request(init, sizeof(init));
    kvfs_wire_put_u64(w, ilen);
    kvfs_wire_put_bytes(w, init, ilen);
    uint64_t nstats = sizeof(kvfs_d.stats) / sizeof(_Atomic uint64_t);
    kvfs_wire_put_u64(w, nstats);
    _Atomic uint64_t *st = (_Atomic uint64_t *)&kvfs_d.stats;
    for (uint64_t i = 0; i < nstats; i++)
        kvfs_wire_put_u64(w, atomic_load(&st[i]));
    kvfs_wire_put_u64(w, kvfs_inode_nodeid(kvfs_ctl_dir()));
    for (int i = 0; kvfs_ctl_names[i]; i++)
        kvfs_wire_put_u64(w, kvfs_inode_nodeid(kvfs_ctl_lookup(kvfs_ctl_names[i])));
    int rc = kvfs_itable_save(w, fds);
    if (rc == 0)
        rc = kvfs_ops_save(w, fds);
    kvfs_wire_put_u64(w, STATE_END);
    return rc ? rc : w->err;
}

/* Sends the state; 0 once the successor said READY and was told BYE. */
static int hand_over(int conn) {
    struct kvfs_wire_out w = {0};
    struct kvfs_fdset fds = {0};
    int memfd = -1;
    int rc = save_state(&w, &fds);
    if (rc == 0 && (memfd = memfd_create("kvfs-handover", MFD_CLOEXEC)) < 0)
        rc = -errno;
    for (size_t off = 0; rc == 0 && off < w.len;) {
        ssize_t n = write(memfd, w.buf + off, w.len - off);
        if (n < 0)
            rc = -errno;
        else
            off += (size_t)n;
    }
    if (rc == 0) {
        struct msg m = {.magic = MAGIC, .type = MSG_STATE, .a = w.len, .b = fds.n};
        int two[2] = {fuse_session_fd(kvfs_d.se), memfd};
        rc = send_msg(conn, &m, two, 2);
    }
    for (size_t i = 0; rc == 0 && i < fds.n; i += FDS_PER_MSG) {
        size_t k = fds.n - i < FDS_PER_MSG ? fds.n - i : FDS_PER_MSG;
        struct msg m = {.magic = MAGIC, .type = MSG_FDS, .a = i, .b = k};
        rc = send_msg(conn, &m, fds.fds + i, k);
    }
    if (memfd >= 0)
        close(memfd);
    size_t bytes = w.len, nfds = fds.n;
    kvfs_wire_out_free(&w);
    kvfs_fdset_free(&fds);
    if (rc) {
        kvfs_error("handover: sending the state failed: %s", strerror(-rc));
        return rc;
    }
    kvfs_info("handover: state sent (%zu bytes, %zu descriptors); waiting for the successor", bytes,
              nfds);
    struct msg m;
    rc = recv_msg(conn, &m, NULL, NULL, READY_TIMEOUT_MS);
    if (rc == 0 && m.type != MSG_READY) {
        kvfs_error("handover: the successor failed: %s", m.text[0] ? m.text : "no reason given");
        return m.status ? m.status : -EPROTO;
    }
    if (rc) {
        kvfs_error("handover: no word from the successor: %s", strerror(-rc));
        return rc;
    }
    /* Committed: from the BYE on, the successor serves. A BYE that cannot
     * be sent never reached it, and it will not serve. */
    struct msg bye = {.magic = MAGIC, .type = MSG_BYE};
    rc = send_msg(conn, &bye, NULL, 0);
    if (rc)
        kvfs_error("handover: telling the successor to start failed: %s", strerror(-rc));
    return rc;
}

static bool peer_allowed(int conn, pid_t *pid) {
    struct ucred cr;
    socklen_t len = sizeof(cr);
    *pid = 0;
    if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0)
        return false;
    *pid = cr.pid;
    return cr.uid == 0 || cr.uid == geteuid();
}

static void serve_successor(int conn) {
    pid_t pid = 0;
    if (!peer_allowed(conn, &pid)) {
        refuse(conn, -EPERM, "%s", "only root or the daemon's user may take it over");
        return;
    }
    struct msg m;
    int rc = recv_msg(conn, &m, NULL, NULL, 10000);
    if (rc || m.type != MSG_HELLO) {
        kvfs_warn("handover: a malformed request from pid %d ignored", (int)pid);
        return;
    }
    if (m.a != VERSION) {
        refuse(conn, -EPROTONOSUPPORT, "%s", "the successor speaks another handover version");
        return;
    }
    if (strcmp(m.text, kvfs_d.backing_real) != 0) {
        refuse(conn, -EINVAL, "this mount serves the backing directory '%s'", kvfs_d.backing_real);
        return;
    }
    kvfs_info("handover: pid %d takes over; pausing requests", (int)pid);
    unsigned wait_s = kvfs_d.cfg.request_timeout ? kvfs_d.cfg.request_timeout + 5 : 30;
    rc = kvfs_chan_pause(wait_s);
    if (rc) {
        refuse(conn, rc, "%s",
               "a request is still being served (a hung backing store?); try again later");
        return;
    }
    hooks.pause();
    rc = hand_over(conn);
    if (rc == 0) {
        kvfs_info("handover: pid %d serves %s now; exiting without unmounting", (int)pid,
                  kvfs_d.mount_real);
        done = true;
        fuse_session_exit(kvfs_d.se);
        kvfs_chan_leave();
        return;
    }
    kvfs_warn("handover: serving on");
    hooks.resume();
    kvfs_chan_resume();
}

static void *listen_thread(void *arg) {
    (void)arg;
    while (!done) {
        int conn = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (conn < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            break; /* shut down */
        }
        serve_successor(conn);
        close(conn);
    }
    return NULL;
}

static int make_socket(const char *path, struct sockaddr_un *sa) {
    if (strlen(path) >= sizeof(sa->sun_path))
        return -ENAMETOOLONG;
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, path, strlen(path));
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    return fd < 0 ? -errno : fd;
}

/* Creates the socket's directory (private) if it is missing. */
static void make_dir_of(const char *path) {
    char dir[sizeof(listen_path)];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        mkdir(dir, 0700);
    }
}

int kvfs_handover_listen(const char *path, const struct kvfs_handover_hooks *h) {
    struct sockaddr_un sa;
    int fd = make_socket(path, &sa);
    if (fd < 0)
        return fd;
    make_dir_of(path);
    /* Bind under a temporary name and rename it into place, which replaces a
     * predecessor's socket atomically: a successor connecting meanwhile
     * reaches one or the other. */
    char tmp[sizeof(sa.sun_path)];
    int n = snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
    struct sockaddr_un ta = sa;
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        close(fd);
        return -ENAMETOOLONG;
    }
    memcpy(ta.sun_path, tmp, (size_t)n + 1);
    unlink(tmp);
    int rc = 0;
    if (bind(fd, (struct sockaddr *)&ta, sizeof(ta)) != 0 || listen(fd, 4) != 0 ||
        chmod(tmp, 0600) != 0 || rename(tmp, path) != 0 || stat(path, &listen_st) != 0)
        rc = -errno;
    if (rc) {
        unlink(tmp);
        close(fd);
        return rc;
    }
    hooks = *h;
    listen_fd = fd;
    snprintf(listen_path, sizeof(listen_path), "%s", path);
    if (pthread_create(&listen_tid, NULL, listen_thread, NULL) != 0) {
        unlink(path);
        close(fd);
        listen_fd = -1;
        return -EAGAIN;
    }
    listening = true;
    kvfs_info("a successor can take over through %s", path);
    return 0;
}

void kvfs_handover_stop(void) {
    if (!listening)
        return;
    shutdown(listen_fd, SHUT_RDWR);
    pthread_join(listen_tid, NULL);
    listening = false;
    /* Remove the socket only if it is still ours, not a successor's. */
    struct stat st;
    if (!done && stat(listen_path, &st) == 0 && st.st_ino == listen_st.st_ino &&
        st.st_dev == listen_st.st_dev)
        unlink(listen_path);
    close(listen_fd);
    listen_fd = -1;
}

/* ---- the successor ---- */

static int restore_state(const char *buf, size_t len, int *fds, size_t nfds, int *policy,
                         char *mount_real, size_t mlen, char *err, size_t errlen) {
    struct kvfs_wire_in r;
    kvfs_wire_in_init(&r, buf, len);
    if (kvfs_wire_get_u64(&r) != MAGIC || kvfs_wire_get_u64(&r) != VERSION) {
        snprintf(err, errlen, "the state is not a kvfs handover state of version %d", VERSION);
        return -EBADMSG;
    }
    char backing[4096];
    kvfs_wire_get_str_into(&r, backing, sizeof(backing));
    kvfs_wire_get_str_into(&r, mount_real, mlen);
    /* Our ids get the next generation's tag, so that none equals one the
     * predecessor handed out, even where the allocator repeats its addresses. */
    uint64_t tag = kvfs_idmap_next_tag(kvfs_wire_get_max(&r, KVFS_IDMAP_TAG_MASK));
    kvfs_itable_set_tag(tag);
    kvfs_ops_set_tag(tag);
    *policy = (int)kvfs_wire_get_max(&r, KVFS_PT_OFF);
    char init[256];
    size_t ilen = (size_t)kvfs_wire_get_max(&r, sizeof(init));
    kvfs_wire_get_bytes(&r, init, ilen);
    uint64_t nstats = kvfs_wire_get_max(&r, 1024);
    uint64_t ours = sizeof(kvfs_d.stats) / sizeof(_Atomic uint64_t);
    _Atomic uint64_t *st = (_Atomic uint64_t *)&kvfs_d.stats;
    for (uint64_t i = 0; i < nstats; i++) {
        uint64_t v = kvfs_wire_get_u64(&r);
        if (i < ours) /* counters a newer version adds start at 0 */
            atomic_store(&st[i], v);
    }
    int rc = kvfs_wire_in_ok(&r) ? 0 : r.err;
    if (rc == 0 && ilen && kvfs_pt_replay_init(init, ilen) != 0)
        rc = -EBADMSG;
    if (rc == 0 && strcmp(backing, kvfs_d.backing_real) != 0) {
        snprintf(err, errlen, "the running daemon serves '%s', not '%s'", backing,
                 kvfs_d.backing_real);
        return -EINVAL;
    }
    uint64_t ctl_id = kvfs_wire_get_u64(&r);
    if (rc == 0 && kvfs_wire_in_ok(&r))
        rc = kvfs_inode_adopt(kvfs_ctl_dir(), ctl_id);
    for (int i = 0; kvfs_ctl_names[i] && rc == 0; i++) {
        ctl_id = kvfs_wire_get_u64(&r);
        if (kvfs_wire_in_ok(&r))
            rc = kvfs_inode_adopt(kvfs_ctl_lookup(kvfs_ctl_names[i]), ctl_id);
    }
    if (rc == 0)
        rc = kvfs_itable_restore(&r, fds, nfds);
    if (rc == 0)
        rc = kvfs_ops_restore(&r, fds, nfds);
    if (rc == 0 && (kvfs_wire_get_u64(&r) != STATE_END || r.left != 0))
        rc = -EBADMSG;
    if (rc)
        snprintf(err, errlen, "restoring the daemon state failed: %s", strerror(-rc));
    return rc;
}

int kvfs_handover_take(const char *path, int *dev_fd, int *policy, char *mount_real, size_t mlen,
                       char *err, size_t errlen) {
    struct sockaddr_un sa;
    int conn = make_socket(path, &sa);
    if (conn < 0) {
        snprintf(err, errlen, "handover socket '%s': %s", path, strerror(-conn));
        return -1;
    }
    if (connect(conn, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        snprintf(err, errlen, "no daemon to take over at '%s': %s", path, strerror(errno));
        close(conn);
        return -1;
    }
    /* The state it sends is trusted as ours: only a daemon of root or of our
     * own user may hand it. */
    pid_t peer;
    if (!peer_allowed(conn, &peer)) {
        snprintf(err, errlen, "the process listening at '%s' (pid %d) is not root's or ours", path,
                 (int)peer);
        close(conn);
        return -1;
    }
    struct msg m = {.magic = MAGIC, .type = MSG_HELLO, .a = VERSION};
    if (strlen(kvfs_d.backing_real) >= sizeof(m.text)) {
        snprintf(err, errlen, "the backing directory's path is too long for a handover");
        close(conn);
        return -1;
    }
    memcpy(m.text, kvfs_d.backing_real, strlen(kvfs_d.backing_real) + 1);
    int fds[FDS_PER_MSG];
    size_t nfds = 0;
    int rc = send_msg(conn, &m, NULL, 0);
    /* The old daemon first waits for the requests it is serving to finish,
     * up to its request_timeout (a stopped or hung daemon answers never). */
    unsigned wait_s = kvfs_d.cfg.request_timeout ? kvfs_d.cfg.request_timeout + 60 : 120;
    if (rc == 0)
        rc = recv_msg(conn, &m, fds, &nfds, (int)(wait_s * 1000));
    if (rc == 0 && m.type == MSG_REFUSED) {
        snprintf(err, errlen, "the running daemon refused: %s", m.text);
        close(conn);
        return -1;
    }
    if (rc == 0 && (m.type != MSG_STATE || nfds != 2 || m.a > ((uint64_t)1 << 40)))
        rc = -EBADMSG;
    if (rc) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        snprintf(err, errlen, "receiving the daemon state failed: %s", strerror(-rc));
        close(conn);
        return -1;
    }
    *dev_fd = fds[0];
    int memfd = fds[1];
    size_t len = (size_t)m.a, want = (size_t)m.b;
    int *all = calloc(want ? want : 1, sizeof(int));
    size_t have = 0;
    rc = all ? 0 : -ENOMEM;
    while (rc == 0 && have < want) {
        rc = recv_msg(conn, &m, fds, &nfds, 60000);
        if (rc == 0 && (m.type != MSG_FDS || m.a != have || m.b != nfds || have + nfds > want))
            rc = -EBADMSG;
        for (size_t i = 0; i < nfds; i++) {
            if (rc == 0)
                all[have++] = fds[i];
            else
                close(fds[i]);
        }
    }
    char *buf = NULL;
    if (rc == 0 && len) {
        buf = mmap(NULL, len, PROT_READ, MAP_PRIVATE, memfd, 0);
        if (buf == MAP_FAILED) {
            buf = NULL;
            rc = -errno;
        }
    }
    close(memfd);
    if (rc == 0)
        rc = restore_state(buf, len, all, have, policy, mount_real, mlen, err, errlen);
    else
        snprintf(err, errlen, "receiving the daemon state failed: %s", strerror(-rc));
    if (buf)
        munmap(buf, len);
    /* Descriptors the state did not take over. */
    for (size_t i = 0; i < have; i++)
        if (all[i] >= 0)
            close(all[i]);
    free(all);
    if (rc) {
        send_refusal(conn, rc, err);
        close(*dev_fd);
        close(conn);
        return -1;
    }
    kvfs_info("handover: took over %s (%zu bytes of state, %zu descriptors)", mount_real, len,
              want);
    return conn;
}

int kvfs_handover_commit(int conn) {
    struct msg m = {.magic = MAGIC, .type = MSG_READY};
    int rc = send_msg(conn, &m, NULL, 0);
    if (rc == 0)
        rc = recv_msg(conn, &m, NULL, NULL, -1);
    if (rc == 0 && m.type != MSG_BYE)
        rc = -EPROTO;
    close(conn);
    return rc;
}
