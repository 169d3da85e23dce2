"""GPU tests reuse the integration fixtures (real kvfs mounts that unmount in
teardown) and skip cleanly on a machine without CUDA."""

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "client" / "python"))
os.environ.setdefault("KVFS_LIB_DIR", str(HERE.parents[1] / "build" / "lib"))

_spec = importlib.util.spec_from_file_location("kvfs_integration_conftest",
                                               HERE.parent / "integration" / "conftest.py")
_mod = importlib.util.module_from_spec(_spec)
sys.modules["kvfs_integration_conftest"] = _mod
_spec.loader.exec_module(_mod)
# Fixtures, hooks and helpers: kvfs, mount_factory, backing, pytest_addoption, ...
globals().update({k: v for k, v in vars(_mod).items() if not k.startswith("__")})


@pytest.fixture
def shm_mount(mount_factory):
    """A kvfs mount whose backing directory is on /dev/shm (removed afterwards)."""
    backing = Path(tempfile.mkdtemp(prefix="kvfs-gpu-", dir="/dev/shm"))
    try:
        yield mount_factory(backing)
    finally:
        shutil.rmtree(backing, ignore_errors=True)
