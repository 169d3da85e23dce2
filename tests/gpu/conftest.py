"""GPU tests reuse the integration fixtures (real kvfs mounts that unmount in
teardown) and skip cleanly on a machine without CUDA."""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
sys.path.insert(0, str(HERE.parents[1] / "client" / "python"))
os.environ.setdefault("KVFS_LIB_DIR", str(HERE.parents[1] / "build" / "lib"))

from conftest import *  # noqa: E402,F401,F403  (fixtures: kvfs, mount_factory, backing, ...)
from conftest import pytest_addoption as _integration_addoption  # noqa: E402


def pytest_addoption(parser):
    _integration_addoption(parser)
