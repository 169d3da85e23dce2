"""vLLM's own tests of its filesystem tier, unmodified, from the source
distribution of the pinned vLLM (tests/vllm/setup-venv.sh extracts its tests/
into the virtual environment), run with their temporary directory on a kvfs
mount, on both data paths. They store and load blocks through vLLM's C and
Python I/O paths, rewrite stored blocks in place to simulate corruption and
expect the next load to fail, and plant symbolic-link loops."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(sys.prefix) / "vllm-src"
TESTS = SRC / "tests" / "v1" / "kv_offload"


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_vllm_fs_tier_suite_on_kvfs(mount_factory, backing, mode):
    assert (TESTS / "tiering" / "test_fs_tier.py").is_file(), (
        f"vLLM's tests are missing from {SRC}: run tests/vllm/setup-venv.sh")
    m = mount_factory(backing, options=[f"passthrough={mode}"])
    # --confcutdir: vLLM's top-level conftest needs its whole test toolchain
    # (tblib, ...), which none of these tests use.
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--confcutdir={TESTS}", f"--basetemp={m.mnt / 'basetemp'}",
         str(TESTS / "tiering" / "test_fs_tier.py")],
        cwd=SRC, capture_output=True, text=True, timeout=900)
    tail = (r.stdout + r.stderr)[-6000:]
    assert r.returncode == 0, tail
    passed = re.search(r"(\d+) passed", r.stdout)
    assert passed and int(passed.group(1)) == 46, tail
    assert "failed" not in r.stdout.splitlines()[-1], tail
