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
: > "$OUT/compare.txt"
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
      echo "== $tag threads=$1 size=$2" >> "$OUT/compare.txt"
      "$BIN/kvfs-bench" --backing "$BACKING" --mount "$MNT" -n "$3" -s "$2" -t "$1" \
        --rounds 3 --meta-ops 1000 >> "$OUT/compare.txt"
    done
    umount "$MNT"
  done
done
rm -rf "$BACKING"
python3 - "$OUT/compare.txt" "${SPECS[@]}" <<'PY'
import collections, re, sys
cells, cur = collections.defaultdict(list), None
for line in open(sys.argv[1]):
    if line.startswith("== "):
        cur = line[3:].split(" ", 1)
        continue
    m = re.match(r"(\S.*?)\s{2,}[\d.]+ \S+\s+[\d.]+ \S+\s+([\d.]+)x", line)
    if m and cur:
        cells[(cur[1].strip(), m[1], cur[0])].append(m[2])
tags = [s.split("=", 1)[0] for s in sys.argv[2:]]
print("| run | workload | " + " | ".join(tags) + " |")
print("|---" * (len(tags) + 2) + "|")
for (cfg, work) in dict.fromkeys((c, w) for c, w, _ in cells):
    print(f"| {cfg} | {work} | " + " | ".join(" / ".join(cells[(cfg, work, t)]) for t in tags) + " |")
PY
