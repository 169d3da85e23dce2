/* kvfs_main: the daemon's entry point. Parses the command line, refuses bad
 * paths and options before anything is mounted, mounts (or, with
 * --takeover, takes a running daemon's mount over: kvfs_handover), detaches
 * (unless -f) and reports success only once everything is serving, serves
 * until unmounted or signalled, and collects staging files left by crashed
 * writers in the background. */
#define _GNU_SOURCE
#include "kvfs_daemon.h"
#include "kvfs_deadline.h"
#include "kvfs_evict.h"
#include "kvfs_handover.h"
#include "kvfs_http.h"
#include "kvfs_inode.h"
#include "kvfs_passthrough.h"

#include "../core/kvfs_clock.h"
#include "../core/kvfs_config.h"
#include "../core/kvfs_fault.h"
#include "../core/kvfs_log.h"
#include "../core/kvfs_publish.h"
#include "../core/kvfs_version.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_mutex_t gc_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gc_cond = PTHREAD_COND_INITIALIZER;
static bool gc_stop;

static void *gc_thread(void *arg) {
    (void)arg;
    unsigned grace = kvfs_d.cfg.staging_grace;
    unsigned period = grace / 4 < 60 ? 60 : grace / 4;
    pthread_mutex_lock(&gc_lock);
    while (!gc_stop) {
        pthread_mutex_unlock(&gc_lock);
        uint64_t removed = 0;
        int rc = kvfs_staging_collect(&kvfs_d.store, grace, time(NULL), &removed);
        kvfs_stat_add(&kvfs_d.stats, staging_collected, removed);
        if (rc)
            kvfs_warn("staging collection incomplete: %s", strerror(-rc));
        pthread_mutex_lock(&gc_lock);
        struct timespec until = kvfs_clock_after_ns((uint64_t)period * 1000000000u);
        while (!gc_stop && pthread_cond_timedwait(&gc_cond, &gc_lock, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&gc_lock);
    return NULL;
}

static pthread_t gc_tid;
static bool gc_running;

static void gc_start(void) {
    gc_stop = false;
    gc_running = pthread_create(&gc_tid, NULL, gc_thread, NULL) == 0;
    if (!gc_running)
        kvfs_warn("cannot start the staging collector; stale staging files stay until restart");
}

static void gc_end(void) {
    if (!gc_running)
        return;
    pthread_mutex_lock(&gc_lock);
    gc_stop = true;
    pthread_cond_signal(&gc_cond);
    pthread_mutex_unlock(&gc_lock);
    pthread_join(gc_tid, NULL);
    gc_running = false;
}

/* The threads besides the request workers, started once the mount is
 * served. 0, or -1 after logging why. */
static int services_start(void) {
    struct kvfs_config *cfg = &kvfs_d.cfg;
    int rc = kvfs_evict_start();
    if (rc != 0) {
        kvfs_error("cannot start the block index: %s", strerror(-rc));
        return -1;
    }
    kvfs_ops_reindex();
    if (cfg->metrics_port && kvfs_http_start(cfg->metrics_host, cfg->metrics_port) != 0)
        return -1;
    gc_start();
    return 0;
}

static void services_stop(void) {
    kvfs_http_stop();
    kvfs_evict_stop();
    gc_end();
}

/* A handover that did not happen: serve on as before. */
static void services_resume(void) {
    if (services_start() != 0)
        kvfs_error("after a failed handover, some background services did not restart");
}

/* Without -f: forks, and the parent exits only once the child reports, with
 * the child's status, so that `kvfs ...` returns success only when the mount
 * is served (fuse_daemonize reports before the services start). */
static int ready_fd = -1;

static int detach(void) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0) {
        close(p[1]);
        unsigned char st = 1;
        ssize_t n;
        while ((n = read(p[0], &st, 1)) < 0 && errno == EINTR)
            ;
        if (n != 1) { /* the child died before reporting */
            int ws;
            waitpid(pid, &ws, 0);
        }
        _exit(n == 1 ? st : 1);
    }
    close(p[0]);
    if (setsid() < 0 || chdir("/") != 0)
        return -1;
    ready_fd = p[1];
    return 0;
}

static void report(int status) {
    if (ready_fd < 0)
        return;
    unsigned char st = (unsigned char)status;
    if (write(ready_fd, &st, 1) != 1)
        kvfs_warn("could not report to the starting process: %s", strerror(errno));
    close(ready_fd);
    ready_fd = -1;
    if (status == 0) {
        int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
            dup2(nul, 2);
            close(nul);
        }
        kvfs_log_use_syslog(true);
    }
}

/* A successor's mount was made by its predecessor, so libfuse does not know
 * it as its own: unmount it by hand (lazily, as libfuse does). */
