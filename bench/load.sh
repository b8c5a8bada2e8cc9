#!/usr/bin/env bash
# stratum load benchmark (issue 6, "Load").
#
# CLIENTS concurrent clients (default 64) against one repository served over HTTP, for a
# bounded time (DURATION seconds, default 60), once with `stratum serve` and once with
# nginx serving the same directory statically (the configuration of
# tests/it/support/services.rs, with two workers, sendfile and keep-alive). The clients:
#   - MOUNTS (default 4) FUSE mount loops: `stratum mount URL MNT --image NAME` with a
#     fresh cache, read every file (`find MNT -type f -exec cat {} +`), `umount`, again;
#     one operation = one cold pass over one image. Needs root; without it (or without
#     /dev/fuse) their slots go to the object GETters, with a note in the report.
#   - PULLERS (default 16) `stratum pull URL --image NAME DEST --cache CACHE` loops, each
#     pull with an empty DEST and an empty cache, so that every pull really fetches;
#     one operation = one image pulled.
#   - the rest (default 44) object GETters: `curl --config` of BATCH (default 100) random
#     object paths from the repository's `data/` on one keep-alive connection, again and
#     again; one operation = one request.
# Each loop takes a random image of the set (or random objects) each time and starts no
# new operation after DURATION; operations in flight then finish (the "tail").
# Checks, each an error when it fails: every command's exit status; every GET's status
# (200) and size (the file's size in the repository); the server's access log (every
# response 200 and complete) and its error output; and, for a sample (the 1st, then every
# VERIFY_EVERY-th operation of each client), the content: `diff -r --no-dereference` of
# the pulled tree or of the mount against a local `stratum pull REPO` of the same image,
# and `cmp` of the GET bodies against the repository's files.
# Measured: operations and errors per kind, op latency (median, p95, max), bytes and
# requests the server sent (its access log), server CPU time (/proc/PID/stat, all
# threads / the nginx master and workers) and peak RSS (VmHWM), the clients' CPU time
# (bash `times` of the subshell that ran them all), the machine's busy CPU time
# (/proc/stat) and the 1-min load average (sampled every 5 s).
# Prints a markdown report, also written to $WORK/load/results.md; exits 1 when any
# error was counted.
#
# Usage:  bench/load.sh                         # DURATION=60 CLIENTS=64, SCALE=small
#         DURATION=10 CLIENTS=16 bench/load.sh  # smoke run
# Environment:
#   SCALE=small|full   image set of bench/publish.sh (default small: 5 images of ~40 MB
#                      each); when its layouts are missing, bench/publish.sh is run first
#   WORK=DIR           work dir (default bench/work, gitignored); this script uses $WORK/load
#   STRATUM=PATH       stratum binary (default: `cargo build --release`, target/release/stratum);
#                      copied to $WORK/bin/stratum-load first
#   NOBUILD=1          do not run `cargo build --release`, use target/release/stratum as is
#   DURATION=S CLIENTS=N MOUNTS=N PULLERS=N BATCH=N VERIFY_EVERY=N   see above
#   SERVERS="serve nginx"  which servers, in that order
#   SCRATCH=DIR        where client trees, caches and mounts go (default /dev/shm: tmpfs, so
#                      that 20 clients writing trees measure the server, not this disk)
#   FORCE=1            run even while another bench/*.sh runs;  KEEP=1 keep the scratch dir
#
# Needs curl jq nginx diffutils (and fuse3 for mounts; installed with apt-get when missing
# and root). The repository is published fresh into $WORK/load/run/repo on each run.
# shellcheck disable=SC2016 # single-quoted $R etc. are meant literally (shown commands)
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
SCALE=${SCALE:-small}
WORK=${WORK:-$root/bench/work}
DURATION=${DURATION:-60}
CLIENTS=${CLIENTS:-64}
MOUNTS=${MOUNTS:-4}
PULLERS=${PULLERS:-16}
BATCH=${BATCH:-100}
VERIFY_EVERY=${VERIFY_EVERY:-4}
SERVERS=${SERVERS:-serve nginx}
SCRATCH=${SCRATCH:-/dev/shm}
IMAGES=(base python jvm devel python-rebuild)
say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
case $SCALE in small | full) ;; *) die "SCALE must be small or full, not '$SCALE'" ;; esac
for v in DURATION CLIENTS MOUNTS PULLERS BATCH VERIFY_EVERY; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number, not '${!v}'"
done
((DURATION >= 1 && BATCH >= 1 && VERIFY_EVERY >= 1)) || die "DURATION, BATCH and VERIFY_EVERY must be at least 1"
for srv in $SERVERS; do [[ $srv == serve || $srv == nginx ]] || die "SERVERS: serve and/or nginx, not '$srv'"; done

mount_note=""
if [[ $(id -u) -ne 0 ]]; then
    mount_note="no FUSE mounts: not root"
elif [[ ! -c /dev/fuse ]]; then
    mount_note="no FUSE mounts: no /dev/fuse"
fi
if [[ -n $mount_note && $MOUNTS -gt 0 ]]; then
    say "$mount_note; their $MOUNTS slots go to object GETters"
    MOUNTS=0
