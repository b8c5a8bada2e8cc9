#!/usr/bin/env bash
# The containerd remote snapshotter against containerd's overlayfs snapshotter (issue 15,
# "Benchmarks"): the wall time of pulling a python image and running
# `python3 -c 'import json'` in it, and the layer blobs the registry serves.
#
# The image (built here, there is no internet): a rootfs of Debian's python3-minimal,
# python3.11-minimal and libpython3.11-minimal files, the json package (libpython3.11-stdlib),
# the shared libraries `ldd` names and busybox-static; two layers made with umoci (base: libs
# and busybox; top: python). It is pushed with skopeo to a Debian `docker-registry` on
# 127.0.0.1 (access log on stdout), published into a stratum repository from the same OCI
# layout, and the repository is served with `stratum serve`.
#
# For each link (loopback, and a TCP proxy in front of both the registry and `stratum serve`
# that delays every forwarded chunk by $DELAY_MS ms (5) each way, pipelined so that it adds
# latency and does not cap bandwidth; `tc netem` is not available here), and each of $RUNS
# runs, three cold configurations, each with a fresh private containerd (`containerd
# --config`, temp root/state/sockets):
#   overlayfs/ctr  `ctr image pull --plain-http` + `ctr run --rm … python3 -c 'import json'`
#                  with containerd's overlayfs snapshotter (what the issue names);
#   overlayfs/cri  the same pull through containerd's CRI plugin (`PullImage`, as the
#                  kubelet pulls), then `ctr run`: the same pull path as the stratum side;
#   floor/cri      on the overlayfs/cri node afterwards, the same CRI pull + `ctr run`
#                  again, the image already there: what containerd + runc cost whatever
#                  the snapshotter (the lower bound of every configuration);
#   stratum/cri    a fresh live mount of the served repository (fresh node cache,
#                  `stratum mount URL MNT --pubkey K --refresh 60s --cache DIR`), a fresh
#                  `stratum snapshotter --root DIR --mount MNT`, CRI `PullImage` (containerd
#                  1.6's `ctr image pull` downloads every blob before it unpacks, so a
#                  remote snapshotter is only asked through the CRI unpacker), `ctr run`.
# Timed: pull + run (containerd, mount and snapshotter are started before the clock).
# Layer GETs: lines of the registry access log naming a layer digest, during pull + run.
# CRI PullImage is sent with curl (HTTP/2 prior knowledge on the unix socket, hand-encoded
# protobuf), so no CRI client needs to be installed.
#
# Prints a markdown report (also $WORK/snapshotter/results.md). Needs root, /dev/fuse,
# containerd, ctr, runc, docker-registry, skopeo, umoci, busybox-static, curl, python3.
#
# Usage:  bench/snapshotter.sh
# Environment:
#   WORK=DIR      work dir (default bench/work, gitignored): $WORK/snapshotter
#   STRATUM=PATH  stratum binary (default: `cargo build --release --bin stratum`)
#   NOBUILD=1     use target/release/stratum as is
#   RUNS=3        runs of each configuration per link (the median is reported)
#   DELAY_MS=5    per-direction delay of the delayed link (10 ms round trip)
#   PREFETCH=1    record the files `python3 -c 'import json'` opens (`stratum mount --record`)
#                 and publish them as the image's prefetch list (0: no list)
#   IMAGE=small   small: python3.11-minimal + json over its libs and busybox (≈ 10 MB);
#                 full: a Debian-sized image like the python images users pull: base layer =
#                 every file of the host's Priority: required packages (coreutils, bash, libc,
#                 apt, …) + python's libs + busybox; top layer = the whole python3.11 (the
#                 python3*, libpython3.11-* packages and /usr/lib/python3.11 with its
#                 __pycache__), ≈ 50 MB compressed, ≈ 8 000 files
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
WORK=${WORK:-$root/bench/work}
RUNS=${RUNS:-3}
DELAY_MS=${DELAY_MS:-5}
IMAGE=${IMAGE:-small}
PREFETCH=${PREFETCH:-1}
case $IMAGE in small|full) ;; *) echo "IMAGE must be small or full" >&2; exit 2 ;; esac

