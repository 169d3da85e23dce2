"""The k8s checks reuse the integration fixtures (real kvfs mounts, always
unmounted in teardown), loaded under another module name."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "kvfs_integration_conftest_k8s", Path(__file__).resolve().parents[1] / "integration" / "conftest.py")
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)

pytest_addoption = _shared.pytest_addoption
passthrough = _shared.passthrough
_data_mode = _shared._data_mode
kvfs_bin = _shared.kvfs_bin
backing = _shared.backing
mount_factory = _shared.mount_factory
is_mounted = _shared.is_mounted
unmount = _shared.unmount
block_name = _shared.block_name
block_data = _shared.block_data
