#!/usr/bin/env bash
# Everything this project runs on a GPU machine, in one go:
#   tests/gpu/run-device.sh BIN OUT
# BIN holds kvfs, kvfs-bench, libkvfs.so, libkvfs_cuda.so and the shared
# libraries the machine lacks (libfuse3.so.3, libnuma.so.1, libxxhash.so.0).
# 1. the GPU tests (pytest) on a kvfs mount over /dev/shm;
# 2. bench_gpu.py through the mount and directly on its backing directory,
#    on /dev/shm and on the local disk.
set -uo pipefail
BIN=$(cd "$1" && pwd)
OUT=$2
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} KVFS_LIB_DIR=$BIN
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
nvidia-smi -L | tee "$OUT/machine.txt"
timeout 200 python3 -m pytest -v -p no:cacheprovider --timeout 60 --timeout-method=thread \
  tests/gpu/test_gpu.py tests/gpu/test_vllm_transfer.py --kvfs-bin "$BIN/kvfs" 2>&1 | tee "$OUT/gpu-tests.txt"
tests_rc=${PIPESTATUS[0]}

bench() { # name limit backing mountpoint args...
  local name=$1 limit=$2 b=$3 m=$4; shift 4
  mkdir -p "$b" "$m"
  "$BIN/kvfs" "$b" "$m" || return 1
  timeout "$limit" python3 tests/gpu/bench_gpu.py --root "$name-kvfs=$m" --root "$name-direct=$b" \
    --json "$OUT/bench-$name.json" "$@" 2>&1 | tee -a "$OUT/bench.txt"
  umount "$m" || umount -l "$m"
  rm -rf "$b"
}
bench shm 180 /dev/shm/kvfs-gpu-bench /mnt/kvfs-gpu-shm
bench disk 150 /var/tmp/kvfs-gpu-bench /mnt/kvfs-gpu-disk --threads 16 --engine dma --gib 6
exit $tests_rc
