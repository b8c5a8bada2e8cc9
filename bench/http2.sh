#!/usr/bin/env bash
# HTTP/1.1 with N kept-alive connections vs HTTP/2 multiplexed on one connection (h2c),
# against `stratum serve`, on loopback and over a delayed link (issue 16; docs/BENCHMARKS.md
# "HTTP/1.1 vs HTTP/2", docs/DECISIONS.md).
#
# The workloads: `stratum replicate URL DEST --jobs N` and `stratum pull URL --image …
# DEST --jobs N` of a python image (many small objects fetched N at a time), into a fresh
# DEST (and, for pull, a fresh cache) each run, with and without `--http2-prior-knowledge`. The image is the one bench/snapshotter.sh builds (Debian's
# python3.11-minimal files, the json package, their shared libraries and busybox; two
# layers) plus all of /usr/lib/python3.11 and /usr/lib/python3 in the top layer. The delayed link is bench/delay-proxy.py in front of `stratum serve`, restarted
# for each run so that its connection count is that run's.
#
#   bench/http2.sh                   # DELAY_MS=5 (10 ms round trip), JOBS="8 64", ROUNDS=3
#   DELAY_MS=15 JOBS=64 bench/http2.sh
#
# Environment: STRATUM (default target/release/stratum), DELAY_MS (each way), JOBS,
# ROUNDS (the runs of each case are interleaved; the median is reported, all are listed).
# Needs umoci, python3, busybox (static), and root (chroot to check the image runs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
STRATUM=${STRATUM:-$here/../target/release/stratum}
DELAY_MS=${DELAY_MS:-5}
JOBS=${JOBS:-"8 64"}
ROUNDS=${ROUNDS:-3}
[ -x "$STRATUM" ] || { echo "no $STRATUM: cargo build --release" >&2; exit 1; }
W=$(mktemp -d /tmp/stratum-bench-http2.XXXXXX)
pids=()
cleanup() {
    set +e
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    rm -rf "$W"
}
trap cleanup EXIT
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- the image (as bench/snapshotter.sh builds it) -------------------------------------------
log "building the image"
layout=$W/layout
umoci init --layout "$layout"
umoci new --image "$layout:python"
umoci config --image "$layout:python" --config.cmd /usr/bin/python3 --author stratum-bench
umoci unpack --image "$layout:python" "$W/bundle" >/dev/null
rfs=$W/bundle/rootfs
mkdir -p "$rfs/usr/bin" "$rfs/usr/lib"
for d in bin sbin lib lib64; do
    if [ -L "/$d" ]; then ln -sfn "$(readlink "/$d")" "$rfs/$d"; mkdir -p "$rfs/$(readlink -f "/$d")"; fi
done
put() {
    local dir
    dir=$(cd "$(dirname "$1")" && pwd -P)
    mkdir -p "$rfs$dir"
    cp -a "$1" "$rfs$dir/"
    if [ -L "$1" ]; then put "$(readlink -f "$1")"; fi
}
for f in $(ldd /usr/bin/python3.11 | grep -o '/[^ ]*' | sort -u); do put "$f"; done
mkdir -p "$rfs/tmp" "$rfs/etc"
cp /bin/busybox "$rfs/bin/busybox"
umoci repack --refresh-bundle --image "$layout:python" "$W/bundle" >/dev/null
{
    dpkg -L python3-minimal python3.11-minimal libpython3.11-minimal
    dpkg -L libpython3.11-stdlib | grep '^/usr/lib/python3.11/json/'
} | sort -u | while read -r f; do
    if [ -L "$f" ] || [ -f "$f" ]; then put "$f"; fi
done
# The whole standard library and dist-packages, as the python image of bench/publish.sh
# has them: ~3 800 objects, most of them small.
mkdir -p "$rfs/usr/lib"
cp -a /usr/lib/python3.11 /usr/lib/python3 "$rfs/usr/lib/"
umoci repack --image "$layout:python" "$W/bundle" >/dev/null
chroot "$rfs" /usr/bin/python3 -c 'import json'

