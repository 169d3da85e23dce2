#!/usr/bin/env bash
# One-command demo on a fresh Debian 12 machine (as root): installs the
# dependencies, builds, mounts kvfs over a local backing directory, stores a
# few blocks, shows them with ls and stat, reads them back and checks them,
# shows the daemon's counters, and unmounts.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${KVFS_SKIP_DEPS:-0}" != 1 ]; then
  bash tests/install-deps.sh
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

DEMO=${KVFS_DEMO_DIR:-/var/tmp/kvfs-demo}
BACKING=$DEMO/backing
MNT=$DEMO/mnt
mkdir -p "$BACKING" "$MNT"
if mountpoint -q "$MNT"; then fusermount3 -u "$MNT"; fi
cleanup() { if mountpoint -q "$MNT"; then fusermount3 -u "$MNT"; fi; }
trap cleanup EXIT

set -x
build/bin/kvfs "$BACKING" "$MNT"          # detaches once the mount is ready
mkdir -p "$MNT/llama-3-8b/rank0"
for i in 1 2 3; do
  name=$(printf 'kvfs-demo-block-%d' "$i" | sha256sum | cut -c1-32).bin
  head -c $((2 * 1024 * 1024)) /dev/urandom > "$DEMO/$name"
  cp "$DEMO/$name" "$MNT/llama-3-8b/rank0/$name"   # published atomically at close
done
ls -l "$MNT/llama-3-8b/rank0"
stat "$MNT/llama-3-8b/rank0/$name"
for f in "$MNT"/llama-3-8b/rank0/*.bin; do
  cmp "$f" "$DEMO/$(basename "$f")"
done
find "$BACKING" -path '*/.kvfs-state' -prune -o -type f -print   # the fan-out on disk
cat "$MNT/.kvfs/stats"
fusermount3 -u "$MNT"
set +x
rm -f "$DEMO"/*.bin
echo "demo OK: 3 blocks stored, listed, read back and verified; $MNT unmounted"
