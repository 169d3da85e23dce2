#!/usr/bin/env bash
# Runs kvfs-bench on a machine without libfuse3 installed, e.g. the GPU
# machine: BIN holds kvfs, kvfs-bench and libfuse3.so.3 built elsewhere.
#   tests/bench/device-bench.sh BIN OUTDIR
# For each backing store (/dev/shm, and the local disk under /var/tmp), mounts
# kvfs over it and runs kvfs-bench with 1, 4 and 16 threads, 2 MiB and 16 MiB
# blocks (1 GiB per pass), then once more with -o passthrough=off.
set -euo pipefail
BIN=$(cd "$1" && pwd)
OUT=$2
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
{ uname -r; nproc; df -h /dev/shm /var/tmp; } > "$OUT/machine.txt" 2>&1
run() { # backing mountpoint options tag
  local b=$1 m=$2 opts=$3 tag=$4
  mkdir -p "$b" "$m"
  "$BIN/kvfs" -o "$opts" "$b" "$m"
  trap 'umount "$m" 2>/dev/null || true' RETURN
  for t in 1 4 16; do
    for s in 2M 16M; do
      if [ "$s" = 2M ]; then n=512; else n=64; fi
      echo "== $tag threads=$t size=$s blocks=$n"
      "$BIN/kvfs-bench" --backing "$b" --mount "$m" -n "$n" -s "$s" -t "$t" --rounds 3 \
        --meta-ops 1000 | tee -a "$OUT/$tag.txt"
      "$BIN/kvfs-bench" --backing "$b" --mount "$m" -n "$n" -s "$s" -t "$t" --rounds 1 \
        --meta-ops 200 --json >> "$OUT/$tag.jsonl" || true
    done
  done
  umount "$m"
  rm -rf "$b"
}
run /dev/shm/kvfs-bench-backing /mnt/kvfs-shm passthrough=auto shm-passthrough
run /var/tmp/kvfs-bench-backing /mnt/kvfs-disk passthrough=auto disk-passthrough
run /dev/shm/kvfs-bench-backing /mnt/kvfs-shm passthrough=off shm-daemon
