#!/usr/bin/env bash
# stratum mount / start-up benchmark (issue 3, "Performance").
#
# One image, one run, over loopback (and again through a link shaped to $RATE with tc,
# when tc works here). Measures:
#   1. cold start: `stratum mount` (fresh cache) + `chroot MNT /bin/busybox sh -c CMD`,
#      timed from the start of the mount to the exit of CMD; versus the alternative:
#      `skopeo copy` from a local docker-registry + `umoci unpack` + the same CMD.
#      Also (informative) `stratum pull` of the whole image (fresh cache) + CMD, and the
#      stratum cold start with the same repository served by nginx instead of `stratum serve`.
#   2. bytes and requests stratum fetched for that cold start (serve access log; decoded
#      bytes in the cache) versus the summed size of the regular files CMD opened or
#      executed (strace -f -e trace=chroot,openat,execve on a warm mount).
#   3. warm metadata walk (`find MNT -ls`) and warm sequential read of a large file
#      (`cat BIG`), stratum versus squashfuse (and squashfuse_ll) of a squashfs of the same
#      unpacked tree. "Warm" = a fresh mount (empty kernel page cache for it) whose
#      backing data is local and in the host page cache (stratum: the node cache filled
#      by an earlier read; squashfs: the image file read once). "Hot" = the same command
#      again in the same mount (kernel page/dentry cache).
# Prints a markdown report (also written to $WORK/mount-$SCALE/results.md).
#
# The image: the "python" image of bench/publish.sh ($WORK/$SCALE/layouts/python, built by
# it; if absent, a python3.11 stdlib layer is built here instead) plus one layer with what
# CMD needs to run (found with strace of CMD on this host: python3.11, its libraries and
# modules, the dynamic loader, the /bin /lib /lib64 /sbin symlinks, a static busybox) and a
# large file /opt/bench/big.bin (concatenated /usr/lib files, $BIG_MB MiB).
#
# Usage:  bench/mount.sh                  # SCALE=full
#         SCALE=small bench/mount.sh      # smoke run
# Environment:
#   SCALE=small|full  image size (full: publish.sh's python image + 160 MiB big file)
#   WORK=DIR          work dir (default bench/work, gitignored): $WORK/mount-$SCALE
#   STRATUM=PATH      stratum binary (default: `cargo build --release`, target/release/stratum;
#                     copied to $WORK/bin/stratum-mount first)
#   NOBUILD=1         use target/release/stratum as is
#   RUNS=N            repetitions of each timed measurement, the fastest is reported
#                     (default 3; all values are listed)
#   CMD='...'         the command run in the image (busybox sh -c), default
#                     python3 -c 'import json, http.client, email.parser'
#   SHAPE=0           skip the shaped-link runs;  RATE=100mbit  their rate
#   BIG_MB=N          size of the large file (default 160 full, 24 small)
#   FORCE=1           run SCALE=full even while bench/publish.sh runs
#   REBUILD=1         rebuild the image;  KEEP=1 keep the scratch dirs
#
# Needs root (chroot, FUSE, tc) and the Debian packages skopeo umoci docker-registry
# squashfuse squashfs-tools strace iproute2 busybox-static fuse3 jq curl (installed with
# apt-get when missing; nginx is used when present). Shaping: an `htb` root qdisc on lo with
# one class at $RATE that gets only the packets sent from the ports of `stratum serve` and
# the registry (u32 filters), so the rest of the machine's loopback traffic is not slowed
# (unclassified packets bypass htb); removed on exit. (`netem rate`, the obvious tool, needs
# CONFIG_NET_SCH_NETEM, which some kernels lack; htb only limits the rate, adds no delay.)
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
SCALE=${SCALE:-full}
WORK=${WORK:-$root/bench/work}
RUNS=${RUNS:-3}
SHAPE=${SHAPE:-1}
RATE=${RATE:-100mbit}
default_cmd="python3 -c 'import json, http.client, email.parser'"
CMD=${CMD:-$default_cmd}
case $SCALE in
    full) BIG_MB=${BIG_MB:-160} ;;
    small) BIG_MB=${BIG_MB:-24} ;;
    *) echo "SCALE must be small or full, not '$SCALE'" >&2; exit 2 ;;
esac
say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "needs root (chroot, FUSE mounts, tc)"
if [[ $SCALE == full && -z ${FORCE:-} ]] && pgrep -f 'bench/publish\.sh' >/dev/null; then
    die "bench/publish.sh is running (pgrep -f bench/publish.sh); wait for it, or FORCE=1, or SCALE=small"
fi

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
base=$WORK/mount-$SCALE
run=$base/run
log=$base/log
mkdir -p "$base"

# ---------------------------------------------------------------------------------------
# Tools
mapfile -t need_pkgs < <(missing_debs skopeo:skopeo umoci:umoci docker-registry:docker-registry squashfuse:squashfuse \
    mksquashfs:squashfs-tools strace:strace tc:iproute2 ss:iproute2 jq:jq curl:curl \
    fusermount3:fuse3)
