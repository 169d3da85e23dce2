#!/bin/sh
# The kvfs DaemonSet container's entrypoint.
#
#   kvfs-entrypoint [run]   clear a stale mount, then serve in the foreground
#   kvfs-entrypoint stop    unmount (the preStop hook); the daemon then exits
#   kvfs-entrypoint probe   exit 0 only if the mount answers with its stats
#
# A daemon that crashed (or a container that was killed) leaves its mount
# behind on the host, because the mount point is shared with the host
# (mountPropagation: Bidirectional): every access then fails with ENOTCONN
# and a new daemon cannot mount over it. `run` detaches any kvfs mount found
# at the mount point with `fusermount3 -uz` before mounting: no daemon of
# this container is serving it yet, so whatever is there is stale. Processes
# still holding files of the old mount get errors; new opens see the new one.
#
# Environment (the DaemonSet sets it from the kvfs-options ConfigMap):
#   KVFS_BACKING  backing directory (the shared PVC)      [/backing]
#   KVFS_MOUNT    mount point, shared with the host       [/mnt/kvfs]
#   KVFS_OPTIONS  -o options, comma-separated             [empty]
#   KVFS_BIN      the daemon                              [kvfs]
#   KVFS_PROBE_TIMEOUT  seconds a probe may take          [5]
set -eu

BACKING=${KVFS_BACKING:-/backing}
MNT=${KVFS_MOUNT:-/mnt/kvfs}
OPTS=${KVFS_OPTIONS:-}
BIN=${KVFS_BIN:-kvfs}

log() { echo "kvfs-entrypoint: $*" >&2; }

# True if a kvfs FUSE mount sits exactly at $MNT (the 5th field of mountinfo
# is the mount point, the one after " - " the filesystem type).
kvfs_mounted() {
  real=$(realpath -m "$MNT")
  awk -v m="$real" '$5 == m { for (i = 6; i <= NF; i++) if ($i == "-") { print $(i + 1); break } }' \
    /proc/self/mountinfo | grep -q '^fuse\.kvfs$'
}

clear_stale() {
  while kvfs_mounted; do
    log "detaching a stale kvfs mount at $MNT"
    fusermount3 -uz "$MNT" 2>/dev/null || umount -l "$MNT" || {
      log "cannot detach the stale mount at $MNT"
      return 1
    }
  done
}

case "${1:-run}" in
run)
  [ -d "$BACKING" ] || { log "backing directory $BACKING does not exist"; exit 2; }
  clear_stale
  mkdir -p "$MNT"
  log "mounting $BACKING on $MNT${OPTS:+ with -o $OPTS}"
  # -f: in the foreground, so the container lives as long as the daemon;
  # kvfs unmounts cleanly on SIGTERM.
  if [ -n "$OPTS" ]; then
    exec "$BIN" -f -o "$OPTS" "$BACKING" "$MNT"
  else
    exec "$BIN" -f "$BACKING" "$MNT"
  fi
  ;;
stop)
  if kvfs_mounted; then
    fusermount3 -u "$MNT" 2>/dev/null || {
      log "$MNT is busy; detaching it lazily"
      fusermount3 -uz "$MNT"
    }
  fi
  ;;
probe)
  # A hung daemon must fail the probe, not hang it.
  timeout "${KVFS_PROBE_TIMEOUT:-5}" grep -q '^data_mode ' "$MNT/.kvfs/stats"
  ;;
*)
  log "usage: $0 [run|stop|probe]"
  exit 2
  ;;
esac
