#!/usr/bin/env bash
# Installs the pinned vLLM from PyPI into a virtual environment kept between
# runs (KVFS_VLLM_VENV, default ~/.cache/kvfs/vllm-$VERSION) and prints the
# path of its python. A complete install is marked by a stamp file, so an
# interrupted one is redone. Cost on a fresh machine: about 8.5 GB on disk and
# 3 to 4 minutes (vLLM pulls torch and the CUDA wheels even where there is no
# GPU); a cached one costs nothing.
set -euo pipefail
VERSION=${KVFS_VLLM_VERSION:-0.33.0}
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
# vLLM's own tests of its filesystem tier ship only in its source
# distribution: its tests/ directory, from the sdist whose hash is pinned
# here, kept in $VENV/vllm-src (tests/vllm/test_upstream_fs_tier.py).
SDIST_URL=https://files.pythonhosted.org/packages/f7/25/aa5684e9c59d6fc75f78926b7f15e8d9adc7de2d9e6e7575b80776ad8169/vllm-0.33.0.tar.gz
SDIST_SHA256=f4c33c2503d52bb411146afa9618a4f48bed68912f617e6803ac8d76e4c74112
SRC_STAMP="$VENV/vllm-src/.kvfs-extracted-$SDIST_SHA256"
if [ "$VERSION" = 0.33.0 ] && [ ! -f "$SRC_STAMP" ]; then
  rm -rf "$VENV/vllm-src"
  mkdir -p "$VENV/vllm-src"
  "$VENV/bin/python" - "$SDIST_URL" "$SDIST_SHA256" "$VENV/vllm-src" >&2 <<'PY'
import hashlib, io, sys, tarfile, urllib.request
url, want, dest = sys.argv[1:4]
data = urllib.request.urlopen(url, timeout=300).read()
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit(f"vLLM sdist: sha256 {got}, expected {want}")
with tarfile.open(fileobj=io.BytesIO(data)) as tar:
    members = [m for m in tar.getmembers()
               if m.name.split("/")[1:2] == ["tests"] and ".." not in m.name.split("/")
               and (m.isfile() or m.isdir())]
    for m in members:
        m.name = m.name.split("/", 1)[1]
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    tar.extractall(dest, members=members, **safe)
PY
  touch "$SRC_STAMP"
fi
echo "$VENV/bin/python"
