# Shell pieces the benchmark scripts share (sourced, never run): ports, logging, stopping
# processes and mounts, and a local Debian `docker-registry`.
# A script that sources this keeps the pids of its background services in `pids`.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
log() { echo "[$(date +%T)] $*" >&2; }
now() { date +%s.%N; }

stop_pid() { # PID: SIGTERM, SIGKILL after 10 s
    local p=$1 i
    kill "$p" 2>/dev/null || return 0
    for i in $(seq 100); do kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

umount_below() { # DIR: every mount at or below DIR, deepest first, lazily
    { grep -o " $1[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# start_registry DIR PORT: a docker-registry on 127.0.0.1:PORT storing under DIR/storage,
# its access log (one JSON line per request) in DIR/access.log; returns once it answers.
start_registry() {
    local dir=$1 port=$2
    mkdir -p "$dir"
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: json
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
  redirect:
    disable: true
http:
  addr: 127.0.0.1:$port
  secret: stratum-bench-secret
EOF
    docker-registry serve "$dir/config.yml" >"$dir/access.log" 2>"$dir/app.log" &
    pids+=($!)
    local _
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" -o /dev/null && return 0; sleep 0.1; done
    echo "docker-registry did not start on port $port: $(tail -5 "$dir/app.log")" >&2
    return 1
}

# missing_debs TOOL:PACKAGE…: the packages whose TOOL is not on PATH, one per line.
missing_debs() {
    local pair
    for pair; do command -v "${pair%%:*}" >/dev/null 2>&1 || printf '%s\n' "${pair#*:}"; done
}

# install_debs PACKAGE…: apt-get install them as root; as another user, stop and name them.
install_debs() {
    (($#)) || return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "bench: missing Debian packages: $* (apt-get install -y $*)" >&2
        exit 1
    fi
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" </dev/null >&2
}

# stratum_under_test NAME: the binary to measure, copied to $WORK/bin/NAME so that a
# rebuild during the run cannot change it. The binary is $STRATUM, or $root's
# target/release/stratum (built first unless NOBUILD is set). Sets S (the copy), src_bin,
# stratum_rev (STRATUM_REV, else $root's HEAD), stratum_dirty (modified tracked files),
# stratum_sha (first 12 hex of its sha256) and stratum_built (its mtime, UTC).
stratum_under_test() {
    mkdir -p "$WORK/bin"
    if [[ -n ${STRATUM:-} ]]; then
        src_bin=$STRATUM
    else
        if [[ -z ${NOBUILD:-} ]]; then
            log "cargo build --release"
            (cd "$root" && cargo build --release -q) >&2
        fi
        src_bin=$root/target/release/stratum
    fi
    if [[ ! -x $src_bin ]]; then
        echo "bench: no stratum binary at $src_bin" >&2
        exit 1
    fi
    S=$WORK/bin/$1
    cp -f "$src_bin" "$S.tmp" && mv -f "$S.tmp" "$S"
    stratum_rev=${STRATUM_REV:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)}
    stratum_dirty=$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
    stratum_sha=$(sha256sum "$S" | cut -c1-12)
    stratum_built=$(date -u -r "$src_bin" '+%Y-%m-%d %H:%M UTC')
}