fi
((MOUNTS + PULLERS <= CLIENTS)) || die "MOUNTS + PULLERS ($MOUNTS + $PULLERS) is more than CLIENTS ($CLIENTS)"
GETTERS=$((CLIENTS - MOUNTS - PULLERS))

others() { # the other bench scripts running: "NAME(PID) ..."
    pgrep -fa 'bench/(publish|mount|scale|sync|rss|crash-loop)\.sh' 2>/dev/null |
        grep -v '^[0-9]* timeout ' | sed -E 's|^([0-9]+) .*bench/([a-z-]+\.sh).*|\2(\1)|' | tr '\n' ' ' | sed 's/ $//' || true
}
if [[ -z ${FORCE:-} && -n $(others) ]]; then
    die "another benchmark is running (pgrep -f 'bench/(publish|mount|scale|sync|rss|crash-loop).sh': $(others)); wait for it, or FORCE=1"
fi

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
layouts=$WORK/$SCALE/layouts
base=$WORK/load
run=$base/run
log=$base/log
mkdir -p "$base"

# ---------------------------------------------------------------------------------------
# Tools
mapfile -t need_pkgs < <(missing_debs curl:curl jq:jq nginx:nginx diff:diffutils shuf:coreutils)
((MOUNTS == 0)) || command -v fusermount3 >/dev/null 2>&1 || need_pkgs+=(fuse3)
install_debs ${need_pkgs[@]+"${need_pkgs[@]}"}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

stratum_under_test stratum-load

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

