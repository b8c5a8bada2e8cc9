#!/usr/bin/env bash
# Installs everything the tests need and runs the whole suite: the README's
# test command, and what CI runs (.ci/run calls this script, so the two
# cannot drift). Run it as root (or with passwordless sudo) on Debian or
# Ubuntu: `sudo bash scripts/test.sh`. Extra arguments go to `cargo test`.
#
# Tests that need root, FUSE or a tool skip with a `SKIP:` line when it is
# missing; at the end of the run one line sums up what was skipped and why.
# With CI set (CI=true, as .ci/run sets it), a skip fails the test instead:
# CI must run everything.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo -n"
    echo "warning: not root; tests needing root (devices, owners, FUSE, overlayfs) will be skipped" >&2
fi

# umoci + skopeo build and convert the test images (tests/it/support/umoci.rs),
# fuse3 serves FUSE mounts, attr gives getfattr/setfattr for debugging,
# busybox-static is the real program tests/it/mount.rs runs from a mounted image,
# nginx and squid are the real web server and proxy of the serving tests,
# docker-registry (+ apache2-utils for htpasswd, openssl for a test CA) is the
# real OCI registry of tests/it/support/registry.rs, python3-jsonschema checks
# the thin-image JSON schema against the parser, python3-venv holds moto,
# GNU time measures the peak memory of a command (tests/it/reader_trust.rs),
# systemd-analyze verifies the unit files of examples/systemd (tests/it/service.rs),
# runc runs the bundles of `stratum bundle` (tests/it/bundle.rs),
# containerd + runc run the remote snapshotter's tests (tests/it/snapshotter.rs),
# protobuf-compiler (protoc) builds containerd-snapshots' gRPC code.
packages=(umoci skopeo fuse3 attr util-linux nginx busybox-static squid docker-registry
    apache2-utils openssl python3-venv python3-jsonschema time systemd runc
    containerd protobuf-compiler)
installed=$(dpkg-query -W -f='${db:Status-Status}\n' "${packages[@]}" 2>/dev/null | grep -cx installed || true)
if [ "$installed" -eq "${#packages[@]}" ]; then
    echo "==> Debian packages: all installed"
else
    echo "==> installing Debian packages: ${packages[*]}"
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends "${packages[@]}" </dev/null
fi

# moto's S3 server (PyPI) is the real S3-protocol server of the S3 backend's
# tests (catalog/tests/s3_backend.rs, tests/s3.rs): create-only and ETag-
# conditional PUTs, multipart uploads, anonymous GETs under a bucket policy.
# It goes into its own virtualenv, where stratum_catalog::testing looks for it;
# STRATUM_REQUIRE_S3=1 makes those tests fail rather than skip without it.
MOTO_VENV=/opt/stratum-moto MOTO_VERSION=5.2.5
if ! "$MOTO_VENV/bin/python" -c "import sys, moto; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null \
    || [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
    echo "==> installing moto[server]==$MOTO_VERSION into $MOTO_VENV"
    $sudo python3 -m venv --clear "$MOTO_VENV"
    $sudo "$MOTO_VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" </dev/null
fi
if [ -n "${CI:-}" ]; then export STRATUM_REQUIRE_S3=1; fi

# Every skipped test appends its `SKIP:` line here (tests/it/support/mod.rs).
skipped="${CARGO_TARGET_DIR:-target}/tmp/stratum-skipped.log"
mkdir -p "$(dirname "$skipped")"
: >"$skipped"

echo "==> cargo test --workspace $*"
status=0
cargo test --workspace "$@" || status=$?

if [ -s "$skipped" ]; then
    # One line: how many tests skipped, grouped by reason.
    summary=$(sed -e 's/^SKIP: [^:]*: //' "$skipped" | sort | uniq -c | sort -rn \
        | sed -e 's/^ *\([0-9]*\) /\1 × /' | paste -sd ';' | sed -e 's/;/; /g')
    echo "skipped $(wc -l <"$skipped") tests: $summary"
fi
exit "$status"
