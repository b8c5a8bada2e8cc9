#!/usr/bin/env bash
# Where to cut flat trees into subtree catalogs (issue 17, DECISIONS.md D38).
#
# The images of bench/gen-scale.py (the "Scale" benchmark's layout: os + one of three
# runtimes + a unique top layer, ~5000 entries per image) are published, N of them in
# batches of B per call, into one fresh repository per cut threshold T
# (STRATUM_SUBTREE_MIN_ENTRIES=T; 0 = every flat tree one catalog, as format version 1
# stored it). For each T it reports:
#   - the repository's bytes, the catalog objects' bytes and count;
#   - what one more image adds in catalog bytes (published alone at N);
#   - the catalogs, and their stored bytes, that a lazy mount of the python image fetches
#     to look up 23 paths (20 python stdlib modules spread over usr/lib/python3.11,
#     /etc/hostname, /usr/bin/python3.11, /app/config.json): what a cold start walks;
#   - the wall time of the batch publishes and of `stratum check`.
# Prints a markdown table (also written to $WORK/nesting/results.md).
#
# Usage:  bench/nesting.sh                         # N=300 B=100 THRESHOLDS="0 64 128 256 512 1024"
#         N=1000 THRESHOLDS="0 256" bench/nesting.sh
# Environment:
#   STRATUM=PATH   stratum binary (default target/release/stratum)
#   WORK=DIR       work dir (default bench/work); the layout is $WORK/scale/layout (shared
#                  with bench/scale.sh, generated or extended here when needed)
#   KEEP=1         keep the repositories ($WORK/nesting/T<T>)
# Needs python3, zstd, sqlite3 (the module), GNU time.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
N=${N:-300}
B=${B:-100}
THRESHOLDS=${THRESHOLDS:-"0 64 128 256 512 1024"}
WORK=${WORK:-$root/bench/work}
S=${STRATUM:-$root/target/release/stratum}
layout=$WORK/scale/layout
out=$WORK/nesting
mkdir -p "$out"
[[ -x $S ]] || { echo "no stratum binary at $S" >&2; exit 1; }

python3 "$here/gen-scale.py" "$layout" --images $((N + 1)) >&2
tag() { printf 'i%05d' "$1"; }
src() { printf 'oci:%s:%s' "$layout" "$(tag "$1")"; }

# catalogs REPO: "<count> <bytes>" of the catalog objects
catalogs() { find "$1/data" -name '*C' -printf '%s\n' | awk '{n++; s+=$1} END {print n+0, s+0}'; }

# lookup REPO NAME: "<catalogs> <stored bytes>" that resolving the paths below in image
# NAME's flat tree reads (every catalog crossed, once).
lookup() {
    python3 - "$1" "$2" <<'EOF'
import json, os, sqlite3, subprocess, sys, tempfile
repo, name = sys.argv[1], sys.argv[2]
images = json.loads(subprocess.check_output([os.environ["S"], "images", repo, "--json"]))
flat = next(i for i in images if i["name"].endswith(":" + name))["flat_catalog"]
seen, size, cache = set(), 0, {}
def load(cid):
    global size
    if cid not in cache:
        p = os.path.join(repo, "data", cid[:2], cid[2:] + "C")
        size += os.path.getsize(p)
        raw = subprocess.check_output(["zstd", "-dc", p])
        db = sqlite3.connect(":memory:")
        db.deserialize(raw)
        cache[cid] = db
        seen.add(cid)
    return cache[cid]
# The paths: every tree's /etc/hostname, python, app/config.json, and 20 stdlib
# modules spread over usr/lib/python3.11 (the same set whatever T is).
def walk(cid, eid, prefix, out):
    for nid, name, nested, mode in load(cid).execute(
            "SELECT id, name, nested, mode FROM entries WHERE parent=? ORDER BY name", (eid,)):
        path = prefix + name.decode()
        if nested is not None:
            walk(nested.hex(), 1, path + "/", out)
        elif mode & 0o170000 == 0o040000:
            walk(cid, nid, path + "/", out)
        else:
            out.append(path)
files = []
walk(flat, 1, "", files)
stdlib = [f for f in files if f.startswith("usr/lib/python3.11/") and f.endswith(".py")]
paths = ["etc/hostname", "usr/bin/python3.11", "app/config.json"]
paths += stdlib[:: max(1, len(stdlib) // 20)][:20]
seen.clear()
cache.clear()
size = 0
for path in paths:
    cid, eid = flat, 1
    for comp in path.split("/"):
        row = load(cid).execute("SELECT id, nested FROM entries WHERE parent=? AND name=?",
                                (eid, comp.encode())).fetchone()
        if row is None:
            break
        eid, nested = row
        if nested is not None:
            cid, eid = nested.hex(), 1
print(len(seen), size)
EOF
}

secs() { /usr/bin/time -f %e -o "$out/.t" "$@" >/dev/null 2>"$out/.err" || { cat "$out/.err" >&2; exit 1; }; cat "$out/.t"; }

rows=()
for T in $THRESHOLDS; do
    R=$out/T$T
    rm -rf "$R" "$out/key" "$out/key.pub"
    "$S" keygen "$out/key" >/dev/null
    "$S" init "$R" --key "$out/key" --name nesting >/dev/null
    export STRATUM_SUBTREE_MIN_ENTRIES=$T
    t_pub=0
    first=1
    while ((first <= N)); do
        last=$((first + B - 1))
        ((last > N)) && last=$N
        srcs=()
        for ((i = first; i <= last; i++)); do srcs+=("$(src "$i")"); done
        t=$(secs "$S" publish "${srcs[@]}" --repo "$R" --key "$out/key")
        t_pub=$(python3 -c "print($t_pub + $t)")
        first=$((last + 1))
    done
    read -r n_before b_before < <(catalogs "$R")
    t_one=$(secs "$S" publish "$(src $((N + 1)))" --repo "$R" --key "$out/key")
    read -r n_cat b_cat < <(catalogs "$R")
    # The root, /images and the touched partitions are rewritten by every revision
    # whatever T is; the rest of the difference is the new image's trees.
    one=$((b_cat - b_before))
    repo_bytes=$(du -sb "$R/data" | cut -f1)
    read -r l_cats l_bytes < <(S=$S lookup "$R" "$(tag 1)")
    t_check=$(secs "$S" check "$R")
    unset STRATUM_SUBTREE_MIN_ENTRIES
    rows+=("| $T | $((repo_bytes / 1000000)) | $n_cat | $((b_cat / 1000000)) | $((100 * b_cat / repo_bytes)) % | $((one / 1000)) | $l_cats | $((l_bytes / 1000)) | $t_pub | $t_one | $t_check |")
    printf '%s\n' "${rows[-1]}" >&2
    [[ -n ${KEEP:-} ]] || rm -rf "$R"
done

{
    echo "bench/nesting.sh: N=$N images (+1 published alone), B=$B per call, $(date -u +%FT%TZ), stratum $("$S" --version)"
    echo
    echo "| T | repository MB | catalogs | catalog MB | catalog share | one more image: new catalog KB | python lookups: catalogs | their KB | publish N s | publish 1 s | check s |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
} | tee "$out/results.md"
