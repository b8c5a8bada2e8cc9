#!/usr/bin/env python3
"""Content objects of a stratum repository by uncompressed size class: count, raw
bytes (the content size of the object's zstd frame header, FORMAT.md §3), stored
bytes and their ratio. Catalogs (`*C`) and manifests (`*M`) are left out; see
bench/repo-breakdown.sh for those.

Usage: python3 bench/size-classes.py REPO      (prints a markdown table)
"""
import os
import sys

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CLASSES = [(0, 4 << 10), (4 << 10, 16 << 10), (16 << 10, 64 << 10),
           (64 << 10, 256 << 10), (256 << 10, 1 << 20), (1 << 20, 1 << 62)]


def content_size(path):
    """Frame_Content_Size of the zstd frame in `path` (RFC 8878 §3.1.1.1)."""
    with open(path, "rb") as f:
        h = f.read(18)
    if h[:4] != ZSTD_MAGIC:
        sys.exit(f"{path}: not a zstd frame")
    fhd = h[4]
    fcs_flag, single_segment, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    pos = 5 + (0 if single_segment else 1) + [0, 1, 2, 4][dict_flag]
    width = {0: 1 if single_segment else 0, 1: 2, 2: 4, 3: 8}[fcs_flag]
    if width == 0:
        sys.exit(f"{path}: no content size in the frame header")
    value = int.from_bytes(h[pos:pos + width], "little")
    return value + 256 if width == 2 else value


def label(n):
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: size-classes.py REPO")
    stats = {c: [0, 0, 0] for c in CLASSES}
    for d, _, files in os.walk(os.path.join(sys.argv[1], "data")):
        for name in files:
            if name[-1] not in "0123456789abcdef":  # typed objects end in a letter
                continue
            path = os.path.join(d, name)
            raw, stored = content_size(path), os.path.getsize(path)
            for lo, hi in CLASSES:
                if lo <= raw < hi:
                    s = stats[(lo, hi)]
                    s[0] += 1
                    s[1] += raw
                    s[2] += stored
    print("| raw size | objects | raw MB | stored MB | stored / raw |")
    print("|---|---:|---:|---:|---:|")
    total = [0, 0, 0]
    for (lo, hi), (n, raw, stored) in stats.items():
        total = [total[0] + n, total[1] + raw, total[2] + stored]
        upper = "" if hi == CLASSES[-1][1] else label(hi)
        ratio = stored / raw if raw else 0
        print(f"| {label(lo)}–{upper} | {n} | {raw / 1e6:.1f} | {stored / 1e6:.1f} | {ratio:.2f} |")
    ratio = total[2] / total[1] if total[1] else 0
    print(f"| all | {total[0]} | {total[1] / 1e6:.1f} | {total[2] / 1e6:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
