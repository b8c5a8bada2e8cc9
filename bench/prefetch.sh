#!/usr/bin/env bash
# Cold start with a recorded prefetch list (issue 16, "Benchmarks"): the wall time of
# `python3 -c 'import json'` run in a python image
#   - stratum: `stratum mount URL MNT --image bench/python:1` (fresh cache; the image was
#     published with the list `mount --record` wrote for the same command), then the
#     command chrooted into MNT; mount time (start to mounted) and run time apart;
#   - stratum without fetching ahead (`--prefetch-jobs 0`, informative: what the list buys);
#   - the alternative: `skopeo copy` from a local docker-registry + `umoci unpack` + the
#     same command;
# on loopback and through bench/delay-proxy.py (every byte held DELAY_MS each way, in front
# of both `stratum serve` and the registry), in one run. Also: the content bytes the mount
# fetched (decoded, in its cache) against the bytes of the files the command opened (the
# recorded list), and the batching of a listed directory's small files (`ls DIR; cat
# DIR/*`, cold, with and without fetching ahead; docs/DECISIONS.md D38).
#
# The image (built here, there is no internet): busybox and the shared libraries of
# python3.11 (base layer); $EXTRA from this host (middle layer); every file of Debian's
# python3-minimal, python3.11-minimal, libpython3.11-minimal and libpython3.11-stdlib
# (top layer).
#
# Usage: bench/prefetch.sh            (root; prints a markdown report, also in
#        $WORK/prefetch/results.md)
# Environment:
#   STRATUM=PATH  the binary (default: cargo build --release; NOBUILD=1 uses it as is)
#   WORK=DIR      work directory (default bench/work)
#   RUNS=3        runs of each measurement per link (the fastest is reported, all listed)
#   DELAY_MS=5    per-direction delay of the delayed link (10 ms round trip)
#   CMD=...       the command (default: python3 -c 'import json')
#   EXTRA=DIRS    host directories of the middle layer (see above)
# Needs root (chroot, FUSE) and docker-registry skopeo umoci busybox-static python3.11
# libpython3.11-stdlib curl.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
WORK=${WORK:-$root/bench/work}
RUNS=${RUNS:-3}
DELAY_MS=${DELAY_MS:-5}
CMD=${CMD:-"python3 -c 'import json'"}
BATCH_DIR=${BATCH_DIR:-usr/lib/python3.11/email}
# A middle layer of what a real python image also carries (site packages, tzdata, perl,
# compilers), so that the image is about the size of issue 16's (69 MB of gzip layers,
# 6 637 files) and most of it is never opened.
EXTRA=${EXTRA:-usr/lib/python3/dist-packages usr/share/zoneinfo usr/share/perl usr/lib/gcc}

if [ -z "${STRATUM:-}" ]; then
    if [ -z "${NOBUILD:-}" ]; then
        (cd "$root" && cargo build --release --bin stratum >&2)
    fi
    STRATUM=$root/target/release/stratum
fi
[ "$(id -u)" = 0 ] || { echo "needs root (chroot, FUSE mounts)" >&2; exit 1; }
for t in docker-registry skopeo umoci curl python3 chroot; do
    command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
[ -x /bin/busybox ] || { echo "missing: /bin/busybox (busybox-static)" >&2; exit 1; }

