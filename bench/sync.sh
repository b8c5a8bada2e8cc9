#!/usr/bin/env bash
# stratum sync benchmark (issue 4, "Performance").
#
# The image set of bench/publish.sh (base, python, jvm, devel, python-rebuild; umoci
# layouts in $WORK/$SCALE/layouts) is pushed to a local docker-registry (Debian's
# `docker-registry`, filesystem storage, access log on) and then, in one run, measured:
#   a. cold `stratum sync WISHLIST` of all images into a fresh repository
#   b. the same sync again, unchanged: wall time, and the blob GETs the registry logged
#      during it (target: 0), and the `--json` report (nothing added or updated)
#   c. the alternative: for each image `skopeo copy docker://... oci:DIR:NAME` followed by
#      `umoci unpack --image DIR:NAME BUNDLE`, summed over the images (and skopeo alone,
#      umoci alone). One OCI layout DIR is shared by all images, so that a layer shared
#      by several images is downloaded once, as stratum does.
#   d. a moved tag: an image whose top layer was rebuilt (python's base layers, python's
#      files with new mtimes, plus one new file) is pushed to bench/python:1 and synced
#      again; layers ingested/skipped and bytes downloaded come from `stratum sync --json`
#      and from the registry's access log. The same move for skopeo + umoci (into the
#      layout of c, so that known blobs are skipped) for comparison, and one more
#      unchanged sync afterwards.
# The cold sync and skopeo + umoci run interleaved in RUNS rounds; the fastest of each
# is reported. Prints a markdown report, also written to $WORK/sync/results.md.
#
# Usage:  bench/sync.sh                       # SCALE=full
#         SCALE=small bench/sync.sh           # smoke run
# Environment:
#   SCALE=small|full   image set of bench/publish.sh (default full); when its layouts are
#                      missing, bench/publish.sh is run first to build them (it then also
#                      runs its own benchmark, without squashfs, compact and tmpfs)
#   WORK=DIR           work dir (default bench/work, gitignored); this script uses $WORK/sync
#   STRATUM=PATH       stratum binary (default: `cargo build --release`, target/release/stratum);
#                      copied to $WORK/bin/stratum-sync first so that a concurrent rebuild
#                      cannot change it in the middle of a run
#   NOBUILD=1          do not run `cargo build --release`, use target/release/stratum as is
#   RUNS=N             rounds of (cold sync, skopeo + umoci); the fastest is reported (default 1)
#   AGAIN=N            unchanged re-syncs (default 3; all are listed, the slowest is compared
#                      with the target)
#   KEEP=1             keep the scratch dir ($WORK/sync/run: registry storage, repository, bundles)
#   STEP_TIMEOUT=S     give up on a step that takes longer than S seconds (default 3600)
#
# Needs the Debian packages skopeo umoci docker-registry jq curl time iproute2 (installed
# with apt-get when missing and root); umoci unpack runs with --rootless when not root.
# shellcheck disable=SC2016 # single-quoted $R, $L are meant literally (shown commands)
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
SCALE=${SCALE:-full}
WORK=${WORK:-$root/bench/work}
RUNS=${RUNS:-1}
AGAIN=${AGAIN:-3}
STEP_TIMEOUT=${STEP_TIMEOUT:-3600}
case $SCALE in small | full) ;; *) echo "SCALE must be small or full, not '$SCALE'" >&2; exit 2 ;; esac
((RUNS >= 1 && AGAIN >= 1)) || { echo "RUNS and AGAIN must be at least 1" >&2; exit 2; }
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
layouts=$WORK/$SCALE/layouts
base=$WORK/sync
extra=$base/layouts-$SCALE
run=$base/run
log=$base/log
IMAGES=(base python jvm devel python-rebuild)
MOVED=python # the tag that moves in scenario d
mkdir -p "$base"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Tools
mapfile -t need_pkgs < <(missing_debs skopeo:skopeo umoci:umoci docker-registry:docker-registry jq:jq curl:curl ss:iproute2)
[[ -x /usr/bin/time ]] || need_pkgs+=(time)
install_debs ${need_pkgs[@]+"${need_pkgs[@]}"}
rootless=()
[[ $(id -u) -eq 0 ]] || rootless=(--rootless)

