#!/usr/bin/env python3
"""Turns kvfs-bench text output (one or more runs) into the README's markdown table:
   tests/bench/table.py bench-output.txt"""

import re
import sys

COLS = [("write+publish", "write+publish GB/s"), ("read cold", "read cold GB/s"),
        ("read warm", "read warm GB/s"), ("create+write+close+publish block", "create+write+close+publish µs"),
        ("stat present block", "stat present µs"), ("stat missing block", "stat missing µs"),
        ("open+close block", "open+close µs"), ("create+write+close small block", "4 KiB create µs")]


def parse(path):
    runs, cur = [], None
    for line in open(path):
        m = re.match(r"kvfs-bench: (\d+) blocks of (\d+) bytes, (\d+) threads", line)
        if m:
            cur = {"size": int(m[2]), "threads": int(m[3]), "rows": {}}
            runs.append(cur)
            continue
        m = re.match(r"(\S.*?)\s{2,}([\d.]+) (?:GB/s|us)\s+([\d.]+) (?:GB/s|us)\s+([\d.]+)x", line)
        if m and cur:
            cur["rows"][m[1]] = (float(m[2]), float(m[3]), float(m[4]))
    return runs


def table(runs):
    out = ["| threads | block | " + " | ".join(c[1] for c in COLS) + " |",
           "|---" * (len(COLS) + 2) + "|"]
    for r in runs:
        cells = []
        for key, _ in COLS:
            if key in r["rows"]:
                b, k, ratio = r["rows"][key]
                cells.append(f"{b:.1f} / {k:.1f} = **{ratio:.2f}**")
            else:
                cells.append("n/a")
        out.append(f"| {r['threads']} | {r['size'] >> 20} MiB | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    print(table([r for p in sys.argv[1:] for r in parse(p)]))