static void unmount_taken(const char *mnt) {
    if (geteuid() == 0) {
        /* EINVAL: already unmounted (which is how the session may have ended). */
        if (umount2(mnt, MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
            kvfs_error("unmounting %s failed: %s", mnt, strerror(errno));
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        execlp("fusermount3", "fusermount3", "-u", "-q", "-z", "--", mnt, (char *)NULL);
        _exit(127);
    }
    int ws;
    if (pid < 0 || waitpid(pid, &ws, 0) < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
        kvfs_error("unmounting %s with fusermount3 failed", mnt);
}

/* PATH made absolute through its parent only (realpath of the parent, then
 * the last name), so that a mount at PATH is not entered. 0 or -1. */
static int real_parent_path(const char *path, char *out, size_t len) {
    char copy[PATH_MAX], parent[PATH_MAX];
    snprintf(copy, sizeof(copy), "%s", path);
    size_t n = strlen(copy);
    while (n > 1 && copy[n - 1] == '/')
        copy[--n] = '\0';
    char *slash = strrchr(copy, '/');
    const char *base = slash ? slash + 1 : copy;
    if (slash == copy)
        snprintf(parent, sizeof(parent), "/");
    else if (!realpath(slash ? (*slash = '\0', copy) : ".", parent))
        return -1;
    if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
        errno = EINVAL;
        return -1;
    }
    int w = snprintf(out, len, "%s%s%s", parent, strcmp(parent, "/") ? "/" : "", base);
    if (w < 0 || (size_t)w >= len) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

static bool is_dev_fd(const char *path) {
    const char *p = "/dev/fd/";
    if (strncmp(path, p, strlen(p)) != 0 || !path[strlen(p)])
        return false;
    return strspn(path + strlen(p), "0123456789") == strlen(path + strlen(p));
}

static void fuse_log_bridge(enum fuse_log_level level, const char *fmt, va_list ap) {
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    enum kvfs_log_level l = level <= FUSE_LOG_ERR       ? KVFS_LOG_ERROR
                            : level <= FUSE_LOG_WARNING ? KVFS_LOG_WARN
                            : level <= FUSE_LOG_INFO    ? KVFS_LOG_INFO
                                                        : KVFS_LOG_DEBUG;
    kvfs_log(l, "libfuse: %s", msg);
}

/* Many inodes can be open at once on a busy node. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv) {
    struct kvfs_config *cfg = &kvfs_d.cfg;
    char err[512];
    kvfs_config_defaults(cfg);
    if (kvfs_config_parse(cfg, argc, argv, err, sizeof(err)) != 0) {
        fprintf(stderr, "kvfs: %s\n", err);
        return 2;
    }
    if (cfg->show_help) {
        kvfs_config_usage(argv[0], stdout);
        return 0;
    }
    if (cfg->show_version) {
        printf("kvfs %s (libfuse %s)\n", KVFS_VERSION, fuse_pkgversion());
        return 0;
    }
    kvfs_config_finish(cfg, geteuid());
    /* -d traces requests through libfuse's debug log, which goes to ours. */
    kvfs_log_set_level(cfg->fuse_debug ? KVFS_LOG_DEBUG : (enum kvfs_log_level)cfg->log_level);
    fuse_set_log_func(fuse_log_bridge);
    kvfs_d.is_root = geteuid() == 0;
    const char *faults = getenv(KVFS_FAULTS_ENV);
#ifdef KVFS_FAULT_INJECTION
    if (kvfs_fault_setup(faults, err, sizeof(err)) != 0) {
        fprintf(stderr, "kvfs: %s: %s\n", KVFS_FAULTS_ENV, err);
        return 2;
    }
#else
    if (faults && *faults) {
        fprintf(stderr, "kvfs: %s is set, but this kvfs was built without fault injection\n",
                KVFS_FAULTS_ENV);
        return 2;
    }
#endif

    /* "/dev/fd/N": a /dev/fuse descriptor already mounted by a parent (how a
     * supervisor mounts for a daemon it then runs with fewer privileges). */
    bool fd_mount = is_dev_fd(cfg->mountpoint);
    /* A mount being taken over was checked when it was made, and is not
     * touched here: its daemon may not answer (takeover then fails cleanly
     * at the socket instead of hanging in stat()). */
    const char *mp_check = fd_mount || cfg->takeover ? NULL : cfg->mountpoint;
    if (kvfs_store_check_paths(cfg->backing, mp_check, err, sizeof(err)) != 0) {
        fprintf(stderr, "kvfs: %s\n", err);
        return 1;
    }
    if (!realpath(cfg->backing, kvfs_d.backing_real) ||
        (!fd_mount && !cfg->takeover && !realpath(cfg->mountpoint, kvfs_d.mount_real)) ||
        (cfg->takeover && !fd_mount &&
         real_parent_path(cfg->mountpoint, kvfs_d.mount_real, sizeof(kvfs_d.mount_real)) != 0)) {
        fprintf(stderr, "kvfs: %s\n", strerror(errno));
        return 1;
    }
    if (fd_mount)
        snprintf(kvfs_d.mount_real, sizeof(kvfs_d.mount_real), "%s", cfg->mountpoint);
    if (kvfs_store_open(&kvfs_d.store, kvfs_d.backing_real, err, sizeof(err)) != 0) {
        fprintf(stderr, "kvfs: %s\n", err);
        return 1;
    }
    /* Files and directories get the modes clients ask for, which the kernel
     * has already masked with the client's umask; the daemon's own umask must
     * not mask them again. What the daemon creates for itself names its
     * modes explicitly. */
    umask(0);
    raise_fd_limit();
    clock_gettime(CLOCK_MONOTONIC, &kvfs_d.started);
    kvfs_d.data_mode = "negotiating";
    kvfs_d.data_mode_reason = "the kernel has not sent INIT yet";
    kvfs_ctl_init();
    int root_fd = dup(kvfs_d.store.root_fd);
    if (root_fd < 0 || kvfs_itable_init(root_fd) != 0) {
        fprintf(stderr, "kvfs: out of memory or descriptors\n");
        return 1;
    }

    /* libfuse sees only what it needs: fsname/subtype so that /proc/mounts
     * shows "kvfs:BACKING" as type fuse.kvfs, the permission options, and the
     * generic mount options that were validated by kvfs_config. */
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    char opts[2048] = "subtype=kvfs";
    int rc = fuse_opt_add_arg(&args, argv[0]);
    if (!strstr(cfg->fuse_opts, "fsname=")) {
        char fsname[4200];
        snprintf(fsname, sizeof(fsname), "fsname=%s", kvfs_d.backing_real);
        char *o = NULL;
        rc |= fuse_opt_add_opt_escaped(&o, fsname + 7) == 0 ? 0 : 1;
        snprintf(opts + strlen(opts), sizeof(opts) - strlen(opts), ",fsname=%s", o ? o : "kvfs");
        free(o);
    }
    if (cfg->allow_other)
        strncat(opts, ",allow_other", sizeof(opts) - strlen(opts) - 1);
    if (cfg->default_permissions)
        strncat(opts, ",default_permissions", sizeof(opts) - strlen(opts) - 1);
    if (cfg->fuse_opts[0]) {
        strncat(opts, ",", sizeof(opts) - strlen(opts) - 1);
        strncat(opts, cfg->fuse_opts, sizeof(opts) - strlen(opts) - 1);
    }
    rc |= fuse_opt_add_arg(&args, "-o");
    rc |= fuse_opt_add_arg(&args, opts);
    if (cfg->fuse_debug)
        rc |= fuse_opt_add_arg(&args, "-d");
    if (rc) {
        fprintf(stderr, "kvfs: out of memory\n");
        return 1;
    }

    /* --takeover: the mount and the daemon state come from the running
     * daemon, before anything starts here. */
    int conn = -1, dev_fd = -1, policy = cfg->passthrough;
    char sock[sizeof(cfg->handover_socket)] = "";
    if (!cfg->handover_off) {
        if (cfg->handover_socket[0])
            snprintf(sock, sizeof(sock), "%s", cfg->handover_socket);
        else
            kvfs_handover_default_path(kvfs_d.mount_real, sock, sizeof(sock));
    }
    if (cfg->takeover) {
        if (fd_mount || !sock[0]) {
            fprintf(stderr, "kvfs: --takeover needs %s\n",
                    fd_mount ? "a mountpoint path, not /dev/fd/N"
                             : "handover_socket=PATH (no default for this user)");
            fuse_opt_free_args(&args);
            return 1;
        }
        conn = kvfs_handover_take(sock, &dev_fd, &policy, kvfs_d.mount_real,
                                  sizeof(kvfs_d.mount_real), err, sizeof(err));
        if (conn < 0) {
            fprintf(stderr, "kvfs: cannot take over %s: %s\n", kvfs_d.mount_real, err);
            fuse_opt_free_args(&args);
            return 1;
        }
        if (policy != cfg->passthrough)
            kvfs_warn("passthrough: keeping the running mount's mode; the kernel negotiated "
                      "it when it was mounted");
    }

    struct fuse_session *se = fuse_session_new(&args, &kvfs_ops, sizeof(kvfs_ops), NULL);
    fuse_opt_free_args(&args);
    if (!se) {
        fprintf(stderr, "kvfs: invalid mount options (see above)\n");
        return 1;
    }
    kvfs_d.se = se;
    int ret = 1;
    bool mounted = false;
    bool committed = false; /* a successor that now owns the mount */
    if (fuse_set_signal_handlers(se) != 0)
        goto out_destroy;
    char devpath[32];
    snprintf(devpath, sizeof(devpath), "/dev/fd/%d", dev_fd);
    if (fuse_session_mount(se, conn >= 0 ? devpath : kvfs_d.mount_real) != 0) {
        fprintf(stderr, "kvfs: cannot mount on '%s'\n", kvfs_d.mount_real);
        goto out_signals;
    }
    mounted = true;
    /* A spinning reader takes a CPU from the clients on small machines (the
     * CPUs this process may run on: a container's cpuset counts). */
    cpu_set_t cpuset;
    int cpus = sched_getaffinity(0, sizeof(cpuset), &cpuset) == 0
                   ? CPU_COUNT(&cpuset)
                   : (int)sysconf(_SC_NPROCESSORS_ONLN);
    bool spin = cpus >= 4;
    kvfs_chan_set_spin(cfg->spin_us >= 0 ? (unsigned)cfg->spin_us
                       : spin            ? 50u
                                         : 0u,
                       cfg->spin_write_us >= 0 ? (unsigned)cfg->spin_write_us
                       : spin                  ? 5000u
                                               : 0u);
    if (kvfs_pt_install(se, (enum kvfs_pt_policy)policy) != 0) {
        fprintf(stderr, "kvfs: cannot set up the /dev/fuse channel\n");
        goto out_unmount;
    }
    if (!cfg->foreground && detach() != 0) {
        fprintf(stderr, "kvfs: cannot detach: %s\n", strerror(errno));
        goto out_unmount;
    }
    if (services_start() != 0)
        goto out_services;
    int erc = kvfs_deadline_start(cfg->request_timeout);
    if (erc != 0) {
        kvfs_error("cannot start the request watchdog: %s", strerror(-erc));
        goto out_services;
    }
    if (conn >= 0 && (erc = kvfs_fault(KVFS_FAULT_TAKEOVER, NULL)) != 0) {
        kvfs_error("takeover: injected fault (%s) before telling the running daemon",
                   strerror(-erc));
        goto out_deadline;
    }
    if (conn >= 0) {
        /* Only now may the old daemon stop for good. */
        erc = kvfs_handover_commit(conn);
        conn = -1;
        committed = erc == 0;
        if (erc != 0) {
            kvfs_error("the running daemon did not hand over (%s); it serves on", strerror(-erc));
            goto out_deadline;
        }
    }
    if (sock[0]) {
        static const struct kvfs_handover_hooks hooks = {services_stop, services_resume};
        erc = kvfs_handover_listen(sock, &hooks);
        if (erc != 0)
            kvfs_warn("cannot listen on %s (%s): this daemon cannot be taken over", sock,
                      strerror(-erc));
    }
    kvfs_info("kvfs %s %s %s on %s", KVFS_VERSION, cfg->takeover ? "took over" : "mounted",
              kvfs_d.backing_real, kvfs_d.mount_real);
    report(0);

    struct fuse_loop_config *lc = fuse_loop_cfg_create();
    if (lc) {
        fuse_loop_cfg_set_max_threads(lc, cfg->threads);
        fuse_loop_cfg_set_clone_fd(lc, cfg->clone_fd);
        ret = cfg->threads == 1 ? fuse_session_loop(se) : fuse_session_loop_mt(se, lc);
        fuse_loop_cfg_destroy(lc);
    }
    kvfs_handover_stop();
    if (ret == SIGTERM || ret == SIGINT || ret == SIGHUP || kvfs_handover_done())
        ret = 0; /* asked to stop, or handed over: a clean end */
    if (ret != 0)
        kvfs_error("the FUSE session ended with an error: %s", strerror(ret < 0 ? -ret : ret));
out_deadline:
    kvfs_deadline_stop();
out_services:
    /* Whatever the successor (or, if it failed, still our predecessor) owns
     * is left as it is; otherwise the handles whose RELEASE never came are
     * released now. */
    bool owner = !kvfs_handover_done() && (!cfg->takeover || committed);
    if (!owner)
        kvfs_ops_drop_all();
    else
        kvfs_ops_release_all();
    services_stop();
out_unmount:
    if (kvfs_handover_done() || (cfg->takeover && !committed)) {
        /* the mount lives on in another process */
    } else if (cfg->takeover) {
        unmount_taken(kvfs_d.mount_real);
        kvfs_info("unmounted %s", kvfs_d.mount_real);
    } else if (mounted) {
        fuse_session_unmount(se);
        kvfs_info("unmounted %s", kvfs_d.mount_real);
    }
out_signals:
    fuse_remove_signal_handlers(se);
out_destroy:
    if (conn >= 0)
        close(conn);
    report(1);
    fuse_session_destroy(se);
    kvfs_itable_destroy();
    kvfs_store_close(&kvfs_d.store);
    return ret ? 1 : 0;
}
