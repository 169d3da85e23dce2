/* kvfs_engine: the I/O thread pool behind libkvfs's job API.
 *
 * Queues: loads and existence checks in one FIFO, stores in another; a free
 * thread always takes a load first, since a load blocks a request while a
 * store only saves future work. When the store queue passes its bound the
 * oldest queued store is dropped (KVFS_E_DROPPED, counted): stores are
 * optional, and blocking the caller (vLLM's scheduler) would be worse.
 *
 * Deadlines: an operation must finish within timeout_ms of starting, and a
 * queued one fails as soon as every thread is stuck past its deadline.
 * Whoever waits or polls enforces them, so a hung backing store fails the
 * job. A thread stuck in a system call cannot be interrupted, so the result
 * it may produce later is discarded, and it never touches the caller's
 * memory once the operation has failed: an operation moves QUEUED ->
 * RUNNING -> COPYING (a load writing into the caller's memory) or WRITING
 * (a store writing its file) -> DONE, the deadline can only fail it from
 * QUEUED, RUNNING or WRITING, and a store whose source may have been reused
 * (it timed out while RUNNING) is never written.
 *
 * Pipelining: each thread has two staging slots. While the device copy of
 * one file runs (asynchronously, through the copier), the thread does the
 * file I/O of the next one. */
#define _GNU_SOURCE
#include "kvfs_client_int.h"
#include "../core/kvfs_clock.h"

#include <errno.h>
#include <fcntl.h>
#include <numa.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

enum task_state { T_QUEUED, T_RUNNING, T_COPYING, T_WRITING, T_DONE };

struct task {
    struct task *next, *prev; /* queue links */
    struct kvfs_job *job;
    int kind;
    char *name;
    void *host;
    const void *xfer;
    _Atomic int state;
    _Atomic int result;
    uint64_t deadline; /* ns, set when it starts */
    bool queued_as_store;
};

struct kvfs_job {
    kvfs_engine *e;                 /* NULL once the engine is destroyed: the job is then inert */
    struct kvfs_job *jnext, *jprev; /* the engine's live jobs */
    size_t n;
    struct task *tasks;
    char *names;              /* all names, one allocation */
    char *xfers;              /* all xfer descriptors */
    _Atomic size_t remaining; /* tasks without a result yet */
    size_t held;              /* tasks a worker still holds (even after a timeout), under lock */
    _Atomic bool freed;       /* kvfs_job_free called while tasks were still running */
};

struct queue {
    struct task *head, *tail;
    size_t len;
};

struct worker {
    kvfs_engine *e;
    int id;
    pthread_t tid;
    void *slot[2];
    struct task *cur[2]; /* the task using each slot, under e->lock */
    int pin_error;
};

struct kvfs_engine {
    struct kvfs_engine_options o;
    char *root;
    int root_fd;
    bool direct;
    size_t file_bytes; /* header + payload */
    struct kvfs_copier copier;
    void *cctx;
    pthread_mutex_t lock;
    pthread_cond_t work; /* tasks queued */
    pthread_cond_t done; /* a task finished */
    struct queue loads, stores;
    bool stop;
    int nthreads;
    struct worker *workers;
    struct kvfs_engine_stats stats; /* under lock */
    struct kvfs_job *jobs;          /* not yet freed, under lock */
};

/* ---- host-memory copier: the default ---- */

static int host_gather(void *ctx, int thread, int slot, const void *xfer, void *dst, size_t len) {
    (void)ctx, (void)thread, (void)slot;
    memcpy(dst, *(void *const *)xfer, len);
    return 0;
}

static int host_scatter(void *ctx, int thread, int slot, const void *xfer, const void *src,
                        size_t len) {
    (void)ctx, (void)thread, (void)slot;
    memcpy(*(void *const *)xfer, src, len);
    return 0;
}

static int host_wait(void *ctx, int thread, int slot) {
    (void)ctx, (void)thread, (void)slot;
    return 0;
}

/* ---- queues (under e->lock) ---- */

static void q_push(struct queue *q, struct task *t) {
    t->next = NULL;
    t->prev = q->tail;
    if (q->tail)
        q->tail->next = t;
    else
        q->head = t;
    q->tail = t;
    q->len++;
}

