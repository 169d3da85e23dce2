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
(cd "$BUILD" && ctest --output-on-failure "$@")

# The same suite once more built with AddressSanitizer and UBSan, the daemon
# included while it serves the integration tests; any report fails a test.
# KVFS_SANITIZE_STAGE=0 skips it.
if [ "${KVFS_SANITIZE_STAGE:-1}" != 0 ]; then
  cmake -S . -B "$BUILD-sanitize" -DCMAKE_BUILD_TYPE=Debug -DKVFS_SANITIZE=ON
  cmake --build "$BUILD-sanitize" -j"$(nproc)"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export LSAN_OPTIONS=suppressions=$PWD/tests/sanitizer.supp
  (cd "$BUILD-sanitize" && ctest --output-on-failure "$@")
fi
