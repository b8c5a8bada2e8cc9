#!/usr/bin/env bash
# Live node mounts (issue 14, "Benchmarks"): what following the repository costs.
#
#   1. publish-to-visible: a whole-repository mount with --refresh $REFRESH (5s); $N (20)
#      publishes of a new image at a random phase of the interval; for each, the time from
#      the end of `stratum publish` to `MNT/images/bench/pI/1` existing (polled every 10 ms).
#      Median and max. Target: <= refresh + 1 s.
#   2. cost of a refresh: `stratum reload` on a --refresh 1h mount; requests and bytes per
#      refresh from `status --json` (fetched.requests, fetched.bytes) with nothing published
#      ($COST_RUNS times) and after one image was published.
#   3. readers during switches: 32 threads walk and hash (BLAKE2b) every file of two images
#      under /images in a loop for $READ_SECS s, with --refresh 1s, without switches and
#      then with a switch every second. The revisions are published beforehand and their
#      manifests swapped into place one a second (a rename, as a publish does), so the
#      publisher's CPU does not compete with the readers. Reads per second. Target: no more
#      than 10 % slower.
#   4. delayed link: (2) and (1) through a TCP proxy that delays every forwarded chunk by
#      $DELAY_MS ms each way (bench/delay-proxy.py, pipelined; `tc netem` is not
#      available on this machine): the duration of a refresh (status refresh.last.seconds).
#
# Prints a markdown report (also in $WORK/live/results.md). Needs root, /dev/fuse, python3.
#
# Usage:  bench/live.sh
# Environment:
#   WORK=DIR        work dir (default bench/work, gitignored): $WORK/live
#   STRATUM=PATH    stratum binary (default: `cargo build --release`, target/release/stratum)
#   NOBUILD=1       use target/release/stratum as is
#   N=20 REFRESH=5s  publishes and refresh interval of (1)
#   COST_RUNS=5     refreshes measured in (2)
#   READ_SECS=30    length of each reader phase of (3);  THREADS=32
#   DELAY_MS=50     per-direction delay of (4);  DELAY=0 skips (4)
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
WORK=${WORK:-$root/bench/work}
N=${N:-20}
REFRESH=${REFRESH:-5s}
COST_RUNS=${COST_RUNS:-5}
READ_SECS=${READ_SECS:-30}
THREADS=${THREADS:-32}
DELAY_MS=${DELAY_MS:-50}
DELAY=${DELAY:-1}

if [ -z "${STRATUM:-}" ]; then
    if [ -z "${NOBUILD:-}" ]; then
        (cd "$root" && cargo build --release -p stratum >&2)
    fi
    STRATUM=$root/target/release/stratum
fi
[ "$(id -u)" = 0 ] || { echo "needs root (FUSE mounts, drop_caches)" >&2; exit 1; }

W=$WORK/live
rm -rf "$W"
mkdir -p "$W"
report=$W/results.md
pids=()
mounts=()
cleanup() {
    for m in "${mounts[@]}"; do "$STRATUM" umount "$m" >/dev/null 2>&1 || true; done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

say() { echo "$*" | tee -a "$report"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# --- a repository and images ------------------------------------------------------------
key=$W/key
"$STRATUM" keygen "$key" >/dev/null
repo=$W/repo
"$STRATUM" init "$repo" --key "$key" --name bench.live >/dev/null

# An OCI layout with one image of FILES random files (1-64 KiB) in 8 directories, tag 1.
mklayout() { # DIR SEED FILES
    python3 - "$1" "$2" "$3" <<'EOF'
import hashlib, io, json, os, random, sys, tarfile
out, seed, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    for i in range(files):
        data = rng.randbytes(1024 + rng.randrange(63 * 1024))
        ti = tarfile.TarInfo(f"d{i % 8}/f{i:05d}")
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
layer = buf.getvalue()
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)
def put(b):
    d = hashlib.sha256(b).hexdigest()
    open(os.path.join(blobs, d), "wb").write(b)
    return d
ld = put(layer)
cfg = json.dumps({"architecture": "amd64", "os": "linux",
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + ld]},
                  "config": {}}).encode()
cd = put(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cd, "size": len(cfg)},
                  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + ld, "size": len(layer)}]}).encode()
md = put(man)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": "sha256:" + md, "size": len(man), "annotations": {"org.opencontainers.image.ref.name": "1"}}]},
          open(os.path.join(out, "index.json"), "w"))
