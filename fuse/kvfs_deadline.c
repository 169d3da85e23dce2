/* kvfs_deadline: answers requests that outlive request_timeout with EIO (see
 * the header for why and how).
 *
 * Each thread that reads /dev/fuse owns one slot saying which request it is
 * serving and since when; libfuse serves a request on the thread that read
 * it, so a slot is enough and needs no lookup. Slots are linked once and
 * reused when their thread ends (libfuse ends idle workers). The watchdog
 * claims an overdue request with a compare-and-swap on the slot's unique id,
 * the same word the serving thread clears before replying, so at most one
 * of the two thinks it answers first; should both write, the kernel takes
 * the first and refuses the second with ENOENT. */
#include "kvfs_deadline.h"
#include "kvfs_daemon.h"

#include "../core/kvfs_clock.h"
#include "../core/kvfs_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

struct slot {
    _Atomic uint64_t unique; /* 0: idle */
    _Atomic uint64_t since;  /* monotonic ns when the request was read */
    _Atomic uint32_t opcode;
    _Atomic int fd;
    _Atomic bool in_use; /* owned by a live thread */
    struct slot *next;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct slot *slots;
    pthread_key_t key;
    uint64_t timeout_ns;
    bool running, stopping;
    pthread_t tid;
} dl = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, false, false, 0};

static __thread struct slot *mine;

/* Opcodes (linux/fuse.h) that get no reply. */
enum {
    OP_FORGET = 2,
    OP_INIT = 26,
    OP_INTERRUPT = 36,
    OP_DESTROY = 38,
    OP_NOTIFY_REPLY = 41,
    OP_BATCH_FORGET = 42
};

static void slot_release(void *p) {
    struct slot *s = p;
    atomic_store(&s->unique, 0);
    atomic_store(&s->in_use, false);
}

static struct slot *my_slot(void) {
    if (mine)
        return mine;
    pthread_mutex_lock(&dl.lock);
    struct slot *s;
    for (s = dl.slots; s && atomic_load(&s->in_use); s = s->next)
        ;
    if (!s && (s = calloc(1, sizeof(*s))) != NULL) {
        s->next = dl.slots;
        dl.slots = s;
    }
    if (s)
        atomic_store(&s->in_use, true);
    pthread_mutex_unlock(&dl.lock);
    if (s)
        pthread_setspecific(dl.key, s);
    return mine = s;
}

void kvfs_deadline_begin(int fd, uint64_t unique, uint32_t opcode) {
    if (!dl.timeout_ns)
        return;
    switch (opcode) {
    case OP_FORGET:
    case OP_INIT:
    case OP_INTERRUPT:
    case OP_DESTROY:
    case OP_NOTIFY_REPLY:
    case OP_BATCH_FORGET:
        return;
    }
    struct slot *s = my_slot();
    if (!s)
        return; /* out of memory: this request simply has no deadline */
    atomic_store(&s->fd, fd);
    atomic_store(&s->opcode, opcode);
    atomic_store(&s->since, kvfs_clock_mono_ns());
    atomic_store(&s->unique, unique); /* last: the watchdog reads it first */
}

void kvfs_deadline_end(uint64_t unique) {
    struct slot *s = mine;
    if (s && unique) {
        uint64_t u = unique;
        atomic_compare_exchange_strong(&s->unique, &u, 0);
    }
}

static void answer(int fd, uint64_t unique, uint32_t opcode, uint64_t waited_ns) {
    struct {
        uint32_t len;
        int32_t error;
        uint64_t unique;
    } out = {sizeof(out), -EIO, unique};
    ssize_t n = write(fd, &out, sizeof(out));
    kvfs_stat_inc(&kvfs_d.stats, requests_timed_out);
    if (n == (ssize_t)sizeof(out))
        kvfs_warn("request %llu (opcode %u) answered with EIO after %.1f s: the backing store "
                  "is not responding (request_timeout)",
                  (unsigned long long)unique, opcode, (double)waited_ns / 1e9);
}

static void *watchdog(void *arg) {
    (void)arg;
    uint64_t step = dl.timeout_ns / 4 < 1000000000u ? dl.timeout_ns / 4 : 1000000000u;
    pthread_mutex_lock(&dl.lock);
    while (!dl.stopping) {
        for (struct slot *s = dl.slots; s; s = s->next) {
            uint64_t u = atomic_load(&s->unique);
            uint64_t since = atomic_load(&s->since);
            /* Read the clock after the slot: a request that began after an
             * earlier reading would look 2^64 ns old (the soak caught that
             * answering fresh reads with EIO). */
            uint64_t now = kvfs_clock_mono_ns();
            if (!u || since > now || now - since < dl.timeout_ns)
                continue;
            int fd = atomic_load(&s->fd);
            uint32_t op = atomic_load(&s->opcode);
            if (atomic_compare_exchange_strong(&s->unique, &u, 0))
                answer(fd, u, op, now - since);
        }
        struct timespec period = kvfs_clock_after_ns(step);
        pthread_cond_timedwait(&dl.wake, &dl.lock, &period);
    }
    pthread_mutex_unlock(&dl.lock);
    return NULL;
}

int kvfs_deadline_start(unsigned seconds) {
    if (!seconds)
        return 0;
    int rc = pthread_key_create(&dl.key, slot_release);
    if (rc)
        return -rc;
    dl.timeout_ns = (uint64_t)seconds * 1000000000u;
    dl.stopping = false;
    rc = pthread_create(&dl.tid, NULL, watchdog, NULL);
    if (rc) {
        dl.timeout_ns = 0;
        pthread_key_delete(dl.key);
        return -rc;
    }
    dl.running = true;
    return 0;
}

void kvfs_deadline_stop(void) {
    if (!dl.running)
        return;
    pthread_mutex_lock(&dl.lock);
    dl.stopping = true;
    pthread_cond_signal(&dl.wake);
    pthread_mutex_unlock(&dl.lock);
    pthread_join(dl.tid, NULL);
    dl.running = false;
    dl.timeout_ns = 0;
    /* The FUSE workers are gone (the session loop has returned). */
    while (dl.slots) {
        struct slot *s = dl.slots;
        dl.slots = s->next;
        free(s);
    }
    mine = NULL;
    pthread_key_delete(dl.key);
}