W=$WORK/prefetch
if [ -d "$W" ]; then
    { grep -o " $W[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$W"
fi
mkdir -p "$W"
report=$W/results.md
: >"$report"
pids=()
say() { echo "$*" | tee -a "$report"; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
is_mounted() { grep -q " $1 " /proc/self/mountinfo; }
cleanup() {
    set +e
    { grep -o " $W[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
    for p in "${pids[@]}"; do stop_pid "$p"; done
}
trap cleanup EXIT

# --- the image ---------------------------------------------------------------------------
log "building the image"
layout=$W/layout
umoci init --layout "$layout"
umoci new --image "$layout:python"
umoci config --image "$layout:python" --config.env PATH=/usr/local/bin:/usr/bin:/bin \
    --config.cmd /usr/bin/python3 --author stratum-bench
umoci unpack --image "$layout:python" "$W/bundle" >/dev/null
rfs=$W/bundle/rootfs
put() { # FILE: copied into the rootfs under its real directory (a symlink and its target)
    local dir
    dir=$(cd "$(dirname "$1")" && pwd -P)
    mkdir -p "$rfs$dir"
    cp -a "$1" "$rfs$dir/"
    if [ -L "$1" ]; then put "$(readlink -f "$1")"; fi
}
for d in bin sbin lib lib64; do
    if [ -L "/$d" ]; then ln -sfn "$(readlink "/$d")" "$rfs/$d"; mkdir -p "$rfs/$(readlink -f "/$d")"; fi
done
for f in $(ldd /usr/bin/python3.11 | grep -o '/[^ ]*' | sort -u); do put "$f"; done
mkdir -p "$rfs/tmp" "$rfs/etc" "$rfs/usr/bin"
cp /bin/busybox "$rfs/bin/busybox"
for a in sh ls cat env; do ln -sf busybox "$rfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rfs/etc/passwd"
umoci repack --refresh-bundle --image "$layout:python" "$W/bundle" >/dev/null
for d in $EXTRA; do
    [ -d "/$d" ] && (cd / && cp -a --parents "$d" "$rfs/")
done
umoci repack --refresh-bundle --image "$layout:python" "$W/bundle" >/dev/null
dpkg -L python3-minimal python3.11-minimal libpython3.11-minimal libpython3.11-stdlib |
    sort -u | while read -r f; do
        if [ -L "$f" ] || [ -f "$f" ]; then put "$f"; fi
    done
umoci repack --image "$layout:python" "$W/bundle" >/dev/null
umoci gc --layout "$layout"
chroot "$rfs" /bin/sh -c "$CMD" || { echo "the rootfs does not run $CMD" >&2; exit 1; }
files=$(find "$rfs" -type f | wc -l)
rootfs_bytes=$(du -sb "$rfs" | cut -f1)
blob_bytes=$(du -sb "$layout/blobs" | cut -f1)
batch_files=$(find "$rfs/$BATCH_DIR" -maxdepth 1 -type f | wc -l)
rm -rf "$W/bundle"
log "image: $files files, rootfs $rootfs_bytes bytes, blobs $blob_bytes bytes"

# --- registry ----------------------------------------------------------------------------
reg_port=$(free_port)
start_registry "$W/registry" "$reg_port"
skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
    "oci:$layout:python" "docker://127.0.0.1:$reg_port/bench/python:1"

# --- repository, the recorded list --------------------------------------------------------
key=$W/key
"$STRATUM" keygen "$key" >/dev/null
repo=$W/repo
"$STRATUM" init "$repo" --key "$key" --name bench.prefetch >/dev/null
"$STRATUM" publish "oci:$layout:python" --repo "$repo" --key "$key" --as bench/python:1 >/dev/null
log "recording the files $CMD opens"
list=$W/python.prefetch
mkdir -p "$W/rec"
"$STRATUM" mount "$repo" "$W/rec" --image bench/python:1 --record "$list" 2>"$W/record.log" &
rec_pid=$!
for _ in $(seq 300); do is_mounted "$W/rec" && break; sleep 0.02; done
chroot "$W/rec" /bin/sh -c "$CMD"
"$STRATUM" umount "$W/rec"
wait "$rec_pid"
"$STRATUM" publish --repo "$repo" --key "$key" --prefetch "bench/python:1=$list" >/dev/null
opened_files=$(wc -l <"$list")
serve_port=$(free_port)
"$STRATUM" serve "$repo" --listen "127.0.0.1:$serve_port" >"$W/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$serve_port/.stratum/manifest" -o /dev/null && break; sleep 0.1; done
reg_dport=$(free_port)
python3 "$here/delay-proxy.py" "$reg_dport" "127.0.0.1:$reg_port" "$DELAY_MS" 2>/dev/null &
pids+=($!)
serve_dport=$(free_port)
python3 "$here/delay-proxy.py" "$serve_dport" "127.0.0.1:$serve_port" "$DELAY_MS" 2>/dev/null &
pids+=($!)
sleep 0.5

# --- measurements --------------------------------------------------------------------------
results=$W/times.tsv
: >"$results"
rec() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$results"; log "$1 $2: $3 s"; }

stratum_cold() { # LINK PORT LABEL EXTRA...: one cold start; records mount, run, total
    local link=$1 port=$2 label=$3 t0 t1 t2 mp=$W/mnt cache=$W/cache
    shift 3
    rm -rf "$cache"; mkdir -p "$mp"
    sync; echo 3 >/proc/sys/vm/drop_caches
    t0=$(now)
    "$STRATUM" mount "http://127.0.0.1:$port" "$mp" --pubkey "$key.pub" --cache "$cache" \
        --image bench/python:1 --refresh 0 "$@" 2>>"$W/mount.log" &
    local pid=$!
    until is_mounted "$mp"; do sleep 0.002; done
    t1=$(now)
    chroot "$mp" /bin/sh -c "$CMD"
    t2=$(now)
    rec "$link" "$label mount" "$(secs "$t0" "$t1")"
    rec "$link" "$label run" "$(secs "$t1" "$t2")"
    rec "$link" "$label total" "$(secs "$t0" "$t2")"
    sleep 1 # the prefetch still running finishes: its bytes count
    rec "$link" "$label fetched" "$(du -sb "$cache/objects" | cut -f1)"
    "$STRATUM" umount "$mp"
    wait "$pid"
}

batch_cold() { # LINK PORT LABEL EXTRA...: ls DIR; cat DIR/* from a cold mount
    local link=$1 port=$2 label=$3 t0 t1 mp=$W/mnt cache=$W/cache
    shift 3
    rm -rf "$cache"; mkdir -p "$mp"
    "$STRATUM" mount "http://127.0.0.1:$port" "$mp" --pubkey "$key.pub" --cache "$cache" \
        --image bench/python:1 --refresh 0 "$@" 2>>"$W/mount.log" &
    local pid=$!
    until is_mounted "$mp"; do sleep 0.002; done
    ls "$mp/$BATCH_DIR" >/dev/null
    t0=$(now)
    for f in "$mp/$BATCH_DIR"/*; do [ -f "$f" ] && cat "$f" >/dev/null; done
    t1=$(now)
    rec "$link" "$label" "$(secs "$t0" "$t1")"
    "$STRATUM" umount "$mp"
    wait "$pid"
}

skopeo_cold() { # LINK PORT
    local link=$1 port=$2 t0 t1 t2 d=$W/alt
    rm -rf "$d"; mkdir -p "$d"
    sync; echo 3 >/proc/sys/vm/drop_caches
    t0=$(now)
    skopeo copy --quiet --src-tls-verify=false "docker://127.0.0.1:$port/bench/python:1" "oci:$d/layout:python"
    umoci unpack --image "$d/layout:python" "$d/bundle" >/dev/null
    t1=$(now)
    chroot "$d/bundle/rootfs" /bin/sh -c "$CMD"
    t2=$(now)
    rec "$link" "skopeo+umoci pull" "$(secs "$t0" "$t1")"
    rec "$link" "skopeo+umoci run" "$(secs "$t1" "$t2")"
    rec "$link" "skopeo+umoci total" "$(secs "$t0" "$t2")"
    rm -rf "$d"
}

for link in loopback delayed; do
    if [ $link = loopback ]; then sp=$serve_port; rp=$reg_port; else sp=$serve_dport; rp=$reg_dport; fi
    for _ in $(seq "$RUNS"); do
        stratum_cold $link "$sp" "stratum+list"
        stratum_cold $link "$sp" "stratum no-ahead" --prefetch-jobs 0
        skopeo_cold $link "$rp"
        batch_cold $link "$sp" "batch ahead"
        batch_cold $link "$sp" "batch no-ahead" --prefetch-jobs 0
    done
done

# --- report --------------------------------------------------------------------------------
best() { awk -F '\t' -v l="$1" -v w="$2" '$1 == l && $2 == w && (b == "" || $3 + 0 < b + 0) { b = $3 } END { print b }' "$results"; }
median() { awk -F '\t' -v l="$1" -v w="$2" '$1 == l && $2 == w { print $3 }' "$results" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
all() { awk -F '\t' -v l="$1" -v w="$2" '$1 == l && $2 == w { printf "%s%s", s, $3; s = ", " }' "$results"; }
ratio() { python3 -c "print(f'{$1 / $2:.1f}')"; }
opened_bytes=$(python3 - "$list" "$layout" <<'EOF'
import json, os, sys, tarfile, gzip
listed = set(l.rstrip("\n") for l in open(sys.argv[1]) if l.strip())
lay = sys.argv[2]
idx = json.load(open(os.path.join(lay, "index.json")))
man = json.load(open(os.path.join(lay, "blobs", *idx["manifests"][0]["digest"].split(":"))))
size = {}
for l in man["layers"]:
    with tarfile.open(os.path.join(lay, "blobs", *l["digest"].split(":")), "r:*") as t:
        for m in t:
            if m.isfile():
                size[m.name.lstrip("./")] = m.size
print(sum(size.get(p, 0) for p in listed))
EOF
)
say "## Cold start with a recorded prefetch list ($(date -u +%F), stratum $(cd "$root" && git rev-parse --short HEAD))"
say ""
say "Image: $files files, $rootfs_bytes bytes unpacked, $blob_bytes bytes of OCI blobs. Command: \`$CMD\`;"
say "it opened $opened_files files, $opened_bytes bytes (the list \`mount --record\` wrote, published with the image)."
say "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs."
say "Delayed link: bench/delay-proxy.py, $DELAY_MS ms each way ($((2 * DELAY_MS)) ms round trip). Fastest of $RUNS runs (s)."
say ""
say "| | loopback | $((2 * DELAY_MS)) ms RTT |"
say "|---|---:|---:|"
for w in "stratum+list mount" "stratum+list run" "stratum+list total" "stratum no-ahead total" \
    "skopeo+umoci pull" "skopeo+umoci run" "skopeo+umoci total"; do
    say "| $w | $(best loopback "$w") | $(best delayed "$w") |"
done
say "| **speed-up, skopeo+umoci total / stratum+list total** | **$(ratio "$(best loopback "skopeo+umoci total")" "$(best loopback "stratum+list total")")x** | **$(ratio "$(best delayed "skopeo+umoci total")" "$(best delayed "stratum+list total")")x** |"
say "| speed-up of the medians (total) | $(ratio "$(median loopback "skopeo+umoci total")" "$(median loopback "stratum+list total")")x | $(ratio "$(median delayed "skopeo+umoci total")" "$(median delayed "stratum+list total")")x |"
say "| content fetched by stratum+list (bytes) / opened | $(best loopback "stratum+list fetched") / $opened_bytes = $(ratio "$(best loopback "stratum+list fetched")" "$opened_bytes")x | $(best delayed "stratum+list fetched") / $opened_bytes = $(ratio "$(best delayed "stratum+list fetched")" "$opened_bytes")x |"
say "| \`ls; cat\` of $BATCH_DIR ($batch_files files, cold), fetching ahead | $(best loopback "batch ahead") | $(best delayed "batch ahead") |"
say "| the same, --prefetch-jobs 0 | $(best loopback "batch no-ahead") | $(best delayed "batch no-ahead") |"
say ""
say "All runs (s): $(for l in loopback delayed; do for w in "stratum+list total" "stratum no-ahead total" "skopeo+umoci total"; do printf '%s %s: %s; ' "$l" "$w" "$(all $l "$w")"; done; done)"
say ""
say "Reproduce: \`bench/prefetch.sh\` (RUNS=$RUNS DELAY_MS=$DELAY_MS)."
