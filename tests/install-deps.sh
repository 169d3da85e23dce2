#!/usr/bin/env bash
# Installs what kvfs needs to build and test on Debian 12 (run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
  build-essential cmake pkg-config ca-certificates \
  libfuse3-dev fuse3 libxxhash-dev libnuma-dev libmicrohttpd-dev check \
  python3 util-linux procps valgrind clang libclang-rt-14-dev
if ! python3 -c 'import pytest' 2>/dev/null; then
  # A pip-managed Python takes pytest from PyPI; Debian's own Python is
  # externally managed, so it gets Debian's package instead.
  python3 -m pip install --quiet pytest 2>/dev/null || apt-get install -y python3-pytest
fi
# The Kubernetes manifests are checked offline: schemas from kubernetes-validate
# (PyPI), `kubectl kustomize` for the kustomization (Debian's kubectl where the
# machine has none).
# Atheris drives libFuzzer over the Python namespace guard (tests/fuzz).
for mod in kubernetes_validate:kubernetes-validate atheris:atheris; do
  if ! python3 -c "import ${mod%%:*}" 2>/dev/null; then
    python3 -m pip install --quiet "${mod#*:}" 2>/dev/null ||
      python3 -m pip install --quiet --break-system-packages "${mod#*:}"
  fi
done
if ! command -v kubectl >/dev/null; then
  apt-get install -y --no-install-recommends kubernetes-client
fi
