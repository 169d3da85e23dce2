/* kvfs_http: the Prometheus endpoint (-o metrics_addr=[HOST]:PORT), the same
 * text as MOUNT/.kvfs/metrics, served by libmicrohttpd (a well-kept HTTP
 * server from Debian, rather than one written here). It binds 127.0.0.1
 * unless told otherwise and answers GET /metrics only. */
#include "kvfs_http.h"
#include "kvfs_daemon.h"
#include "kvfs_inode.h"

#include "../core/kvfs_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

static struct MHD_Daemon *httpd;

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **state) {
    (void)cls, (void)version, (void)upload, (void)upload_size, (void)state;
    struct MHD_Response *resp;
    unsigned status;
    char *buf = NULL;
    size_t len = 0;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static const char msg[] = "only GET\n";
        resp =
            MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
    } else if (strcmp(url, "/metrics") != 0) {
        static const char msg[] = "kvfs serves /metrics\n";
        resp =
            MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_NOT_FOUND;
    } else if (kvfs_ctl_render_metrics(&buf, &len) == 0) {
        resp = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
        MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4");
        status = MHD_HTTP_OK;
    } else {
        static const char msg[] = "out of memory\n";
        resp =
            MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
    if (!resp)
        return MHD_NO;
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

int kvfs_http_start(const char *host, unsigned port) {
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai;
    char ports[16];
    snprintf(ports, sizeof(ports), "%u", port);
    int rc = getaddrinfo(host, ports, &hints, &ai);
    if (rc != 0) {
        kvfs_error("metrics_addr %s:%u: %s", host, port, gai_strerror(rc));
        return -EINVAL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    httpd = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, answer, NULL, MHD_OPTION_SOCK_ADDR,
                             ai->ai_addr, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!httpd) {
        kvfs_error("cannot serve metrics on %s:%u (address in use?)", host, port);
        return -EADDRINUSE;
    }
    kvfs_info("serving Prometheus metrics on http://%s:%u/metrics", host, port);
    return 0;
}

void kvfs_http_stop(void) {
    if (httpd)
        MHD_stop_daemon(httpd);
    httpd = NULL;
}
