#!/usr/bin/env bash
# Latency benchmark (issue 16): eager `stratum pull URL` and `stratum replicate` over
# loopback and over a delayed link, against what a user would pick instead.
#
# Two images built from files of the installed Debian packages, as bench/publish.sh builds
# its set (SCALE=full lists; umoci; owners, modes, mtimes, symlinks, hardlinks kept):
#   python  base (L1 /etc, /usr/bin, /usr/lib/x86_64-linux-gnu, /usr/share/doc, zoneinfo;
#           L2 /var/lib/dpkg) + L3 /usr/lib/python3.11, /usr/lib/python3
#   jvm     base + L3 OpenJDK 17 + /usr/share/man (the larger one)
# Both are pushed to a local Debian `docker-registry` (skopeo) and published into one
# stratum repository served by `stratum serve`. The delayed link is bench/delay-proxy.py
# in front of both servers: every byte held $DELAY_MS ms each way (5: a 10 ms round trip),
# pipelined, connects included (`tc netem` is not available here).
#
# In ONE run, for each link (0 ms: direct loopback; $((2 * DELAY_MS)) ms round trip), in this order:
#   1. --jobs sweep: `stratum pull URL --image python … --jobs N` (fresh node cache, fresh
#      DEST) for N in $SWEEP (1 = the sequential pull of before issue 16);
#   2. for each image: `stratum pull` with the default --jobs, the same with
#      --no-fill-cache (contents into DEST only), `stratum pull --jobs 1`,
#      and `skopeo copy docker://… oci:DIR` + `umoci unpack --image DIR:TAG BUNDLE`;
#      $RUNS runs each (median reported; --jobs 1 once); requests: the pull's JSON
#      `transport.requests`, and the registry access-log lines of the skopeo copy;
#   3. full `stratum replicate URL DEST --jobs N` of the repository (fresh DEST) for N in
#      $REPL_SWEEP: encoded MB fetched / seconds.
# Page caches are not dropped (both servers read from memory).
#
# Prints a markdown report (also $WORK/latency/results.md). Needs root (umoci unpack keeps
# owners), docker-registry, skopeo, umoci, curl, python3, jq.
#
# Usage:  bench/latency.sh
# Environment:
#   WORK=DIR        work dir (default bench/work, gitignored): $WORK/latency; the images
#                   are kept in $WORK/latency/layouts and reused (REBUILD=1 rebuilds)
#   STRATUM=PATH    stratum binary (default: `cargo build --release --bin stratum`)
#   NOBUILD=1       use target/release/stratum as is
#   DELAY_MS=5      per-direction delay of the delayed link (10 ms round trip)
#   RUNS=3          runs of each timed pull (median)
#   SWEEP="1 8 16 32 64 128"     --jobs values of step 1 (empty: skip step 1)
#   REPL_SWEEP="8 16 32 64"      --jobs values of step 3 (empty: skip step 3)
#   IMAGES="python jvm"          images of step 2
#   SEQUENTIAL=1                 also the --jobs 1 pull of step 2 (0: skip it)
#   SCRATCH=ext4    what the timed commands write (DEST and node cache of each pull, skopeo's
#                   layout, umoci's bundle, replicas) goes to a fresh loop-mounted ext4 made
#                   with mkfs.ext4's defaults (journal on), $W/scratch.img (sparse,
#                   SCRATCH_GB=16), instead of $W/run. Why: on an ext4 without a journal (the
#                   root filesystem of these VMs) creating an inode scans past every inode
#                   freed in the last 30 s of its block group, so each timed command pays for
#                   the `rm -rf` of the one before it, in proportion to the inodes it creates
#                   (docs/DECISIONS.md D50; docs/BENCHMARKS.md "Latency" run 7). The report names the
#                   filesystem written to and whether it has a journal.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
WORK=${WORK:-$root/bench/work}
DELAY_MS=${DELAY_MS:-5}
RUNS=${RUNS:-3}
SWEEP=${SWEEP-1 8 16 32 64 128}
REPL_SWEEP=${REPL_SWEEP-8 16 32 64}
IMAGES=${IMAGES:-python jvm}
SEQUENTIAL=${SEQUENTIAL:-1}

if [ -z "${STRATUM:-}" ]; then
    if [ -z "${NOBUILD:-}" ]; then
        (cd "$root" && cargo build --release --bin stratum >&2)
    fi
    STRATUM=$root/target/release/stratum
fi
[ "$(id -u)" = 0 ] || { echo "needs root (umoci unpack keeps owners)" >&2; exit 1; }
for t in docker-registry skopeo umoci curl python3 jq; do
    command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