stratum_under_test stratum-sync
"$S" sync --help >/dev/null 2>&1 || die "$src_bin has no 'sync' subcommand (an old build?)"
stratum_rev=$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
stratum_dirty=$(cd "$root" && git status --porcelain --untracked-files=no 2>/dev/null | wc -l)
stratum_sha=$(sha256sum "$S" | cut -c1-12)
stratum_built=$(date -u -r "$src_bin" '+%Y-%m-%d %H:%M UTC')

# ---------------------------------------------------------------------------------------
# Images: bench/publish.sh's set (built by it when missing), plus the moved python image
layouts_ok() {
    local img
    [[ -f $layouts/.complete ]] || return 1
    for img in "${IMAGES[@]}"; do [[ -f $layouts/$img/index.json ]] || return 1; done
}
if ! layouts_ok; then
    say "no $SCALE image set in $layouts: running bench/publish.sh to build it (and run its benchmark)"
    SCALE=$SCALE WORK=$WORK STRATUM=$S SQUASHFS=0 COMPACT=0 TMPFS=0 "$here/publish.sh" >/dev/null
    layouts_ok || die "bench/publish.sh did not build $layouts"
fi

manifest_of() { # LAYOUT -> manifest blob path of tag 1
    local d
    d=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "1") | .digest' "$1/index.json")
    [[ -n $d ]] || die "$1 has no tag 1"
    printf '%s/blobs/sha256/%s\n' "$1" "${d#sha256:}"
}

# python-moved: base's two layers + python's top layer rebuilt (the same files with new
# mtimes, plus /etc/bench-build): a CI rebuild of the application layer. Cached in $extra,
# rebuilt when python's manifest changes.
moved_layout=$extra/$MOVED-moved
moved_stamp="$(basename "$(manifest_of "$layouts/$MOVED")") v1"
build_moved() {
    say "building $moved_layout (once)"
    local b=$extra/bundle stage=$extra/stage top
    rm -rf "$moved_layout" "$b" "$stage"
    mkdir -p "$extra" "$stage/etc"
    cp -a "$layouts/base" "$moved_layout"
    umoci unpack "${rootless[@]}" --image "$moved_layout:1" "$b" >&2
    top=$(jq -r '.layers[-1].digest' "$(manifest_of "$layouts/$MOVED")")
    tar -xzpf "$layouts/$MOVED/blobs/sha256/${top#sha256:}" -C "$stage"
    printf 'bench rebuild of %s, top layer only\n' "$MOVED" >"$stage/etc/bench-build"
    find "$stage" -mindepth 1 -exec touch -h -d "2025-07-01 09:00:00" {} +
    (cd "$stage" && tar -cf - --exclude=. -- *) | tar -C "$b/rootfs" -xpf -
    umoci repack --refresh-bundle --image "$moved_layout:1" "$b" >&2
    umoci gc --layout "$moved_layout" >&2
    rm -rf "$b" "$stage"
    printf '%s\n' "$moved_stamp" >"$moved_layout/.complete"
}
if [[ ! -f $moved_layout/.complete || $(cat "$moved_layout/.complete") != "$moved_stamp" ]]; then
    build_moved
fi

declare -A img_layers img_blob_bytes blob_size
for img in "${IMAGES[@]}"; do
    m=$(manifest_of "$layouts/$img")
    img_layers[$img]=$(jq '.layers | length' "$m")
    img_blob_bytes[$img]=$(jq '[.layers[].size] | add' "$m")
    while read -r digest size; do blob_size[$digest]=$size; done < <(jq -r '.layers[] | "\(.digest) \(.size)"' "$m")
done
unique_blob_bytes=0
for d in "${!blob_size[@]}"; do unique_blob_bytes=$((unique_blob_bytes + blob_size[$d])); done
all_blob_bytes=0
for img in "${IMAGES[@]}"; do all_blob_bytes=$((all_blob_bytes + img_blob_bytes[$img])); done
mm=$(manifest_of "$moved_layout")
moved_layers=$(jq '.layers | length' "$mm")
moved_new_bytes=$(jq '.layers[-1].size' "$mm")
moved_config_bytes=$(jq '.config.size' "$mm")

# ---------------------------------------------------------------------------------------
# Measurement helpers
rm -rf "$run"
mkdir -p "$run" "$log"
: >"$log/commands"
: >"$log/times.tsv"
reg_log=$run/registry.access.log
reg_pid=""
cleanup() {
    if [[ -n $reg_pid ]]; then
        kill "$reg_pid" 2>/dev/null || true
        wait "$reg_pid" 2>/dev/null || true
    fi
    if [[ -z ${KEEP:-} ]]; then rm -rf "$run"; fi
}
trap cleanup EXIT

