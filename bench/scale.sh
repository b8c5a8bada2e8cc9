#!/usr/bin/env bash
# stratum scale benchmark (issue 5, "Scale").
#
# One synthetic OCI layout (bench/gen-scale.py: 4 shared base layers of ~1400-2800
# entries, one unique top layer of 50-300 entries per image, ~5000 entries per image
# rootfs) is published into one repository, B images per `stratum publish` call (one
# revision per call), up to N images, and measured:
#   a. the time to publish ONE new image alone (one call, one source) when the repository
#      holds 10 images and again when it holds N images: SINGLE runs each, median,
#      ratio N/10 (target <= 1.2)
#   b. every catalog object under data/ (superseded revisions included) decompressed and
#      counted with sqlite3: the largest by entries (target: none above 200 000), its
#      kind and path, the total entries, by kind
#   c. the repository size and object count
#   d. `stratum rm` of RM images, then `stratum gc --keep-revisions 1 --safety-window 0
#      --now (in 40 days)`: time and the gc report
#   e. replica catch-up (when the binary has `stratum replicate`): `stratum serve` in the
#      background, a full `stratum replicate URL DEST`, then one new image published and
#      `stratum replicate` again (the incremental catch-up)
# and every batch publish (the publish time per image as the repository grows). Each
# step: wall, CPU (user+sys) and peak RSS from GNU time. Prints a markdown report, also
# written to $WORK/scale/results.md (and results-N<N>.md).
#
# Usage:  bench/scale.sh                  # N=10000
#         QUICK=1 bench/scale.sh          # N=500, a debugging run
#         N=2000 B=100 bench/scale.sh
# Environment:
#   N=COUNT        images in the repository before the "at N" measurement (default 10000)
#   B=COUNT        images per publish call (default 250)
#   SINGLE=COUNT   single-image publishes at 10 and at N (default 5; the median is used)
#   RM=COUNT       images removed before gc (default 100)
#   QUICK=1        N=500 B=100 unless N/B are set
#   WORK=DIR       work dir (default bench/work, gitignored); this script uses $WORK/scale:
#                  the layout in $WORK/scale/layout (generated once, extended when a run
#                  needs more images; REBUILD=1 regenerates it), the run in
#                  $WORK/scale/run-N<N> (removed at the end unless KEEP=1)
#   GEN_JOBS=J     worker processes of gen-scale.py (default 1)
#   STRATUM=PATH   stratum binary (default: `cargo build --release`, target/release/stratum);
#                  copied to $WORK/bin/stratum-scale first so that a concurrent rebuild
#                  cannot change it in the middle of a run
#   STRATUM_REV=R  the commit to report for a STRATUM binary built elsewhere (default: HEAD)
#   NOBUILD=1      do not run `cargo build --release`, use target/release/stratum as is
#   CHECK=0        skip `stratum check` after gc (default: run it)
#   PROFILE=1      also publish one more image at N and at 10 under `perf record --call-graph
#                  dwarf` and one under `strace -c -w -f` (in the report; not in the figures)
#   KEEP=1         keep the run dir (repository, replica)
#   STEP_TIMEOUT=S give up on a step that takes longer than S seconds (default 7200)
#
# Needs python3, zstd, sqlite3, jq, curl and GNU time (the Debian packages are installed
# with apt-get when missing and root).
# shellcheck disable=SC2016 # single-quoted $L, $R are meant literally (shown commands)
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
if [[ -n ${QUICK:-} ]]; then
    N=${N:-500}
    B=${B:-100}
fi
N=${N:-10000}
B=${B:-250}
SINGLE=${SINGLE:-5}
RM=${RM:-100}
GEN_JOBS=${GEN_JOBS:-1}
CHECK=${CHECK:-1}
STEP_TIMEOUT=${STEP_TIMEOUT:-7200}
((N >= 10 + SINGLE + RM && B >= 1 && SINGLE >= 1)) || { echo "need N >= 10 + SINGLE + RM, B >= 1, SINGLE >= 1" >&2; exit 2; }
WORK=${WORK:-$root/bench/work}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
base=$WORK/scale
layout=$base/layout
run=$base/run-N$N
log=$base/log-N$N
mkdir -p "$base"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Tools
mapfile -t need_pkgs < <(missing_debs zstd:zstd sqlite3:sqlite3 jq:jq curl:curl python3:python3)
[[ -x /usr/bin/time ]] || need_pkgs+=(time)
install_debs ${need_pkgs[@]+"${need_pkgs[@]}"}

