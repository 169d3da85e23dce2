#!/usr/bin/env bash
# The whole test suite: installs dependencies (unless KVFS_SKIP_DEPS=1),
# builds, and runs every test through ctest. Needs root and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${KVFS_SKIP_DEPS:-0}" != 1 ]; then
  bash tests/install-deps.sh
fi
BUILD=${KVFS_BUILD_DIR:-build}
# Real vLLM from PyPI for tests/vllm, in a virtual environment cached between
# runs (KVFS_SKIP_VLLM=1 leaves those tests out).
VLLM_PYTHON=
if [ "${KVFS_SKIP_VLLM:-0}" != 1 ]; then
  VLLM_PYTHON=$(bash tests/vllm/setup-venv.sh)
fi
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVFS_VLLM_PYTHON="$VLLM_PYTHON"
cmake --build "$BUILD" -j"$(nproc)"
SUMMARY=$(mktemp)
(cd "$BUILD" && ctest --output-on-failure "$@") | tee -a "$SUMMARY"

# The same suite once more built with AddressSanitizer and UBSan, the daemon
# included while it serves the integration tests; any report fails a test.
# This build also has the fault-injection hooks, so the error paths that
# tests/integration/test_faults.py drives run under the sanitizers.
# KVFS_SANITIZE_STAGE=0 skips it.
if [ "${KVFS_SANITIZE_STAGE:-1}" != 0 ]; then
  cmake -S . -B "$BUILD-sanitize" -DCMAKE_BUILD_TYPE=Debug -DKVFS_SANITIZE=ON \
    -DKVFS_FAULT_INJECTION=ON
  cmake --build "$BUILD-sanitize" -j"$(nproc)"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export LSAN_OPTIONS=suppressions=$PWD/tests/sanitizer.supp
  (cd "$BUILD-sanitize" && ctest --output-on-failure "$@") | tee -a "$SUMMARY"
fi

# Fuzzing: every parser of outside input for KVFS_FUZZ_SECONDS (30) each,
# starting from the corpus kept in tests/fuzz/corpus (new inputs go to a
# scratch directory). A crash fails the run; keep the crashing input in the
# corpus as a regression test. KVFS_FUZZ_SECONDS=0 skips it.
FUZZ_SECONDS=${KVFS_FUZZ_SECONDS:-30}
if [ "$FUZZ_SECONDS" != 0 ]; then
  CC=clang cmake -S . -B "$BUILD-fuzz" -DCMAKE_BUILD_TYPE=Debug -DKVFS_FUZZ=ON
  cmake --build "$BUILD-fuzz" -j"$(nproc)" --target fuzz_name fuzz_options fuzz_lease fuzz_header
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  fuzz() { # name command...: runs one target on its corpus, stops the run on a crash
    local t=$1 rc=0
    shift
    mkdir -p "$scratch/$t"
    "$@" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -artifact_prefix="$scratch/" \
      "$scratch/$t" "tests/fuzz/corpus/$t" > "$scratch/$t.log" 2>&1 || rc=$?
    grep -E 'stat::number_of_executed_units' "$scratch/$t.log" | sed "s/^/fuzz_$t /" || true
    if [ "$rc" != 0 ]; then
      tail -60 "$scratch/$t.log"
      echo "fuzz_$t found a crash: $(ls "$scratch"/crash-* "$scratch"/leak-* 2>/dev/null)"
      exit 1
    fi
  }
  for t in name options lease header; do
    fuzz "$t" "$BUILD-fuzz/bin/fuzz_$t"
  done
  # The namespace guard of kvfs.vllm is Python: libFuzzer through Atheris.
  fuzz namespace env TMPDIR="$scratch" python3 tests/fuzz/fuzz_namespace.py
  echo "fuzzing: 5 targets, ${FUZZ_SECONDS}s each, no crash"
fi

# One closing line for all the ctest runs above.
awk '/tests passed, [0-9]+ tests failed out of/ { failed += $4; total += $NF }
     END { printf "kvfs: %d passed, %d failed\n", total - failed, failed }' "$SUMMARY"
rm -f "$SUMMARY"