# logcmd TEXT: record a command for the report, with paths and the port abbreviated
logcmd() {
    local c=$1
    c=${c//"$S"/stratum}
    c=${c//"$layouts"/\$L}
    c=${c//"$extra"/\$X}
    c=${c//"$run"/\$R}
    [[ -n ${rport:-} ]] && c=${c//"127.0.0.1:$rport"/127.0.0.1:PORT}
    grep -qxF -- "$c" "$log/commands" || printf '%s\n' "$c" >>"$log/commands"
}

# registry access log since line N: "blob_gets blob_bytes manifest_requests requests"
# (combined log format: HOST - - [DATE ZONE] "METHOD URI PROTO" STATUS BYTES "REF" "UA")
reg_lines() { wc -l <"$reg_log"; }
reg_since() {
    sed -n "$(($1 + 1)),\$p" "$reg_log" | awk '
        $6 !~ /^"(GET|HEAD|PUT|POST|PATCH|DELETE)$/ { next }
        { n++; m = substr($6, 2) }
        m == "GET" && $7 ~ /\/blobs\/sha256:/ { bg++; bb += $10 }
        $7 ~ /\/manifests\// { mr++ }
        END { printf "%d %d %d %d\n", bg, bb, mr, n }'
}

# timed LABEL CMD... : sync first (so that writeback of a previous step is not billed
# here), then run CMD under GNU time; records wall, user, sys, max RSS (KiB), 1-min load,
# and what the registry logged meanwhile (blob GETs, their bytes, manifest requests, requests).
timed() {
    local label=$1
    shift
    local tf=$log/time.$$ rc=0 load l0 e u s m reg
    logcmd "${SHOWN:-$*}"
    sync
    load=$(cut -d' ' -f1 /proc/loadavg)
    l0=$(reg_lines)
    /usr/bin/time -f '%e %U %S %M' -o "$tf" timeout "$STEP_TIMEOUT" "$@" >"$log/last.out" 2>"$log/last.err" || rc=$?
    if ((rc == 124)); then
        die "step '$label' timed out after $STEP_TIMEOUT s (STEP_TIMEOUT): $*"
    elif ((rc != 0)); then
        say "FAILED ($rc): $*"
        cat "$log/last.out" "$log/last.err" >&2
        die "step '$label' failed; output in $log/last.out and $log/last.err"
    fi
    sleep 0.3 # the access log line of the last request is written after its response
    read -r e u s m <"$tf"
    reg=$(reg_since "$l0")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$e" "$u" "$s" "$m" "$load" "${reg// /$'\t'}" >>"$log/times.tsv"
    say "$(printf '%-30s %8.2f s wall %8.2f s cpu %6d MiB  load %s  registry: %s blob GETs' "$label" "$e" \
        "$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')" $((m / 1024)) "$load" "${reg%% *}")"
}
# TSV columns: 1 label, 2 wall, 3 user, 4 sys, 5 rss KiB, 6 load, 7 blob GETs, 8 blob bytes,
# 9 manifest requests, 10 requests
col() { awk -F '\t' -v l="$1" -v c="$2" '$1 == l { v = $c } END { print v }' "$log/times.tsv"; }
t_of() { col "$1" 2; }
cpu_of() { awk -F '\t' -v l="$1" '$1 == l { v = sprintf("%.2f", $3 + $4) } END { print v }' "$log/times.tsv"; }
# sums over the labels starting with PREFIX: "wall cpu maxrss_MiB first_load blob_gets blob_bytes"
sums() {
    awk -F '\t' -v p="$1" 'index($1, p) == 1 { w += $2; c += $3 + $4; if ($5 > m) m = $5; if (l == "") l = $6; g += $7; b += $8 }
        END { printf "%.2f %.2f %.0f %s %d %d\n", w, c, m / 1024, l, g, b }' "$log/times.tsv"
}
sum_t() { sums "$1" | cut -d' ' -f1; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }
thr() { awk -v b="$1" -v t="$2" 'BEGIN { if (t == 0) print "n/a"; else printf "%.0f MB/s", b / 1e6 / t }'; }
yes_no() { awk -v v="$1" -v t="$2" 'BEGIN { print (v < t) ? "**yes**" : "**no**" }'; }
# cols LABEL -> "wall | cpu | rss MiB | load | blob GETs (MB)"
cols() {
    awk -F '\t' -v l="$1" '$1 == l { r = sprintf("%.2f | %.2f | %.0f | %s | %d (%.1f MB)", $2, $3 + $4, $5 / 1024, $6, $7, $8 / 1e6) } END { print r }' "$log/times.tsv"
}
scols() { # PREFIX -> the same, summed over the labels starting with PREFIX
    local w c m l g b
    read -r w c m l g b < <(sums "$1")
    printf '%s | %s | %s | %s | %d (%s MB)\n' "$w" "$c" "$m" "$l" "$g" "$(mb "$b")"
}

free_port() {
    local p
    for p in $(shuf -i 20000-60000 -n 50); do
        [[ -z $(ss -Hltn "sport = :$p") ]] && { echo "$p"; return; }
    done
    die "no free port"
}

cpu_model=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
mem_total=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
fs=$(df -T "$WORK" | awk 'NR == 2 { print $2 " on " $1 }')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
uptime_before=$(uptime)
started=$(date -u '+%Y-%m-%d %H:%M UTC')

# ---------------------------------------------------------------------------------------
# The registry
rport=$(free_port)
mkdir -p "$run/registry"
cat >"$run/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $run/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$rport
EOF
: >"$reg_log"
docker-registry serve "$run/registry.yml" >"$reg_log" 2>"$run/registry.err" &
reg_pid=$!
logcmd "docker-registry serve \$R/registry.yml   # filesystem storage in \$R/registry, http.addr 127.0.0.1:PORT, access log on (stdout)"
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$rport/v2/" >/dev/null && break; sleep 0.05; done
curl -sf "http://127.0.0.1:$rport/v2/" >/dev/null || { cat "$run/registry.err" >&2; die "docker-registry did not start"; }
reg=127.0.0.1:$rport

say "stratum $stratum_rev (binary $stratum_sha), SCALE=$SCALE, ${#IMAGES[@]} images, ${#blob_size[@]} unique layer blobs, $(mb "$unique_blob_bytes") MB; registry on $reg"

for img in "${IMAGES[@]}"; do
    timed "push:$img" skopeo copy -q --dest-tls-verify=false "oci:$layouts/$img:1" "docker://$reg/bench/$img:1"
done
# warm the server side: the registry's blobs are read once
find "$run/registry" -type f -exec cat {} + >/dev/null

"$S" keygen "$run/key" >/dev/null
logcmd "$S keygen $run/key"
wl=$run/wishlist.yaml
{
    echo "version: 1"
    echo "repository: $run/repo"
    echo "signing_key: $run/key"
    echo "registries:"
    echo "  \"$reg\": { insecure: true }"
    echo "event_log: $run/sync-events.jsonl"
    echo "images:"
    for img in "${IMAGES[@]}"; do echo "  - docker://$reg/bench/$img:1"; done
} >"$wl"
wl_shown=$(sed -e "s|$run|\$R|g" -e "s|127.0.0.1:$rport|127.0.0.1:PORT|g" "$wl")

# ---------------------------------------------------------------------------------------
# a + c: cold sync and skopeo + umoci, interleaved, RUNS rounds
for i in $(seq 1 "$RUNS"); do
    say "round $i of $RUNS"
    rm -rf "$run/repo"
    "$S" init "$run/repo" --key "$run/key" --name bench-sync >/dev/null
    logcmd "rm -rf $run/repo; $S init $run/repo --key $run/key --name bench-sync   # before each cold sync"
    timed "sync-cold#$i" "$S" sync "$wl" --json
    cp "$log/last.out" "$log/sync-cold.$i.json"
    jq -e --argjson n "${#IMAGES[@]}" '(.added | length) == $n and (.failed | length) == 0 and .new_revision' \
        "$log/sync-cold.$i.json" >/dev/null || { cat "$log/sync-cold.$i.json" >&2; die "cold sync $i did not add the ${#IMAGES[@]} images"; }

    rm -rf "$run/oci" "$run/bundles"
    mkdir -p "$run/bundles"
    logcmd "rm -rf $run/oci $run/bundles   # before each round"
    for img in "${IMAGES[@]}"; do
        timed "skopeo#$i:$img" skopeo copy -q --src-tls-verify=false "docker://$reg/bench/$img:1" "oci:$run/oci:$img"
        timed "umoci#$i:$img" umoci unpack "${rootless[@]}" --image "$run/oci:$img" "$run/bundles/$img"
    done
    rm -rf "$run/bundles"
done
best_sync() { awk -F '\t' 'index($1, "sync-cold#") == 1 && (b == "" || $2 + 0 < bt + 0) { b = $1; bt = $2 } END { print b }' "$log/times.tsv"; }
cold=$(best_sync)
cold_i=${cold#*#}
cp "$log/sync-cold.$cold_i.json" "$log/sync-cold.json"
# the fastest round of skopeo + umoci, by their sum
alt_i=1
alt_best=""
for i in $(seq 1 "$RUNS"); do
    t=$(awk -v a="$(sum_t "skopeo#$i:")" -v b="$(sum_t "umoci#$i:")" 'BEGIN { printf "%.2f", a + b }')
    if [[ -z $alt_best ]] || awk -v a="$t" -v b="$alt_best" 'BEGIN { exit !(a < b) }'; then alt_best=$t alt_i=$i; fi
done
alt_t=$alt_best
skopeo_t=$(sum_t "skopeo#$alt_i:")
umoci_t=$(sum_t "umoci#$alt_i:")
alt_cpu=$(awk -v a="$(sums "skopeo#$alt_i:" | cut -d' ' -f2)" -v b="$(sums "umoci#$alt_i:" | cut -d' ' -f2)" 'BEGIN { printf "%.2f", a + b }')
cold_t=$(t_of "$cold")
runs_cold=$(awk -F '\t' 'index($1, "sync-cold#") == 1 { printf "%s%s", s, $2; s = ", " }' "$log/times.tsv")
runs_alt=$(for i in $(seq 1 "$RUNS"); do awk -v a="$(sum_t "skopeo#$i:")" -v b="$(sum_t "umoci#$i:")" 'BEGIN { printf "%.2f\n", a + b }'; done | paste -sd, | sed 's/,/, /g')

# ---------------------------------------------------------------------------------------
# b: unchanged re-sync (repository of the last cold sync)
for j in $(seq 1 "$AGAIN"); do
    timed "sync-again#$j" "$S" sync "$wl" --json
    cp "$log/last.out" "$log/sync-again.$j.json"
done
again_ok=yes
for j in $(seq 1 "$AGAIN"); do
    jq -e --argjson n "${#IMAGES[@]}" '(.added | length) == 0 and (.updated | length) == 0 and (.retired | length) == 0
        and (.failed | length) == 0 and (.kept | length) == $n and (.new_revision | not)' "$log/sync-again.$j.json" >/dev/null ||
        { again_ok=no; say "WARNING: unchanged re-sync $j changed something:"; cat "$log/sync-again.$j.json" >&2; }
done
again_max=$(awk -F '\t' 'index($1, "sync-again#") == 1 && $2 + 0 >= m + 0 { m = $2 } END { print m }' "$log/times.tsv")
again_gets=$(awk -F '\t' 'index($1, "sync-again#") == 1 { g += $7 } END { print g + 0 }' "$log/times.tsv")
again_manifests=$(awk -F '\t' 'index($1, "sync-again#") == 1 { printf "%s%d", s, $9; s = ", " }' "$log/times.tsv")
runs_again=$(awk -F '\t' 'index($1, "sync-again#") == 1 { printf "%s%s", s, $2; s = ", " }' "$log/times.tsv")
again_json_s=$(jq -r '.seconds * 1000 | round / 1000' "$log/sync-again.1.json")

# ---------------------------------------------------------------------------------------
# d: the tag bench/$MOVED:1 moves to an image whose top layer was rebuilt
SHOWN="skopeo copy -q --dest-tls-verify=false oci:\$X/$MOVED-moved:1 docker://127.0.0.1:PORT/bench/$MOVED:1   # the tag moves" \
    timed "push:moved" skopeo copy -q --dest-tls-verify=false "oci:$moved_layout:1" "docker://$reg/bench/$MOVED:1"
timed "sync-moved" "$S" sync "$wl" --json
cp "$log/last.out" "$log/sync-moved.json"
jq -e '(.updated | length) == 1 and (.added | length) == 0 and (.failed | length) == 0 and .new_revision' "$log/sync-moved.json" >/dev/null ||
    { say "WARNING: the sync after the tag move did not update exactly one image:"; cat "$log/sync-moved.json" >&2; }
moved_item=$(jq -r '[.updated[], .added[]] | map("\(.layers_ingested) layers ingested, \(.layers_skipped) skipped, \(.bytes) bytes downloaded (\(.bytes / 1e6 * 10 | round / 10) MB), \(.seconds * 100 | round / 100) s") | join("; ")' "$log/sync-moved.json")
timed "sync-moved-again" "$S" sync "$wl" --json
cp "$log/last.out" "$log/sync-moved-again.json"
jq -e --argjson n "${#IMAGES[@]}" '(.kept | length) == $n and (.new_revision | not)' "$log/sync-moved-again.json" >/dev/null ||
    { say "WARNING: the sync after the moved sync changed something:"; cat "$log/sync-moved-again.json" >&2; }
# the same move for skopeo + umoci, into the layout of the last round (known blobs skipped)
timed "skopeo-moved" skopeo copy -q --src-tls-verify=false "docker://$reg/bench/$MOVED:1" "oci:$run/oci:$MOVED"
timed "umoci-moved" umoci unpack "${rootless[@]}" --image "$run/oci:$MOVED" "$run/bundles/$MOVED-moved"
rm -rf "$run/bundles"

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
uptime_after=$(uptime)
repo_du=$(du -sb "$run/repo" | cut -f1)

# ---------------------------------------------------------------------------------------
# Report
per_image() { # JSON -> "name: ingested/skipped, MB, s; ..."
    jq -r '.added | map("\(.name | sub("^[^/]*/bench/"; "") | sub(":1$"; "")) \(.layers_ingested)/\(.layers_skipped) layers, \(.bytes / 1e6 * 10 | round / 10) MB, \(.seconds * 100 | round / 100) s") | join("; ")' "$1"
}
per_step() { # PREFIX -> "img s; ..."
    local img
    for img in "${IMAGES[@]}"; do printf '%s %s; ' "$img" "$(t_of "$1$img")"; done | sed 's/; $//'
}
cold_bytes=$(jq '[.added[].bytes] | add' "$log/sync-cold.json")
report=$base/results.md
{
    echo "### stratum sync benchmark, SCALE=$SCALE ($started)"
    echo
    echo "Machine: $(nproc) CPUs ($cpu_model), $mem_total RAM, Linux $(uname -r), work dir on $fs."
    echo "stratum: git HEAD $stratum_rev$( ((stratum_dirty)) && echo " + $stratum_dirty modified files") when the run started; binary built $stratum_built, sha256 $stratum_sha…;"
    echo "$(skopeo --version), $(docker-registry --version | awk '{ print "docker-registry " $3 }'), $(umoci --version)."
    echo "Load average (1/5/15 min) before: $load_before, after: $load_after (column \"load\": 1-min load average when the step started)."
    echo "Registry: \`docker-registry\` on 127.0.0.1 (loopback), filesystem storage on the same disk, its files in the page cache; blob GETs and their bytes are counted from its access log."
    echo "\`sync\` before each timed step; the cold sync and skopeo + umoci alternate (RUNS=$RUNS rounds), the fastest of each is used. The registry's own CPU time is in neither column."
    echo
    echo "Images: ${#IMAGES[@]}, $(for img in "${IMAGES[@]}"; do printf '%s (%s layers, %s MB) ' "$img" "${img_layers[$img]}" "$(mb "${img_blob_bytes[$img]}")"; done)"
    echo "Unique layer blobs: ${#blob_size[@]}, $(mb "$unique_blob_bytes") MB gzip ($(mb "$all_blob_bytes") MB summed over the images)."
    echo "Moved tag: bench/$MOVED:1 → an image of $moved_layers layers: base's two, and $MOVED's top layer rebuilt (same files, new mtimes, one new file; $(mb "$moved_new_bytes") MB gzip)."
    echo
    echo "| step | wall s | CPU s (user+sys) | peak RSS MiB | load | registry blob GETs (MB) | notes |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    echo "| **stratum sync, cold, ${#IMAGES[@]} images, fresh repository** | $(cols "$cold") | $(thr "$unique_blob_bytes" "$cold_t") of unique blobs; per image (ingested/skipped layers, downloaded, s from \`--json\`): $(per_image "$log/sync-cold.json")$( ((RUNS > 1)) && echo "; runs: $runs_cold") |"
    read -r _ _ sk_rss sk_load sk_gets sk_bytes < <(sums "skopeo#$alt_i:")
    read -r _ _ um_rss _ _ _ < <(sums "umoci#$alt_i:")
    echo "| **\`skopeo copy\` + \`umoci unpack\`, each image (sum)** | $alt_t | $alt_cpu | $((sk_rss > um_rss ? sk_rss : um_rss)) | $sk_load | $sk_gets ($(mb "$sk_bytes") MB) | the two rows below$( ((RUNS > 1)) && echo "; runs: $runs_alt") |"
    echo "| … \`skopeo copy\` alone (sum) | $(scols "skopeo#$alt_i:") | $(per_step "skopeo#$alt_i:") |"
    echo "| … \`umoci unpack\` alone (sum) | $(scols "umoci#$alt_i:") | $(per_step "umoci#$alt_i:") |"
    for j in $(seq 1 "$AGAIN"); do
        echo "| **stratum sync again, unchanged** ($j) | $(cols "sync-again#$j") | $(jq -r '"\(.kept | length) kept, \(.added | length) added, \(.updated | length) updated, new revision: \(.new_revision)"' "$log/sync-again.$j.json"); $(col "sync-again#$j" 9) manifest requests, $(col "sync-again#$j" 10) requests in all |"
    done
    echo "| stratum sync after the tag move | $(cols sync-moved) | $moved_item; $(col sync-moved 9) manifest requests; the new blobs are $(mb "$((moved_new_bytes + moved_config_bytes))") MB (top layer + config) |"
    echo "| stratum sync again, unchanged, after the move | $(cols sync-moved-again) | $(jq -r '"\(.kept | length) kept, new revision: \(.new_revision)"' "$log/sync-moved-again.json") |"
    echo "| \`skopeo copy\` + \`umoci unpack\` of the moved image (known blobs in the layout) | $(awk -v a="$(t_of skopeo-moved)" -v b="$(t_of umoci-moved)" 'BEGIN { printf "%.2f", a + b }') | $(awk -v a="$(cpu_of skopeo-moved)" -v b="$(cpu_of umoci-moved)" 'BEGIN { printf "%.2f", a + b }') | $(($(col umoci-moved 5) / 1024)) | $(col skopeo-moved 6) | $(col skopeo-moved 7) ($(mb "$(col skopeo-moved 8)") MB) | skopeo $(t_of skopeo-moved) s, umoci $(t_of umoci-moved) s |"
    echo
    echo "| target (issue 4) | measured | target | met |"
    echo "|---|---:|---:|---|"
    echo "| cold sync time / (skopeo copy + umoci unpack) time | $(ratio "$cold_t" "$alt_t") ($cold_t s / $alt_t s = skopeo $skopeo_t s + umoci $umoci_t s; fastest of $RUNS each); CPU: $(ratio "$(cpu_of "$cold")" "$alt_cpu") | < 1 | $(yes_no "$(ratio "$cold_t" "$alt_t")" 1) |"
    echo "| unchanged re-sync, wall time | $again_max s (slowest of $AGAIN: $runs_again; the sync's own \`seconds\`: $again_json_s) | < 1 s | $(yes_no "$again_max" 1) |"
    echo "| unchanged re-sync, blob GETs | $again_gets (manifest requests per sync: $again_manifests) | 0 | $([[ $again_gets -eq 0 && $again_ok == yes ]] && echo "**yes**" || echo "**no**") |"
    echo
    echo "Cold sync: $(mb "$cold_bytes") MB downloaded according to \`--json\` (unique blobs: $(mb "$unique_blob_bytes") MB); repository after the moved sync: $(mb "$repo_du") MB (\`du -sb\`)."
    echo
    echo "Wishlist (\$R/wishlist.yaml):"
    echo
    echo '```yaml'
    echo "$wl_shown"
    echo '```'
    echo
    echo "Commands (as run; \`/usr/bin/time -f '%e %U %S %M'\` around each timed one, \`sync\` before each;"
    echo "L=$layouts, X=$extra, R=$run, stratum=$S, PORT a free port):"
    echo
    echo '```'
    cat "$log/commands"
    echo '```'
} >"$report"
cp "$report" "$base/results-$SCALE.md"
cat "$report"
echo >&2
say "uptime before: $uptime_before"
say "uptime after:  $uptime_after"
say "report: $report; raw timings: $log/times.tsv (label wall user sys rss_KiB load blob_GETs blob_bytes manifest_requests requests); sync JSON: $log/sync-*.json"