static void q_remove(struct queue *q, struct task *t) {
    if (t->prev)
        t->prev->next = t->next;
    else
        q->head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        q->tail = t->prev;
    t->next = t->prev = NULL;
    q->len--;
}

static void job_maybe_free(struct kvfs_job *j);

/* Links J into (or out of) its engine's list of live jobs, under e->lock. */
static void job_link_locked(kvfs_engine *e, struct kvfs_job *j) {
    j->jprev = NULL;
    j->jnext = e->jobs;
    if (e->jobs)
        e->jobs->jprev = j;
    e->jobs = j;
}

static void job_unlink_locked(kvfs_engine *e, struct kvfs_job *j) {
    if (j->jprev)
        j->jprev->jnext = j->jnext;
    else
        e->jobs = j->jnext;
    if (j->jnext)
        j->jnext->jprev = j->jprev;
    j->jnext = j->jprev = NULL;
}

/* Frees a job its caller has released once no task of it is pending or held
 * by a worker (a worker stuck in a system call may hold a task long after its
 * deadline failed it); under e->lock. */
static void job_collect_locked(kvfs_engine *e, struct kvfs_job *j) {
    if (atomic_load(&j->freed) && atomic_load(&j->remaining) == 0 && j->held == 0) {
        job_unlink_locked(e, j);
        job_maybe_free(j);
    }
}

/* A worker is done with task T of slot SLOT (finished or abandoned). */
static void release(kvfs_engine *e, struct worker *w, int slot, struct task *t) {
    pthread_mutex_lock(&e->lock);
    if (w->cur[slot] == t)
        w->cur[slot] = NULL;
    t->job->held--;
    job_collect_locked(e, t->job);
    pthread_mutex_unlock(&e->lock);
}

/* Records the result of a task its caller has just moved to T_DONE (so this
 * runs once per task), under e->lock. */
static void record_locked(kvfs_engine *e, struct task *t, int result) {
    atomic_store(&t->result, result);
    struct kvfs_engine_stats *s = &e->stats;
    if (result == -ETIMEDOUT)
        s->timeouts++;
    if (t->kind == KVFS_OP_STORE) {
        if (result == 0) {
            s->stores_done++;
            s->bytes_stored += kvfs_layout_payload_bytes(&e->o.layout);
        } else if (result == KVFS_RESULT_EXISTED) {
            s->stores_existed++;
        } else if (result == KVFS_E_DROPPED) {
            s->stores_dropped++;
        } else {
            s->stores_failed++;
        }
    } else if (t->kind == KVFS_OP_LOAD) {
        if (result == 0) {
            s->loads_done++;
            s->bytes_loaded += kvfs_layout_payload_bytes(&e->o.layout);
        } else {
            s->loads_failed++;
        }
    }
    struct kvfs_job *j = t->job;
    atomic_fetch_sub(&j->remaining, 1);
    job_collect_locked(e, j);
    pthread_cond_broadcast(&e->done);
}

/* Moves T from FROM to TO; fails if the deadline (or a cancellation)
 * finished it first. */
static bool advance(struct task *t, int from, int to) {
    int expect = from;
    return atomic_compare_exchange_strong(&t->state, &expect, to);
}

/* Finishes a queued task (dropped, cancelled, timed out), under e->lock. */
static void finish_queued_locked(kvfs_engine *e, struct task *t, int result) {
    if (advance(t, T_QUEUED, T_DONE))
        record_locked(e, t, result);
}

/* Worker side: completes T with RESULT unless its deadline finished it. */
static void complete(kvfs_engine *e, struct task *t, int result) {
    pthread_mutex_lock(&e->lock);
    for (;;) {
        int st = atomic_load(&t->state);
        if (st == T_DONE)
            break;
        if (advance(t, st, T_DONE)) {
            record_locked(e, t, result);
            break;
        }
    }
    pthread_mutex_unlock(&e->lock);
}