# ---------------------------------------------------------------------------------------
# Cleanup: every process we started (and its descendants, by pid), every mount under the
# scratch dir, the scratch dir.
pids=()
scr=""
kill_tree() { # PID: the process and its descendants, children first
    local c
    for c in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$c"; done
    kill "$1" 2>/dev/null || true
}
umount_all() {
    local mp
    [[ -n $scr ]] || return 0
    while read -r mp; do
        umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
    done < <(awk -v b="$scr/" 'index($5, b) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
}
cleanup() {
    local rc=$? p
    set +e
    for p in "${pids[@]}"; do kill_tree "$p"; done
    umount_all
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    umount_all
    if [[ -n $scr && -z ${KEEP:-} ]]; then
        rm -rf "$scr"
    elif [[ -n $scr ]]; then
        say "kept $scr"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------
# Machine
cpu_model=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
mem_total=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
fs=$(df -T "$WORK" | awk 'NR == 2 { print $2 " on " $1 }')
scratch_fs=$(df -T "$SCRATCH" | awk 'NR == 2 { print $2 }')
ncpu=$(nproc)
hz=$(getconf CLK_TCK)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
uptime_before=$(uptime)
others_before=$(others)
say "uptime: $uptime_before"

# ---------------------------------------------------------------------------------------
# Repository (published fresh), object list, reference trees
rm -rf "$run" "$log"
mkdir -p "$run" "$log"
scr=$(mktemp -d "$SCRATCH/stratum-load.XXXXXX")
: >"$log/commands"
logcmd() {
    local c=$1
    c=${c//"$S"/stratum}
    c=${c//"$scr"/\$T}
    c=${c//"$run"/\$R}
    c=${c//"$layouts"/\$L}
    grep -qxF -- "$c" "$log/commands" || printf '%s\n' "$c" >>"$log/commands"
}
repo=$run/repo
pub=$repo/.stratum/public.pem
sources=()
for img in "${IMAGES[@]}"; do sources+=("oci:$layouts/$img:1"); done
say "publishing ${#IMAGES[@]} $SCALE images into $repo"
"$S" keygen "$run/key" >/dev/null
"$S" init "$repo" --key "$run/key" --name load >/dev/null
"$S" publish "${sources[@]}" --repo "$repo" --key "$run/key" --json >"$log/publish.json"
logcmd "$S keygen $run/key; $S init $repo --key $run/key --name load"
logcmd "$S publish $(for img in "${IMAGES[@]}"; do printf 'oci:$L/%s:1 ' "$img"; done)--repo $repo --key $run/key --json"
declare -A name_of tree_bytes tree_files
for i in "${!IMAGES[@]}"; do
    name_of[${IMAGES[$i]}]=$(jq -r ".[$i].name" "$log/publish.json")
done
(cd "$repo" && find data -type f -printf '%p %s\n') >"$scr/objects"
n_objects=$(wc -l <"$scr/objects")
repo_bytes=$(du -sb "$repo" | cut -f1)
data_bytes=$(awk '{ s += $2 } END { printf "%d", s }' "$scr/objects")
ref=$scr/ref
mkdir -p "$ref"
for img in "${IMAGES[@]}"; do
    "$S" pull "$repo" --image "${name_of[$img]}" "$ref/$img" >/dev/null
    tree_bytes[$img]=$(find "$ref/$img" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s }')
    tree_files[$img]=$(find "$ref/$img" -type f | wc -l)
done
logcmd "$S pull $repo --image NAME \$T/ref/IMG   # reference trees, local, once"

# ---------------------------------------------------------------------------------------
# Helpers
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
free_port() {
    local p
    for p in $(shuf -i 20000-60000 -n 50); do
        [[ -z $(ss -Hltn "sport = :$p" 2>/dev/null) ]] && { echo "$p"; return; }
    done
    die "no free port"
}
is_mounted() { # MOUNTPOINT
    local _a _b _c _d mp _rest
    while read -r _a _b _c _d mp _rest; do
        [[ $mp == "$1" ]] && return 0
    done </proc/self/mountinfo
    return 1
}
# CPU ticks (user+system) of the given pids, summed; VmHWM (kB) of each
proc_ticks() { local p; for p in "$@"; do sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }'; done | awk '{ s += $1 } END { printf "%d", s }'; }
proc_hwm() { local p; for p in "$@"; do awk '/^VmHWM/ { print $2 }' "/proc/$p/status" 2>/dev/null; done; }
# every process: "pid starttime ticks comm" (to see what else used the CPU during a run)
proc_snap() {
    local f line rest comm a
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        rest=${line##*) }
        comm=${line#*(}
        comm=${comm%)*}
        read -ra a <<<"$rest"
        printf '%s %s %d %s\n' "${line%% *}" "${a[19]}" $((a[11] + a[12])) "${comm// /_}"
    done
}
# other long-lived processes' CPU between two snapshots (both present, same start time),
# except the given pids: "seconds top3"
others_cpu() { # SNAP0 SNAP1 EXCLUDED_PIDS...
    local s0=$1 s1=$2
    shift 2
    awk -v hz="$hz" -v ex=" $* " '
        FNR == NR { t0[$1 " " $2] = $3; next }
        index(ex, " " $1 " ") { next }
        ($1 " " $2) in t0 { d = $3 - t0[$1 " " $2]; if (d > 0) { s += d; c[$4] += d } }
        END {
            printf "%.1f", s / hz
            n = 0
            while (n < 3) { m = 0; k = ""; for (x in c) if (c[x] > m) { m = c[x]; k = x }
                if (m < hz) break; printf "%s %s %.0f s", (n ? "," : ""), k, m / hz; delete c[k]; n++ }
            printf "\n" }' "$s0" "$s1"
}
cpu_stat() { awk '/^cpu / { b = $2 + $3 + $4 + $7 + $8; t = b + $5 + $6; print b, t }' /proc/stat; }
secs() { # "XmY.ZZZs" -> seconds
    awk -v s="$1" 'BEGIN { split(s, a, "m"); sub("s", "", a[2]); printf "%.2f", a[1] * 60 + a[2] }'
}
verify_now() { (( ($1 - 1) % VERIFY_EVERY == 0 )); }
before_deadline() { (( ${EPOCHREALTIME/./} < deadline_us )); }

# ---------------------------------------------------------------------------------------
# Clients. Each appends to $d/ops.tsv one line per operation:
#   kind t0 t1 ok errors bytes requests verified
# (ok/errors: requests for a GET batch, 0/1 otherwise; bytes: as the client counts them:
# transport.bytes_downloaded of a pull, body bytes of the GETs, the image's file bytes read
# through a mount) and a line per error to $d/errors.
client_pull() { # DIR URL
    local d=$1 u=$2 i=0 img rc t0 t1 ok note bytes reqs v
    mkdir -p "$d"
    while before_deadline; do
        i=$((i + 1))
        img=${IMAGES[RANDOM % ${#IMAGES[@]}]}
        rm -rf "$d/dest" "$d/cache"
        rc=0
        t0=$EPOCHREALTIME
        "$S" pull "$u" --pubkey "$pub" --image "${name_of[$img]}" "$d/dest" --cache "$d/cache" --json \
            >"$d/out.json" 2>"$d/err" || rc=$?
        t1=$EPOCHREALTIME
        read -r bytes reqs < <(jq -r '"\(.transport.bytes_downloaded // 0) \(.transport.requests // 0)"' "$d/out.json" 2>/dev/null || echo "0 0")
        ok=1 note="" v=0
        if ((rc)); then
            ok=0 note="stratum pull exited with $rc: $(tail -n5 "$d/err" | tr '\n' ' ')"
        elif verify_now "$i"; then
            v=1
            diff -r --no-dereference "$d/dest" "$ref/$img" >"$d/diff" 2>&1 ||
                { ok=0 note="pulled tree differs from the local pull: $(head -n5 "$d/diff" | tr '\n' ' ')"; }
        fi
        printf 'pull\t%s\t%s\t%d\t%d\t%s\t%s\t%d\n' "$t0" "$t1" "$ok" $((1 - ok)) "${bytes:-0}" "${reqs:-0}" "$v" >>"$d/ops.tsv"
        ((ok)) || printf '%s pull #%d of %s: %s\n' "${d##*/}" "$i" "$img" "$note" >>"$d/errors"
    done
    rm -rf "$d/dest" "$d/cache"
}
client_mount() { # DIR URL
    local d=$1 u=$2 i=0 img rc mrc t0 t1 ok note mpid n v
    mkdir -p "$d/mnt"
    while before_deadline; do
        i=$((i + 1))
        img=${IMAGES[RANDOM % ${#IMAGES[@]}]}
        rm -rf "$d/cache"
        ok=1 note="" v=0 rc=0 mrc=0
        t0=$EPOCHREALTIME
        "$S" mount "$u" "$d/mnt" --pubkey "$pub" --cache "$d/cache" --image "${name_of[$img]}" 2>"$d/mount.err" &
        mpid=$!
        n=0
        while ! is_mounted "$d/mnt"; do
            if ! kill -0 "$mpid" 2>/dev/null; then
                ok=0 note="not mounted, stratum mount exited: $(tail -n5 "$d/mount.err" | tr '\n' ' ')"
                break
            fi
            if ((n++ > 6000)); then
                ok=0 note="not mounted after 60 s: $(tail -n5 "$d/mount.err" | tr '\n' ' ')"
                kill "$mpid" 2>/dev/null || true
                break
            fi
            sleep 0.01
        done
        if ((ok)); then
            if verify_now "$i"; then
                v=1
                diff -r --no-dereference "$d/mnt" "$ref/$img" >"$d/diff" 2>&1 ||
                    { rc=$?; note="the mount differs from the local pull: $(head -n5 "$d/diff" | tr '\n' ' ')"; }
            else
                find "$d/mnt" -type f -exec cat {} + >/dev/null 2>"$d/read.err" ||
                    { rc=$?; note="reading the mount failed: $(head -n5 "$d/read.err" | tr '\n' ' ')"; }
            fi
            ((rc == 0)) || ok=0
        fi
        t1=$EPOCHREALTIME
        if is_mounted "$d/mnt"; then
            umount "$d/mnt" 2>>"$d/mount.err" || { ok=0 note="$note; umount failed"; umount -l "$d/mnt" 2>/dev/null || true; }
        fi
        wait "$mpid" || mrc=$?
        if ((mrc)); then ok=0 note="$note; stratum mount exited with $mrc: $(tail -n5 "$d/mount.err" | tr '\n' ' ')"; fi
        printf 'mount\t%s\t%s\t%d\t%d\t%s\t0\t%d\n' "$t0" "$t1" "$ok" $((1 - ok)) "${tree_bytes[$img]}" "$v" >>"$d/ops.tsv"
        ((ok)) || printf '%s mount #%d of %s: %s\n' "${d##*/}" "$i" "$img" "$note" >>"$d/errors"
    done
    rm -rf "$d/cache"
}
client_get() { # DIR URL
    local d=$1 u=$2 i=0 rc t0 t1 v n p res bad
    mkdir -p "$d/o"
    while before_deadline; do
        i=$((i + 1))
        v=0
        verify_now "$i" && v=1
        shuf -n "$BATCH" "$scr/objects" >"$d/batch"
        n=0
        while read -r p _; do
            n=$((n + 1))
            if ((v)); then
                printf 'url = "%s/%s"\noutput = "%s/o/%d"\n' "$u" "$p" "$d" "$n"
            else
                printf 'url = "%s/%s"\noutput = "/dev/null"\n' "$u" "$p"
            fi
        done <"$d/batch" >"$d/curl.cfg"
        rc=0
        t0=$EPOCHREALTIME
        curl -sS --max-time 120 --config "$d/curl.cfg" -w '%{http_code} %{size_download}\n' >"$d/w" 2>"$d/err" || rc=$?
        t1=$EPOCHREALTIME
        # per request: status 200 and the file's size; requests curl never made count as errors
        res=$(paste -d ' ' "$d/batch" "$d/w" | awk -v want="$n" '
            NF == 4 && $3 == 200 && $4 == $2 { ok++; b += $4; next }
            { bad++; if (!first) first = $0 }
            END { printf "%d %d %d %s", ok, want - ok, b, first }')
        read -r ok bad bytes first <<<"$res"
        if ((rc)); then
            ((bad > 0)) || bad=1
            printf '%s GET batch #%d: curl exited with %d: %s\n' "${d##*/}" "$i" "$rc" "$(tail -n3 "$d/err" | tr '\n' ' ')" >>"$d/errors"
        fi
        if ((bad)); then
            printf '%s GET batch #%d: %d of %d requests failed (path size status got): %s\n' "${d##*/}" "$i" "$bad" "$n" "$first" >>"$d/errors"
        fi
        if ((v && bad == 0 && rc == 0)); then
            # same sizes one by one, so equal concatenations mean equal bodies
            if ! cmp -s <(for ((k = 1; k <= n; k++)); do cat "$d/o/$k"; done) \
                <(cut -d' ' -f1 "$d/batch" | (cd "$repo" && xargs cat)); then
                bad=$n ok=0
                printf '%s GET batch #%d: bodies differ from the repository files\n' "${d##*/}" "$i" >>"$d/errors"
            fi
            rm -f "$d/o/"*
        fi
        printf 'get\t%s\t%s\t%d\t%d\t%s\t%d\t%d\n' "$t0" "$t1" "$ok" "$bad" "$bytes" "$n" "$v" >>"$d/ops.tsv"
    done
}

# ---------------------------------------------------------------------------------------
# Servers
server_pids=() server_url="" server_dir=""
start_serve() {
    server_dir=$scr/srv-serve
    mkdir -p "$server_dir"
    NO_COLOR=1 RUST_LOG=warn,stratum::serve=info "$S" serve "$repo" --listen 127.0.0.1:0 \
        >"$server_dir/out" 2>"$server_dir/log" &
    server_pids=($!)
    pids+=($!)
    logcmd "NO_COLOR=1 RUST_LOG=warn,stratum::serve=info $S serve $repo --listen 127.0.0.1:0   # access log on stderr"
    for _ in $(seq 1 400); do grep -q 'listening on' "$server_dir/out" 2>/dev/null && break; sleep 0.05; done
    server_url=$(grep -o 'http://[0-9.:]*' "$server_dir/out" | head -n1)
    [[ -n $server_url ]] || { cat "$server_dir/log" >&2; die "stratum serve did not start"; }
}
start_nginx() {
    local port p attempt
    server_dir=$scr/srv-nginx
    p=$server_dir
    mkdir -p "$p/tmp"
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        cat >"$p/nginx.conf" <<EOF
# generated by bench/load.sh (the configuration of tests/it/support/services.rs, with
# $ncpu workers, sendfile and keep-alive)
daemon off;
master_process on;
worker_processes $ncpu;
pid $p/nginx.pid;
error_log $p/error.log warn;
events { worker_connections 4096; }
http {
    log_format load '\$msec \$status \$body_bytes_sent \$request_completion "\$request"';
    access_log $p/access.log load;
    client_body_temp_path $p/tmp;
    proxy_temp_path $p/tmp;
    fastcgi_temp_path $p/tmp;
    uwsgi_temp_path $p/tmp;
    scgi_temp_path $p/tmp;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    keepalive_timeout 300s;
    types { }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$port;
        root $repo;
        autoindex off;
        location / { return 404; }
        location ~ /\\. { return 404; }
        location /data/ {
            add_header Cache-Control "public, max-age=31536000, immutable";
        }
        location = /.stratum/manifest { add_header Cache-Control "no-cache"; }
        location = /.stratum/public.pem { add_header Cache-Control "no-cache"; }
    }
}
EOF
        "$NGINX" -e "$p/error.log" -p "$p/" -c "$p/nginx.conf" >"$p/out.log" 2>&1 &
        server_pids=($!)
        pids+=($!)
        for _ in $(seq 1 200); do
            curl -sf "http://127.0.0.1:$port/.stratum/manifest" >/dev/null 2>&1 && break
            kill -0 "${server_pids[0]}" 2>/dev/null || break
            sleep 0.05
        done
        if curl -sf "http://127.0.0.1:$port/.stratum/manifest" >/dev/null 2>&1; then
            server_url=http://127.0.0.1:$port
            mapfile -t -O 1 server_pids < <(pgrep -P "${server_pids[0]}")
            cp "$p/nginx.conf" "$log/nginx.conf"
            logcmd "nginx -e \$T/srv-nginx/error.log -p \$T/srv-nginx/ -c \$T/srv-nginx/nginx.conf   # as in $log/nginx.conf"
            return
        fi
        kill "${server_pids[0]}" 2>/dev/null || true
        wait "${server_pids[0]}" 2>/dev/null || true
        say "nginx did not start on port $port (attempt $attempt): $(tail -n2 "$p/error.log" 2>/dev/null | tr '\n' ' ')"
    done
    die "nginx did not start"
}
stop_server() { # -> server_rc
    local p
    kill -TERM "${server_pids[0]}" 2>/dev/null || true
    server_rc=0
    wait "${server_pids[0]}" || server_rc=$?
    for p in "${server_pids[@]:1}"; do
        while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
    done
}
# access log -> "requests bytes not_200 incomplete"
access_stats() { # SRV
    if [[ $1 == serve ]]; then
        awk '/stratum::serve::access/ {
                st = ""; by = 0; cp = ""
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^status=/) st = substr($i, 8)
                    else if ($i ~ /^bytes=/) by = substr($i, 7)
                    else if ($i ~ /^complete=/) cp = substr($i, 10)
                }
                n++; b += by; if (st != 200) bad++; if (cp != "true") inc++
            }
            END { printf "%d %d %d %d\n", n, b, bad, inc }' "$server_dir/log"
    else
        awk '{ n++; b += $3; if ($2 != 200) bad++; if ($4 != "OK") inc++ }
            END { printf "%d %d %d %d\n", n, b, bad, inc }' "$server_dir/access.log"
    fi
}
# the server's own complaints: stratum's WARN/ERROR lines, nginx's error.log at warn and up
server_complaints() { # SRV
    if [[ $1 == serve ]]; then
        grep -E '^\S+\s+(WARN|ERROR)' "$server_dir/log" || true
    else
        cat "$server_dir/error.log" 2>/dev/null || true
    fi
}

# ---------------------------------------------------------------------------------------
# One run per server
declare -A R # R[srv.key] = value
run_server() { # SRV
    local srv=$1 cdir k t_start t_end ticks0 ticks1 cs0 cs1 cpid t_dead tasks
    say "$srv: starting the server"
    if [[ $srv == serve ]]; then start_serve; else start_nginx; fi
    say "$srv: $server_url (pids ${server_pids[*]}); $MOUNTS mounts, $PULLERS pullers, $GETTERS GETters for $DURATION s"
    # warm: the repository's files in the page cache, the server past its first requests
    find "$repo" -type f -exec cat {} + >/dev/null
    curl -sf "$server_url/.stratum/manifest" -o /dev/null
    cdir=$scr/clients-$srv
    mkdir -p "$cdir"
    R[$srv.load_start]=$(cut -d' ' -f1-3 /proc/loadavg)
    proc_snap >"$cdir/snap0"
    ticks0=$(proc_ticks "${server_pids[@]}")
    read -r cs0 _ < <(cpu_stat)
    t_start=$EPOCHREALTIME
    deadline_us=$((${t_start/./} + DURATION * 1000000))
    (
        for ((k = 0; k < MOUNTS; k++)); do client_mount "$cdir/m$k" "$server_url" & done
        for ((k = 0; k < PULLERS; k++)); do client_pull "$cdir/p$k" "$server_url" & done
        for ((k = 0; k < GETTERS; k++)); do client_get "$cdir/g$k" "$server_url" & done
        wait
        times >"$cdir/times"
    ) &
    cpid=$!
    pids+=("$cpid")
    : >"$cdir/loads"
    : >"$cdir/threads"
    t_dead=""
    while kill -0 "$cpid" 2>/dev/null; do
        cut -d' ' -f1 /proc/loadavg >>"$cdir/loads"
        tasks=(/proc/"${server_pids[0]}"/task/*)
        echo "${#tasks[@]}" >>"$cdir/threads"
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$cpid" 2>/dev/null || break
            sleep 0.5
        done
        if [[ -z $t_dead ]] && ! before_deadline; then
            t_dead=$EPOCHREALTIME
            say "$srv: deadline; waiting for the operations in flight"
        fi
    done
    wait "$cpid" || true
    t_end=$EPOCHREALTIME
    read -r cs1 _ < <(cpu_stat)
    ticks1=$(proc_ticks "${server_pids[@]}")
    proc_snap >"$cdir/snap1"
    R[$srv.others_cpu]=$(others_cpu "$cdir/snap0" "$cdir/snap1" "${server_pids[@]}" $$ "$BASHPID")
    R[$srv.threads]=$(sort -n "$cdir/threads" | tail -n1)
    R[$srv.hwm_kb]=$(proc_hwm "${server_pids[@]}" | sort -n | tail -n1)
    R[$srv.hwm_sum_kb]=$(proc_hwm "${server_pids[@]}" | awk '{ s += $1 } END { print s + 0 }')
    R[$srv.nproc]=${#server_pids[@]}
    R[$srv.load_end]=$(cut -d' ' -f1-3 /proc/loadavg)
    R[$srv.load_max]=$(sort -n "$cdir/loads" | tail -n1)
    R[$srv.load_mean]=$(awk '{ s += $1; n++ } END { printf "%.2f", s / n }' "$cdir/loads")
    stop_server
    R[$srv.server_rc]=$server_rc
    R[$srv.wall]=$(awk -v a="$t_start" -v b="$t_end" 'BEGIN { printf "%.2f", b - a }')
    R[$srv.server_cpu]=$(awk -v t="$((ticks1 - ticks0))" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')
    R[$srv.busy_cpu]=$(awk -v t="$((cs1 - cs0))" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')
    R[$srv.client_cpu]=$(awk 'NR == 2 { print $1, $2 }' "$cdir/times" | while read -r u s; do
        awk -v u="$(secs "$u")" -v s="$(secs "$s")" 'BEGIN { printf "%.2f", u + s }'; done)
    read -r "R[$srv.reqs]" "R[$srv.bytes]" "R[$srv.not200]" "R[$srv.incomplete]" < <(access_stats "$srv")
    server_complaints "$srv" >"$log/$srv.complaints"
    R[$srv.complaints]=$(wc -l <"$log/$srv.complaints")
    cat "$cdir"/*/ops.tsv 2>/dev/null | sed "s/^/$srv\t/" >>"$log/ops.tsv"
    cat "$cdir"/*/errors 2>/dev/null | sed "s/^/$srv: /" >>"$log/errors" || true
    # client stderr lines that are warnings (informative; errors are counted above)
    R[$srv.client_warn]=$(cat "$cdir"/*/err "$cdir"/*/mount.err 2>/dev/null | grep -cE '(WARN|warning)' || true)
    cat "$cdir"/*/err "$cdir"/*/mount.err 2>/dev/null | grep -E '(WARN|warning)' | sort | uniq -c | sort -rn | head -n 20 >"$log/$srv.client-warnings" || true
    R[$srv.errors]=$(awk -F '\t' -v s="$srv" '$1 == s { e += $6 } END { print e + 0 }' "$log/ops.tsv")
    R[$srv.errors_other]=$(( ${R[$srv.not200]} + ${R[$srv.incomplete]} + ${R[$srv.complaints]} + (${R[$srv.server_rc]} != 0) ))
    say "$srv: done in ${R[$srv.wall]} s; ${R[$srv.reqs]} requests, $(mb "${R[$srv.bytes]}") MB served; client errors ${R[$srv.errors]}, server-side problems ${R[$srv.errors_other]}"
    if ((${R[$srv.complaints]})); then
        say "$srv: the server complained:"; head -n 10 "$log/$srv.complaints" >&2
    fi
    # keep the logs' heads for a post-mortem, drop the big access logs
    rm -rf "$cdir"
}

: >"$log/ops.tsv"
: >"$log/errors"
for srv in $SERVERS; do run_server "$srv"; done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
uptime_after=$(uptime)
others_after=$(others)

# ---------------------------------------------------------------------------------------
# Report
# per server and kind: clients ops errors verified median p95 max client_bytes
kind_stats() { # SRV KIND
    awk -F '\t' -v s="$1" -v k="$2" '$1 == s && $2 == k { printf "%.6f %d %d %d %d\n", $4 - $3, $5, $6, $9, $7 }' "$log/ops.tsv" |
        sort -n | awk '
        { n++; d[n] = $1; ok += $2; err += $3; v += $4; b += $5 }
        END {
            if (n == 0) { print "0 0 0 0 - - - 0"; exit }
            i95 = int(n * 0.95 + 0.999); if (i95 < 1) i95 = 1; if (i95 > n) i95 = n
            printf "%d %d %d %d %.2f %.2f %.2f %d\n", n, ok, err, v, d[int((n + 1) / 2)], d[i95], d[n], b }'
}
report=$base/results.md
total_errors=0
{
    echo "### stratum load benchmark: $CLIENTS concurrent clients, ${DURATION} s per server ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "Machine: $ncpu CPUs ($cpu_model), $mem_total RAM, Linux $(uname -r), work dir on $fs, client scratch on $scratch_fs ($SCRATCH)."
    echo "stratum: git HEAD $stratum_rev$( ((stratum_dirty)) && echo " + $stratum_dirty modified files") when the run started; release binary built $stratum_built, sha256 $stratum_sha…; $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(curl --version | head -n1 | cut -d' ' -f1-2)."
    echo "Load average (1/5/15 min) before: $load_before, after: $load_after; other benchmarks running before/after: ${others_before:-none}/${others_after:-none}."
    echo
    echo "Repository: ${#IMAGES[@]} images of bench/publish.sh's $SCALE set ($(for img in "${IMAGES[@]}"; do printf '%s %s files %s MB; ' "$img" "${tree_files[$img]}" "$(mb "${tree_bytes[$img]}")"; done | sed 's/; $//')), $n_objects objects under data/ ($(mb "$data_bytes") MB), $(mb "$repo_bytes") MB in all; served from $fs with the files in the page cache."
    echo "Clients: $MOUNTS FUSE mount loops (fresh cache, \`find MNT -type f -exec cat {} +\`, umount), $PULLERS \`stratum pull\` loops (fresh cache and DEST), $GETTERS object GETters (\`curl --config\`, $BATCH random objects per keep-alive connection)${mount_note:+; $mount_note}. No new operation starts after ${DURATION} s; those in flight finish, so the wall time is a little longer. Content checked for operations 1, $((1 + VERIFY_EVERY)), $((1 + 2 * VERIFY_EVERY)), … of each client (\`diff -r\` against a local pull, \`cmp\` against the repository's files)."
    echo
    echo "| server | clients | wall s | operations | errors | MB/s served | requests/s | server CPU s (cores) | server peak RSS MiB | clients CPU s | other processes CPU s | machine busy CPU s | 1-min load start / mean / max / end |"
    echo "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for srv in $SERVERS; do
        w=${R[$srv.wall]}
        ops=""
        for kind in mount pull get; do
            read -r n ok err v p50 p95 mx cb < <(kind_stats "$srv" "$kind")
            case $kind in mount) label="mount passes" ;; pull) label="pulls" ;; get) label="GETs" ;; esac
            ((n == 0)) || ops+="$ok $label, "
        done
        errs=$((${R[$srv.errors]} + ${R[$srv.errors_other]}))
        total_errors=$((total_errors + errs))
        hwm=$(awk -v k="${R[$srv.hwm_kb]}" 'BEGIN { printf "%.0f", k / 1024 }')
        ((${R[$srv.nproc]} > 1)) && hwm="$hwm (largest of ${R[$srv.nproc]} processes; sum $(awk -v k="${R[$srv.hwm_sum_kb]}" 'BEGIN { printf "%.0f", k / 1024 }'))"
        echo "| $( [[ $srv == serve ]] && echo '`stratum serve`' || echo "nginx ($ncpu workers)") | $CLIENTS | $w | ${ops%, } | **$errs** | $(awk -v b="${R[$srv.bytes]}" -v t="$w" 'BEGIN { printf "%.1f", b / 1e6 / t }') | $(awk -v n="${R[$srv.reqs]}" -v t="$w" 'BEGIN { printf "%.0f", n / t }') | ${R[$srv.server_cpu]} ($(awk -v c="${R[$srv.server_cpu]}" -v t="$w" 'BEGIN { printf "%.2f", c / t }')) | $hwm | ${R[$srv.client_cpu]} | ${R[$srv.others_cpu]%% *} | ${R[$srv.busy_cpu]} of $(awk -v t="$w" -v n="$ncpu" 'BEGIN { printf "%.0f", t * n }') | ${R[$srv.load_start]%% *} / ${R[$srv.load_mean]} / ${R[$srv.load_max]} / ${R[$srv.load_end]%% *} |"
    done
    echo
    echo "Per kind of client (latency of one operation: a whole pull, a whole pass through a fresh mount, one GET batch of $BATCH):"
    echo
    echo "| server | kind | clients | completed | errors | content-checked | median s | p95 s | max s | MB (client side) |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for srv in $SERVERS; do
        for kind in mount pull get; do
            read -r n ok err v p50 p95 mx cb < <(kind_stats "$srv" "$kind")
            ((n > 0)) || continue
            case $kind in
                mount) label="mount pass"; nc=$MOUNTS; what="$ok images" ;;
                pull) label="pull"; nc=$PULLERS; what="$ok images" ;;
                get) label="GET batch"; nc=$GETTERS; what="$ok requests in $n batches" ;;
            esac
            if [[ $kind == get ]]; then cv="$v batches"; else cv=$v; fi
            echo "| $srv | $label | $nc | $what | $err | $cv | $p50 | $p95 | $mx | $(mb "$cb") |"
        done
    done
    echo
    echo "Server side (access log): $(for srv in $SERVERS; do printf '%s: %d requests, %s MB, %d not 200, %d incomplete, %d error-log lines, exit status %d on SIGTERM; ' "$srv" "${R[$srv.reqs]}" "$(mb "${R[$srv.bytes]}")" "${R[$srv.not200]}" "${R[$srv.incomplete]}" "${R[$srv.complaints]}" "${R[$srv.server_rc]}"; done | sed 's/; $//')."
    echo "\"errors\" = failed client operations (non-zero exit, a GET not 200 or of the wrong size, a content mismatch) + responses not 200 or incomplete in the server's access log + the server's WARN/ERROR lines (nginx: error.log lines) + a non-zero exit on SIGTERM. Client warning lines (not errors): $(for srv in $SERVERS; do printf '%s %d; ' "$srv" "${R[$srv.client_warn]}"; done | sed 's/; $//')."
    echo "Server threads (most seen, first process): $(for srv in $SERVERS; do printf '%s %s; ' "$srv" "${R[$srv.threads]}"; done | sed 's/; $//'). Other processes (other sessions' long-lived processes, alive for the whole run): $(for srv in $SERVERS; do printf '%s run: %s s (%s); ' "$srv" "${R[$srv.others_cpu]%% *}" "$(cut -s -d' ' -f2- <<<"${R[$srv.others_cpu]}" | sed 's/^ *//')"; done | sed 's/; $//')."
    echo "\"clients CPU\" = all client processes (bash loops, curl, stratum pull, stratum mount, find/cat, diff); \"machine busy CPU\" = /proc/stat over the wall time, everything on the machine, of ${ncpu}× the wall time available."
    if [[ -s $log/errors ]]; then
        echo
        echo "Errors (first 20):"
        echo
        echo '```'
        head -n 20 "$log/errors"
        echo '```'
    fi
    echo
    echo "Commands (R = $run, T = the scratch dir in $SCRATCH, L = $layouts, stratum = the release binary, NAME = local/IMG:1, PORT = a free port):"
    echo
    echo '```'
    cat "$log/commands"
    cat <<EOF
# the clients, $CLIENTS at once, each in a loop until ${DURATION} s have passed:
stratum mount URL \$T/m\$K/mnt --pubkey \$R/repo/.stratum/public.pem --cache \$T/m\$K/cache --image NAME &   # fresh cache each time
find \$T/m\$K/mnt -type f -exec cat {} + >/dev/null     # or: diff -r --no-dereference \$T/m\$K/mnt \$T/ref/IMG
umount \$T/m\$K/mnt; wait                                # stratum mount must exit 0
stratum pull URL --pubkey \$R/repo/.stratum/public.pem --image NAME \$T/p\$K/dest --cache \$T/p\$K/cache --json   # both empty
diff -r --no-dereference \$T/p\$K/dest \$T/ref/IMG      # the sample
shuf -n $BATCH \$T/objects >batch                       # "data/xx/yyy size" lines
curl -sS --max-time 120 --config curl.cfg -w '%{http_code} %{size_download}\n'   # url = "URL/data/..." + output = "/dev/null" per object
EOF
    echo '```'
} >"$report"

cat "$report"
echo >&2
say "uptime before: $uptime_before"
say "uptime after:  $uptime_after"
say "report: $report; operations: $log/ops.tsv; errors: $log/errors"
((total_errors == 0)) || { say "$total_errors errors"; exit 1; }
