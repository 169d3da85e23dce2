#!/usr/bin/env bash
# The whole test suite: installs dependencies (unless KVFS_SKIP_DEPS=1),
# builds, and runs every test through ctest. Needs root and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${KVFS_SKIP_DEPS:-0}" != 1 ]; then
  bash tests/install-deps.sh
fi
BUILD=${KVFS_BUILD_DIR:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$BUILD" -j"$(nproc)"
cd "$BUILD"
ctest --output-on-failure "$@"