/* Fails what has passed its deadline; under e->lock. */
static void sweep_locked(kvfs_engine *e) {
    uint64_t now = kvfs_clock_mono_ns();
    int stuck = 0;
    for (int i = 0; i < e->nthreads; i++) {
        bool late = false;
        for (int s = 0; s < 2; s++) {
            struct task *t = e->workers[i].cur[s];
            if (!t || now < t->deadline)
                continue;
            late = true;
            int st = atomic_load(&t->state);
            if ((st == T_RUNNING || st == T_WRITING) && advance(t, st, T_DONE))
                record_locked(e, t, -ETIMEDOUT);
        }
        stuck += late;
    }
    if (stuck == e->nthreads) {
        /* Nothing can make progress: queued work fails too. */
        struct queue *qs[2] = {&e->loads, &e->stores};
        for (int k = 0; k < 2; k++)
            while (qs[k]->head) {
                struct task *t = qs[k]->head;
                q_remove(qs[k], t);
                finish_queued_locked(e, t, -ETIMEDOUT);
            }
    }
}

/* ---- workers ---- */

static struct task *take_locked(kvfs_engine *e, struct worker *w, int slot) {
    struct task *t = e->loads.head;
    struct queue *q = &e->loads;
    if (!t) {
        t = e->stores.head;
        q = &e->stores;
    }
    if (!t)
        return NULL;
    q_remove(q, t);
    atomic_store(&t->state, T_RUNNING);
    t->deadline = kvfs_clock_mono_ns() + (uint64_t)e->o.timeout_ms * 1000000ull;
    w->cur[slot] = t;
    t->job->held++;
    return t;
}

struct inflight {
    struct task *t;
    int slot;
};

static size_t payload_len(kvfs_engine *e) {
    return e->file_bytes - KVFS_HEADER_SIZE;
}

/* Finishes the in-flight task of slot P: waits for its device copy, then
 * for a store checksums and writes the file. */
static void finish_inflight(kvfs_engine *e, struct worker *w, struct inflight *p) {
    struct task *t = p->t;
    char *buf = w->slot[p->slot];
    int rc = e->copier.wait(e->cctx, w->id, p->slot);
    if (t->kind == KVFS_OP_LOAD) {
        complete(e, t, rc ? KVFS_E_COPY : 0);
    } else if (rc) {
        complete(e, t, KVFS_E_COPY);
    } else if (!advance(t, T_RUNNING, T_WRITING)) {
        /* Timed out while gathering: the caller may have reused the source,
         * so what was gathered must not be stored. */
    } else {
        complete(e, t,
                 kvfs_io_store(e->root_fd, t->name, buf, payload_len(e), &e->o.layout, e->direct));
    }
    release(e, w, p->slot, t);
    p->t = NULL;
}

/* Starts task T in slot S: the file I/O of a load or the device copy of a
 * store. Returns true if it left work in flight. */
