"""libFuzzer (through Atheris) on the namespace guard of kvfs.vllm: the
metadata file `kvfs-namespace.json` is read from shared storage that any
server, or a damaged disk, may have written, and namespace names come from
configuration.

For any metadata content, open_namespace either accepts it, and then every
pinned field equals this server's, or refuses it with NamespaceMismatch or a
RuntimeError naming the file; nothing else may escape, and nothing is
accepted that differs. For any name, check_name either refuses it or keeps
the path below the root.

    python3 tests/fuzz/fuzz_namespace.py -max_total_time=30 CORPUS_DIR"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "client" / "python"))
    from kvfs.vllm import namespace as nsmod

OURS = {"model": "m/x", "hash_algo": "sha256", "hash_seed": "0", "tokens_per_block": [16],
        "blocks_per_file": 1, "kv_layout": "pages", "dtype": "bfloat16",
        "bytes_per_file": 2097152, "tp_size": 1, "pp_size": 1, "pcp_size": 1, "dcp_size": 1}
# One fixed scratch directory, emptied at start: libFuzzer ends the process
# without running Python's exit handlers, so nothing could remove a fresh one.
ROOT = os.path.join(tempfile.gettempdir(), f"kvfs-fuzz-namespace-{os.getuid()}")
shutil.rmtree(ROOT, ignore_errors=True)
META = os.path.join(ROOT, "ns", nsmod.META_NAME)
os.makedirs(os.path.dirname(META))


def check_metadata(data):
    with open(META, "wb") as f:
        f.write(data)
    try:
        nsmod.open_namespace(ROOT, "ns", OURS)
    except nsmod.NamespaceMismatch as e:
        assert e.field in nsmod.FIELDS
        return
    except RuntimeError as e:
        assert META in str(e)
        return
    stored = json.loads(data)
    expected = json.loads(json.dumps(dict(OURS, format=nsmod.FORMAT)))
    for k in nsmod.FIELDS:
        assert stored[k] == expected[k], f"accepted {k}={stored[k]!r}"


def check_name(data):
    name = data.decode("utf-8", "replace")
    try:
        nsmod.check_name(name)
    except ValueError:
        return
    full = os.path.normpath(os.path.join(ROOT, name))
    assert full.startswith(ROOT + os.sep), f"{name!r} leaves the root"


def one_input(data):
    if not data:
        return
    (check_name if data[0] & 1 else check_metadata)(data[1:])


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