busybox=""
for b in /usr/bin/busybox /bin/busybox; do
    if [[ -x $b ]] && file -L "$b" 2>/dev/null | grep -q 'statically linked'; then busybox=$b; break; fi
done
[[ -n $busybox ]] || need_pkgs+=(busybox-static)
command -v file >/dev/null || need_pkgs+=(file)
if ((${#need_pkgs[@]})); then
    install_debs "${need_pkgs[@]}"
    for b in /usr/bin/busybox /bin/busybox; do
        if [[ -x $b ]] && file -L "$b" | grep -q 'statically linked'; then busybox=$b; break; fi
    done
fi
[[ -n $busybox ]] || die "no static busybox (apt-get install busybox-static)"
[[ -x /usr/bin/python3.11 ]] || die "the default CMD needs /usr/bin/python3.11 on this host (or set CMD)"

stratum_under_test stratum-mount

# ---------------------------------------------------------------------------------------
# Cleanup: every mount under $base, every process we started, the qdisc we added.
pids=()
tc_added=""
cleanup() {
    local rc=$? mp
    set +e
    while read -r mp; do
        umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null
    done < <(awk -v b="$base/" 'index($5, b) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null
    done
    if [[ -n $tc_added ]]; then
        tc qdisc del dev lo root 2>/dev/null && say "removed the qdisc on lo"
    fi
    if [[ -z ${KEEP:-} ]]; then
        rm -rf "$run" 2>/dev/null
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------
# The image
src_layout=$WORK/$SCALE/layouts/python
img=$base/image
big_rel=opt/bench/big.bin
src_id="none"
[[ -f $WORK/$SCALE/layouts/.complete && -f $src_layout/index.json ]] && src_id=$(sha256sum "$src_layout/index.json" | cut -c1-16)
spec="v1 src=$src_id big=$BIG_MB cmd=$CMD"

# closure PATH: PATH (relative to /, parent dirs resolved) and, while it is a symlink,
# its targets. Prints nothing for a missing path.
closure() {
    local p=$1 d b t n=0
    while ((n++ < 16)); do
        d=$(readlink -f -- "$(dirname -- "$p")" 2>/dev/null) || return 0
        b=$(basename -- "$p")
        [[ -e $d/$b || -L $d/$b ]] || return 0
        [[ -d $d/$b && ! -L $d/$b ]] && return 0
        t=${d#/}
        printf '%s\n' "${t:+$t/}$b"
        [[ -L $d/$b ]] || return 0
        t=$(readlink -- "$d/$b")
        [[ $t == /* ]] || t=$d/$t
        p=$t
    done
}

build_image() {
    say "building the $SCALE image in $img (once; REBUILD=1 rebuilds)"
    local b=$base/bundle r=$base/bundle/rootfs
    rm -rf "$img" "$b" "$base/need"
    if [[ $src_id != none ]]; then
        say "base: $src_layout (bench/publish.sh's python image)"
        cp -a "$src_layout" "$img"
    else
        say "no $src_layout (run bench/publish.sh to get its image set); building a stdlib layer"
        umoci init --layout "$img" >&2
        umoci new --image "$img:1" >&2
        umoci unpack --image "$img:1" "$b" >&2
        (cd / && find etc usr/lib/python3.11 usr/share/zoneinfo -xdev \( -type f -o -type l \) 2>/dev/null) | sort >"$base/need.base"
        tar -C / -cf - --no-recursion --verbatim-files-from -T "$base/need.base" | tar -C "$r" -xpf -
        umoci repack --refresh-bundle --image "$img:1" "$b" >&2
        rm -rf "$b"
    fi
    # What CMD touches on this host: every path of a file syscall, and its symlink chain.
    strace -f -qq -s 4096 -e trace=%file -o "$base/host.strace" \
        env -i PATH=/usr/bin:/bin HOME=/root "$busybox" sh -c "$CMD" >/dev/null ||
        die "CMD fails on this host: $CMD"
    {
        {
            printf '/%s\n' bin lib lib64 sbin usr/lib64/ld-linux-x86-64.so.2 "${busybox#/}" usr/bin/python3
            grep -o '"/[^"]*"' "$base/host.strace" | tr -d '"' | sort -u
        } |
            grep -Ev '^/(proc|sys|dev|tmp|run|root|home|work|var/tmp)(/|$)' |
            while read -r p; do closure "$p"; done
    } | awk 'NF && !seen[$0]++' | while read -r p; do
        # keep only top-level symlinks and paths under usr/ etc/ (what the image needs)
        if [[ -L /$p || $p == usr/* || $p == etc/* ]]; then [[ -e /$p || -L /$p ]] && printf '%s\n' "$p" || true; fi
    done | sort -u >"$base/need"
    umoci unpack --image "$img:1" "$b" >&2
    tar -C / -cf - --no-recursion --verbatim-files-from -T "$base/need" | tar -C "$r" -xpf -
    mkdir -p "$r/$(dirname "$big_rel")"
    (cd / && find usr/lib -xdev -type f -size +64k -print0 | sort -z | xargs -0 cat 2>/dev/null) |
        head -c $((BIG_MB * 1024 * 1024)) >"$r/$big_rel" || true
    [[ $(stat -c %s "$r/$big_rel") -eq $((BIG_MB * 1024 * 1024)) ]] || die "could not build a $BIG_MB MiB file from /usr/lib"
    chmod 0644 "$r/$big_rel"
    umoci repack --refresh-bundle --image "$img:1" "$b" >&2
    rm -rf "$b"
    umoci gc --layout "$img" >&2
    printf '%s\n' "$spec" >"$img/.complete"
}
if [[ -n ${REBUILD:-} || ! -f $img/.complete || $(cat "$img/.complete") != "$spec" ]]; then
    build_image
else
    say "reusing the image in $img"
fi
mdigest=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "1") | .digest' "$img/index.json")
mblob=$img/blobs/sha256/${mdigest#sha256:}
img_layers=$(jq '.layers | length' "$mblob")
img_blob_bytes=$(jq '[.layers[].size] | add' "$mblob")

# ---------------------------------------------------------------------------------------
# Helpers
rm -rf "$run"
mkdir -p "$run" "$log"
: >"$log/times.tsv"
: >"$log/commands"
: >"$log/mount.log"
logcmd() {
    local c=$1
    c=${c//"$S"/stratum}
    c=${c//"$run"/\$R}
    c=${c//"$img"/\$IMG}
    grep -qxF -- "$c" "$log/commands" || printf '%s\n' "$c" >>"$log/commands"
}
now() { printf '%s\n' "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# rec LABEL SECONDS [NOTE]: record a timing with the 1-min load average
rec() {
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$(load1)" "${3:-}" "$(pgrep -fc 'bench/publish\.sh' || true)" >>"$log/times.tsv"
    say "$(printf '%-34s %8.3f s  load %s  %s' "$1" "$2" "$(load1)" "${3:-}")"
}
t_of() { awk -F '\t' -v l="$1" '$1 == l { print $2 }' "$log/times.tsv" | tail -n1; }
# best PREFIX: the smallest time among labels PREFIX#1..N;  all_of PREFIX: all of them
best() { awk -F '\t' -v p="$1#" 'index($1, p) == 1 && (b == "" || $2 + 0 < b + 0) { b = $2 } END { print b }' "$log/times.tsv"; }
best_label() { awk -F '\t' -v p="$1#" 'index($1, p) == 1 && (b == "" || $2 + 0 < b + 0) { b = $2; l = $1 } END { print l }' "$log/times.tsv"; }
all_of() { awk -F '\t' -v p="$1#" 'index($1, p) == 1 { printf "%s%.2f", s, $2; s = ", " } END { print "" }' "$log/times.tsv"; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }
thr() { awk -v b="$1" -v t="$2" 'BEGIN { if (t == 0) print "n/a"; else printf "%.0f", b / 1e6 / t }'; }

free_port() {
    local p
    for p in $(shuf -i 20000-60000 -n 50); do
        [[ -z $(ss -Hltn "sport = :$p") ]] && { echo "$p"; return; }
    done
    die "no free port"
}
is_mounted() { # MOUNTPOINT (builtins only: cheap enough to poll)
    local _a _b _c _d mp _rest
    while read -r _a _b _c _d mp _rest; do
        [[ $mp == "$1" ]] && return 0
    done </proc/self/mountinfo
    return 1
}
wait_mounted() { # MOUNTPOINT PID LOG
    local n=0
    until is_mounted "$1"; do
        kill -0 "$2" 2>/dev/null || { cat "$3" >&2; die "the mount process for $1 exited"; }
        ((n++ < 60000)) || die "$1: not mounted after 60 s"
        sleep 0.001
    done
}
unmount() { # MOUNTPOINT [PID]
    if is_mounted "$1"; then
        umount "$1" 2>/dev/null || fusermount3 -u "$1" 2>/dev/null || umount -l "$1"
    fi
    if [[ -n ${2:-} ]]; then wait "$2" 2>/dev/null || true; fi
}
# in_image ROOT: run CMD in ROOT as the benchmark does
in_image() { env -i PATH=/usr/bin:/bin HOME=/root /usr/sbin/chroot "$1" /bin/busybox sh -c "$CMD"; }
CHROOT_SHOWN="env -i PATH=/usr/bin:/bin HOME=/root chroot ROOT /bin/busybox sh -c \"$CMD\""

mount_pid=""
# smount CACHE: mount the image at $run/mnt in the background; sets mount_pid
smount() { # CACHE [URL]
    mkdir -p "$run/mnt"
    "$S" mount "${2:-$url}" "$run/mnt" --pubkey "$run/repo/.stratum/public.pem" --cache "$1" --image "$name" \
        >>"$log/mount.log" 2>&1 &
    mount_pid=$!
    pids+=("$mount_pid")
    logcmd "$S mount URL $run/mnt --pubkey $run/repo/.stratum/public.pem --cache CACHE --image $name"
}
sumount() { unmount "$run/mnt" "$mount_pid"; }
sqmount() { # BINARY: squashfuse the image at $run/sqmnt
    mkdir -p "$run/sqmnt"
    "$1" "$run/sqfs.img" "$run/sqmnt"
    logcmd "$(basename "$1") \$R/sqfs.img \$R/sqmnt"
    wait_mounted "$run/sqmnt" $$ /dev/null
}
squmount() { unmount "$run/sqmnt"; }

# access log lines since line N of the serve log: "requests bytes catalog_requests catalog_bytes"
access_since() {
    sed -n "$(($1 + 1)),\$p" "$run/serve.log" | sed 's/\x1b\[[0-9;]*m//g' | awk '
        !/stratum::serve::access/ { next }
        { b = 0; p = ""
          for (i = 1; i <= NF; i++) { if ($i ~ /^bytes=/) b = substr($i, 7); if ($i ~ /^path=/) p = substr($i, 6) }
          n++; s += b; if (p ~ /C$/) { cn++; cs += b } else if (p ~ /manifest/) { mn++; ms += b } }
        END { printf "%d %d %d %d %d %d\n", n, s, cn, cs, mn, ms }'
}
serve_lines() { wc -l <"$run/serve.log"; }

# ---------------------------------------------------------------------------------------
# Machine, repository, servers
cpu_model=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
mem_total=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
fs=$(df -T "$WORK" | awk 'NR == 2 { print $2 " on " $1 }')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
uptime_before=$(uptime)
others_before=$(pgrep -fc 'bench/publish\.sh' || true)

say "stratum $stratum_rev (binary $stratum_sha), SCALE=$SCALE, image: $img_layers layers, $(mb "$img_blob_bytes") MB of gzip blobs"
"$S" keygen "$run/key" >/dev/null
"$S" init "$run/repo" --key "$run/key" --name bench >/dev/null
"$S" publish "oci:$img:1" --repo "$run/repo" --key "$run/key" --json >"$log/publish.json"
logcmd "$S keygen $run/key; $S init $run/repo --key $run/key --name bench; $S publish oci:$img:1 --repo $run/repo --key $run/key"
name=$(jq -r '.[0].name' "$log/publish.json")
repo_bytes=$(du -sb "$run/repo" | cut -f1)

# unpacked tree facts (from the image itself, through umoci, not timed)
umoci unpack --image "$img:1" "$run/ref" >/dev/null
tree_bytes=$(find "$run/ref/rootfs" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s }')
tree_entries=$(find "$run/ref/rootfs" | wc -l)
big_bytes=$(stat -c %s "$run/ref/rootfs/$big_rel")

sport=$(free_port)
RUST_LOG=stratum::serve=info "$S" serve "$run/repo" --listen "127.0.0.1:$sport" >"$run/serve.out" 2>"$run/serve.log" &
pids+=($!)
logcmd "RUST_LOG=stratum::serve=info $S serve $run/repo --listen 127.0.0.1:PORT"
for _ in $(seq 1 200); do grep -q 'listening on' "$run/serve.out" "$run/serve.log" 2>/dev/null && break; sleep 0.05; done
url=$(grep -ho 'http://[0-9.:]*' "$run/serve.out" "$run/serve.log" | head -n1)
[[ -n $url ]] || { cat "$run/serve.log" >&2; die "stratum serve did not start"; }

rport=$(free_port)
mkdir -p "$run/registry"
cat >"$run/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $run/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$rport
EOF
docker-registry serve "$run/registry.yml" >"$run/registry.log" 2>&1 &
pids+=($!)
logcmd "docker-registry serve \$R/registry.yml   # filesystem storage in \$R/registry, http.addr 127.0.0.1:PORT"
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$rport/v2/" >/dev/null && break; sleep 0.05; done
curl -sf "http://127.0.0.1:$rport/v2/" >/dev/null || { cat "$run/registry.log" >&2; die "docker-registry did not start"; }
ref=docker://127.0.0.1:$rport/bench/python:1
skopeo copy -q --dest-tls-verify=false "oci:$img:1" "$ref" >&2
logcmd "skopeo copy --dest-tls-verify=false oci:\$IMG:1 docker://127.0.0.1:PORT/bench/python:1   # not timed"

# nginx serving the same repository directory (informative: another HTTP server)
nurl=""
if command -v nginx >/dev/null; then
    nport=$(free_port)
    mkdir -p "$run/nginx/tmp"
    cat >"$run/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $run/nginx/nginx.pid;
error_log $run/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $run/nginx/tmp;
    proxy_temp_path $run/nginx/tmp;
    fastcgi_temp_path $run/nginx/tmp;
    uwsgi_temp_path $run/nginx/tmp;
    scgi_temp_path $run/nginx/tmp;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 100000;
    keepalive_timeout 300s;
    types { }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$nport;
        root $run/repo;
    }
}
EOF
    nginx -e "$run/nginx/error.log" -p "$run/nginx/" -c "$run/nginx/nginx.conf" >"$run/nginx/out.log" 2>&1 &
    pids+=($!)
    logcmd "nginx -c \$R/nginx/nginx.conf   # root \$R/repo, listen 127.0.0.1:PORT, sendfile, tcp_nodelay on (nginx's default), keepalive"
    for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$nport/.stratum/manifest" >/dev/null && break; sleep 0.05; done
    if curl -sf "http://127.0.0.1:$nport/.stratum/manifest" >/dev/null; then
        nurl=http://127.0.0.1:$nport
    else
        say "nginx did not start ($(tail -n2 "$run/nginx/error.log" 2>/dev/null | tr '\n' ' ')); skipping its runs"
    fi
fi

# warm the server side: the repository and the registry's blobs are read once
find "$run/repo" "$run/registry" -type f -exec cat {} + >/dev/null

# ---------------------------------------------------------------------------------------
# 1. cold start
cold_stratum() { # LABEL [URL]: fresh cache, mount, CMD
    local label=$1 u=${2:-$url} cache=$run/cache.$RANDOM t0 t1 t2 n0 acc
    [[ -n ${last_cache:-} ]] && rm -rf "$last_cache"
    rm -rf "$cache"
    sync
    n0=$(serve_lines)
    t0=$(now)
    smount "$cache" "$u"
    wait_mounted "$run/mnt" "$mount_pid" "$log/mount.log"
    t1=$(now)
    in_image "$run/mnt" >"$log/cmd.out" 2>&1 || { cat "$log/cmd.out" >&2; die "CMD failed in the stratum mount"; }
    t2=$(now)
    logcmd "$CHROOT_SHOWN   # ROOT = the stratum mount"
    sumount
    sleep 0.2
    acc=$(access_since "$n0")
    [[ $u == "$url" ]] || acc="- (not stratum serve)"
    rec "$label" "$(elapsed "$t0" "$t2")" "mount $(elapsed "$t0" "$t1") s + cmd $(elapsed "$t1" "$t2") s; access: $acc"
    printf '%s\t%s\n' "$label" "$acc" >>"$log/access.tsv"
    printf '%s\t%s\t%s\n' "$label" "$(du -sb "$cache/objects" 2>/dev/null | cut -f1)" "$(du -sb "$cache/catalogs" 2>/dev/null | cut -f1)" >>"$log/cache.tsv"
    last_cache=$cache
}
cold_alt() { # LABEL: skopeo copy + umoci unpack + CMD
    local label=$1 d=$run/alt t0 t1 t2 t3
    rm -rf "$d"
    mkdir -p "$d"
    sync
    t0=$(now)
    skopeo copy -q --src-tls-verify=false "$ref" "oci:$d/layout:1" >&2
    t1=$(now)
    umoci unpack --image "$d/layout:1" "$d/bundle" >/dev/null
    t2=$(now)
    in_image "$d/bundle/rootfs" >"$log/cmd.out" 2>&1 || { cat "$log/cmd.out" >&2; die "CMD failed in the unpacked image"; }
    t3=$(now)
    logcmd "skopeo copy --src-tls-verify=false docker://127.0.0.1:PORT/bench/python:1 oci:\$R/alt/layout:1"
    logcmd "umoci unpack --image \$R/alt/layout:1 \$R/alt/bundle"
    logcmd "$CHROOT_SHOWN   # ROOT = \$R/alt/bundle/rootfs"
    rec "$label" "$(elapsed "$t0" "$t3")" "copy $(elapsed "$t0" "$t1") s + unpack $(elapsed "$t1" "$t2") s + cmd $(elapsed "$t2" "$t3") s"
}
pull_stratum() { # LABEL: stratum pull (eager, fresh cache) + CMD
    local label=$1 d=$run/pull t0 t1 t2
    rm -rf "$d" "$run/cache.pull"
    sync
    t0=$(now)
    "$S" pull "$url" --pubkey "$run/repo/.stratum/public.pem" --image "$name" "$d" --cache "$run/cache.pull" --json >"$log/pull.json" 2>/dev/null
    t1=$(now)
    in_image "$d" >"$log/cmd.out" 2>&1 || { cat "$log/cmd.out" >&2; die "CMD failed in the pulled tree"; }
    t2=$(now)
    logcmd "$S pull URL --pubkey $run/repo/.stratum/public.pem --image $name \$R/pull --cache \$R/cache.pull --json"
    rec "$label" "$(elapsed "$t0" "$t2")" "pull $(elapsed "$t0" "$t1") s + cmd $(elapsed "$t1" "$t2") s"
    rm -rf "$d" "$run/cache.pull"
}

: >"$log/access.tsv"
: >"$log/cache.tsv"
say "1. cold start over loopback ($RUNS runs each, interleaved)"
for i in $(seq 1 "$RUNS"); do
    cold_stratum "cold-stratum#$i"
    cold_alt "cold-alt#$i"
    [[ -z $nurl ]] || cold_stratum "nginx-stratum#$i" "$nurl"
done

# The same through a shaped link
shaped=""
shape_note="not run (SHAPE=0)"
if [[ $SHAPE != 0 ]]; then
    if [[ $(tc qdisc show dev lo 2>/dev/null | head -n1) != "qdisc noqueue 0: root"* ]]; then
        shape_note="not run: lo already has a qdisc ($(tc qdisc show dev lo | head -n1)), left alone"
    elif tc qdisc add dev lo root handle 1: htb r2q 100 2>"$log/tc.err"; then
        tc_added=1
        if tc class add dev lo parent 1: classid 1:20 htb rate "$RATE" ceil "$RATE" burst 256k cburst 256k 2>>"$log/tc.err" &&
            tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport "${url##*:}" 0xffff flowid 1:20 2>>"$log/tc.err" &&
            tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport "$rport" 0xffff flowid 1:20 2>>"$log/tc.err"; then
            shaped=1
            shape_note="htb rate $RATE (no added latency) on the packets sent by the stratum server and the registry; other loopback traffic unshaped"
            logcmd "tc qdisc add dev lo root handle 1: htb r2q 100; tc class add dev lo parent 1: classid 1:20 htb rate $RATE ceil $RATE burst 256k cburst 256k; tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport SERVER_PORT 0xffff flowid 1:20   # for each of the two servers"
        else
            shape_note="not run: tc failed: $(tr '\n' ' ' <"$log/tc.err")"
        fi
    else
        shape_note="not run: tc failed: $(tr '\n' ' ' <"$log/tc.err")"
    fi
fi
if [[ -n $shaped ]]; then
    say "1b. cold start through $RATE ($RUNS runs each)"
    for i in $(seq 1 "$RUNS"); do
        cold_stratum "shaped-stratum#$i"
        cold_alt "shaped-alt#$i"
    done
    tc qdisc del dev lo root
    tc_added=""
fi

# ---------------------------------------------------------------------------------------
# 2. what CMD opened (strace on a warm mount, the cache of the last cold run)
say "2. files opened by CMD (strace, warm mount)"
smount "$last_cache"
wait_mounted "$run/mnt" "$mount_pid" "$log/mount.log"
env -i PATH=/usr/bin:/bin HOME=/root strace -f -qq -s 4096 -e trace=chroot,openat,execve -o "$log/cmd.strace" \
    /usr/sbin/chroot "$run/mnt" /bin/busybox sh -c "$CMD" >/dev/null 2>&1
logcmd "strace -f -e trace=chroot,openat,execve -o \$LOG/cmd.strace $CHROOT_SHOWN   # warm mount; events before chroot() are the host's"
# paths after the chroot() call, resolved and stat'ed inside the image; unique inodes
awk 'seen { print } / chroot\(/ { seen = 1 }' "$log/cmd.strace" | grep -E 'openat\(|execve\(' |
    sed -n 's/^[^"]*"\([^"]*\)".*/\1/p' | sort -u >"$log/cmd.paths"
xargs -a "$log/cmd.paths" -d '\n' /usr/sbin/chroot "$run/mnt" /bin/busybox stat -L -c '%i	%s	%F	%n' 2>/dev/null |
    awk -F '\t' '$3 == "regular file" && !seen[$1]++' >"$log/cmd.files" || true
sumount
opened_files=$(wc -l <"$log/cmd.files")
opened_bytes=$(awk -F '\t' '{ s += $2 } END { printf "%d", s }' "$log/cmd.files")
opened_top=$(sort -t $'\t' -k2,2nr "$log/cmd.files" | head -n5 | awk -F '\t' '{ printf "%s%s %.1f MB", s, $4, $2 / 1e6; s = ", " }')

# ---------------------------------------------------------------------------------------
# 3. warm metadata walk and sequential read: stratum vs squashfuse
say "3. warm find -ls and sequential read vs squashfuse"
mksquashfs "$run/ref/rootfs" "$run/sqfs.img" -comp zstd -noappend -no-progress -quiet >/dev/null
logcmd "mksquashfs \$R/ref/rootfs \$R/sqfs.img -comp zstd -noappend   # \$R/ref = umoci unpack of the same image"
sqfs_bytes=$(stat -c %s "$run/sqfs.img")
cat "$run/sqfs.img" >/dev/null
sq_bins=(squashfuse)
command -v squashfuse_ll >/dev/null && sq_bins+=(squashfuse_ll)

# fill the stratum cache: a first walk and a first read in one mount (timed: over loopback)
wcache=$run/cache.warm
rm -rf "$wcache"
smount "$wcache"
wait_mounted "$run/mnt" "$mount_pid" "$log/mount.log"
t0=$(now); find "$run/mnt" -ls >/dev/null; t1=$(now)
rec "first-find-stratum" "$(elapsed "$t0" "$t1")" "fresh cache, over loopback"
t0=$(now); cat "$run/mnt/$big_rel" >/dev/null; t1=$(now)
rec "first-read-stratum" "$(elapsed "$t0" "$t1")" "fresh cache, over loopback"
sumount
logcmd "find MNT -ls >/dev/null"
logcmd "cat MNT/$big_rel >/dev/null"

timed_in_mount() { # LABEL KIND(find|read) MNT: the timed command, then the same again (hot)
    local t0 t1
    if [[ $2 == find ]]; then
        t0=$(now); find "$3" -ls >/dev/null; t1=$(now)
        rec "$1" "$(elapsed "$t0" "$t1")"
        t0=$(now); find "$3" -ls >/dev/null; t1=$(now)
        rec "hot-${1%%#*}#${1##*#}" "$(elapsed "$t0" "$t1")"
    else
        t0=$(now); cat "$3/$big_rel" >/dev/null; t1=$(now)
        rec "$1" "$(elapsed "$t0" "$t1")"
        t0=$(now); cat "$3/$big_rel" >/dev/null; t1=$(now)
        rec "hot-${1%%#*}#${1##*#}" "$(elapsed "$t0" "$t1")"
    fi
}
for i in $(seq 1 "$RUNS"); do
    for kind in find read; do
        smount "$wcache"
        wait_mounted "$run/mnt" "$mount_pid" "$log/mount.log"
        timed_in_mount "$kind-stratum#$i" "$kind" "$run/mnt"
        sumount
        for sq in "${sq_bins[@]}"; do
            sqmount "$sq"
            timed_in_mount "$kind-$sq#$i" "$kind" "$run/sqmnt"
            squmount
        done
    done
done
smount "$wcache"
wait_mounted "$run/mnt" "$mount_pid" "$log/mount.log"
stratum_entries=$(find "$run/mnt" | wc -l)
sumount

# 4. (informative, last because it is slow) eager pull of the whole image + CMD
say "4. stratum pull of the whole image"
pull_stratum "pull-stratum"

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
uptime_after=$(uptime)
others_after=$(pgrep -fc 'bench/publish\.sh' || true)

# ---------------------------------------------------------------------------------------
# Report
read -r acc_n acc_b acc_cn acc_cb acc_mn acc_mb < <(awk -F '\t' -v l="$(best_label cold-stratum)" '$1 == l { print $2 }' "$log/access.tsv")
read -r dec_obj dec_cat < <(awk -F '\t' -v l="$(best_label cold-stratum)" '$1 == l { print $2 + 0, $3 + 0 }' "$log/cache.tsv")
acc_all=$(awk -F '\t' '$1 ~ /^cold-stratum/ { split($2, a, " "); printf "%s%d req / %.2f MB", s, a[1], a[2] / 1e6; s = "; " }' "$log/access.tsv")
cs=$(best cold-stratum); ca=$(best cold-alt)
speedup=$(ratio "$ca" "$cs")
bytes_ratio=$(ratio "$acc_b" "$opened_bytes")
dec_ratio=$(ratio "$((dec_obj + dec_cat))" "$opened_bytes")
note_of() { awk -F '\t' -v l="$1" '$1 == l { print $4 }' "$log/times.tsv" | tail -n1; }
load_of() { awk -F '\t' -v l="$1" '$1 == l { print $3 }' "$log/times.tsv" | tail -n1; }
yes_no() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == "<=") ? (v <= t) : (v >= t); print ok ? "**yes**" : "**no**" }'; }

report=$base/results.md
{
    echo "### stratum mount benchmark, SCALE=$SCALE ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "Machine: $(nproc) CPUs ($cpu_model), $mem_total RAM, Linux $(uname -r), work dir on $fs."
    echo "stratum $stratum_rev$( ((stratum_dirty)) && echo " + $stratum_dirty modified files") (release build, binary sha256 $stratum_sha…);"
    echo "$(skopeo --version), $(docker-registry --version | awk '{ print "docker-registry " $3 }'), $(umoci --version), squashfuse $(dpkg-query -W -f '${Version}' squashfuse 2>/dev/null), $(mksquashfs -version 2>/dev/null | head -n1 | cut -d' ' -f1-3), strace $(strace -V | head -n1 | awk '{ print $NF }')."
    echo "Load average (1/5/15 min) before: $load_before, after: $load_after; bench/publish.sh processes running before/after: $others_before/$others_after; timed steps that ended while bench/publish.sh ran: $(awk -F '\t' '$5 > 0' "$log/times.tsv" | wc -l) of $(wc -l <"$log/times.tsv")."
    echo
    echo "Image: \`$name\` = $( [[ $src_id != none ]] && echo "bench/publish.sh's python image ($SCALE)" || echo "a python3.11 stdlib layer") + a layer with what CMD needs and /$big_rel; $img_layers layers, $(mb "$img_blob_bytes") MB of gzip blobs, $(mb "$tree_bytes") MB in $tree_entries entries unpacked ($stratum_entries entries in the stratum mount); repository $(mb "$repo_bytes") MB."
    echo "CMD: \`$CMD\` (in \`chroot ROOT /bin/busybox sh -c\`, \`env -i PATH=/usr/bin:/bin\`)."
    echo "Servers on 127.0.0.1, their files in the page cache; each cold run uses a fresh stratum cache (or an empty OCI layout and bundle dir); \`sync\` before each. Shaped link: $shape_note."
    echo "Times are the fastest of $RUNS runs (all runs listed); \"load\" is the 1-min load average at the end of that run."
    echo
    echo "| measurement | stratum | alternative | ratio | target | met |"
    echo "|---|---:|---:|---:|---|---|"
    echo "| 1. cold start, loopback (s) | $cs | $ca (skopeo copy + umoci unpack + CMD) | $speedup× faster | ≥ 10× | $(yes_no "$speedup" 10 '>=') |"
    if [[ -n $shaped ]]; then
        ss_=$(best shaped-stratum); sa_=$(best shaped-alt)
        echo "| 1. cold start, $RATE (s) | $ss_ | $sa_ | $(ratio "$sa_" "$ss_")× faster | ≥ 10× | $(yes_no "$(ratio "$sa_" "$ss_")" 10 '>=') |"
    fi
    echo "| 2. bytes fetched for CMD / opened files | $(mb "$acc_b") MB on the wire, $acc_n requests | $(mb "$opened_bytes") MB in $opened_files opened files | $bytes_ratio (decoded in cache: $dec_ratio) | ≤ 1.3 | $(yes_no "$bytes_ratio" 1.3 '<=') |"
    for sq in "${sq_bins[@]}"; do
        fs_=$(best find-stratum); fq=$(best "find-$sq")
        echo "| 3. warm \`find -ls\` (s) vs $sq | $fs_ | $fq | $(ratio "$fq" "$fs_")× | ≥ 1 (no slower) | $(yes_no "$(ratio "$fq" "$fs_")" 1 '>=') |"
        rs=$(best read-stratum); rq=$(best "read-$sq")
        echo "| 3. warm read of $(mb "$big_bytes") MB (MB/s) vs $sq | $(thr "$big_bytes" "$rs") ($rs s) | $(thr "$big_bytes" "$rq") ($rq s) | $(ratio "$rq" "$rs")× | ≥ 1 (no slower) | $(yes_no "$(ratio "$rq" "$rs")" 1 '>=') |"
    done
    echo
    echo "Details (seconds; every run):"
    echo
    echo "| step | fastest | all runs | parts of the fastest | load |"
    echo "|---|---:|---|---|---:|"
    row() { # PREFIX TEXT
        local l
        l=$(best_label "$1")
        [[ -n $l ]] || return 0
        echo "| $2 | $(best "$1") | $(all_of "$1") | $(note_of "$l" | sed 's/; access:.*//') | $(load_of "$l") |"
    }
    row cold-stratum "cold start, stratum mount + CMD, loopback"
    row cold-alt "cold start, skopeo copy + umoci unpack + CMD, loopback"
    row nginx-stratum "(informative) cold start, stratum mount + CMD, the repository served by nginx, loopback"
    echo "| (informative) stratum pull of the whole image + CMD, loopback | $(t_of pull-stratum) | | $(note_of pull-stratum) | $(load_of pull-stratum) |"
    if [[ -n $shaped ]]; then
        row shaped-stratum "cold start, stratum mount + CMD, $RATE"
        row shaped-alt "cold start, skopeo copy + umoci unpack + CMD, $RATE"
    fi
    echo "| first \`find -ls\`, stratum, fresh cache, loopback | $(t_of first-find-stratum) | | | $(load_of first-find-stratum) |"
    echo "| first read of the big file, stratum, fresh cache, loopback | $(t_of first-read-stratum) | | $(thr "$big_bytes" "$(t_of first-read-stratum)") MB/s | $(load_of first-read-stratum) |"
    for k in find read; do
        for fsn in stratum "${sq_bins[@]}"; do
            if [[ $k == find ]]; then what="\`find MNT -ls\`"; else what="\`cat\` $(mb "$big_bytes") MB"; fi
            row "$k-$fsn" "warm $what, $fsn"
            row "hot-$k-$fsn" "hot $what, $fsn (again, same mount)"
        done
    done
    echo
    echo "Stratum cold start, fetched (from the serve access log, fastest run): $acc_n requests, $(mb "$acc_b") MB on the wire, of which manifest $acc_mn req / $(mb "$acc_mb") MB, catalogs $acc_cn req / $(mb "$acc_cb") MB, content objects $((acc_n - acc_cn - acc_mn)) req / $(mb "$((acc_b - acc_cb - acc_mb))") MB; decoded in the cache: $(mb "$dec_obj") MB of objects + $(mb "$dec_cat") MB of catalogs. All cold runs: $acc_all."
    echo "Opened by CMD (strace, regular files after \`chroot()\`, unique inodes): $opened_files files, $(mb "$opened_bytes") MB; largest: $opened_top."
    echo "squashfs image (zstd): $(mb "$sqfs_bytes") MB."
    echo
    echo "Commands (R = scratch dir, IMG = the OCI layout, stratum = the release binary):"
    echo
    echo '```'
    cat "$log/commands"
    echo '```'
} >"$report"

cat "$report"
echo >&2
say "uptime before: $uptime_before"
say "uptime after:  $uptime_after"
say "report: $report; raw timings: $log/times.tsv"
