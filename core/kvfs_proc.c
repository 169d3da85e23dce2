/* kvfs_proc: reading how a closing thread is leaving (see the header). */
#define _GNU_SOURCE
#include "kvfs_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PF_EXITING_FLAG 0x00000004u /* include/linux/sched.h */
#define FIELD_FLAGS 9
#define FIELD_EXIT_CODE 52

enum kvfs_proc_state kvfs_proc_parse_stat(const char *text, size_t len) {
    /* The command name (field 2) is in parentheses and may hold anything,
     * spaces and parentheses included: fields are counted after the last ')'. */
    const char *end = text + len;
    const char *p = NULL;
    for (const char *q = text; q < end; q++)
        if (*q == ')')
            p = q;
    if (!p)
        return KVFS_PROC_UNKNOWN;
    p++;
    unsigned long long flags = 0, code = 0;
    int have = 0;
    for (int field = 3; p < end && field <= FIELD_EXIT_CODE; field++) {
        while (p < end && *p == ' ')
            p++;
        if (p >= end || *p == '\n')
            break;
        const char *tok = p;
        while (p < end && *p != ' ' && *p != '\n')
            p++;
        if (field == FIELD_FLAGS || field == FIELD_EXIT_CODE) {
            char buf[24];
            size_t n = (size_t)(p - tok);
            if (n == 0 || n >= sizeof(buf))
                return KVFS_PROC_UNKNOWN;
            memcpy(buf, tok, n);
            buf[n] = '\0';
            char *e;
            errno = 0;
            unsigned long long v = strtoull(buf, &e, 10);
            if (*e || errno || buf[0] == '-')
                return KVFS_PROC_UNKNOWN;
            if (field == FIELD_FLAGS)
                flags = v;
            else
                code = v;
            have++;
        }
    }
    if (have != 2)
        return KVFS_PROC_UNKNOWN;
    if (!(flags & PF_EXITING_FLAG))
        return KVFS_PROC_RUNNING;
    return (code & 0x7f) ? KVFS_PROC_KILLED : KVFS_PROC_EXITED;
}

pid_t kvfs_proc_parse_tgid(const char *text, size_t len) {
    static const char key[] = "\nTgid:";
    for (size_t i = 0; i + sizeof(key) - 1 <= len; i++) {
        if (memcmp(text + i, key, sizeof(key) - 1) != 0)
            continue;
        long v = 0;
        size_t j = i + sizeof(key) - 1;
        while (j < len && (text[j] == ' ' || text[j] == '\t'))
            j++;
        size_t digits = 0;
        for (; j < len && text[j] >= '0' && text[j] <= '9' && digits < 10; j++, digits++)
            v = v * 10 + (text[j] - '0');
        if (digits == 0 || digits == 10 || v <= 0 || (j < len && text[j] != '\n'))
            return -1;
        return (pid_t)v;
    }
    return -1;
}

pid_t kvfs_proc_tgid(pid_t tid) {
    char path[64], text[512];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
    int fd = tid > 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0)
        return tid;
    /* Tgid is the fourth line, well inside the first 512 bytes. */
    ssize_t n = read(fd, text, sizeof(text));
    close(fd);
    pid_t tgid = n > 0 ? kvfs_proc_parse_tgid(text, (size_t)n) : -1;
    return tgid > 0 ? tgid : tid;
}

enum kvfs_proc_state kvfs_proc_state_of(pid_t tid) {
    if (tid <= 0)
        return KVFS_PROC_UNKNOWN;
    char path[64], text[1024];
    /* /proc/TID names any thread, not only a thread group's leader. */
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return KVFS_PROC_UNKNOWN;
    ssize_t n = read(fd, text, sizeof(text));
    close(fd);
    if (n <= 0)
        return KVFS_PROC_UNKNOWN;
    return kvfs_proc_parse_stat(text, (size_t)n);
}
