"""The k8s checks reuse the integration fixtures (real kvfs mounts, always
unmounted in teardown), loaded under another module name."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "kvfs_integration_conftest", Path(__file__).resolve().parents[1] / "integration" / "conftest.py")
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)
# Fixtures, hooks and helpers: mount_factory, kvfs_bin, is_mounted, block_data, ...
globals().update({k: v for k, v in vars(_shared).items() if not k.startswith("__")})
