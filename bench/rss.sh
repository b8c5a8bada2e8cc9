#!/usr/bin/env bash
# Does publish memory stay bounded as an image grows? Publishes synthetic one-layer
# images (bench/gen-layout.py) of growing size into fresh repositories and prints
# wall time and peak RSS of each `stratum publish`:
#   small-N   N inlined small files (SMALL_SIZE bytes of text each, default 2048)
#   big-B     one file of B bytes of random data (content-defined chunks)
# Environment: WORK (default bench/work), STRATUM (default target/release/stratum),
#   SMALL="20000 100000"  BIG="268435456 1073741824"  (override the sizes; empty skips)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
WORK=${WORK:-$root/bench/work}
S=${STRATUM:-$root/target/release/stratum}
SMALL=${SMALL-"20000 100000"}
SMALL_SIZE=${SMALL_SIZE:-2048}
BIG=${BIG-"268435456 1073741824"}
dir=$WORK/rss
mkdir -p "$dir"
[[ -x $S ]] || { echo "no stratum binary at $S" >&2; exit 1; }
[[ -f $dir/key ]] || "$S" keygen "$dir/key" >/dev/null

echo "| image | layer gzip MB | tar MB | publish wall s | CPU s | peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|"
one() { # NAME GEN-ARGS...
    local name=$1
    shift
    if [[ ! -f $dir/$name/index.json ]]; then
        rm -rf "${dir:?}/$name"
        python3 "$here/gen-layout.py" "$dir/$name" "$@" >&2
    fi
    rm -rf "${dir:?}/repo"
    "$S" init "$dir/repo" --key "$dir/key" >/dev/null
    sync
    /usr/bin/time -f '%e %U %S %M' -o "$dir/time" "$S" publish "oci:$dir/$name:1" --repo "$dir/repo" --key "$dir/key" --json >"$dir/$name.json"
    local gz tarb
    gz=$(jq '[.layers[].size] | add' "$dir/$name/blobs/sha256/$(jq -r '.manifests[0].digest | ltrimstr("sha256:")' "$dir/$name/index.json")")
    tarb=$(jq '.[0].bytes' "$dir/$name.json")
    read -r e u s m <"$dir/time"
    awk -v n="$name" -v gz="$gz" -v tb="$tarb" -v e="$e" -v u="$u" -v s="$s" -v m="$m" \
        'BEGIN { printf "| %s | %.1f | %.1f (file bytes) | %.2f | %.2f | %.0f |\n", n, gz / 1e6, tb / 1e6, e, u + s, m / 1024 }'
    rm -rf "${dir:?}/repo"
}
for n in $SMALL; do one "small-$n" --small-files "$n" --small-size "$SMALL_SIZE"; done
for b in $BIG; do one "big-$b" --big-file "$b"; done
