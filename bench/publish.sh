#!/usr/bin/env bash
# stratum publish benchmark (issue 2, "Performance").
#
# Builds a realistic image set from files of installed Debian packages with umoci, then,
# in one run on the same layer blobs, measures:
#   stratum publish  cold (all images, one call, fresh repo), per image (one call each,
#                    into another fresh repo), and again unchanged (republish)
#   tar -xzf         of every unique layer blob (each into its own scratch dir)
#   gzip -dc         of every unique layer blob to /dev/null
#   umoci unpack     of each image
#   ostree commit    of each unpacked rootfs into one archive-mode repo
#   stratum compact  (when the binary has it) and the repository size after it
#   mksquashfs       of each unpacked rootfs (size comparison; SQUASHFS=0 skips it)
# and the sizes of the unique compressed layer blobs, the stratum repository, the ostree
# repository and the squashfs images. Prints a markdown report (also written to
# $WORK/$SCALE/results.md).
#
# Usage:  bench/publish.sh                      # SCALE=full
#         SCALE=small bench/publish.sh          # ~50 MB smoke run
# Environment:
#   SCALE=small|full   image set size (default full: ~650 MB of unique files, 5 images)
#   WORK=DIR           work dir (default bench/work, gitignored); images are cached in
#                      $WORK/$SCALE/layouts and reused unless REBUILD=1
#   STRATUM=PATH       stratum binary (default: `cargo build --release`, target/release/stratum);
#                      it is copied to $WORK/bin/ first so that a concurrent rebuild cannot
#                      change it in the middle of a run
#   NOBUILD=1          do not run `cargo build --release`, use target/release/stratum as is
#   RUNS=N             repeat the cold publish, tar -xzf and gzip -dc timings N times and
#                      report the fastest (default 1)
#   SQUASHFS=0         skip mksquashfs;  TMPFS=0 skip the reference runs on /dev/shm
#   KEEP=1             keep the scratch dirs of the run
#   LAYOUTS_ONLY=1     build (or reuse) the image set and stop: bench/mount.sh and others
#                      take their images from it
#   COMPACT=0          skip `stratum compact` (run when the binary has it; COMPACT_LEVEL=N)
#   STEP_TIMEOUT=S     give up on a step that takes longer than S seconds (default 3600)
#
# Needs root (or umoci --rootless, used automatically), and the Debian packages
# umoci ostree squashfs-tools time jq (installed with apt-get when missing and root).
# shellcheck disable=SC2016 # single-quoted $R, $i, $f are meant literally (shown commands, bash -c)
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
SCALE=${SCALE:-full}
WORK=${WORK:-$root/bench/work}
RUNS=${RUNS:-1}
SQUASHFS=${SQUASHFS:-1}
STEP_TIMEOUT=${STEP_TIMEOUT:-3600}
case $SCALE in small | full) ;; *) echo "SCALE must be small or full, not '$SCALE'" >&2; exit 2 ;; esac
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
base=$WORK/$SCALE
layouts=$base/layouts
run=$base/run
log=$base/log
mkdir -p "$base"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Tools
mapfile -t need_pkgs < <(missing_debs umoci:umoci ostree:ostree mksquashfs:squashfs-tools jq:jq)
[[ -x /usr/bin/time ]] || need_pkgs+=(time)
install_debs ${need_pkgs[@]+"${need_pkgs[@]}"}
rootless=()
[[ $(id -u) -eq 0 ]] || rootless=(--rootless)

[[ -n ${LAYOUTS_ONLY:-} ]] || stratum_under_test stratum

# ---------------------------------------------------------------------------------------
# Image set. A layer is a list of "SOURCE_DIR:MB" items: files (and symlinks) of the
# subtree in path order, skipping a file that would exceed the item's budget.
# base      L1 os files, L2 package database
# python    base + L3 python          jvm     base + L3 OpenJDK + man pages
# devel     base + L3 headers/gcc + L4 deletions (whiteouts), a replaced dir, an edit
# python-rebuild   python built again from scratch from the same files with new mtimes:
#                  every blob differs, the file contents are equal
if [[ $SCALE == full ]]; then
    L_OS="etc:6 usr/bin:70 usr/lib/x86_64-linux-gnu:100 usr/share/doc:20 usr/share/zoneinfo:4"
    L_PKG="var/lib/dpkg:32"
    L_PY="usr/lib/python3.11:55 usr/lib/python3:47"
    L_JVM="usr/lib/jvm/java-17-openjdk-amd64:100 usr/share/man:20"
    L_DEV="usr/include:100 usr/lib/gcc:100"
else
    L_OS="etc:2 usr/bin:8 usr/lib/x86_64-linux-gnu:10 usr/share/doc:3 usr/share/zoneinfo:1"
    L_PKG="var/lib/dpkg:4"
    L_PY="usr/lib/python3.11:5 usr/lib/python3:3"
    L_JVM="usr/lib/jvm/java-17-openjdk-amd64:5 usr/share/man:1"
    L_DEV="usr/include:4 usr/lib/gcc:4"
