/* kvfs_version: the release version, shown by --version, stats and metrics. */
#ifndef KVFS_VERSION_H
#define KVFS_VERSION_H
#define KVFS_VERSION "0.1.0"
#endif