W=$WORK/latency
layouts=$W/layouts
run=$W/run
rm -rf "$run"
mkdir -p "$run" "$layouts"
# A copy, so that a concurrent rebuild cannot change the binary in the middle of the run.
cp "$STRATUM" "$run/stratum"
S=$run/stratum
report=$W/results.md
: >"$report"
pids=()

say() { echo "$*" | tee -a "$report"; }
load1() { cut -d' ' -f1 /proc/loadavg; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.1f", a / b }'; }
mbps() { awk -v b="$1" -v t="$2" 'BEGIN { if (t == 0) print "n/a"; else printf "%.1f", b / 1e6 / t }'; }

cleanup() {
    set +e
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    if [ -n "${scratch_mounted:-}" ]; then umount "$wdir"; rm -f "$W/scratch.img"; fi
}
trap cleanup EXIT

# --- where the timed commands write ------------------------------------------------------
wdir=$run
case ${SCRATCH:-} in
    "") ;;
    ext4)
        wdir=$W/scratch
        mkdir -p "$wdir"
        if mountpoint -q "$wdir"; then umount "$wdir"; fi # left by an interrupted run
        rm -f "$W/scratch.img"
        truncate -s "${SCRATCH_GB:-16}G" "$W/scratch.img"
        mkfs.ext4 -q -F "$W/scratch.img"
        mount -o loop "$W/scratch.img" "$wdir"
        scratch_mounted=1
        ;;
    *) echo "SCRATCH=$SCRATCH: only ext4 (or empty)" >&2; exit 1 ;;
esac
fs_facts() { # DIR -> "fstype on device, journal: yes|no|?"
    local src fstype jnl="?"
    read -r fstype src < <(findmnt -no FSTYPE,SOURCE --target "$1")
    if [ "$fstype" = ext4 ]; then
        if [ -e "/proc/fs/jbd2/$(basename "$src")-8" ]; then jnl=yes; else jnl=no; fi
    fi
    echo "$fstype on $src, journal: $jnl"
}

# --- images ------------------------------------------------------------------------------
L_OS="etc:6 usr/bin:70 usr/lib/x86_64-linux-gnu:100 usr/share/doc:20 usr/share/zoneinfo:4"
L_PKG="var/lib/dpkg:32"
L_PY="usr/lib/python3.11:55 usr/lib/python3:47"
L_JVM="usr/lib/jvm/java-17-openjdk-amd64:100 usr/share/man:20"
spec="v1 $L_OS|$L_PKG|$L_PY|$L_JVM"

pick_list() { # "DIR:MB ..." OUT: files and symlinks of each subtree in path order, up to MB
    local item dir mb
    : >"$2"
    for item in $1; do
        dir=${item%:*} mb=${item##*:}
        [ -d "/$dir" ] || { echo "source dir /$dir is missing on this machine" >&2; exit 1; }
        (cd / && find "$dir" -xdev \( -type f -o -type l \) -printf '%s\t%p\n') |
            sort -t $'\t' -k2,2 |
            awk -F '\t' -v b=$((mb * 1024 * 1024)) '{ if (s + $1 <= b) { s += $1; print $2 } }' >>"$2"
    done
}
add_files() { # LIST ROOTFS
    tar -C / -cf - --no-recursion --no-unquote --verbatim-files-from -T "$1" | tar -C "$2" -xpf -
}
build_images() {
    log "building the images in $layouts (once; REBUILD=1 rebuilds)"
    rm -rf "$layouts"
    mkdir -p "$layouts/lists"
    local l b=$W/bundle r=$W/bundle/rootfs img list
    for l in OS PKG PY JVM; do
        local v=L_$l
        pick_list "${!v}" "$layouts/lists/$l"
    done
    rm -rf "$b"
    umoci init --layout "$layouts/base" >&2
    umoci new --image "$layouts/base:1" >&2
    umoci unpack --image "$layouts/base:1" "$b" >&2
    add_files "$layouts/lists/OS" "$r"
    umoci repack --refresh-bundle --image "$layouts/base:1" "$b" >&2
    add_files "$layouts/lists/PKG" "$r"
    umoci repack --image "$layouts/base:1" "$b" >&2
    rm -rf "$b"
    for img in python jvm; do
        cp -a "$layouts/base" "$layouts/$img"
        umoci unpack --image "$layouts/$img:1" "$b" >&2
        case $img in python) list=PY ;; jvm) list=JVM ;; esac
        add_files "$layouts/lists/$list" "$r"
        umoci repack --image "$layouts/$img:1" "$b" >&2
        rm -rf "$b"
        umoci gc --layout "$layouts/$img" >&2
    done
    rm -rf "$layouts/base"
    printf '%s\n' "$spec" >"$layouts/.complete"
}
if [ -n "${REBUILD:-}" ] || [ ! -f "$layouts/.complete" ] || [ "$(cat "$layouts/.complete")" != "$spec" ]; then
    build_images
