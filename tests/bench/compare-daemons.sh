#!/usr/bin/env bash
# Runs kvfs-bench through several kvfs daemons (builds or options) on one
# backing store, interleaved and repeated, and prints the kvfs/backing ratios
# side by side: how a change to the daemon moves each workload.
#   tests/bench/compare-daemons.sh BIN OUTDIR TAG=DAEMON[,OPTIONS] ...
# BIN holds kvfs-bench (and libfuse3.so.3 where the machine lacks it); DAEMON
# is a kvfs binary, OPTIONS its -o list. Example:
#   tests/bench/compare-daemons.sh .device out old=.device/kvfs-old new=.device/kvfs \
#       nospin=.device/kvfs,spin_us=0,spin_write_us=0
set -euo pipefail
BIN=$(cd "$1" && pwd)
OUT=$2
shift 2
SPECS=("$@")
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
BACKING=${KVFS_BACKING:-/dev/shm/kvfs-compare}
MNT=/mnt/kvfs-compare
for spec in "${SPECS[@]}"; do : > "$OUT/${spec%%=*}.txt"; done
for round in 1 2; do
  for spec in "${SPECS[@]}"; do
    tag=${spec%%=*}
    rest=${spec#*=}
    daemon=${rest%%,*}
    opts=log_level=warn
    [ "$daemon" != "$rest" ] && opts="$opts,${rest#*,}"
    rm -rf "$BACKING"
    mkdir -p "$BACKING" "$MNT"
    "$daemon" -o "$opts" "$BACKING" "$MNT"
    for cfg in "1 2M 256" "4 2M 512" "16 2M 512" "4 16M 64"; do
      set -- $cfg
      "$BIN/kvfs-bench" --backing "$BACKING" --mount "$MNT" -n "$3" -s "$2" -t "$1" \
        --rounds 3 --meta-ops 1000 >> "$OUT/$tag.txt"
    done
    umount "$MNT"
  done
done
rm -rf "$BACKING"
# The ratios of both rounds side by side, parsed as tests/bench/table.py does.
python3 - "$(dirname "$0")" "$OUT" "${SPECS[@]}" <<'PY'
import collections, sys
sys.path.insert(0, sys.argv[1])
from table import parse
tags = [s.split("=", 1)[0] for s in sys.argv[3:]]
cells = collections.defaultdict(list)
for t in tags:
    for run in parse(f"{sys.argv[2]}/{t}.txt"):
        cfg = f"threads={run['threads']} size={run['size'] >> 20}M"
        for work, (_, _, ratio) in run["rows"].items():
            cells[(cfg, work, t)].append(f"{ratio:.2f}")
print("| run | workload | " + " | ".join(tags) + " |")
print("|---" * (len(tags) + 2) + "|")
for (cfg, work) in dict.fromkeys((c, w) for c, w, _ in cells):
    print(f"| {cfg} | {work} | " + " | ".join(" / ".join(cells[(cfg, work, t)]) for t in tags) + " |")
PY
