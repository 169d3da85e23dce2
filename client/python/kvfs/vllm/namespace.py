"""The guard of a namespace: what its blocks were written with.

A block's name is a hash of its tokens, not of the model or layout that
produced its bytes, so two servers that differ in model, dtype, block size,
layout or parallel sizes would find each other's blocks and load the wrong KV
data. Each namespace directory therefore holds `kvfs-namespace.json`, written
once by the first server (atomically: a temp file linked into place, so two
servers starting together agree on one), and every later server compares its
own fields with it and refuses to start on any difference, naming the field.

No vLLM import here: the fields are plain values, so this is testable alone."""

import json
import os
import re
import threading

META_NAME = "kvfs-namespace.json"
FORMAT = 1

# The fields a namespace is pinned to, in the order a mismatch is reported.
FIELDS = ("format", "model", "hash_algo", "hash_seed", "tokens_per_block", "blocks_per_file",
          "kv_layout", "dtype", "bytes_per_file", "tp_size", "pp_size", "pcp_size", "dcp_size")


class NamespaceMismatch(RuntimeError):
    """This server's configuration differs from the one the namespace was written with."""

    def __init__(self, path, field, stored, ours):
        self.path, self.field, self.stored, self.ours = path, field, stored, ours
        super().__init__(
            f"kvfs namespace {os.path.dirname(path)} was written with {field}={stored!r}, "
            f"this server has {field}={ours!r}: its blocks would be loaded as the wrong KV "
            f"data, so it is refused. Use another namespace (the 'namespace' key) or remove "
            f"the old one.")


def default_name(model, tp_size=1, pp_size=1, pcp_size=1, dcp_size=1):
    """One namespace per model and parallel configuration, readable in `ls`."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model).lstrip(".") or "model"
    name = f"{safe}_tp{tp_size}_pp{pp_size}"
    if pcp_size != 1:
        name += f"_pcp{pcp_size}"
    if dcp_size != 1:
        name += f"_dcp{dcp_size}"
    return name


def check_name(name):
    """A namespace is one or more plain path components below the root."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") or p.startswith(".kvfs")
                                               for p in parts):
        raise ValueError(f"bad kvfs namespace name {name!r}: it must be a relative path of "
                         f"plain components, none empty, '.', '..' or starting with '.kvfs'")
    return name


def _create_once(path, text):
    """Writes PATH unless it exists, so that no reader ever sees it partial
    and two servers starting together agree on one copy. On kvfs, an O_EXCL
    create is published whole at close and a second one fails with EEXIST
    (kvfs refuses link()); elsewhere a temp file is linked into place."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        return
    except PermissionError:
        pass  # kvfs: no hard links
    finally:
        os.unlink(tmp)
    try:
        with open(path, "x") as f:
            f.write(text)
    except FileExistsError:
        pass


def open_namespace(root, name, fields):
    """Creates ROOT/NAME if needed and pins it to FIELDS, or checks FIELDS
    against what it is pinned to. Returns the namespace directory."""
    fields = json.loads(json.dumps(dict(fields, format=FORMAT)))  # as it reads back
    missing = [f for f in FIELDS if f not in fields]
    if missing:
        raise ValueError(f"namespace fields missing: {', '.join(missing)}")
    d = os.path.join(root, check_name(name))
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, META_NAME)
    if not os.path.exists(path):
        _create_once(path, json.dumps({k: fields[k] for k in FIELDS}, indent=2, sort_keys=True)
                     + "\n")
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError, RecursionError) as e:  # nesting too deep: found by fuzzing
        raise RuntimeError(f"kvfs namespace metadata {path} is unreadable ({e}); "
                           f"refusing to use its blocks") from e
    if not isinstance(stored, dict):
        raise RuntimeError(f"kvfs namespace metadata {path} is not a JSON object")
    for f in FIELDS:
        if stored.get(f) != fields[f]:
            raise NamespaceMismatch(path, f, stored.get(f), fields[f])
    return d