if [ -z "${STRATUM:-}" ]; then
    if [ -z "${NOBUILD:-}" ]; then
        (cd "$root" && cargo build --release --bin stratum >&2)
    fi
    STRATUM=$root/target/release/stratum
fi
[ "$(id -u)" = 0 ] || { echo "needs root (containerd, FUSE mounts)" >&2; exit 1; }
for t in containerd ctr runc containerd-shim-runc-v2 docker-registry skopeo umoci curl python3; do
    command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
[ -x /bin/busybox ] || { echo "missing: /bin/busybox (busybox-static)" >&2; exit 1; }

W=$WORK/snapshotter
# A previous run's leftovers (mounts first, then files).
if [ -d "$W" ]; then
    { grep -o " $W[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$W"
fi
mkdir -p "$W"
report=$W/results.md
: >"$report"
pids=()
cd_pid=
snap_pid=
mnt=

say() { echo "$*" | tee -a "$report"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

stop_node() { # containerd (its tasks first), snapshotter, mount
    if [ -n "$cd_pid" ]; then
        local ns t
        for ns in $(ctr -a "$CD_SOCK" namespaces ls -q 2>/dev/null); do
            for t in $(ctr -a "$CD_SOCK" -n "$ns" tasks ls -q 2>/dev/null); do
                ctr -a "$CD_SOCK" -n "$ns" tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1 || true
                ctr -a "$CD_SOCK" -n "$ns" tasks rm -f "$t" >/dev/null 2>&1 || true
            done
        done
        stop_pid "$cd_pid"
        cd_pid=
        umount_below "$CD_DIR"
    fi
    if [ -n "$snap_pid" ]; then stop_pid "$snap_pid"; snap_pid=; fi
    if [ -n "$mnt" ]; then
        "$STRATUM" umount "$mnt" >/dev/null 2>&1 || umount -l "$mnt" 2>/dev/null || true
        mnt=
    fi
}
cleanup() {
    set +e
    stop_node
    for p in "${pids[@]}"; do stop_pid "$p"; done
    umount_below "$W"
}
trap cleanup EXIT

# --- the image ---------------------------------------------------------------------------
log "building the image"
rootfs_files() { # the python side: package files that are files or symlinks
    if [ "$IMAGE" = full ]; then
        dpkg -L python3-minimal python3.11-minimal libpython3.11-minimal python3.11 \
            libpython3.11-stdlib python3 libpython3-stdlib 2>/dev/null || true
        find /usr/lib/python3.11 \( -type f -o -type l \)
    else
        dpkg -L python3-minimal python3.11-minimal libpython3.11-minimal
        dpkg -L libpython3.11-stdlib | grep '^/usr/lib/python3.11/json/'
    fi
}
base_files() { # the base side in IMAGE=full: every file of the required packages
    dpkg-query -W -f='${Package} ${Priority}\n' | awk '$2 == "required" { print $1 }' \
        | xargs dpkg -L 2>/dev/null | while read -r f; do
            if [ -L "$f" ] || [ -f "$f" ]; then echo "$f"; fi
        done
}
layout=$W/layout
umoci init --layout "$layout"
umoci new --image "$layout:python"
umoci config --image "$layout:python" --config.env PATH=/usr/local/bin:/usr/bin:/bin \
    --config.cmd /usr/bin/python3 --author stratum-bench
umoci unpack --image "$layout:python" "$W/bundle" >/dev/null
rfs=$W/bundle/rootfs
# Base layer: shared libraries (and the loader) of python3.11, busybox and its applets.
libs=$(ldd /usr/bin/python3.11 | grep -o '/[^ ]*' | sort -u)
mkdir -p "$rfs/usr/bin" "$rfs/usr/lib"
for d in bin sbin lib lib64; do # merged /usr, as on the host
    if [ -L "/$d" ]; then ln -sfn "$(readlink "/$d")" "$rfs/$d"; mkdir -p "$rfs/$(readlink -f "/$d")"; fi
done
put() { # FILE: copied into the rootfs under its real directory (a symlink and its target)
    local dir
    dir=$(cd "$(dirname "$1")" && pwd -P)
    mkdir -p "$rfs$dir"
    cp -a "$1" "$rfs$dir/"
    if [ -L "$1" ]; then put "$(readlink -f "$1")"; fi
}
for f in $libs; do put "$f"; done
put_all() { # files on stdin, as put does, in one process (thousands of files)
    python3 -c '
import os, shutil, sys
rfs, todo, seen = sys.argv[1], [l.rstrip("\n") for l in sys.stdin], set()
while todo:
    f = todo.pop()
    if f in seen or not os.path.lexists(f) or (os.path.isdir(f) and not os.path.islink(f)):
        continue
    seen.add(f)
    d = rfs + os.path.realpath(os.path.dirname(f))
    os.makedirs(d, exist_ok=True)
    dst = os.path.join(d, os.path.basename(f))
    if not os.path.lexists(dst):
        shutil.copy2(f, dst, follow_symlinks=False)
    if os.path.islink(f):
        todo.append(os.path.realpath(f))
' "$rfs"
}
if [ "$IMAGE" = full ]; then base_files | put_all; fi
mkdir -p "$rfs/tmp" "$rfs/etc" "$rfs/usr/bin"
cp /bin/busybox "$rfs/bin/busybox"
for a in sh ls cat env; do ln -sf busybox "$rfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rfs/etc/passwd"
echo 'root:x:0:' >"$rfs/etc/group"
umoci repack --refresh-bundle --image "$layout:python" "$W/bundle" >/dev/null
# Top layer: python.
if [ "$IMAGE" = full ]; then
    rootfs_files | sort -u | while read -r f; do
        if [ -L "$f" ] || [ -f "$f" ]; then echo "$f"; fi
    done | put_all
else
    rootfs_files | sort -u | while read -r f; do
        if [ -L "$f" ] || [ -f "$f" ]; then put "$f"; fi
    done
fi
umoci repack --image "$layout:python" "$W/bundle" >/dev/null
umoci gc --layout "$layout"
# The image's manifest and layer digests.
read -r nlayers layer_digests image_bytes < <(python3 - "$layout" <<'EOF'
import json, os, sys
l = sys.argv[1]
idx = json.load(open(os.path.join(l, "index.json")))
d = [m for m in idx["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "python"][0]
man = json.load(open(os.path.join(l, "blobs", *d["digest"].split(":"))))
ls = man["layers"]
print(len(ls), ",".join(x["digest"] for x in ls), sum(x["size"] for x in ls))
EOF
)
chroot "$rfs" /usr/bin/python3 -c 'import json' || { echo "the rootfs does not run python3 -c 'import json'" >&2; exit 1; }
[ "$nlayers" -ge 2 ] || { echo "expected 2 layers, got $nlayers" >&2; exit 1; }
rootfs_bytes=$(du -sb "$rfs" | cut -f1)
log "image: $nlayers layers, $image_bytes bytes compressed, rootfs $rootfs_bytes bytes"

# --- registry ----------------------------------------------------------------------------
reg_port=$(free_port)
start_registry "$W/registry" "$reg_port"
skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
    "oci:$layout:python" "docker://127.0.0.1:$reg_port/bench/python:1"

# --- stratum repository, served ----------------------------------------------------------
key=$W/key
"$STRATUM" keygen "$key" >/dev/null
repo=$W/repo
"$STRATUM" init "$repo" --key "$key" --name bench.snapshotter >/dev/null
"$STRATUM" publish "oci:$layout:python" --repo "$repo" --key "$key" --as bench/python:1 >/dev/null
# The prefetch list: the files `python3 -c 'import json'` opens, recorded on a mount of the
# image and published with it (what a publisher does once per image, README "publish").
prefetch_entries=0
if [ "$PREFETCH" = 1 ]; then
    rec=$W/record
    mkdir -p "$rec/mnt"
    "$STRATUM" mount "$repo" "$rec/mnt" --image bench/python:1 --record "$rec/list" \
        >"$rec/mount.log" 2>&1 &
    rec_pid=$!
    for _ in $(seq 300); do mountpoint -q "$rec/mnt" && break; sleep 0.05; done
    chroot "$rec/mnt" /usr/bin/python3 -c 'import json' >/dev/null
    "$STRATUM" umount "$rec/mnt" >/dev/null
    wait "$rec_pid" || true
    "$STRATUM" publish --repo "$repo" --key "$key" --prefetch "bench/python:1=$rec/list" >/dev/null
    prefetch_entries=$(wc -l <"$rec/list")
fi
serve_port=$(free_port)
"$STRATUM" serve "$repo" --listen "127.0.0.1:$serve_port" >"$W/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$serve_port/.stratum/manifest" -o /dev/null && break; sleep 0.1; done

# --- delaying proxies --------------------------------------------------------------------
# bench/delay-proxy.py: every byte held $DELAY_MS ms each way, pipelined (latency, not a
# bandwidth cap); the connect waits too.
delay_proxy() { # LISTEN_PORT UPSTREAM_PORT
    python3 "$here/delay-proxy.py" "$1" "127.0.0.1:$2" "$DELAY_MS" &
    pids+=($!)
}
reg_dport=$(free_port); delay_proxy "$reg_dport" "$reg_port"
serve_dport=$(free_port); delay_proxy "$serve_dport" "$serve_port"
sleep 0.5

# --- a node ------------------------------------------------------------------------------
# start_containerd DIR CRI_SNAPSHOTTER REGISTRY_HOST [SNAPSHOTTER_SOCKET]
start_containerd() {
    CD_DIR=$1
    CD_SOCK=$CD_DIR/c.sock
    mkdir -p "$CD_DIR"
    local proxy=
    [ -n "${4:-}" ] && proxy="[proxy_plugins.stratum]
  type = \"snapshot\"
  address = \"$4\""
    cat >"$CD_DIR/config.toml" <<EOF
version = 2
root = "$CD_DIR/root"
state = "$CD_DIR/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$CD_SOCK"

[ttrpc]
  address = "$CD_SOCK.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "$CD_DIR/opt"

$proxy

[plugins."io.containerd.grpc.v1.cri"]
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$2"
    disable_snapshot_annotations = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CD_DIR/opt/cni/bin"
    conf_dir = "$CD_DIR/opt/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$3"]
    endpoint = ["http://$3"]
EOF
    containerd --config "$CD_DIR/config.toml" >"$CD_DIR/containerd.log" 2>&1 &
    cd_pid=$!
    for _ in $(seq 300); do ctr -a "$CD_SOCK" version >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "containerd did not start" >&2; tail -20 "$CD_DIR/containerd.log" >&2; exit 1
}

# cri_pull IMAGE: runtime.v1.ImageService/PullImage over HTTP/2 on containerd's socket.
cri_pull() {
    local req=$CD_DIR/pull.req
    python3 - "$1" "$req" <<'EOF'
import struct, sys
def ld(tag, b):  # length-delimited field
    n, v = len(b), b""
    while True:
        v += bytes([(n & 0x7f) | (0x80 if n > 0x7f else 0)]); n >>= 7
        if not n: break
    return bytes([tag << 3 | 2]) + v + b
msg = ld(1, ld(1, sys.argv[1].encode()))
open(sys.argv[2], "wb").write(b"\0" + struct.pack(">I", len(msg)) + msg)
EOF
    curl -sS --http2-prior-knowledge --unix-socket "$CD_SOCK" --max-time 300 \
        -H 'content-type: application/grpc' -H 'te: trailers' --data-binary "@$req" \
        -D "$CD_DIR/pull.headers" -o "$CD_DIR/pull.resp" \
        http://localhost/runtime.v1.ImageService/PullImage
    if ! grep -qi '^grpc-status: 0' "$CD_DIR/pull.headers"; then
        echo "CRI PullImage $1 failed:" >&2
        cat "$CD_DIR/pull.headers" >&2
        tail -20 "$CD_DIR/containerd.log" >&2
        return 1
    fi
}

reg_mark() { wc -l <"$W/registry/access.log"; }
layer_gets() { # FROM_LINE: layer blob GETs in the access log since line FROM_LINE
    tail -n +"$(($1 + 1))" "$W/registry/access.log" | grep '"GET /v2/[^ ]*/blobs/' \
        | grep -cE "${layer_digests//,/|}" || true
}

results=$W/results.tsv
: >"$results"
# measure LINK CONFIG RUN REGISTRY_HOST SERVE_URL
measure() {
    local link=$1 conf=$2 run=$3 reghost=$4 url=$5
    local d=$W/n-$link-${conf/\//-}-$run image=$reghost/bench/python:1 ns snap m0 t0 t1 t2 out
    mkdir -p "$d"
    case $conf in
    stratum/cri)
        mnt=$d/mnt
        mkdir -p "$mnt"
        "$STRATUM" mount "$url" "$mnt" --pubkey "$key.pub" --refresh 60s --cache "$d/cache" \
            >"$d/mount.log" 2>&1 &
        for _ in $(seq 300); do mountpoint -q "$mnt" && break; sleep 0.05; done
        mountpoint -q "$mnt" || { cat "$d/mount.log" >&2; exit 1; }
        RUST_LOG=info NO_COLOR=1 "$STRATUM" snapshotter --address "$d/snap.sock" --root "$d/snap" \
            --mount "$mnt" >"$d/snap.log" 2>&1 &
        snap_pid=$!
        for _ in $(seq 300); do [ -S "$d/snap.sock" ] && break; sleep 0.05; done
        start_containerd "$d/containerd" stratum "$reghost" "$d/snap.sock"
        ns=k8s.io snap=stratum
        ;;
    overlayfs/cri) start_containerd "$d/containerd" overlayfs "$reghost"; ns=k8s.io snap=overlayfs ;;
    overlayfs/ctr) start_containerd "$d/containerd" overlayfs "$reghost"; ns=default snap=overlayfs ;;
    esac
    m0=$(reg_mark)
    t0=$(now)
    if [ "$conf" = overlayfs/ctr ]; then
        ctr -a "$CD_SOCK" -n "$ns" images pull --plain-http --snapshotter "$snap" "$image" >/dev/null
    else
        cri_pull "$image"
    fi
    t1=$(now)
    out=$(ctr -a "$CD_SOCK" -n "$ns" run --rm --snapshotter "$snap" "$image" "bench-$run" \
        python3 -c 'import json; print(json.dumps({"ok": 1}))')
    t2=$(now)
    [ "$out" = '{"ok": 1}' ] || { echo "$link $conf: unexpected output: $out" >&2; exit 1; }
    local gets
    gets=$(layer_gets "$m0")
    local fetched=-
    if [ "$conf" = stratum/cri ]; then
        fetched=$("$STRATUM" status "$mnt" --json | python3 -c \
            'import json,sys; f=json.load(sys.stdin)["fetched"]; print(f["requests"], "req /", f["bytes"], "B")' 2>/dev/null || echo "?")
    fi
    local w0 w1 w2
    if [ "$conf" = overlayfs/cri ]; then
        # The floor any snapshotter pays: the same CRI pull + run again on this node, the
        # image already pulled and unpacked (the pull resolves the manifest, nothing else).
        w0=$(now)
        cri_pull "$image"
        w1=$(now)
        out=$(ctr -a "$CD_SOCK" -n "$ns" run --rm --snapshotter "$snap" "$image" "bench-w$run" \
            python3 -c 'import json; print(json.dumps({"ok": 1}))')
        w2=$(now)
        [ "$out" = '{"ok": 1}' ] || { echo "$link warm: unexpected output: $out" >&2; exit 1; }
    fi
    stop_node
    if [ "$conf" = overlayfs/cri ]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$link" "floor/cri" "$run" \
            "$(python3 -c "print(f'{$w1 - $w0:.3f}')")" "$(python3 -c "print(f'{$w2 - $w1:.3f}')")" \
            "$(python3 -c "print(f'{$w2 - $w0:.3f}')")" 0 - >>"$results"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$link" "$conf" "$run" \
        "$(python3 -c "print(f'{$t1 - $t0:.3f}')")" "$(python3 -c "print(f'{$t2 - $t1:.3f}')")" \
        "$(python3 -c "print(f'{$t2 - $t0:.3f}')")" "$gets" "$fetched" >>"$results"
    log "$link $conf run $run: pull $(python3 -c "print(f'{$t1 - $t0:.3f}')") s, total $(python3 -c "print(f'{$t2 - $t0:.3f}')") s, layer GETs $gets, stratum fetched $fetched"
}

load_before=$(load)
started=$(date -u +%Y-%m-%dT%H:%MZ)
for run in $(seq 1 "$RUNS"); do
    for conf in overlayfs/ctr overlayfs/cri stratum/cri; do
        measure loopback "$conf" "$run" "127.0.0.1:$reg_port" "http://127.0.0.1:$serve_port"
        measure delay "$conf" "$run" "127.0.0.1:$reg_dport" "http://127.0.0.1:$serve_dport"
    done
done
load_after=$(load)

# --- report ------------------------------------------------------------------------------
python3 - "$results" "$RUNS" "$DELAY_MS" <<'EOF' >"$W/table.md"
import statistics as st, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
runs, delay = int(sys.argv[2]), sys.argv[3]
names = {"loopback": "loopback", "delay": f"+{delay} ms each way ({2 * int(delay)} ms RTT)"}
print("| link | configuration | pull s (median) | run s (median) | pull + run s (median) | pull + run s (each run) | layer blob GETs (each run) | stratum fetched (each run) |")
print("|---|---|---|---|---|---|---|---|")
med = {}
for link in ["loopback", "delay"]:
    for conf in ["overlayfs/ctr", "overlayfs/cri", "stratum/cri", "floor/cri"]:
        r = [x for x in rows if x[0] == link and x[1] == conf]
        if not r:
            continue
        p = st.median(float(x[3]) for x in r); u = st.median(float(x[4]) for x in r); t = st.median(float(x[5]) for x in r)
        med[link, conf] = t
        print(f"| {names[link]} | {conf} | {p:.2f} | {u:.2f} | **{t:.2f}** | {', '.join(x[5] for x in r)} | {', '.join(x[6] for x in r)} | {', '.join(x[7] for x in r)} |")
print()
for link, target in [("loopback", 5), ("delay", 10)]:
    s = med.get((link, "stratum/cri"))
    for base in ["overlayfs/ctr", "overlayfs/cri"]:
        o = med.get((link, base))
        if s and o:
            x = o / s
            print(f"- {names[link]}: {base} / stratum = **{x:.2f}x** (target >= {target}x: {'met' if x >= target else 'NOT met'})")
    f = med.get((link, "floor/cri"))
    o = med.get((link, "overlayfs/cri"))
    if f and o:
        print(f"- {names[link]}: floor (CRI pull + run with the image already unpacked) = **{f:.2f} s**; a {target}x ratio against overlayfs/cri needs <= {o / target:.2f} s")
EOF

say "## Containerd remote snapshotter (bench/snapshotter.sh, $started)"
say ""
files=$(find "$rfs" | wc -l)
if [ "$IMAGE" = full ]; then
    what="base: the required Debian packages + libs + busybox; top: the whole python3.11"
else
    what="base: libs + busybox; top: python3.11-minimal + json"
fi
say "Image bench/python:1 (IMAGE=$IMAGE): $nlayers layers ($what), $image_bytes bytes compressed, rootfs $rootfs_bytes bytes, $files files. Prefetch list: $prefetch_entries files (PREFETCH=$PREFETCH). $RUNS cold runs of each configuration per link."
say ""
cat "$W/table.md" | tee -a "$report"
say ""
say "machine: $(nproc) CPUs, load before $load_before, after $load_after"