open(os.path.join(out, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
EOF
}
publish() { # NAME:TAG SEED FILES
    local l=$W/layouts/$2
    [ -d "$l" ] || mklayout "$l" "$2" "$3"
    "$STRATUM" publish "oci:$l:1" --repo "$repo" --key "$key" --as "$1" >/dev/null
}

publish bench/a:1 1 600
publish bench/b:1 2 600

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$STRATUM" serve "$repo" --listen "127.0.0.1:$port" >"$W/serve.log" 2>&1 &
pids+=($!)
url=http://127.0.0.1:$port
for _ in $(seq 100); do curl -fs "$url/.stratum/manifest" -o /dev/null && break; sleep 0.1; done

mount_live() { # NAME REFRESH [URL]
    local m=$W/mnt-$1
    mkdir -p "$m"
    "$STRATUM" mount "${3:-$url}" "$m" --pubkey "$key.pub" --refresh "$2" \
        --cache "$W/cache-$1" >"$W/mount-$1.log" 2>&1 &
    pids+=($!)
    mounts+=("$m")
    for _ in $(seq 200); do mountpoint -q "$m" && break; sleep 0.05; done
    mountpoint -q "$m" || { cat "$W/mount-$1.log" >&2; exit 1; }
}
umount_live() { "$STRATUM" umount "$W/mnt-$1" >/dev/null; }
st() { "$STRATUM" status "$1" --json; }

: >"$report"
say "## Live mounts (bench/live.sh, $(date -u +%Y-%m-%dT%H:%MZ))"
say ""
say "stratum: $("$STRATUM" --version 2>/dev/null || echo "$STRATUM"), git $(git -C "$root" rev-parse --short HEAD); $(nproc) cores; load at start $(load)"
say ""

# --- 1. publish-to-visible ---------------------------------------------------------------
mount_live vis "$REFRESH"
ls "$W/mnt-vis/images/bench" >/dev/null
refresh_s=$(python3 -c "import re;v='$REFRESH';print(float(re.sub('s$','',v)))")
lat=()
for i in $(seq 1 "$N"); do
    sleep "$(python3 -c "import random; print(round(random.uniform(0, $refresh_s), 3))")"
    publish "bench/p$i:1" "$((100 + i))" 20
    t0=$(date +%s.%N)
    while [ ! -e "$W/mnt-vis/images/bench/p$i/1" ]; do sleep 0.01; done
    t1=$(date +%s.%N)
    lat+=("$(python3 -c "print(round($t1 - $t0, 3))")")
done
umount_live vis
stats=$(printf '%s\n' "${lat[@]}" | python3 -c "import sys,statistics as s; v=[float(x) for x in sys.stdin]; print(f'{s.median(v):.2f} {max(v):.2f} {min(v):.2f}')")
read -r med max min <<<"$stats"
say "### 1. Publish to visible (--refresh $REFRESH, $N publishes at random phases)"
say ""
say "| median | max | min | target | load after |"
say "|---|---|---|---|---|"
say "| ${med} s | ${max} s | ${min} s | <= refresh + 1 s = $(python3 -c "print($refresh_s + 1)") s | $(load) |"
say ""
say "all (s): ${lat[*]}"
say ""

# --- 2. cost of a refresh -----------------------------------------------------------------
cost() { # MNT LABEL -> one table row per measurement
    local m=$1 label=$2 s0 s1
    s0=$(st "$m")
    "$STRATUM" reload "$m" --timeout 60s >/dev/null
    s1=$(st "$m")
    python3 - "$label" "$s0" "$s1" <<'EOF' | tee -a "$report"
import json, sys
label, a, b = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
d = lambda *k: (lambda f: f(b) - f(a))(lambda v: __import__("functools").reduce(lambda x, y: x[y], k, v))
last = b["refresh"]["last"]
print(f"| {label} | {last['outcome']} | {d('fetched', 'requests')} | {d('fetched', 'objects')} | {d('fetched', 'bytes')} | {last['seconds'] * 1000:.1f} ms |")
EOF
}
cost_table() { # NAME URL LABEL
    mount_live "$1" 1h "$2"
    ls "$W/mnt-$1/images/bench" >/dev/null
    say "| refresh ($3) | outcome | requests | objects | bytes | duration |"
    say "|---|---|---|---|---|---|"
    for _ in $(seq 1 "$COST_RUNS"); do cost "$W/mnt-$1" "nothing published"; done
    publish "bench/cost-$1:1" 7 20
    cost "$W/mnt-$1" "one image published (20 files)"
    cost "$W/mnt-$1" "nothing published"
    umount_live "$1"
    say ""
}
say "### 2. Cost of a refresh (\`stratum reload\`, deltas of \`status --json\`)"
say ""
cost_table cost "$url" "loopback"
say "load after: $(load)"
say ""

# --- 3. readers during switches ------------------------------------------------------------
# Revisions to switch to: one image added each, manifests kept aside.
revs=$((READ_SECS + 5))
mkdir -p "$W/manifests"
cp "$repo/.stratum/manifest" "$W/manifests/0"
for i in $(seq 1 "$revs"); do
    publish "bench/r$i:1" "$((1000 + i))" 4
    cp "$repo/.stratum/manifest" "$W/manifests/$i"
done
cp "$W/manifests/0" "$repo/.stratum/manifest.new" && mv "$repo/.stratum/manifest.new" "$repo/.stratum/manifest"
mount_live read 1s
readers() { # SECONDS -> "reads errors"
    python3 - "$W/mnt-read/images/bench" "$THREADS" "$1" <<'EOF'
import hashlib, os, sys, threading, time
root, threads, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
roots = [os.path.join(root, "a", "1"), os.path.join(root, "b", "1")]
reads, errors, stop = [0] * threads, [0] * threads, time.monotonic() + secs
def run(i):
    r = roots[i % 2]
    while time.monotonic() < stop:
        for d, _, files in os.walk(r, followlinks=True):
            for f in files:
                try:
                    with open(os.path.join(d, f), "rb") as fh:
                        hashlib.blake2b(fh.read()).digest()
                    reads[i] += 1
                except OSError:
                    errors[i] += 1
                if time.monotonic() >= stop:
                    return
ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
[t.start() for t in ts]
[t.join() for t in ts]
print(sum(reads), sum(errors))
EOF
}
readers 5 >/dev/null # warm: node cache and page cache
read -r r0 e0 <<<"$(readers "$READ_SECS")"
load0=$(load)
rev0=$(st "$W/mnt-read" | python3 -c 'import json,sys; print(json.load(sys.stdin)["revision"])')
(
    for i in $(seq 1 "$revs"); do
        cp "$W/manifests/$i" "$repo/.stratum/manifest.new"
        mv "$repo/.stratum/manifest.new" "$repo/.stratum/manifest"
        sleep 1
    done
) &
swapper=$!
pids+=($swapper)
read -r r1 e1 <<<"$(readers "$READ_SECS")"
load1=$(load)
rev1=$(st "$W/mnt-read" | python3 -c 'import json,sys; print(json.load(sys.stdin)["revision"])')
kill "$swapper" 2>/dev/null || true
umount_live read
say "### 3. Readers during switches ($THREADS threads walk and hash two images of 600 files, ${READ_SECS} s each, --refresh 1s)"
say ""
say "| phase | reads | reads/s | errors | switches | load after |"
say "|---|---|---|---|---|---|"
say "| no switch | $r0 | $(python3 -c "print(round($r0 / $READ_SECS))") | $e0 | 0 | $load0 |"
say "| a switch every second | $r1 | $(python3 -c "print(round($r1 / $READ_SECS))") | $e1 | $((rev1 - rev0)) | $load1 |"
say ""
say "slower by: $(python3 -c "print(f'{(1 - $r1 / $r0) * 100:.1f} %')") (target <= 10 %)"
say ""
cp "$W/manifests/$revs" "$repo/.stratum/manifest.new" && mv "$repo/.stratum/manifest.new" "$repo/.stratum/manifest"

# --- 4. delayed link -----------------------------------------------------------------------
if [ "$DELAY" = 1 ]; then
    dport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    python3 "$here/delay-proxy.py" "$dport" "127.0.0.1:$port" "$DELAY_MS" &
    pids+=($!)
    sleep 0.5
    say "### 4. Delayed link (a proxy delaying each forwarded chunk by ${DELAY_MS} ms each way)"
    say ""
    cost_table slow "http://127.0.0.1:$dport" "+${DELAY_MS} ms each way"
    say "load after: $(load)"
    say ""
fi
say "commands: \`$0\` (N=$N REFRESH=$REFRESH COST_RUNS=$COST_RUNS READ_SECS=$READ_SECS THREADS=$THREADS DELAY_MS=$DELAY_MS)"
