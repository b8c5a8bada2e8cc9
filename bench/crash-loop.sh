#!/usr/bin/env bash
# Crash-safety loop (issue 6): `stratum publish`, `gc`, `sync WISHLIST.yaml` and
# `replicate URL DEST` killed with SIGKILL at seeded random moments, `stratum check`
# after every kill, then a run to completion compared with an uninterrupted one
# (tests/it/crash.rs). The sync loop needs `docker-registry` and `skopeo` (it prints a
# SKIP line without them); the replicate loop serves the origin with `stratum serve`.
#
# Usage:  bench/crash-loop.sh                 # 100 kills per loop, seed 24301, every loop
#         ITERATIONS=500 SEED=7 bench/crash-loop.sh
#         bench/crash-loop.sh sync_killed replicate_killed   # only the tests named so
# ITERATIONS and SEED default to STRATUM_CRASH_ITERATIONS and STRATUM_CRASH_SEED when
# those are set. CI runs the same tests with 12 kills (`cargo test --test it crash::`).
# Exits non-zero when a test fails.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."
ITERATIONS=${ITERATIONS:-${STRATUM_CRASH_ITERATIONS:-100}}
SEED=${SEED:-${STRATUM_CRASH_SEED:-24301}}
echo "==> $ITERATIONS kills per loop, seed $SEED ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
start=$(date +%s)
# Test-name filters are ORed by libtest: scope each one to the crash module.
filters=()
for f in "$@"; do filters+=("crash::$f"); done
((${#filters[@]})) || filters=(crash::)
set +e
STRATUM_CRASH_ITERATIONS=$ITERATIONS STRATUM_CRASH_SEED=$SEED \
    cargo test --release --test it -- --nocapture --test-threads 1 "${filters[@]}" 2>&1 |
    grep -E 'kills|crash loop|^test |test result|panicked|SKIP'
rc=${PIPESTATUS[0]}
set -e
echo "==> done in $(( $(date +%s) - start )) s (cargo test exit $rc)" >&2
exit "$rc"
