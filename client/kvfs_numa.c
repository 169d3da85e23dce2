/* kvfs_numa: keeping I/O threads and their staging memory on one NUMA node,
 * the GPU's, so that DMA and file I/O never cross the socket interconnect. */
#define _GNU_SOURCE
#include "kvfs_client_int.h"

#include <errno.h>
#include <numa.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

int kvfs_numa_pin_thread(int node, int index) {
    if (node < 0)
        return 0;
    if (numa_available() < 0 || node > numa_max_node())
        return -EINVAL;
    struct bitmask *cpus = numa_allocate_cpumask();
    if (!cpus)
        return -ENOMEM;
    int rc = numa_node_to_cpus(node, cpus);
    int list[CPU_SETSIZE], n = 0;
    for (unsigned i = 0; rc == 0 && i < cpus->size && i < CPU_SETSIZE; i++)
        if (numa_bitmask_isbitset(cpus, i))
            list[n++] = (int)i;
    numa_free_cpumask(cpus);
    if (rc != 0 || n == 0)
        return -EINVAL;
    /* One CPU per thread, round robin over the node: a thread that never
     * migrates keeps its staging buffer's cache lines and its file pages warm. */
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(list[index % n], &set);
    rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (rc)
        return -rc;
    numa_set_preferred(node);
    return 0;
}

void *kvfs_numa_alloc(int node, size_t bytes) {
    if (numa_available() >= 0)
        return node >= 0 ? numa_alloc_onnode(bytes, node) : numa_alloc_local(bytes);
    void *p = NULL;
    return posix_memalign(&p, 4096, bytes) == 0 ? p : NULL;
}

void kvfs_numa_free(void *p, size_t bytes) {
    if (!p)
        return;
    if (numa_available() >= 0)
        numa_free(p, bytes);
    else
        free(p);
}