# --- the repository and its server -----------------------------------------------------------
"$STRATUM" keygen "$W/key" >/dev/null
"$STRATUM" init "$W/repo" --key "$W/key" >/dev/null
"$STRATUM" publish "oci:$layout:python" --as bench/python:1 --repo "$W/repo" --key "$W/key" >/dev/null
objects=$(find "$W/repo/data" -type f | wc -l)
repo_bytes=$(du -sb "$W/repo/data" | cut -f1)
log "repository: $objects objects, $repo_bytes bytes"
sport=$(free_port)
"$STRATUM" serve "$W/repo" --listen "127.0.0.1:$sport" >/dev/null 2>"$W/serve.log" &
pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$sport/.stratum/manifest" >/dev/null && break; sleep 0.1; done

# --- runs ------------------------------------------------------------------------------------
# run CMD DELAY JOBS PROTO: prints "seconds requests connections"
run() {
    local cmd=$1 delay=$2 jobs=$3 proto=$4 url port ppid conns=- flag=()
    [ "$proto" = h2c ] && flag=(--http2-prior-knowledge)
    if [ "$delay" = 0 ]; then
        url=http://127.0.0.1:$sport
    else
        port=$(free_port)
        python3 "$here/delay-proxy.py" "$port" "127.0.0.1:$sport" "$delay" 2>"$W/proxy.log" &
        ppid=$!
        for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
        url=http://127.0.0.1:$port
    fi
    rm -rf "$W/dest" "$W/cache"
    local t0 t1 out
    t0=$(date +%s.%N)
    case $cmd in
    replicate)
        out=$("$STRATUM" replicate "$url" "$W/dest" --pubkey "$W/key.pub" --jobs "$jobs" --json "${flag[@]}") ;;
    pull)
        out=$("$STRATUM" pull "$url" --pubkey "$W/key.pub" --image bench/python:1 "$W/dest" \
            --cache "$W/cache" --jobs "$jobs" --json "${flag[@]}") ;;
    esac
    t1=$(date +%s.%N)
    if [ "$delay" != 0 ]; then
        kill "$ppid"; wait "$ppid" 2>/dev/null || true
        # One connection was the readiness probe.
        conns=$(($(grep -o '[0-9]* connections' "$W/proxy.log" | cut -d' ' -f1) - 1))
    fi
    echo "$(echo "$t1 - $t0" | bc) $(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["transport"]["requests"])') $conns"
}

CMDS=${CMDS:-"replicate pull"}
declare -A times reqs conns
log "runs: $CMDS, delays 0 and $DELAY_MS ms each way, jobs $JOBS, $ROUNDS rounds, load $(cut -d' ' -f1 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
    for cmd in $CMDS; do
        for delay in 0 "$DELAY_MS"; do
            for jobs in $JOBS; do
                for proto in http1.1 h2c; do
                    read -r s q c < <(run "$cmd" "$delay" "$jobs" "$proto")
                    k="$cmd $delay $jobs $proto"
                    times[$k]="${times[$k]:-} $(printf %.2f "$s")"
                    reqs[$k]=$q
                    conns[$k]=$c
                    log "round $r: $cmd, delay $delay ms, --jobs $jobs, $proto: ${s}s, $q requests, $c connections"
                done
            done
        done
    done
done

echo
echo "The python image ($objects objects, $((repo_bytes / 1000)) kB) from stratum serve; $ROUNDS rounds, load $(cut -d' ' -f1 /proc/loadavg) at the end"
echo
echo "| command | round trip | --jobs | protocol | wall s (median) | all runs | requests | TCP connections | requests/s |"
echo "|---|---:|---:|---|---:|---|---:|---:|---:|"
for cmd in $CMDS; do
    for delay in 0 "$DELAY_MS"; do
        for jobs in $JOBS; do
            for proto in http1.1 h2c; do
                k="$cmd $delay $jobs $proto"
                med=$(echo "${times[$k]}" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
                rate=$(echo "${reqs[$k]} / $med" | bc)
                echo "| $cmd | $((delay * 2)) ms | $jobs | $proto | $med | ${times[$k]# } | ${reqs[$k]} | ${conns[$k]} | $rate |"
            done
        done
    done
done
