#!/bin/sh
# The kvfs DaemonSet container's entrypoint.
#
#   kvfs-entrypoint [run]   take over the live daemon of this node's mount (an
#                           upgrade), or clear a stale mount and mount; serve
#   kvfs-entrypoint stop    unmount (the preStop hook); the daemon then exits
#   kvfs-entrypoint probe   exit 0 only if the mount answers with its stats
#
# Upgrades: the DaemonSet surges (maxSurge 1, maxUnavailable 0), so the new
# pod starts while the old one still serves. Its `run` finds the mount alive
# and runs `kvfs --takeover` (the two pods share /run/kvfs, where the old
# daemon's handover socket is): vLLM pods see a pause of milliseconds, not an
# error. The old daemon then exits; its container stays up, doing nothing,
# until the DaemonSet deletes its pod (exiting would make the kubelet restart
# it, and it would take the mount back), and its preStop `stop` leaves the
# mount to the successor.
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
#   KVFS_STATE    where `run` notes that it handed over   [/tmp/kvfs-handed-over]
set -eu

BACKING=${KVFS_BACKING:-/backing}
MNT=${KVFS_MOUNT:-/mnt/kvfs}
OPTS=${KVFS_OPTIONS:-}
BIN=${KVFS_BIN:-kvfs}
HANDED=${KVFS_STATE:-/tmp/kvfs-handed-over}

log() { echo "kvfs-entrypoint: $*" >&2; }

# True if a kvfs FUSE mount sits exactly at $MNT (the 5th field of mountinfo
# is the mount point, the one after " - " the filesystem type).
kvfs_mounted() {
  real=$(realpath -m "$MNT")
  awk -v m="$real" '$5 == m { for (i = 6; i <= NF; i++) if ($i == "-") { print $(i + 1); break } }' \
    /proc/self/mountinfo | grep -q '^fuse\.kvfs$'
}

# True if a daemon answers on the mount (a hung one does not).
mount_answers() {
  timeout "${KVFS_PROBE_TIMEOUT:-5}" grep -q '^data_mode ' "$MNT/.kvfs/stats" 2>/dev/null
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
  rm -f "$HANDED"
  takeover=
  if kvfs_mounted && mount_answers; then
    log "a live kvfs daemon serves $MNT: taking it over"
    takeover=--takeover
  else
    clear_stale
    mkdir -p "$MNT"
    log "mounting $BACKING on $MNT${OPTS:+ with -o $OPTS}"
  fi
  # -f: in the foreground, as this script's child, so that the container
  # lives as long as the daemon; kvfs unmounts cleanly on SIGTERM, which is
  # passed on to it.
  if [ -n "$OPTS" ]; then
    "$BIN" -f $takeover -o "$OPTS" "$BACKING" "$MNT" &
  else
    "$BIN" -f $takeover "$BACKING" "$MNT" &
  fi
  pid=$!
  stopping=
  trap 'stopping=1; kill -TERM "$pid" 2>/dev/null || :' TERM INT
  status=0
  wait "$pid" || status=$?
  while kill -0 "$pid" 2>/dev/null; do # a trapped signal ends the first wait early
    status=0
    wait "$pid" || status=$?
  done
  if [ "$status" = 0 ] && [ -z "$stopping" ] && kvfs_mounted && mount_answers; then
    # The daemon exited, the mount lives: a successor took it over.
    touch "$HANDED"
    log "handed $MNT over to a successor; waiting for this pod to be stopped"
    trap 'exit 0' TERM INT
    while :; do
      sleep 3600 &
      wait $! || :
    done
  fi
  exit "$status"
  ;;
stop)
  if [ -e "$HANDED" ]; then
    log "$MNT was handed over to a successor; leaving it mounted"
    exit 0
  fi
  if kvfs_mounted; then
    fusermount3 -u "$MNT" 2>/dev/null || {
      log "$MNT is busy; detaching it lazily"
      fusermount3 -uz "$MNT"
    }
  fi
  ;;
probe)
  # A hung daemon must fail the probe, not hang it.
  mount_answers
  ;;
*)
  log "usage: $0 [run|stop|probe]"
  exit 2
  ;;
esac
