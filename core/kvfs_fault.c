/* kvfs_fault: parses KVFS_FAULTS and answers the hooks (see the header). The
 * table is written once before the daemon serves and only read afterwards,
 * so the hooks take no lock. */
#include "kvfs_fault.h"
#include "kvfs_log.h"
#include "kvfs_name.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_FAULTS 16

struct fault {
    enum kvfs_fault_site site;
    int err;       /* 0 for a hang */
    unsigned hang; /* s: HANG[N] stalls the operation, then lets it proceed */
    char prefix[KVFS_NAME_MAX + 1];
};

static struct fault faults[MAX_FAULTS];
static int nfaults;

static const char *const site_names[KVFS_FAULT_NSITES] = {"create", "write", "publish", "read",
                                                          "takeover"};

static const struct {
    const char *name;
    int err;
} errno_names[] = {
    {"EIO", EIO},       {"ENOSPC", ENOSPC}, {"EDQUOT", EDQUOT},      {"EROFS", EROFS},
    {"EACCES", EACCES}, {"ENOMEM", ENOMEM}, {"ETIMEDOUT", ETIMEDOUT}};

static int parse_errno(const char *s) {
    for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++)
        if (strcmp(s, errno_names[i].name) == 0)
            return errno_names[i].err;
    char *end;
    long v = strtol(s, &end, 10);
    return *s && !*end && v > 0 && v < 4096 ? (int)v : -1;
}

static int parse_one(char *item, struct fault *f, char *err, size_t errlen) {
    char *site = item, *e = strchr(item, ':');
    if (!e) {
        snprintf(err, errlen, "fault '%s': expected SITE:ERRNO[:PREFIX]", item);
        return -EINVAL;
    }
    *e++ = '\0';
    char *prefix = strchr(e, ':');
    if (prefix)
        *prefix++ = '\0';
    int s;
    for (s = 0; s < KVFS_FAULT_NSITES && strcmp(site, site_names[s]) != 0; s++)
        ;
    if (s == KVFS_FAULT_NSITES) {
        snprintf(err, errlen, "fault site '%s' unknown (create, write, publish or read)", site);
        return -EINVAL;
    }
    f->hang = 0;
    if (strncmp(e, "HANG", 4) == 0) {
        char *end;
        unsigned long secs = e[4] ? strtoul(e + 4, &end, 10) : 5;
        if ((e[4] && (*end || end == e + 4)) || secs < 1 || secs > 600) {
            snprintf(err, errlen, "fault '%s': HANG takes 1 to 600 seconds (HANG5)", e);
            return -EINVAL;
        }
        f->hang = (unsigned)secs;
        f->err = 0;
    } else if ((f->err = parse_errno(e)) < 0) {
        snprintf(err, errlen, "fault errno '%s' unknown (a name such as EIO, or a number)", e);
        return -EINVAL;
    }
    if (prefix && strlen(prefix) > KVFS_NAME_MAX) {
        snprintf(err, errlen, "fault name prefix too long");
        return -EINVAL;
    }
    f->site = (enum kvfs_fault_site)s;
    snprintf(f->prefix, sizeof(f->prefix), "%s", prefix ? prefix : "");
    return 0;
}

int kvfs_fault_setup(const char *spec, char *err, size_t errlen) {
    struct fault parsed[MAX_FAULTS];
    int n = 0;
    char *copy = strdup(spec ? spec : "");
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int rc = 0;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item && !rc; item = strtok_r(NULL, ",", &save)) {
        if (n == MAX_FAULTS) {
            snprintf(err, errlen, "more than %d faults", MAX_FAULTS);
            rc = -EINVAL;
        } else {
            rc = parse_one(item, &parsed[n++], err, errlen);
        }
    }
    free(copy);
    if (rc)
        return rc;
    memcpy(faults, parsed, sizeof(parsed[0]) * (size_t)n);
    nfaults = n;
    for (int i = 0; i < n; i++) {
        if (faults[i].hang)
            kvfs_warn("fault injection: %s stalls %u s on names starting with '%s'",
                      site_names[faults[i].site], faults[i].hang, faults[i].prefix);
        else
            kvfs_warn("fault injection: %s fails with %s on names starting with '%s'",
                      site_names[faults[i].site], strerror(faults[i].err), faults[i].prefix);
    }
    return 0;
}

int kvfs_fault(enum kvfs_fault_site site, const char *name) {
    for (int i = 0; i < nfaults; i++) {
        const struct fault *f = &faults[i];
        if (f->site != site)
            continue;
        if (f->prefix[0] && (!name || strncmp(name, f->prefix, strlen(f->prefix)) != 0))
            continue;
        if (f->hang) {
            /* A stuck backing store: the operation waits, then proceeds. */
            kvfs_debug("fault injected: %s of '%s' stalls %u s", site_names[site], name ? name : "",
                       f->hang);
            sleep(f->hang);
            return 0;
        }
        kvfs_debug("fault injected: %s of '%s' fails with %s", site_names[site], name ? name : "",
                   strerror(f->err));
        return -f->err;
    }
    return 0;
}
