/* kvfs_clock: the two ways kvfs reads time, in one place.
 *
 * Elapsed time and deadlines are measured on the monotonic clock, which
 * never jumps. pthread_cond_timedwait() with a default condition variable
 * waits until an absolute time on the real-time clock, so a wait of some
 * length is turned into that form here. Header-only, so that libkvfs, which
 * does not link kvfs_core, uses the same code. */
#ifndef KVFS_CLOCK_H
#define KVFS_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds on the monotonic clock. */
static inline uint64_t kvfs_clock_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The real-time instant NS nanoseconds from now, for pthread_cond_timedwait(). */
static inline struct timespec kvfs_clock_after_ns(uint64_t ns) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t t = (uint64_t)ts.tv_nsec + ns;
    ts.tv_sec += (time_t)(t / 1000000000ull);
    ts.tv_nsec = (long)(t % 1000000000ull);
    return ts;
}

#endif