static bool start(kvfs_engine *e, struct worker *w, struct task *t, int s,
                  struct inflight *pending) {
    char *buf = w->slot[s];
    if (t->kind == KVFS_OP_EXISTS) {
        complete(e, t, kvfs_io_exists(e->root_fd, t->name));
        return false;
    }
    if (t->kind == KVFS_OP_LOAD) {
        int rc = kvfs_io_load(e->root_fd, t->name, buf, e->file_bytes, &e->o.layout);
        if (pending->t)
            finish_inflight(e, w, pending); /* its copy overlapped our read */
        if (rc) {
            complete(e, t, rc);
            return false;
        }
        if (!advance(t, T_RUNNING, T_COPYING))
            return false; /* timed out: the caller's memory is no longer ours */
        const void *xfer = e->o.copier ? t->xfer : (const void *)&t->host;
        if (e->copier.scatter(e->cctx, w->id, s, xfer, buf + KVFS_HEADER_SIZE, payload_len(e)) !=
            0) {
            e->copier.wait(e->cctx, w->id, s);
            complete(e, t, KVFS_E_COPY);
            return false;
        }
        return true;
    }
    /* Store: gather now, write when the next task is under way. */
    const void *xfer = e->o.copier ? t->xfer : (const void *)&t->host;
    int rc = e->copier.gather(e->cctx, w->id, s, xfer, buf + KVFS_HEADER_SIZE, payload_len(e));
    if (pending->t)
        finish_inflight(e, w, pending);
    if (rc) {
        e->copier.wait(e->cctx, w->id, s);
        complete(e, t, KVFS_E_COPY);
        return false;
    }
    return true;
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    kvfs_engine *e = w->e;
    char tname[16];
    snprintf(tname, sizeof(tname), "kvfs-io-%d", w->id);
    pthread_setname_np(pthread_self(), tname);
    struct inflight pending = {NULL, 0};
    pthread_mutex_lock(&e->lock);
    for (;;) {
        int s = pending.t ? 1 - pending.slot : 0;
        struct task *t = take_locked(e, w, s);
        if (!t) {
            if (pending.t) {
                /* Nothing else to overlap with: finish what is in flight. */
                pthread_mutex_unlock(&e->lock);
                finish_inflight(e, w, &pending);
                pthread_mutex_lock(&e->lock);
                continue;
            }
            if (e->stop)
                break;
            pthread_cond_wait(&e->work, &e->lock);
            continue;
        }
        pthread_mutex_unlock(&e->lock);
        struct inflight mine = {t, s};
        bool inflight = start(e, w, t, s, &pending);
        if (pending.t) /* start() did not need to finish it */
            finish_inflight(e, w, &pending);
        if (!inflight)
            release(e, w, s, t);
        pthread_mutex_lock(&e->lock);
        if (inflight)
            pending = mine;
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

static void *worker_boot(void *arg) {
    struct worker *w = arg;
    kvfs_engine *e = w->e;
    w->pin_error = kvfs_numa_pin_thread(e->o.numa_node, w->id);
    if (e->copier.thread_start && e->copier.thread_start(e->cctx, w->id) != 0)
        w->pin_error = KVFS_E_COPY; /* its copies will fail and say so */
    return worker_main(arg);
}

/* ---- engine ---- */

int kvfs_engine_create(const struct kvfs_engine_options *o, kvfs_engine **out) {
    if (!o->root || kvfs_layout_check(&o->layout) != 0)
        return -EINVAL;
    if (o->numa_node >= 0 && (numa_available() < 0 || o->numa_node > numa_max_node()))
        return -EINVAL;
    if (o->copier &&
        (!o->copier->gather || !o->copier->scatter || !o->copier->wait || o->xfer_size == 0))
        return -EINVAL;
    kvfs_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->o = *o;
    if (e->o.io_threads <= 0)
        e->o.io_threads = 4;
    if (e->o.store_queue_max == 0)
        e->o.store_queue_max = 4096;
    if (e->o.timeout_ms <= 0)
        e->o.timeout_ms = 30000;
    e->root = strdup(o->root);
    e->root_fd = open(o->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!e->root || e->root_fd < 0) {
        int rc = e->root ? -errno : -ENOMEM;
        free(e->root);
        if (e->root_fd >= 0)
            close(e->root_fd);
        free(e);
        return rc;
    }
    e->o.root = e->root;
    e->direct = o->write_mode == KVFS_WRITE_DIRECT ||
                (o->write_mode == KVFS_WRITE_AUTO && kvfs_io_is_kvfs_mount(o->root));
    e->file_bytes = KVFS_HEADER_SIZE + kvfs_layout_payload_bytes(&o->layout);
    static const struct kvfs_copier host = {
        .gather = host_gather, .scatter = host_scatter, .wait = host_wait};
    e->copier = o->copier ? *o->copier : host;
    e->cctx = o->copier_ctx;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->work, NULL);
    pthread_cond_init(&e->done, NULL);
    e->workers = calloc((size_t)e->o.io_threads, sizeof(*e->workers));
    int rc = e->workers ? 0 : -ENOMEM;
    for (int i = 0; rc == 0 && i < e->o.io_threads; i++) {
        struct worker *w = &e->workers[i];
        w->e = e;
        w->id = i;
        if (e->copier.thread_init && (rc = e->copier.thread_init(e->cctx, i)) != 0)
            break;
        for (int s = 0; s < 2 && rc == 0; s++) {
            w->slot[s] = e->copier.alloc ? e->copier.alloc(e->cctx, i, e->file_bytes)
                                         : kvfs_numa_alloc(e->o.numa_node, e->file_bytes);
            if (!w->slot[s])
                rc = -ENOMEM;
        }
        if (rc == 0) {
            rc = -pthread_create(&w->tid, NULL, worker_boot, w);
            if (rc == 0)
                e->nthreads++;
        }
    }
    if (rc) {
        kvfs_engine_destroy(e);
        return rc;
    }
    *out = e;
    return 0;
}

int kvfs_engine_writes_direct(const kvfs_engine *e) {
    return e->direct;
}

void kvfs_engine_destroy(kvfs_engine *e) {
    if (!e)
        return;
    pthread_mutex_lock(&e->lock);
    e->stop = true;
    struct queue *qs[2] = {&e->loads, &e->stores};
    for (int k = 0; k < 2; k++)
        while (qs[k]->head) {
            struct task *t = qs[k]->head;
            q_remove(qs[k], t);
            finish_queued_locked(e, t, KVFS_E_CANCELLED);
        }
    pthread_cond_broadcast(&e->work);
    pthread_mutex_unlock(&e->lock);
    for (int i = 0; i < e->nthreads; i++)
        pthread_join(e->workers[i].tid, NULL);
    /* Every task is finished now. Jobs the caller has not freed yet keep
     * their results and may still be waited on and freed; they just no
     * longer refer to the engine. */
    pthread_mutex_lock(&e->lock);
    while (e->jobs) {
        struct kvfs_job *j = e->jobs;
        job_unlink_locked(e, j);
        j->e = NULL;
    }
    pthread_mutex_unlock(&e->lock);
    for (int i = 0; e->workers && i < e->o.io_threads; i++)
        for (int s = 0; s < 2; s++) {
            if (!e->workers[i].slot[s])
                continue;
            if (e->copier.free)
                e->copier.free(e->cctx, i, e->workers[i].slot[s], e->file_bytes);
            else if (!e->copier.alloc)
                kvfs_numa_free(e->workers[i].slot[s], e->file_bytes);
        }
    free(e->workers);
    if (e->root_fd >= 0)
        close(e->root_fd);
    free(e->root);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->work);
    pthread_cond_destroy(&e->done);
    free(e);
}