fi
IMAGES=(base python jvm devel python-rebuild)
spec="v1 $L_OS|$L_PKG|$L_PY|$L_JVM|$L_DEV"

# pick_list "DIR:MB ..." OUT  -> paths relative to /, one per line
pick_list() {
    local item dir mb
    : >"$2"
    for item in $1; do
        dir=${item%:*} mb=${item##*:}
        [[ -d /$dir ]] || die "source dir /$dir is missing on this machine (edit the image set in $0)"
        (cd / && find "$dir" -xdev \( -type f -o -type l \) -printf '%s\t%p\n') |
            sort -t $'\t' -k2,2 |
            awk -F '\t' -v b=$((mb * 1024 * 1024)) '{ if (s + $1 <= b) { s += $1; print $2 } }' >>"$2"
    done
}

# add_files LIST ROOTFS [DATE]: copy the listed files (keeping modes, owners, mtimes,
# symlinks, hardlinks within the list) into ROOTFS; with DATE, give every copied entry
# that mtime (an independent rebuild).
add_files() {
    local list=$1 rootfs=$2 date=${3:-} stage
    if [[ -z $date ]]; then
        tar -C / -cf - --no-recursion --no-unquote --verbatim-files-from -T "$list" | tar -C "$rootfs" -xpf -
    else
        stage=$(mktemp -d "$base/stage.XXXXXX")
        tar -C / -cf - --no-recursion --no-unquote --verbatim-files-from -T "$list" | tar -C "$stage" -xpf -
        find "$stage" -mindepth 1 -exec touch -h -d "$date" {} +
        (cd "$stage" && tar -cf - --exclude=. -- *) | tar -C "$rootfs" -xpf -
        rm -rf "$stage"
    fi
}

repack() { umoci repack --refresh-bundle --image "$1" "$2" >&2; }

build_images() {
    say "building the $SCALE image set in $layouts (once; REBUILD=1 rebuilds)"
    rm -rf "$layouts" "$base/lists" "$base/bundle"
    mkdir -p "$layouts" "$base/lists"
    local l b=$base/bundle r=$base/bundle/rootfs
    for l in OS PKG PY JVM DEV; do
        local v=L_$l
        pick_list "${!v}" "$base/lists/$l"
    done

    # base
    umoci init --layout "$layouts/base" >&2
    umoci new --image "$layouts/base:1" >&2
    umoci unpack "${rootless[@]}" --image "$layouts/base:1" "$b" >&2
    add_files "$base/lists/OS" "$r"
    repack "$layouts/base:1" "$b"
    add_files "$base/lists/PKG" "$r"
    repack "$layouts/base:1" "$b"
    rm -rf "$b"

    # images on top of the same base layer blobs
    local img list
    for img in python jvm devel; do
        cp -a "$layouts/base" "$layouts/$img"
        umoci unpack "${rootless[@]}" --image "$layouts/$img:1" "$b" >&2
        case $img in python) list=PY ;; jvm) list=JVM ;; devel) list=DEV ;; esac
        add_files "$base/lists/$list" "$r"
        repack "$layouts/$img:1" "$b"
        if [[ $img == devel ]]; then
            # L4: delete a tree and some files (whiteouts), replace a directory, edit a file
            rm -rf "$r/usr/share/doc"
            mapfile -t del < <(find "$r/usr/bin" -maxdepth 1 -type f | sort)
            rm -f -- "${del[@]:0:20}"
            rm -rf "$r/usr/share/zoneinfo"
            mkdir -p "$r/usr/share/zoneinfo"
            printf 'UTC\n' >"$r/usr/share/zoneinfo/README"
            printf 'PRETTY_NAME="stratum bench devel"\n' >"$r/etc/devel-release"
            mapfile -t edit < <(find "$r/etc" -maxdepth 1 -type f -name '*.conf' | sort)
            if ((${#edit[@]})); then printf '# edited by the devel image\n' >>"${edit[0]}"; fi
            repack "$layouts/$img:1" "$b"
        fi
        rm -rf "$b"
        umoci gc --layout "$layouts/$img" >&2
    done

    # an independent rebuild of python: same files, new mtimes, so new blobs
    umoci init --layout "$layouts/python-rebuild" >&2
    umoci new --image "$layouts/python-rebuild:1" >&2
    umoci unpack "${rootless[@]}" --image "$layouts/python-rebuild:1" "$b" >&2
    add_files "$base/lists/OS" "$r" "2025-06-01 12:00:00"
    repack "$layouts/python-rebuild:1" "$b"
    add_files "$base/lists/PKG" "$r" "2025-06-01 12:05:00"
    repack "$layouts/python-rebuild:1" "$b"
    add_files "$base/lists/PY" "$r" "2025-06-01 12:10:00"
    repack "$layouts/python-rebuild:1" "$b"
    rm -rf "$b"
    umoci gc --layout "$layouts/python-rebuild" >&2
    printf '%s\n' "$spec" >"$layouts/.complete"
}

if [[ -n ${REBUILD:-} || ! -f $layouts/.complete || $(cat "$layouts/.complete") != "$spec" ]]; then
    build_images
else
    say "reusing the $SCALE image set in $layouts"
fi
if [[ -n ${LAYOUTS_ONLY:-} ]]; then
    say "LAYOUTS_ONLY: the image set is in $layouts"
    exit 0
fi

# ---------------------------------------------------------------------------------------
# Layers of each image, unique blobs
manifest_of() { # LAYOUT -> manifest blob path of tag 1
    local d
    d=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "1") | .digest' "$1/index.json")
    printf '%s/blobs/sha256/%s\n' "$1" "${d#sha256:}"
}
declare -A blob_path blob_size img_layers img_blob_bytes
for img in "${IMAGES[@]}"; do
    m=$(manifest_of "$layouts/$img")
    img_layers[$img]=$(jq '.layers | length' "$m")
    img_blob_bytes[$img]=$(jq '[.layers[].size] | add' "$m")
    while read -r digest size mt; do
        [[ $mt == *gzip* ]] || die "layer $digest of $img is $mt, expected gzip"
        blob_path[$digest]=$layouts/$img/blobs/sha256/${digest#sha256:}
        blob_size[$digest]=$size
    done < <(jq -r '.layers[] | "\(.digest) \(.size) \(.mediaType)"' "$m")
done
mapfile -t blobs < <(for d in "${!blob_path[@]}"; do echo "${blob_path[$d]}"; done | sort)
unique_blob_bytes=0
for d in "${!blob_size[@]}"; do unique_blob_bytes=$((unique_blob_bytes + blob_size[$d])); done
all_blob_bytes=0
for img in "${IMAGES[@]}"; do all_blob_bytes=$((all_blob_bytes + img_blob_bytes[$img])); done

# ---------------------------------------------------------------------------------------
# Measurement helpers
rm -rf "$run"
mkdir -p "$run" "$log"
: >"$log/commands"
: >"$log/times.tsv"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
uptime_before=$(uptime)

# logcmd TEXT: record a command for the report, with $L, $R and stratum abbreviated
logcmd() {
    local c=$1
    c=${c//"$S"/stratum}
    c=${c//"$layouts"/\$L}
    c=${c//"$run"/\$R}
    grep -qxF -- "$c" "$log/commands" || printf '%s\n' "$c" >>"$log/commands"
}

# timed LABEL CMD... : sync first (so that writeback of a previous step is not billed
# here), then run CMD under GNU time; records wall, user, sys, max RSS (KiB), 1-min load.
timed() {
    local label=$1
    shift
    local tf=$log/time.$$ rc=0 load
    logcmd "${SHOWN:-$*}"
    sync
    load=$(cut -d' ' -f1 /proc/loadavg)
    /usr/bin/time -f '%e %U %S %M' -o "$tf" timeout "$STEP_TIMEOUT" "$@" >"$log/last.out" 2>"$log/last.err" || rc=$?
    if ((rc == 124)); then
        die "step '$label' timed out after $STEP_TIMEOUT s (STEP_TIMEOUT): $*"
    elif ((rc != 0)); then
        say "FAILED ($rc): $*"
        cat "$log/last.err" >&2
        die "step '$label' failed; output in $log/last.out and $log/last.err"
    fi
    read -r e u s m <"$tf"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$e" "$u" "$s" "$m" "$load" >>"$log/times.tsv"
    say "$(printf '%-34s %8.2f s wall %8.2f s cpu %7d MiB  load %s' "$label" "$e" "$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')" $((m / 1024)) "$load")"
}
t_of() { awk -F '\t' -v l="$1" '$1 == l { print $2 }' "$log/times.tsv" | tail -n1; }
cpu_of() { awk -F '\t' -v l="$1" '$1 == l { printf "%.2f", $3 + $4 }' "$log/times.tsv" | tail -n1; }
rss_of() { awk -F '\t' -v l="$1" '$1 == l { printf "%.0f", $5 / 1024 }' "$log/times.tsv" | tail -n1; }
load_of() { awk -F '\t' -v l="$1" '$1 == l { print $6 }' "$log/times.tsv" | tail -n1; }
# best LABEL-PREFIX: the run with the smallest wall time among "PREFIX#1..N" -> its label
best() { awk -F '\t' -v p="$1#" 'index($1, p) == 1 && (b == "" || $2 < bt) { b = $1; bt = $2 } END { print b }' "$log/times.tsv"; }
all_of() { awk -F '\t' -v p="$1#" 'index($1, p) == 1 { printf "%s%s", s, $2; s = ", " }' "$log/times.tsv"; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }
dirbytes() { du -sb "$1" | cut -f1; }
filebytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d\n", s }'; }
diskbytes() { du -s --block-size=1 "$1" | cut -f1; }

sources=()
for img in "${IMAGES[@]}"; do sources+=("oci:$layouts/$img:1"); done
key=$run/key
"$S" keygen "$key" >/dev/null
logcmd "$S keygen $key"

# Warm the page cache with the inputs so that every tool reads them from memory.
cat "${blobs[@]}" >/dev/null
uncompressed_bytes=$(for f in "${blobs[@]}"; do gzip -dc "$f"; done | wc -c)

# ---------------------------------------------------------------------------------------
say "stratum $stratum_rev (binary $stratum_sha), SCALE=$SCALE, ${#blobs[@]} unique layer blobs, $(mb "$unique_blob_bytes") MB"

trap '[[ -n ${tmpfs_dir:-} ]] && rm -rf "$tmpfs_dir"' EXIT

tar_all() { # SCRATCH BLOB...: tar -xzf each blob into its own dir SCRATCH/1, 2, ...
    local d=$1 i=0 f
    shift
    for f in "$@"; do
        i=$((i + 1))
        mkdir -p "$d/$i"
        tar -xzf "$f" -C "$d/$i"
    done
}
export -f tar_all
tmpfs_dir=""
if [[ ${TMPFS:-1} != 0 && -d /dev/shm && -w /dev/shm ]] &&
    (($(df -k --output=avail /dev/shm | tail -n1) * 1024 > 3 * uncompressed_bytes)); then
    tmpfs_dir=$(mktemp -d /dev/shm/stratum-bench.XXXXXX)
fi

# 1. The head-to-head, RUNS rounds, interleaved so that both sides see the same load:
#    stratum publish cold (all images in one call, fresh repo), tar -xzf of every unique
#    layer blob (each into its own scratch dir), gzip -dc of every unique blob; then the
#    same publish and tar on tmpfs (what is left when creating files costs nothing).
for i in $(seq 1 "$RUNS"); do
    rm -rf "$run/repo" "$run/tar"
    "$S" init "$run/repo" --key "$key" --name bench >/dev/null
    logcmd "$S init $run/repo --key $key --name bench"
    timed "publish-cold#$i" "$S" publish "${sources[@]}" --repo "$run/repo" --key "$key" --json
    cp "$log/last.out" "$log/publish-cold.$i.json"
    SHOWN='for each unique blob B (i = 1, 2, ...): mkdir -p $R/tar/$i && tar -xzf B -C $R/tar/$i' \
        timed "tar-xzf#$i" bash -c 'tar_all "$@"' tar_all "$run/tar" "${blobs[@]}"
    timed "sync-after-tar#$i" sync
    SHOWN='for each unique blob B: gzip -dc B >/dev/null' \
        timed "gzip-dc#$i" bash -c 'for f; do gzip -dc "$f" >/dev/null; done' gzip_all "${blobs[@]}"
    if [[ -n $tmpfs_dir ]]; then
        rm -rf "${tmpfs_dir:?}"/*
        "$S" init "$tmpfs_dir/repo" --key "$key" --name bench >/dev/null
        SHOWN="stratum publish <all images> --repo /dev/shm/…/repo --key \$R/key --json" \
            timed "publish-tmpfs#$i" "$S" publish "${sources[@]}" --repo "$tmpfs_dir/repo" --key "$key" --json
        rm -rf "$tmpfs_dir/repo"
        SHOWN='for each unique blob B (i = 1, 2, ...): mkdir -p /dev/shm/…/tar/$i && tar -xzf B -C /dev/shm/…/tar/$i' \
            timed "tar-tmpfs#$i" bash -c 'tar_all "$@"' tar_all "$tmpfs_dir/tar" "${blobs[@]}"
    fi
done
tar_files=$(find "$run/tar" -mindepth 2 | wc -l)
rm -rf "$run/tar"
[[ -n $tmpfs_dir ]] && rm -rf "$tmpfs_dir"
cold=$(best publish-cold)
cp "$log/publish-cold.${cold#*#}.json" "$log/publish-cold.json"
# the repository of the last round stays for the sizes (every round writes the same objects)

# 2. republish, unchanged: all images, then one image
timed "publish-again-all" "$S" publish "${sources[@]}" --repo "$run/repo" --key "$key" --json
cp "$log/last.out" "$log/publish-again.json"
timed "publish-again-one" "$S" publish "oci:$layouts/python:1" --repo "$run/repo" --key "$key" --json
if jq -e 'map(select(.status == "published")) | length > 0' "$log/publish-again.json" >/dev/null; then
    say "WARNING: the unchanged republish published something again:"
    cat "$log/publish-again.json" >&2
fi

# 3. stratum check of the cold repository (informative)
timed "check" "$S" check "$run/repo"

# Sizes of the repository as published
repo_du=$(dirbytes "$run/repo")
repo_data=$(filebytes "$run/repo/data")
repo_disk=$(diskbytes "$run/repo")
repo_objects=$(find "$run/repo/data" -type f | wc -l)
repo_types=$(find "$run/repo/data" -type f -printf '%f %s\n' | awk '
    { t = substr($1, length($1)); if (t ~ /[0-9a-f]/) t = "content"; else if (t == "C") t = "catalogs (C, incl. inlined small files)"; else t = "type " t; c[t]++; s[t] += $2 }
    END { for (k in c) printf "%s: %d objects, %.1f MB; ", k, c[k], s[k] / 1e6 }')
breakdown=""
if command -v sqlite3 >/dev/null && command -v zstd >/dev/null; then
    breakdown=$("$here/repo-breakdown.sh" "$run/repo")
fi

# 3b. stratum compact (re-encode objects at a dense level, off the publish path), when
# this binary has it; then the sizes again, and check
compacted=""
if [[ ${COMPACT:-1} != 0 ]] && "$S" compact --help >/dev/null 2>&1; then
    compact_args=()
    [[ -n ${COMPACT_LEVEL:-} ]] && compact_args=(--level "$COMPACT_LEVEL")
    compact_level=${COMPACT_LEVEL:-$("$S" compact --help | sed -n 's/.*\[default: \([0-9]*\)\].*/\1/p' | head -n1)}
    timed "compact" "$S" compact "$run/repo" "${compact_args[@]}"
    compacted=1
    repoc_du=$(dirbytes "$run/repo")
    repoc_data=$(filebytes "$run/repo/data")
    repoc_disk=$(diskbytes "$run/repo")
    timed "check-after-compact" "$S" check "$run/repo"
fi

# 4. stratum publish, one call per image, into a second fresh repo
"$S" init "$run/repo-seq" --key "$key" --name bench-seq >/dev/null
logcmd "$S init $run/repo-seq --key $key --name bench-seq"
for img in "${IMAGES[@]}"; do
    timed "publish-one:$img" "$S" publish "oci:$layouts/$img:1" --repo "$run/repo-seq" --key "$key" --json
    cp "$log/last.out" "$log/publish-one.$img.json"
done
rm -rf "$run/repo-seq"

# 5. Reference points for the stages of publish (single-threaded CLI tools, not
# stratum's own code): sha256 of the blobs (the blob digest check), sha256 of the tars
# (the diff_id check), zstd -3 of all the tar bytes (an upper bound: publish compresses
# only new file contents, one frame per file or chunk).
SHOWN='sha256sum B... (every unique blob)' timed "ref-sha256" sha256sum "${blobs[@]}"
for f in "${blobs[@]}"; do gzip -dc "$f"; done >"$run/all.tar"
SHOWN='sha256sum $R/all.tar (every unique blob, gzip -dc, concatenated)' timed "ref-sha256-tar" sha256sum "$run/all.tar"
timed "ref-zstd3" zstd -3 -T1 -q -c "$run/all.tar" -o /dev/null
rm -f "$run/all.tar"

# 7. umoci unpack, 8. ostree commit, 9. mksquashfs, of each image
ostree --repo="$run/ostree" init --mode=archive
logcmd "ostree --repo=$run/ostree init --mode=archive"
declare -A sqfs_bytes
for img in "${IMAGES[@]}"; do
    timed "umoci-unpack:$img" umoci unpack "${rootless[@]}" --image "$layouts/$img:1" "$run/bundle"
    timed "ostree-commit:$img" ostree --repo="$run/ostree" commit --branch="$img" --tree=dir="$run/bundle/rootfs"
    if [[ $SQUASHFS != 0 ]]; then
        timed "mksquashfs:$img" mksquashfs "$run/bundle/rootfs" "$run/$img.sqfs" -noappend -no-progress -quiet
        sqfs_bytes[$img]=$(stat -c %s "$run/$img.sqfs")
        rm -f "$run/$img.sqfs"
    fi
    rm -rf "$run/bundle"
done

# ---------------------------------------------------------------------------------------
# Sizes
ostree_du=$(dirbytes "$run/ostree")
ostree_disk=$(diskbytes "$run/ostree")
ostree_objects=$(find "$run/ostree/objects" -type f | wc -l)
sqfs_total=0
for img in "${!sqfs_bytes[@]}"; do sqfs_total=$((sqfs_total + sqfs_bytes[$img])); done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
uptime_after=$(uptime)

pub_files=$(jq '[.[].files] | add' "$log/publish-cold.json")
pub_new_objects=$(jq '[.[].new_objects] | add' "$log/publish-cold.json")
pub_new_stored=$(jq '[.[].new_stored_bytes] | add' "$log/publish-cold.json")

sum_t() { # PREFIX -> sum of wall times of labels "PREFIX:*"
    awk -F '\t' -v p="$1:" 'index($1, p) == 1 { s += $2 } END { printf "%.2f", s }' "$log/times.tsv"
}
sum_cpu() {
    awk -F '\t' -v p="$1:" 'index($1, p) == 1 { s += $3 + $4 } END { printf "%.2f", s }' "$log/times.tsv"
}
max_rss() {
    awk -F '\t' -v p="$1" 'index($1, p) == 1 && $5 > m { m = $5 } END { printf "%.0f", m / 1024 }' "$log/times.tsv"
}
cold_t=$(t_of "$cold")
tmpfs_pub_best=$(best publish-tmpfs)
tmpfs_tar_best=$(best tar-tmpfs)
median() { # PREFIX -> median wall time of "PREFIX#*"
    awk -F '\t' -v p="$1#" 'index($1, p) == 1 { v[n++] = $2 } END {
        if (n == 0) { print "n/a"; exit }
        for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        print (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2 }' "$log/times.tsv"
}
tar_best=$(best tar-xzf)
tar_t=$(t_of "$tar_best")
gz_best=$(best gzip-dc)
gz_t=$(t_of "$gz_best")
again_t=$(t_of publish-again-all)
again_one_t=$(t_of publish-again-one)
rss_pub=$(max_rss publish)
cols() { # LABEL -> "wall | cpu | rss MiB | load"
    awk -F '\t' -v l="$1" '$1 == l { r = sprintf("%.2f | %.2f | %.0f | %s", $2, $3 + $4, $5 / 1024, $6) } END { print r }' "$log/times.tsv"
}
scols() { # PREFIX -> sums over "PREFIX:*": "wall | cpu | max rss | load at the first"
    awk -F '\t' -v p="$1:" 'index($1, p) == 1 { w += $2; c += $3 + $4; if ($5 > m) m = $5; if (l == "") l = $6 }
        END { printf "%.2f | %.2f | %.0f | %s\n", w, c, m / 1024, l }' "$log/times.tsv"
}
thr() { awk -v b="$1" -v t="$2" 'BEGIN { if (t == 0) print "n/a"; else printf "%.0f MB/s", b / 1e6 / t }'; }
yes_no() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == "<=") ? (v <= t) : (v < t); print ok ? "**yes**" : "**no**" }'; }

r_time=$(ratio "$cold_t" "$tar_t")
r_blobs=$(ratio "$repo_du" "$unique_blob_bytes")
r_blobs_data=$(ratio "$repo_data" "$unique_blob_bytes")
r_ostree=$(ratio "$repo_du" "$ostree_du")
r_ostree_data=$(ratio "$repo_data" "$ostree_du")

cpu_model=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
mem_total=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
fs=$(df -T "$WORK" | awk 'NR == 2 { print $2 " on " $1 }')

# ---------------------------------------------------------------------------------------
# Report
report=$base/results.md
{
    echo "### stratum publish benchmark, SCALE=$SCALE ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "Machine: $(nproc) CPUs ($cpu_model), $mem_total RAM, Linux $(uname -r), work dir on $fs."
    echo "stratum: git HEAD $stratum_rev$( ((stratum_dirty)) && echo " + $stratum_dirty modified files") when the run started; binary built $stratum_built, sha256 $stratum_sha…;"
    echo "$(umoci --version), ostree $(ostree --version | sed -n "s/^ *Version: *'\(.*\)'/\1/p"), $(tar --version | head -n1), $(gzip --version | head -n1), $(mksquashfs -version 2>/dev/null | head -n1 | cut -d' ' -f1-3)."
    echo "Load average (1/5/15 min) before: $load_before, after: $load_after (column \"load\": 1-min load average when the step started)."
    echo "Inputs: page cache warm (every blob read once before timing); \`sync\` before each timed step; the cold publish, \`tar -xzf\` and \`gzip -dc\` runs alternate (RUNS=$RUNS rounds), the fastest of each is used."
    echo
    echo "Images: ${#IMAGES[@]}, $(for img in "${IMAGES[@]}"; do printf '%s (%s layers, %s MB) ' "$img" "${img_layers[$img]}" "$(mb "${img_blob_bytes[$img]}")"; done)"
    echo "Unique layer blobs: ${#blobs[@]}, $(mb "$unique_blob_bytes") MB gzip ($(mb "$all_blob_bytes") MB summed over images), $(mb "$uncompressed_bytes") MB of tar, $tar_files entries extracted; publish saw $pub_files files."
    echo
    echo "| step | wall s | CPU s (user+sys) | peak RSS MiB | load | notes |"
    echo "|---|---:|---:|---:|---:|---|"
    echo "| stratum publish, cold, all ${#IMAGES[@]} images in one call | $(cols "$cold") | $(thr "$uncompressed_bytes" "$cold_t") of unique tar; per image (JSON seconds): $(jq -r 'map("\(.name | sub("^local/"; "") | sub(":1$"; "")) \(.seconds * 100 | round / 100)") | join(", ")' "$log/publish-cold.json"); $pub_new_objects new objects, $(mb "$pub_new_stored") MB stored$( ((RUNS > 1)) && echo "; runs: $(all_of publish-cold)") |"
    for img in "${IMAGES[@]}"; do
        echo "| stratum publish, one call per image: $img | $(cols "publish-one:$img") | $(jq -r '.[0] | "\(.layers_ingested) layers ingested, \(.layers_skipped) skipped, \(.new_stored_bytes / 1e6 * 10 | round / 10) MB new"' "$log/publish-one.$img.json") |"
    done
    echo "| stratum publish, one call per image: total | $(scols publish-one) | |"
    echo "| stratum publish again, unchanged, all images | $(cols publish-again-all) | $(jq -r 'map(.status) | group_by(.) | map("\(length) \(.[0])") | join(", ")' "$log/publish-again.json") |"
    echo "| stratum publish again, unchanged, one image | $(cols publish-again-one) | |"
    echo "| stratum check (every catalog and object) | $(cols check) | |"
    if [[ -n $compacted ]]; then
        echo "| stratum compact (zstd level ${compact_level:-?}), then check | $(cols compact) | check afterwards: $(t_of check-after-compact) s |"
    fi
    echo "| \`tar -xzf\` of every unique layer blob | $(cols "$tar_best") | $(thr "$uncompressed_bytes" "$tar_t"); then \`sync\`: $(t_of "sync-after-tar#${tar_best#*#}") s$( ((RUNS > 1)) && echo "; runs: $(all_of tar-xzf)") |"
    if [[ -n $tmpfs_dir ]]; then
        echo "| stratum publish, cold, all images, repo on tmpfs | $(cols "$tmpfs_pub_best") | $(thr "$uncompressed_bytes" "$(t_of "$tmpfs_pub_best")")$( ((RUNS > 1)) && echo "; runs: $(all_of publish-tmpfs)") |"
        echo "| \`tar -xzf\` of every unique blob into tmpfs | $(cols "$tmpfs_tar_best") | $(thr "$uncompressed_bytes" "$(t_of "$tmpfs_tar_best")")$( ((RUNS > 1)) && echo "; runs: $(all_of tar-tmpfs)") |"
    fi
    echo "| \`gzip -dc\` of every unique layer blob | $(cols "$gz_best") | $(thr "$uncompressed_bytes" "$gz_t")$( ((RUNS > 1)) && echo "; runs: $(all_of gzip-dc)") |"
    echo "| \`umoci unpack\`, each image | $(scols umoci-unpack) | $(for img in "${IMAGES[@]}"; do printf '%s %s; ' "$img" "$(t_of "umoci-unpack:$img")"; done) |"
    echo "| \`ostree commit\` (archive), each image | $(scols ostree-commit) | $(for img in "${IMAGES[@]}"; do printf '%s %s; ' "$img" "$(t_of "ostree-commit:$img")"; done) |"
    echo "| reference: \`sha256sum\` of every unique blob | $(cols ref-sha256) | $(thr "$unique_blob_bytes" "$(t_of ref-sha256)") of blobs |"
    echo "| reference: \`zstd -3 -T1\` of all tar bytes | $(cols ref-zstd3) | $(thr "$uncompressed_bytes" "$(t_of ref-zstd3)") |"
    echo "| reference: \`sha256sum\` of the uncompressed tars | $(cols ref-sha256-tar) | $(thr "$uncompressed_bytes" "$(t_of ref-sha256-tar)") of tar |"
    if [[ $SQUASHFS != 0 ]]; then
        echo "| \`mksquashfs\` (gzip), each image | $(scols mksquashfs) | $(for img in "${IMAGES[@]}"; do printf '%s %s; ' "$img" "$(t_of "mksquashfs:$img")"; done) |"
    fi
    echo
    echo "| storage | bytes | MB | × unique blobs | notes |"
    echo "|---|---:|---:|---:|---|"
    echo "| unique gzip layer blobs | $unique_blob_bytes | $(mb "$unique_blob_bytes") | 1.00 | ${#blobs[@]} blobs |"
    echo "| uncompressed layer tars | $uncompressed_bytes | $(mb "$uncompressed_bytes") | $(ratio "$uncompressed_bytes" "$unique_blob_bytes") | |"
    echo "| stratum repository, \`du -sb\` | $repo_du | $(mb "$repo_du") | $r_blobs | $repo_objects files under data/ (${repo_types% }); on disk (4 KiB blocks) $(mb "$repo_disk") MB |"
    echo "| stratum repository, sum of file sizes under data/ | $repo_data | $(mb "$repo_data") | $r_blobs_data | |"
    if [[ -n $compacted ]]; then
        echo "| stratum repository after \`stratum compact\` (level ${compact_level:-?}), \`du -sb\` | $repoc_du | $(mb "$repoc_du") | $(ratio "$repoc_du" "$unique_blob_bytes") | data/ only $(mb "$repoc_data") MB; on disk $(mb "$repoc_disk") MB |"
    fi
    echo "| ostree archive repository, \`du -sb\` | $ostree_du | $(mb "$ostree_du") | $(ratio "$ostree_du" "$unique_blob_bytes") | $ostree_objects files under objects/; on disk $(mb "$ostree_disk") MB |"
    if [[ $SQUASHFS != 0 ]]; then
        echo "| squashfs (gzip), one per image, summed | $sqfs_total | $(mb "$sqfs_total") | $(ratio "$sqfs_total" "$unique_blob_bytes") | no sharing between images: $(for img in "${IMAGES[@]}"; do printf '%s %s; ' "$img" "$(mb "${sqfs_bytes[$img]}")"; done) |"
    fi
    if [[ -n $breakdown ]]; then
        echo
        echo "Stratum repository by object kind (bench/repo-breakdown.sh; includes the superseded root/partition catalogs of earlier revisions):"
        echo
        echo "$breakdown"
    fi
    echo
    echo "| target (issue 2) | measured | target | met |"
    echo "|---|---:|---:|---|"
    echo "| cold publish time / \`tar -xzf\` time | $r_time ($cold_t s / $tar_t s, fastest of $RUNS each)$( ((RUNS > 1)) && echo "; medians: $(ratio "$(median publish-cold)" "$(median tar-xzf)")")$([[ -n $tmpfs_dir ]] && echo "; on tmpfs: $(ratio "$(t_of "$tmpfs_pub_best")" "$(t_of "$tmpfs_tar_best")")") | ≤ 0.7 | $(yes_no "$r_time" 0.7 '<=') |"
    echo "| (the same in CPU seconds, user+sys) | $(ratio "$(cpu_of "$cold")" "$(cpu_of "$tar_best")") ($(cpu_of "$cold") s / $(cpu_of "$tar_best") s)$([[ -n $tmpfs_dir ]] && echo "; on tmpfs: $(ratio "$(cpu_of "$tmpfs_pub_best")" "$(cpu_of "$tmpfs_tar_best")")") | | |"
    echo "| republish of unchanged images | $again_t s (all), $again_one_t s (one) | < 1 s | $(yes_no "$again_t" 1 '<') |"
    echo "| peak RSS of stratum publish | $rss_pub MiB | < 300 MB | $(yes_no "$rss_pub" 286 '<') |"
    echo "| repository bytes / unique blobs, as published | $r_blobs (data/ only: $r_blobs_data) | ≤ 0.6 | $(yes_no "$r_blobs" 0.6 '<=') |"
    echo "| repository bytes / ostree archive, as published | $r_ostree (data/ only: $r_ostree_data; on disk: $(ratio "$repo_disk" "$ostree_disk")) | ≤ 0.9 | $(yes_no "$r_ostree" 0.9 '<=') |"
    if [[ -n $compacted ]]; then
        echo "| repository bytes / unique blobs, after compact | $(ratio "$repoc_du" "$unique_blob_bytes") (data/ only: $(ratio "$repoc_data" "$unique_blob_bytes")) | ≤ 0.6 | $(yes_no "$(ratio "$repoc_du" "$unique_blob_bytes")" 0.6 '<=') |"
        echo "| repository bytes / ostree archive, after compact | $(ratio "$repoc_du" "$ostree_du") (data/ only: $(ratio "$repoc_data" "$ostree_du"); on disk: $(ratio "$repoc_disk" "$ostree_disk")) | ≤ 0.9 | $(yes_no "$(ratio "$repoc_du" "$ostree_du")" 0.9 '<=') |"
    fi
    echo
    echo "Commands (as run; \`/usr/bin/time -f '%e %U %S %M'\` around each timed one, \`sync\` before each;"
    echo "L=$layouts, R=$run, stratum=$S):"
    echo
    echo '```'
    cat "$log/commands"
    echo '```'
} >"$report"

cat "$report"
echo >&2
say "uptime before: $uptime_before"
say "uptime after:  $uptime_after"
say "report: $report; raw timings: $log/times.tsv; publish JSON: $log/publish-*.json"
if [[ -z ${KEEP:-} ]]; then
    rm -rf "$run"
fi