stratum_under_test stratum-scale
have_replicate=""
if "$S" replicate --help >/dev/null 2>&1; then have_replicate=1; fi

# ---------------------------------------------------------------------------------------
# Measurement helpers (as in bench/publish.sh)
rm -rf "$run" "$log"
mkdir -p "$run" "$log"
R=$run/repo    # the repository that grows to N images
R10=$run/repo10 # a second repository of 10 images, for the interleaved control at 10
K=$run/key
: >"$log/commands"
: >"$log/times.tsv"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
uptime_before=$(uptime)
started=$(date -u '+%Y-%m-%d %H:%M UTC')

logcmd() {
    local c=$1
    c=${c//"$S"/stratum}
    c=${c//"$layout"/\$L}
    c=${c//"$R10"/\$R10}
    c=${c//"$R"/\$R}
    c=${c//"$K"/\$K}
    c=${c//"$run"/\$W}
    c=${c//"$here"/bench}
    grep -qxF -- "$c" "$log/commands" || printf '%s\n' "$c" >>"$log/commands"
}

# timed LABEL CMD... : sync, then CMD under GNU time (stdout in $log/LABEL.out, stderr
# in $log/LABEL.err); records wall, user, sys, max RSS (KiB) and the 1-min load.
# SHOWN=TEXT overrides the command recorded for the report.
timed() {
    local label=$1
    shift
    local tf=$log/time.$$ rc=0 load safe=${label//[^A-Za-z0-9_.@#-]/_}
    logcmd "${SHOWN:-$*}"
    sync
    load=$(cut -d' ' -f1 /proc/loadavg)
    /usr/bin/time -f '%e %U %S %M' -o "$tf" timeout "$STEP_TIMEOUT" "$@" >"$log/$safe.out" 2>"$log/$safe.err" || rc=$?
    if ((rc == 124)); then
        die "step '$label' timed out after $STEP_TIMEOUT s (STEP_TIMEOUT): $*"
    elif ((rc != 0)); then
        say "FAILED ($rc): $*"
        tail -n 30 "$log/$safe.err" >&2
        die "step '$label' failed; output in $log/$safe.out and $log/$safe.err"
    fi
    read -r e u s m <"$tf"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$e" "$u" "$s" "$m" "$load" >>"$log/times.tsv"
    say "$(printf '%-26s %8.2f s wall %8.2f s cpu %7d MiB  load %s' "$label" "$e" "$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')" $((m / 1024)) "$load")"
}
t_of() { awk -F '\t' -v l="$1" '$1 == l { print $2 }' "$log/times.tsv" | tail -n1; }
cols() { awk -F '\t' -v l="$1" '$1 == l { printf "%.2f | %.2f | %.0f | %s", $2, $3 + $4, $5 / 1024, $6 }' "$log/times.tsv" | tail -n1; }
# median of the wall (or CPU with "cpu") times of the labels starting with PREFIX
median() {
    awk -F '\t' -v p="$1" -v w="${2:-wall}" 'index($1, p) == 1 { print (w == "cpu" ? $3 + $4 : $2) }' "$log/times.tsv" |
        sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) printf "%.2f\n", a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
all_of() { awk -F '\t' -v p="$1" 'index($1, p) == 1 { printf "%s%.2f", s, $2; s = ", " }' "$log/times.tsv"; }
max_rss_of() { awk -F '\t' -v p="$1" 'index($1, p) == 1 && $5 > m { m = $5 } END { printf "%.0f", m / 1024 }' "$log/times.tsv"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || a == "n/a" || b == "n/a") print "n/a"; else printf "%.2f", a / b }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.1f", 100 * a / b }'; }
yes_no() { awk -v a="$1" -v b="$2" -v op="$3" 'BEGIN { if (a == "n/a") print "n/a"; else if ((op == "<=" && a <= b) || (op == "<" && a < b)) print "yes"; else print "**no**" }'; }
tag() { printf 'i%05d' "$1"; }
src() { printf 'oci:%s:%s' "$layout" "$(tag "$1")"; }
name() { printf 'local/layout:%s' "$(tag "$1")"; }
images_in_repo() { "$S" images "$R" --json | jq length; }

# ---------------------------------------------------------------------------------------
# Image numbers: 1..10 first; N+1..N+SINGLE the singles at 10; 11..N-SINGLE in batches
# (so that the repository holds exactly N images before the first single at N);
# N+SINGLE+1..N+2*SINGLE the singles at N; then one for the replica and two for PROFILE.
at10_first=$((N + 1))
atN_first=$((N + SINGLE + 1))
replica_img=$((N + 2 * SINGLE + 1))
prof_img=$((N + 2 * SINGLE + 2))
total_images=$((N + 2 * SINGLE + 3))
((total_images <= 99999)) || die "N too large (at most 99999 - 2*SINGLE - 3)"

if [[ -n ${REBUILD:-} ]]; then rm -rf "$layout"; fi
gen_have=0
[[ -f $layout/.gen/state.json ]] && gen_have=$(jq '.images | length' "$layout/.gen/state.json")
SHOWN="python3 bench/gen-scale.py \$L --images $total_images --jobs $GEN_JOBS" \
    timed gen-layout python3 "$here/gen-scale.py" "$layout" --images "$total_images" --jobs "$GEN_JOBS"
gen_new=$((total_images - gen_have))
((gen_new < 0)) && gen_new=0
summary=$layout/.gen/summary.json
layout_bytes=$(du -sb "$layout" | cut -f1)

"$S" keygen "$K" >/dev/null
logcmd "$S keygen $K"
timed init "$S" init "$R" --key "$K" --name scale

# publish_batch LABEL FIRST LAST: one call with images FIRST..LAST
publish_batch() {
    local label=$1 first=$2 last=$3 i srcs=()
    for ((i = first; i <= last; i++)); do srcs+=("$(src "$i")"); done
    SHOWN="stratum publish oci:\$L:$(tag "$first") … oci:\$L:$(tag "$last") --repo \$R --key \$K --json" \
        timed "$label" "$S" publish "${srcs[@]}" --repo "$R" --key "$K" --json
    printf '%s\t%s\t%s\n' "$first" "$last" "$(t_of "$label")" >>"$log/batches.tsv"
}
: >"$log/batches.tsv"

say "stratum $stratum_rev (binary $stratum_sha), N=$N B=$B SINGLE=$SINGLE RM=$RM, layout $layout ($(mb "$layout_bytes") MB)"

publish_batch batch:1-10 1 10
n10=$(images_in_repo)
for ((j = 0; j < SINGLE; j++)); do
    i=$((at10_first + j))
    SHOWN="stratum publish oci:\$L:$(tag "$i") --repo \$R --key \$K --json" \
        timed "single@10#$((j + 1))" "$S" publish "$(src "$i")" --repo "$R" --key "$K" --json
done

# batches 11..N-SINGLE
first=11
last_batch=$((N - SINGLE))
t_batches_start=$(date +%s)
while ((first <= last_batch)); do
    last=$((first + B - 1))
    ((last > last_batch)) && last=$last_batch
    publish_batch "batch:$first-$last" "$first" "$last"
    first=$((last + 1))
done
t_batches=$(($(date +%s) - t_batches_start))
nN=$(images_in_repo)
# The control: a second repository R10 holding images 1..10; its singles (the images of
# the singles at 10 in R, new to R10) alternate with the singles at N in R, so that both
# see the same machine load.
timed init10 "$S" init "$R10" --key "$K" --name scale10
srcs10=()
for ((i = 1; i <= 10; i++)); do srcs10+=("$(src "$i")"); done
SHOWN="stratum publish oci:\$L:$(tag 1) … oci:\$L:$(tag 10) --repo \$R10 --key \$K --json" \
    timed R10:1-10 "$S" publish "${srcs10[@]}" --repo "$R10" --key "$K" --json
for ((j = 0; j < SINGLE; j++)); do
    i=$((atN_first + j))
    SHOWN="stratum publish oci:\$L:$(tag "$i") --repo \$R --key \$K --json" \
        timed "single@N#$((j + 1))" "$S" publish "$(src "$i")" --repo "$R" --key "$K" --json
    i=$((at10_first + j))
    SHOWN="stratum publish oci:\$L:$(tag "$i") --repo \$R10 --key \$K --json" \
        timed "single@10b#$((j + 1))" "$S" publish "$(src "$i")" --repo "$R10" --key "$K" --json
done
revision_at_N=$("$S" info "$R" --json | jq .revision)

# PROFILE: one single publish in R (N images) and in R10 (10 images) under `perf record
# --call-graph dwarf` (inclusive share of stratum's functions), and one more in each under `strace -c -w -f` (wall time per
# system call). Not timed, not part of the figures.
profile_one() { # WHERE REPO IMAGE
    local where=$1 repo=$2 img=$3
    if command -v perf >/dev/null; then
        perf record -q --call-graph dwarf,32768 -F 1999 -o "$log/perf-$where.data" "$S" publish "$(src "$img")" \
            --repo "$repo" --key "$K" --json >"$log/perf-$where.out" 2>"$log/perf-$where.err" || true
        # inclusive ("children") share of the samples, stratum's own functions only
        perf report -i "$log/perf-$where.data" --stdio --children --sort symbol -g none 2>/dev/null |
            grep -E '^ +[0-9.]+%' | grep -E 'stratum_|sqlite3_prepare|zstd::bulk|blake3::' | sed 's/[ -]*$//' |
            awk 'NR <= 40' >"$log/perf-$where.txt" || true
        rm -f "$log/perf-$where.data"
    fi
    if command -v strace >/dev/null; then
        strace -c -w -f -o "$log/strace-$where.txt" "$S" publish "$(src $((img + 1)))" --repo "$repo" --key "$K" --json \
            >"$log/strace-$where.out" 2>"$log/strace-$where.err" || true
    fi
}
if [[ -n ${PROFILE:-} ]]; then
    say "PROFILE: perf record and strace -c -w -f of one publish at N and at 10"
    logcmd "PROFILE: perf record --call-graph dwarf,32768 -F 1999 stratum publish …; strace -c -w -f stratum publish … (at N in \$R, at 10 in \$R10)"
    profile_one N "$R" "$prof_img"
    profile_one 10 "$R10" "$prof_img"
fi

# ---------------------------------------------------------------------------------------
# b, c. Catalog census and repository size (before rm/gc: every revision's objects)
say "catalog census (every catalog object under data/)"
logcmd "for each data/**/*C: zstd -dcq OBJ > db; sqlite3 db 'select count(*) from entries' (+ properties kind, path)"
census_t0=$(date +%s.%N)
python3 - "$R/data" "$log/catalogs.tsv" <<'EOF'
import os, sqlite3, subprocess, sys, tempfile
data, out = sys.argv[1], sys.argv[2]
tmpdir = tempfile.mkdtemp()
db = os.path.join(tmpdir, "c.db")
with open(out, "w") as o:
    for sub in sorted(os.listdir(data)):
        d = os.path.join(data, sub)
        for f in sorted(os.listdir(d)):
            if not f.endswith("C"):
                continue
            p = os.path.join(d, f)
            with open(db, "wb") as w:
                subprocess.run(["zstd", "-dcq", p], stdout=w, check=True)
            c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
            n = c.execute("select count(*) from entries").fetchone()[0]
            props = dict(c.execute("select key, value from properties"))
            c.close()
            o.write("%s\t%s\t%d\t%d\t%d\t%s\n" % (sub + f, props.get("kind", "?"), n, os.path.getsize(p), os.path.getsize(db), props.get("path", "?")))
os.unlink(db)
os.rmdir(tmpdir)
EOF
census_t=$(awk -v a="$census_t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
largest=$(awk -F '\t' '$3 + 0 > m + 0 || NR == 1 { m = $3; l = $0 } END { print l }' "$log/catalogs.tsv")
IFS=$'\t' read -r largest_id largest_kind largest_entries largest_stored largest_raw largest_path <<<"$largest"
total_entries=$(awk -F '\t' '{ s += $3 } END { printf "%d", s }' "$log/catalogs.tsv")
n_catalogs=$(wc -l <"$log/catalogs.tsv")
over_200k=$(awk -F '\t' '$3 > 200000' "$log/catalogs.tsv" | wc -l)
by_kind=$(awk -F '\t' '{ n[$2]++; e[$2] += $3; if ($3 > m[$2]) m[$2] = $3; s[$2] += $4; r[$2] += $5 }
    END { for (k in n) printf "| %s | %d | %d | %d | %.0f | %.1f | %.1f |\n", k, n[k], e[k], m[k], e[k] / n[k], s[k] / 1e6, r[k] / 1e6 }' "$log/catalogs.tsv" | sort)
top5=$(sort -t $'\t' -k3,3nr "$log/catalogs.tsv" | awk -F '\t' 'NR <= 5 { printf "%s%s %s (%d entries, %.1f MB stored)", s, $2, $6, $3, $4 / 1e6; s = "; " }')
repo_du=$(du -sb "$R" | cut -f1)
repo_disk=$(du -s --block-size=1 "$R" | cut -f1)
read -r repo_objects repo_data < <(find "$R/data" -type f -printf '%s\n' | awk '{ n++; s += $1 } END { printf "%d %d\n", n, s }')
# catalog objects (suffix C) and their share of the repository (issue 17: <= 25 %)
catalogs_of() { find "$1/data" -type f -name '*C' -printf '%s\n' | awk '{ n++; s += $1 } END { printf "%d %d\n", n, s }'; }
read -r cat_n cat_bytes < <(catalogs_of "$R")
objects_by_type=$(find "$R/data" -type f -printf '%f %s\n' | awk '{ t = substr($1, length($1)); if (t ~ /[0-9a-f]/) t = "content"; n[t]++; s[t] += $2 }
    END { for (k in n) printf "%s %d (%.1f MB); ", k, n[k], s[k] / 1e6 }')
# the catalogs of the current revision only: the flat catalogs of the published images
cur_flat=$("$S" images "$R" --json | jq -r '.[].flat_catalog // empty' | sort -u | wc -l)

# ---------------------------------------------------------------------------------------
# d. rm RM images, then gc
rm_names=()
for ((i = 11; i < 11 + RM; i++)); do rm_names+=("$(name "$i")"); done
SHOWN="stratum rm \$R local/layout:$(tag 11) … local/layout:$(tag $((10 + RM))) --key \$K --json" \
    timed rm "$S" rm "$R" "${rm_names[@]}" --key "$K" --json
now_future=$(($(date +%s) + 40 * 86400))
SHOWN="stratum gc \$R --key \$K --keep-revisions 1 --safety-window 0 --now \$((\$(date +%s) + 40*86400)) --json" \
    timed gc "$S" gc "$R" --key "$K" --keep-revisions 1 --safety-window 0 --now "$now_future" --json
gc_json=$log/gc.out
gc_summary=$(jq -r '"\(.images_removed | length) images removed (\(.images_in_grace) in grace), \(.flat_trees_removed) flat and \(.layer_trees_removed) layer trees, \(.objects_removed) objects removed (\(.bytes_removed / 1e6 * 10 | round / 10) MB), \(.objects_reachable) reachable, revisions kept \(.revisions_kept)"' "$gc_json" 2>/dev/null || echo "(gc JSON not parsed; see $gc_json)")
repo_du_gc=$(du -sb "$R" | cut -f1)
repo_objects_gc=$(find "$R/data" -type f | wc -l)
# steady state: superseded revisions' catalogs (partitions, /images, root) are gone
read -r cat_n_gc cat_bytes_gc < <(catalogs_of "$R")
if [[ $CHECK != 0 ]]; then
    timed check "$S" check "$R" --json
fi

# ---------------------------------------------------------------------------------------
# e. replica catch-up
replica_note="not run: this stratum binary has no \`replicate\` command"
serve_pid=""
cleanup() { [[ -n $serve_pid ]] && kill "$serve_pid" 2>/dev/null; true; }
trap cleanup EXIT
if [[ -n $have_replicate ]]; then
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$S" serve "$R" --listen "127.0.0.1:$port" >"$log/serve.out" 2>"$log/serve.err" &
    serve_pid=$!
    logcmd "stratum serve \$R --listen 127.0.0.1:PORT &"
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$port/.stratum/manifest" 2>/dev/null && break
        sleep 0.1
    done
    D=$run/replica
    SHOWN="stratum replicate http://127.0.0.1:PORT \$W/replica --pubkey \$K.pub --json" \
        timed replicate-full "$S" replicate "http://127.0.0.1:$port" "$D" --pubkey "$K.pub" --json
    SHOWN="stratum publish oci:\$L:$(tag "$replica_img") --repo \$R --key \$K --json" \
        timed publish-for-replica "$S" publish "$(src "$replica_img")" --repo "$R" --key "$K" --json
    SHOWN="stratum replicate http://127.0.0.1:PORT \$W/replica --pubkey \$K.pub --json" \
        timed replicate-incr "$S" replicate "http://127.0.0.1:$port" "$D" --pubkey "$K.pub" --json
    replica_du=$(du -sb "$D" | cut -f1)
    replica_note="replica $(mb "$replica_du") MB; full: $(jq -c . "$log/replicate-full.out" 2>/dev/null | cut -c1-400); incremental: $(jq -c . "$log/replicate-incr.out" 2>/dev/null | cut -c1-400)"
    kill "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=""
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
uptime_after=$(uptime)

# ---------------------------------------------------------------------------------------
# Report
cpu_model=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
mem_total=$(free -g | awk '/^Mem:/ { print $2 " GiB" }')
fs=$(findmnt -no FSTYPE -T "$run" 2>/dev/null || echo "?")
med10=$(median "single@10#")
med10b=$(median "single@10b#")
med10bc=$(median "single@10b#" cpu)
medN=$(median "single@N#")
med10c=$(median "single@10#" cpu)
medNc=$(median "single@N#" cpu)
r_single=$(ratio "$medN" "$med10")
r_single_cpu=$(ratio "$medNc" "$med10c")
report=$base/results-N$N.md
{
    echo "### stratum scale benchmark, N=$N ($started)"
    echo
    echo "Machine: $(nproc) CPUs ($cpu_model), $mem_total RAM, Linux $(uname -r), work dir on $fs."
    if [[ -n ${STRATUM_REV:-} ]]; then
        echo "stratum: commit $stratum_rev (STRATUM_REV);"
    else
        echo "stratum: git HEAD $stratum_rev$( ((stratum_dirty)) && echo " + $stratum_dirty modified files in the work tree") when the run started;"
    fi
    echo "Binary: $src_bin built $stratum_built, sha256 $stratum_sha…"
    echo "Load average (1/5/15 min) before: $load_before, after: $load_after (column \"load\": 1-min load average when the step started)."
    echo "Knobs: N=$N B=$B SINGLE=$SINGLE RM=$RM; \`sync\` before each timed step."
    echo
    echo "Layout (bench/gen-scale.py, one OCI layout, $total_images images, $(mb "$layout_bytes") MB; generated ${gen_new} new images in $(t_of gen-layout) s this run):"
    jq -r '"bases: " + ([.bases[] | "\(.name) \(.entries) entries \(.tar_bytes / 1e6 * 10 | round / 10) MB tar"] | join(", ")) + "; image k = os + [python, node, jvm][(k-1) % 3] + its own top layer (\(.top_entries / .images | round) entries, \(.top_tar_bytes / .images / 1e3 | round) KB tar on average); \(.tar_entries_per_image_avg) tar entries per image on average, \(.tar_entries_all_images) over all \(.images) images"' "$summary"
    echo
    echo "| step | wall s | CPU s (user+sys) | peak RSS MiB | load | notes |"
    echo "|---|---:|---:|---:|---:|---|"
    echo "| publish images 1-10, one call | $(cols batch:1-10) | |"
    for ((j = 1; j <= SINGLE; j++)); do
        echo "| publish 1 new image, repository holds $((n10 + j - 1)) images (#$j) | $(cols "single@10#$j") | $(jq -r '.[0] | "\(.layers_ingested) layers ingested, \(.layers_skipped) skipped; \(.seconds * 1000 | round) ms in publish"' "$log/single@10#$j.out" 2>/dev/null) |"
    done
    echo "| publish in batches of $B, images 11-$last_batch ($(wc -l <"$log/batches.tsv") calls incl. 1-10) | $t_batches | | $(max_rss_of batch:) (max) | | per image: first batch $(awk -F '\t' 'NR == 2 { printf "%.3f", $3 / ($2 - $1 + 1) }' "$log/batches.tsv") s, last batch $(tail -n1 "$log/batches.tsv" | awk -F '\t' '{ printf "%.3f", $3 / ($2 - $1 + 1) }') s |"
    for ((j = 1; j <= SINGLE; j++)); do
        echo "| publish 1 new image, repository holds $((nN + j - 1)) images (#$j) | $(cols "single@N#$j") | $(jq -r '.[0] | "\(.layers_ingested) layers ingested, \(.layers_skipped) skipped; \(.seconds * 1000 | round) ms in publish"' "$log/single@N#$j.out" 2>/dev/null) |"
    done
    for ((j = 1; j <= SINGLE; j++)); do
        echo "| control: publish 1 new image into a second repository of $((9 + j)) images (#$j, alternating with the row above) | $(cols "single@10b#$j") | $(jq -r '.[0] | "\(.seconds * 1000 | round) ms in publish"' "$log/single@10b#$j.out" 2>/dev/null) |"
    done
    echo "| catalog census (zstd -d + sqlite3 count of every catalog) | $census_t | | | | $n_catalogs catalogs |"
    echo "| \`stratum rm\` $RM images | $(cols rm) | |"
    echo "| \`stratum gc --keep-revisions 1 --safety-window 0\` (now + 40 d) | $(cols gc) | $gc_summary |"
    if [[ $CHECK != 0 ]]; then
        echo "| \`stratum check\` after gc | $(cols check) | |"
    fi
    if [[ -n $have_replicate ]]; then
        echo "| \`stratum replicate\` full (over \`stratum serve\`) | $(cols replicate-full) | |"
        echo "| publish 1 new image | $(cols publish-for-replica) | |"
        echo "| \`stratum replicate\` again (catch-up: one new image) | $(cols replicate-incr) | |"
    else
        echo "| \`stratum replicate\` full, then catch-up of one new image | not run | | | | $replica_note |"
    fi
    echo
    echo "Batch publish wall time per image (s), batch by batch (first image number: s/image):"
    echo
    awk -F '\t' '{ printf "%s%d: %.3f", s, $1, $3 / ($2 - $1 + 1); s = ", " } END { print "" }' "$log/batches.tsv"
    echo
    echo "Catalogs by kind (every catalog object under data/ before rm and gc, superseded revisions included; the current revision has $cur_flat flat catalogs):"
    echo
    echo "| kind | catalogs | entries | max entries | mean entries | stored MB | SQLite MB |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    echo "$by_kind"
    echo
    echo "Largest catalogs: $top5."
    echo
    echo "Repository before rm/gc (revision $revision_at_N): $(mb "$repo_du") MB (\`du -sb\`; $(mb "$repo_disk") MB on disk), $repo_objects objects under data/ ($(mb "$repo_data") MB): ${objects_by_type% }"
    echo "After rm + gc: $(mb "$repo_du_gc") MB, $repo_objects_gc objects."
    echo "Catalogs (objects with suffix C): before rm/gc $cat_n, $(mb "$cat_bytes") MB = $(pct "$cat_bytes" "$repo_du") % of the repository; after rm + gc (steady state, superseded revisions gone) $cat_n_gc, $(mb "$cat_bytes_gc") MB = $(pct "$cat_bytes_gc" "$repo_du_gc") %."
    [[ -n $have_replicate ]] && echo "Replica: $replica_note"
    echo
    echo "| target (issue 5) | measured | target | met |"
    echo "|---|---:|---:|---|"
    echo "| publish of one image at $nN images / at $n10 images (median of $SINGLE), in sequence | $r_single ($medN s / $med10 s; runs at 10: $(all_of "single@10#"); at N: $(all_of "single@N#")); CPU: $r_single_cpu ($medNc s / $med10c s) | ≤ 1.2 | $(yes_no "$r_single" 1.2 '<=') |"
    echo "| the same, at 10 measured in a second repository alternating with the runs at N | $(ratio "$medN" "$med10b") ($medN s / $med10b s; runs at 10: $(all_of "single@10b#")); CPU: $(ratio "$medNc" "$med10bc") ($medNc s / $med10bc s) | ≤ 1.2 | $(yes_no "$(ratio "$medN" "$med10b")" 1.2 '<=') |"
    echo "| largest catalog (entries) | $largest_entries ($largest_kind $largest_path, object ${largest_id:0:12}…, $(mb "$largest_stored") MB stored, $(mb "$largest_raw") MB SQLite); $over_200k catalogs above 200 000; $total_entries entries in $n_catalogs catalogs | ≤ 200 000 | $(yes_no "$largest_entries" 200000 '<=') |"
    echo "| catalog bytes / repository bytes (issue 17), before rm/gc; after rm + gc | $(pct "$cat_bytes" "$repo_du") % ($(mb "$cat_bytes") / $(mb "$repo_du") MB); $(pct "$cat_bytes_gc" "$repo_du_gc") % ($(mb "$cat_bytes_gc") / $(mb "$repo_du_gc") MB) | ≤ 25 % | $(yes_no "$(pct "$cat_bytes" "$repo_du")" 25 '<='); $(yes_no "$(pct "$cat_bytes_gc" "$repo_du_gc")" 25 '<=') |"
    echo "| gc time | $(t_of gc) s | | |"
    if [[ -n $have_replicate ]]; then
        echo "| replica catch-up, one new image | $(t_of replicate-incr) s (full replica: $(t_of replicate-full) s) | | |"
    else
        echo "| replica catch-up, one new image | not run ($replica_note) | | |"
    fi
    if [[ -n ${PROFILE:-} ]]; then
        for where in N 10; do
            if [[ -s $log/perf-$where.txt ]]; then
                echo
                echo "perf, one publish at $where images (inclusive share of the samples, stratum's functions; wall $(jq -r '.[0].seconds' "$log/perf-$where.out" 2>/dev/null) s in publish):"
                echo
                echo '```'
                awk 'NR <= 25' "$log/perf-$where.txt"
                echo '```'
            fi
            if [[ -s $log/strace-$where.txt ]]; then
                echo
                echo "strace -c -w -f, one publish at $where images (wall time per system call, top 12):"
                echo
                echo '```'
                awk 'NR <= 14' "$log/strace-$where.txt"
                echo '```'
            fi
        done
    fi
    echo
    echo "Commands (as run; \`/usr/bin/time -f '%e %U %S %M'\` around each timed one, \`sync\` before each;"
    echo "L=$layout, W=$run, R=$R, R10=$R10, K=$K, stratum=$S):"
    echo
    echo '```'
    cat "$log/commands"
    echo '```'
} >"$report"
cp -f "$report" "$base/results.md"
cat "$report"
echo >&2
say "uptime before: $uptime_before"
say "uptime after:  $uptime_after"
say "report: $report; raw timings: $log/times.tsv; catalogs: $log/catalogs.tsv"
rm -f "$log/time.$$"
if [[ -z ${KEEP:-} ]]; then
    rm -rf "$run"
fi