fi
image_facts() { # IMAGE -> "layers gzip_bytes"
    python3 - "$layouts/$1" <<'EOF'
import json, os, sys
l = sys.argv[1]
idx = json.load(open(os.path.join(l, "index.json")))
man = json.load(open(os.path.join(l, "blobs", *idx["manifests"][0]["digest"].split(":"))))
print(len(man["layers"]), sum(x["size"] for x in man["layers"]))
EOF
}

# --- registry ----------------------------------------------------------------------------
reg_port=$(free_port)
start_registry "$run/registry" "$reg_port"
for img in $IMAGES; do
    skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
        "oci:$layouts/$img:1" "docker://127.0.0.1:$reg_port/bench/$img:1"
done
reg_requests() { # the registry's requests so far (access-log lines)
    grep -c '"http.request.method"' "$run/registry/app.log" "$run/registry/access.log" 2>/dev/null |
        awk -F: '{ s += $2 } END { print s + 0 }'
}

# --- stratum repository, served ----------------------------------------------------------
key=$run/key
"$S" keygen "$key" >/dev/null
repo=$run/repo
"$S" init "$repo" --key "$key" --name bench.latency >/dev/null
for img in $IMAGES; do
    "$S" publish "oci:$layouts/$img:1" --repo "$repo" --key "$key" --as "bench/$img:1" >/dev/null
done
serve_port=$(free_port)
"$S" serve "$repo" --listen "127.0.0.1:$serve_port" >"$run/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$serve_port/.stratum/manifest" -o /dev/null && break; sleep 0.1; done

# --- delayed links -----------------------------------------------------------------------
reg_dport=$(free_port)
python3 "$here/delay-proxy.py" "$reg_dport" "127.0.0.1:$reg_port" "$DELAY_MS" 2>>"$run/proxy.log" &
pids+=($!)
serve_dport=$(free_port)
python3 "$here/delay-proxy.py" "$serve_dport" "127.0.0.1:$serve_port" "$DELAY_MS" 2>>"$run/proxy.log" &
pids+=($!)
sleep 0.5
rtt=$((2 * DELAY_MS))
default_jobs=$("$S" pull --help | sed -n 's/.*\[default: \([0-9]*\).*/\1/p' | head -n1)

# --- measurements ------------------------------------------------------------------------
# pull PORT IMAGE JOBS [FLAG...] -> "seconds requests"; JOBS empty: the default
pull() {
    local dest=$wdir/dest cache=$wdir/cache t0 t1 out jobs=()
    rm -rf "$dest" "$cache"
    [ -n "$3" ] && jobs=(--jobs "$3")
    t0=$(now)
    out=$("$S" pull "http://127.0.0.1:$1" --pubkey "$key.pub" --image "bench/$2:1" "$dest" \
        --cache "$cache" --json "${jobs[@]}" "${@:4}")
    t1=$(now)
    rm -rf "$dest" "$cache"
    echo "$(secs "$t0" "$t1") $(jq -r .transport.requests <<<"$out")"
}
# skopeo_umoci PORT IMAGE -> "seconds requests"
skopeo_umoci() {
    local oci=$wdir/oci bundle=$wdir/bundle t0 t1 r0 r1
    rm -rf "$oci" "$bundle"
    r0=$(reg_requests)
    t0=$(now)
    skopeo copy --quiet --src-tls-verify=false "docker://127.0.0.1:$1/bench/$2:1" "oci:$oci:1"
    umoci unpack --image "$oci:1" "$bundle" >/dev/null
    t1=$(now)
    sleep 0.2
    r1=$(reg_requests)
    rm -rf "$oci" "$bundle"
    echo "$(secs "$t0" "$t1") $((r1 - r0))"
}
# replicate PORT JOBS -> "seconds bytes requests"
replicate() {
    local dest=$wdir/replica out
    rm -rf "$dest"
    out=$("$S" replicate "http://127.0.0.1:$1" "$dest" --pubkey "$key.pub" --jobs "$2" --json)
    rm -rf "$dest"
    jq -r '"\(.seconds) \(.bytes_fetched) \(.transport.requests)"' <<<"$out"
}

