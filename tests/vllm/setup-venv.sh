#!/usr/bin/env bash
# Installs the pinned vLLM from PyPI into a virtual environment kept between
# runs (KVFS_VLLM_VENV, default ~/.cache/kvfs/vllm-$VERSION) and prints the
# path of its python. A complete install is marked by a stamp file, so an
# interrupted one is redone. Cost on a fresh machine: about 8.5 GB on disk and
# 3 to 4 minutes (vLLM pulls torch and the CUDA wheels even where there is no
# GPU); a cached one costs nothing.
#
# 0.32.0, not 0.33.0: 0.33.0 needs certifi>=2026.10.19, which the package
# index these machines reach does not have yet.
set -euo pipefail
VERSION=${KVFS_VLLM_VERSION:-0.32.0}
VENV=${KVFS_VLLM_VENV:-$HOME/.cache/kvfs/vllm-$VERSION}
STAMP="$VENV/.kvfs-installed-$VERSION"
if [ ! -f "$STAMP" ]; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q "vllm==$VERSION" pytest numpy >&2
  touch "$STAMP"
fi
echo "$VENV/bin/python"
