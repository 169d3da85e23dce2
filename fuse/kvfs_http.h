/* kvfs_http: the Prometheus metrics endpoint over HTTP (see the .c). */
#ifndef KVFS_HTTP_H
#define KVFS_HTTP_H

int kvfs_http_start(const char *host, unsigned port);
void kvfs_http_stop(void);

#endif