say "## Latency (issue 16): run of $(date -u '+%Y-%m-%d %H:%M') UTC"
say ""
say "stratum $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) cores; delayed link: bench/delay-proxy.py, ${DELAY_MS} ms each way (${rtt} ms round trip)."
say ""
say "Timed commands write to $wdir: $(fs_facts "$wdir")$([ -n "${SCRATCH:-}" ] && echo " (SCRATCH=$SCRATCH, a fresh loop-mounted filesystem)")."
say ""
say "The images, and \`stratum pull REPO --image …\` from the repository directory (no network; decode, verify and write only):"
say ""
say "| image | layers | gzip MB | files | MB written | local pull (default --jobs) | local pull --jobs 1 |"
say "|---|---:|---:|---:|---:|---:|---:|"
local_pull() { # IMAGE JOBS -> "seconds files bytes"
    local dest=$wdir/dest t0 t1 out jobs=()
    rm -rf "$dest"
    [ -n "$2" ] && jobs=(--jobs "$2")
    t0=$(now)
    out=$("$S" pull "$repo" --image "bench/$1:1" "$dest" --json "${jobs[@]}")
    t1=$(now)
    rm -rf "$dest"
    echo "$(secs "$t0" "$t1") $(jq -r '"\(.files) \(.bytes)"' <<<"$out")"
}
for img in $IMAGES; do
    read -r nl gz < <(image_facts "$img")
    read -r tl nf nb < <(local_pull "$img" "")
    read -r tl1 _ _ < <(local_pull "$img" 1)
    say "| $img | $nl | $(awk -v b="$gz" 'BEGIN { printf "%.1f", b / 1e6 }') | $nf | $(awk -v b="$nb" 'BEGIN { printf "%.1f", b / 1e6 }') | $tl s | $tl1 s |"
done
say ""

for link in 0 "$rtt"; do
    if [ "$link" = 0 ]; then sp=$serve_port rp=$reg_port; else sp=$serve_dport rp=$reg_dport; fi
    say "### ${link} ms round trip"
    say ""
    if [ -n "$SWEEP" ]; then
        log "link $link ms: --jobs sweep"
        say "\`stratum pull URL --image bench/python:1 --jobs N\` (1 run each):"
        say ""
        say "| --jobs | seconds | requests | load |"
        say "|---:|---:|---:|---:|"
        for j in $SWEEP; do
            read -r t n < <(pull "$sp" python "$j")
            say "| $j | $t | $n | $(load1) |"
        done
        say ""
    fi
    say "| image | \`stratum pull\` (default --jobs $default_jobs) | \`stratum pull --no-fill-cache\` | \`stratum pull --jobs 1\` | \`skopeo copy\` + \`umoci unpack\` | stratum faster by (default; --no-fill-cache) | load |"
    say "|---|---:|---:|---:|---:|---:|---:|"
    for img in $IMAGES; do
        log "link $link ms: $img"
        ts="" tf="" tk="" n="" nf="" nk=""
        for _ in $(seq "$RUNS"); do
            read -r t n < <(pull "$sp" "$img" "")
            ts="$ts $t"
            read -r t nf < <(pull "$sp" "$img" "" --no-fill-cache)
            tf="$tf $t"
            read -r t nk < <(skopeo_umoci "$rp" "$img")
            tk="$tk $t"
        done
        t1="–" n1="–"
        if [ "$SEQUENTIAL" = 1 ]; then read -r t1 n1 < <(pull "$sp" "$img" 1); fi
        ms=$(echo "$ts" | median) mf=$(echo "$tf" | median) mk=$(echo "$tk" | median)
        say "| $img | **$ms s**, $n requests (runs:$ts) | **$mf s**, $nf requests (runs:$tf) | $t1 s, $n1 requests | $mk s, $nk requests (runs:$tk) | $(ratio "$mk" "$ms")x; $(ratio "$mk" "$mf")x | $(load1) |"
    done
    say ""
    if [ -n "$REPL_SWEEP" ]; then
        log "link $link ms: replicate"
        say "\`stratum replicate URL DEST --jobs N\` of the whole repository (fresh DEST):"
        say ""
        say "| --jobs | seconds | MB fetched | MB/s | requests | load |"
        say "|---:|---:|---:|---:|---:|---:|"
        for j in $REPL_SWEEP; do
            read -r t b n < <(replicate "$sp" "$j")
            say "| $j | $(awk -v t="$t" 'BEGIN { printf "%.2f", t }') | $(awk -v b="$b" 'BEGIN { printf "%.1f", b / 1e6 }') | $(mbps "$b" "$t") | $n | $(load1) |"
        done
        say ""
    fi
done
say "commands: \`$0\` (SCRATCH=${SCRATCH:-} DELAY_MS=$DELAY_MS RUNS=$RUNS SWEEP=\"$SWEEP\" REPL_SWEEP=\"$REPL_SWEEP\" IMAGES=\"$IMAGES\" SEQUENTIAL=$SEQUENTIAL)"
