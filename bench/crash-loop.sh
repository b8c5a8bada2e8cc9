#!/usr/bin/env bash
# Crash-safety loop (issue 6): `stratum publish` and `stratum gc` killed with SIGKILL at
# seeded random moments on the same repository, `stratum check` after every kill, then a
# run to completion compared with an uninterrupted one (tests/crash.rs).
#
# Usage:  bench/crash-loop.sh                 # 100 kills, seed 24301
#         ITERATIONS=500 SEED=7 bench/crash-loop.sh
# CI runs the same test with 12 kills (`cargo test --test crash`).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."
ITERATIONS=${ITERATIONS:-100}
SEED=${SEED:-24301}
echo "==> $ITERATIONS kills per loop, seed $SEED ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
start=$(date +%s)
STRATUM_CRASH_ITERATIONS=$ITERATIONS STRATUM_CRASH_SEED=$SEED \
    cargo test --release --test crash -- --nocapture --test-threads 1 2>&1 |
    grep -E 'kills|^test |test result|panicked|SKIP' || true
echo "==> done in $(( $(date +%s) - start )) s" >&2