int kvfs_submit(kvfs_engine *e, const struct kvfs_op *ops, size_t n, kvfs_job **out) {
    size_t names = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = ops[i].kind == KVFS_OP_STORE || ops[i].kind == KVFS_OP_LOAD ||
                         ops[i].kind == KVFS_OP_EXISTS
                     ? kvfs_io_check_name(ops[i].name)
                     : -EINVAL;
        if (!rc && ops[i].kind != KVFS_OP_EXISTS && (e->o.copier ? !ops[i].xfer : !ops[i].host))
            rc = -EINVAL;
        if (rc)
            return rc;
        names += strlen(ops[i].name) + 1;
    }
    kvfs_job *j = calloc(1, sizeof(*j));
    if (!j)
        return -ENOMEM;
    j->e = e;
    j->n = n;
    j->tasks = calloc(n ? n : 1, sizeof(*j->tasks));
    j->names = malloc(names ? names : 1);
    j->xfers = e->o.copier ? malloc(n * e->o.xfer_size + 1) : NULL;
    if (!j->tasks || !j->names || (e->o.copier && !j->xfers)) {
        free(j->tasks);
        free(j->names);
        free(j->xfers);
        free(j);
        return -ENOMEM;
    }
    char *np = j->names;
    for (size_t i = 0; i < n; i++) {
        struct task *t = &j->tasks[i];
        t->job = j;
        t->kind = ops[i].kind;
        t->name = np;
        np = stpcpy(np, ops[i].name) + 1;
        t->host = ops[i].host;
        if (e->o.copier && ops[i].xfer) {
            memcpy(j->xfers + i * e->o.xfer_size, ops[i].xfer, e->o.xfer_size);
            t->xfer = j->xfers + i * e->o.xfer_size;
        }
        atomic_store(&t->state, T_QUEUED);
        atomic_store(&t->result, KVFS_RESULT_PENDING);
    }
    atomic_store(&j->remaining, n);
    pthread_mutex_lock(&e->lock);
    job_link_locked(e, j);
    for (size_t i = 0; i < n; i++) {
        struct task *t = &j->tasks[i];
        if (t->kind == KVFS_OP_STORE) {
            q_push(&e->stores, t);
            t->queued_as_store = true;
            if (e->stores.len > e->o.store_queue_max) {
                struct task *old = e->stores.head;
                q_remove(&e->stores, old);
                finish_queued_locked(e, old, KVFS_E_DROPPED);
            }
        } else {
            q_push(&e->loads, t);
        }
    }
    pthread_cond_broadcast(&e->work);
    pthread_mutex_unlock(&e->lock);
    *out = j;
    return 0;
}

