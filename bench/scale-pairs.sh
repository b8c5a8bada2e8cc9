#!/usr/bin/env bash
# Single-image publish into a large repository against a small one, in pairs (issue 5,
# "per-image publish time at image 10 000 against image 10").
#
# bench/scale.sh times 5 single publishes at N and 5 at 10, each side with its own
# images; on a shared 2-core machine that comparison moves by ±0.2. This script takes
# many pairs instead: each new image of the layout is published into the large
# repository BIG and then, right after, the same image into a control repository that
# holds images 1–10 of the layout plus at most 4 of the pairs' images (it is rebuilt
# every 5 pairs), so both sides do the same work under the same load. It reports the
# median and mean wall and CPU time of each side and their ratios.
#
# Usage: bench/scale-pairs.sh BIG LAYOUT KEY FIRST COUNT
#   BIG     a repository grown to the size under test (e.g. by bench/scale.sh with KEEP=1)
#   LAYOUT  the OCI layout of bench/gen-scale.py (tags i00001, i00002, …)
#   KEY     BIG's signing key
#   FIRST   the first image number not yet published in BIG; FIRST…FIRST+COUNT-1 are used
#           (extend the layout first: python3 bench/gen-scale.py LAYOUT --images M)
# Env: STRATUM (binary, default target/release/stratum), WORK (default a temp dir).
set -euo pipefail
export LC_ALL=C
[[ $# -eq 5 ]] || { sed -n '2,20p' "$0" >&2; exit 2; }
big=$1 layout=$2 key=$3 first=$4 count=$5
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
S=${STRATUM:-$here/../target/release/stratum}
work=${WORK:-$(mktemp -d)}
control=$work/control
out=$work/pairs.tsv
tag() { printf 'i%05d' "$1"; }
images() { "$S" images "$1" --json | jq length; }

base=()
for ((i = 1; i <= 10; i++)); do base+=("oci:$layout:$(tag "$i")"); done
: >"$out"
echo "==> $count pairs from $(tag "$first"), BIG holds $(images "$big") images; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((j = 0; j < count; j++)); do
    if ((j % 5 == 0)); then
        rm -rf "$control"
        "$S" init "$control" --key "$key" --name control >/dev/null
        "$S" publish "${base[@]}" --repo "$control" --key "$key" --json >/dev/null
    fi
    img="oci:$layout:$(tag $((first + j)))"
    for side in big control; do
        repo=$big
        [[ $side == control ]] && repo=$control
        held=$(images "$repo")
        sync
        /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$S" publish "$img" --repo "$repo" --key "$key" --json >"$work/out.json"
        printf '%s\t%s\t%s\t%s\t%s\n' "$side" "$held" "$(tag $((first + j)))" "$(tr ' ' '\t' <"$work/time")" \
            "$(jq '.[0].seconds' "$work/out.json")" >>"$out"
    done
done
echo "==> load after: $(cut -d' ' -f1-3 /proc/loadavg); raw rows (side, images held, image, wall, user, sys, max RSS KiB, seconds in publish): $out" >&2
python3 - "$out" <<'EOF'
import statistics as st, sys
rows = [l.split("\t") for l in open(sys.argv[1])]
def col(side, f):
    return [f(r) for r in rows if r[0] == side]
print("| side | pairs | images held | wall median s | wall mean s | CPU median s | CPU mean s | in-publish median s | peak RSS MiB |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
stats = {}
for side in ("big", "control"):
    wall = col(side, lambda r: float(r[3]))
    cpu = col(side, lambda r: float(r[4]) + float(r[5]))
    held = col(side, lambda r: int(r[1]))
    own = col(side, lambda r: float(r[7]))
    rss = col(side, lambda r: int(r[6]))
    stats[side] = (wall, cpu)
    print(f"| {side} | {len(wall)} | {min(held)}–{max(held)} | {st.median(wall):.3f} | {st.mean(wall):.3f} "
          f"| {st.median(cpu):.3f} | {st.mean(cpu):.3f} | {st.median(own):.3f} | {max(rss) / 1024:.0f} |")
(bw, bc), (cw, cc) = stats["big"], stats["control"]
print(f"\nratio big/control: wall median {st.median(bw) / st.median(cw):.2f}, mean {st.mean(bw) / st.mean(cw):.2f}; "
      f"CPU median {st.median(bc) / st.median(cc):.2f}, mean {st.mean(bc) / st.mean(cc):.2f}")
EOF