bool kvfs_job_done(kvfs_job *j) {
    if (atomic_load(&j->remaining) == 0 || !j->e)
        return true;
    pthread_mutex_lock(&j->e->lock);
    sweep_locked(j->e);
    pthread_mutex_unlock(&j->e->lock);
    return atomic_load(&j->remaining) == 0;
}

int kvfs_job_wait(kvfs_job *j, int timeout_ms) {
    kvfs_engine *e = j->e;
    if (!e)
        return 0; /* its engine finished every task before it went away */
    uint64_t limit =
        timeout_ms < 0 ? UINT64_MAX : kvfs_clock_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    pthread_mutex_lock(&e->lock);
    for (;;) {
        sweep_locked(e);
        if (atomic_load(&j->remaining) == 0)
            break;
        uint64_t now = kvfs_clock_mono_ns();
        if (now >= limit) {
            pthread_mutex_unlock(&e->lock);
            return -ETIMEDOUT;
        }
        /* Wake at least every 100 ms to enforce deadlines. */
        uint64_t until = now + 100000000ull < limit ? now + 100000000ull : limit;
        struct timespec ts = kvfs_clock_after_ns(until - now);
        pthread_cond_timedwait(&e->done, &e->lock, &ts);
    }
    pthread_mutex_unlock(&e->lock);
    return 0;
}

size_t kvfs_job_size(const kvfs_job *j) {
    return j->n;
}

int kvfs_job_result(const kvfs_job *j, size_t i) {
    return i < j->n ? atomic_load(&j->tasks[i].result) : -EINVAL;
}

static void job_maybe_free(struct kvfs_job *j) {
    free(j->tasks);
    free(j->names);
    free(j->xfers);
    free(j);
}

void kvfs_job_free(kvfs_job *j) {
    if (!j)
        return;
    kvfs_engine *e = j->e;
    if (!e) {
        job_maybe_free(j);
        return;
    }
    pthread_mutex_lock(&e->lock);
    for (size_t i = 0; i < j->n; i++) {
        struct task *t = &j->tasks[i];
        if (atomic_load(&t->state) == T_QUEUED) {
            q_remove(t->queued_as_store ? &e->stores : &e->loads, t);
            finish_queued_locked(e, t, KVFS_E_CANCELLED);
        }
    }
    /* Running tasks still point into the job: the last one frees it. */
    atomic_store(&j->freed, true);
    job_collect_locked(e, j);
    pthread_mutex_unlock(&e->lock);
}

int kvfs_exists(kvfs_engine *e, const char *const *names, size_t n, int *out) {
    struct kvfs_op *ops = calloc(n ? n : 1, sizeof(*ops));
    if (!ops)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        ops[i] = (struct kvfs_op){KVFS_OP_EXISTS, names[i], NULL, NULL};
    kvfs_job *j;
    int rc = kvfs_submit(e, ops, n, &j);
    free(ops);
    if (rc)
        return rc;
    rc = kvfs_job_wait(j, -1);
    for (size_t i = 0; i < n; i++)
        out[i] = kvfs_job_result(j, i);
    kvfs_job_free(j);
    return rc;
}

void kvfs_engine_stats(kvfs_engine *e, struct kvfs_engine_stats *out) {
    pthread_mutex_lock(&e->lock);
    *out = e->stats;
    pthread_mutex_unlock(&e->lock);
}
