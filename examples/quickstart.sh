#!/usr/bin/env bash
# stratum quickstart: the main job end to end. Builds stratum, builds a small
# two-layer OCI image with umoci (a static busybox and some files), publishes
# it into a fresh local repository, inspects and verifies it, pulls its flat
# rootfs back out and runs the image's busybox from it.
#
#   bash examples/quickstart.sh                  # builds target/release/stratum first
#   STRATUM=target/release/stratum bash examples/quickstart.sh
#   KEEP=1 bash examples/quickstart.sh           # keep the temp dir for a look afterwards
#
# Needs: cargo (a Rust toolchain, e.g. from rustup), umoci and busybox-static
# (Debian packages; installed here when run as root, else named). Everything
# else happens in a temp dir.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# What it needs: install the Debian packages when we can, else say how.
missing=()
command -v umoci >/dev/null 2>&1 || missing+=(umoci)
[[ -x /bin/busybox ]] || missing+=(busybox-static)
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing ${missing[*]} (Debian packages)"
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
    else
        echo "quickstart: needs ${missing[*]}: run it as root, or first: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

if [[ -n ${STRATUM:-} ]]; then
    stratum=("$STRATUM")
else
    if ! command -v cargo >/dev/null 2>&1; then
        echo "quickstart: needs cargo (install a Rust toolchain, e.g. with rustup)" >&2
        exit 1
    fi
    echo "==> building stratum (cargo build --release): the first run compiles every dependency, a few minutes on 2 cores"
    cargo build --release --manifest-path "$root/Cargo.toml" --bin stratum
    stratum=("${CARGO_TARGET_DIR:-$root/target}/release/stratum")
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/stratum-quickstart.XXXXXX")
if [[ -n ${KEEP:-} ]]; then
    trap 'echo "quickstart: kept $tmp"' EXIT
else
    trap 'rm -rf "$tmp"' EXIT
fi

step() { printf '\n==> %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
st() { printf '$ stratum %s\n' "$*"; "${stratum[@]}" "$@"; }

# umoci needs --rootless when it cannot chown; as root it keeps owners as they are.
rootless=()
if [[ $(id -u) -ne 0 ]]; then rootless=(--rootless); fi

name=quickstart
tag=1.0
layout=$tmp/$name            # the layout dir name gives the default image name local/quickstart
bundle=$tmp/bundle

step "1. Build an OCI image layout with umoci in $layout"
run umoci init --layout "$layout"
run umoci new --image "$layout:$tag"
run umoci unpack "${rootless[@]}" --image "$layout:$tag" "$bundle"

step "   layer 1: a static busybox, a few directories, text files, a symlink and a hardlink"
rootfs=$bundle/rootfs
mkdir -p "$rootfs/bin"
cp /bin/busybox "$rootfs/bin/busybox"
ln -s busybox "$rootfs/bin/sh"
mkdir -p "$rootfs/etc" "$rootfs/usr/bin" "$rootfs/usr/share/doc/hello" "$rootfs/var/tmp" "$rootfs/srv/data"
printf 'quickstart\n' >"$rootfs/etc/hostname"
printf 'NAME="stratum quickstart"\nVERSION="%s"\n' "$tag" >"$rootfs/etc/os-release"
printf '#!/bin/sh\necho "hello from a stratum image"\n' >"$rootfs/usr/bin/hello"
chmod 0755 "$rootfs/usr/bin/hello"
printf 'hello is a tiny example program.\n' >"$rootfs/usr/share/doc/hello/README"
for i in $(seq 1 20); do
    printf 'record %d\n' "$i" >"$rootfs/srv/data/record-$i.txt"
done
printf 'this file is deleted by layer 2\n' >"$rootfs/srv/data/obsolete.txt"
head -c 300000 /dev/urandom | base64 >"$rootfs/srv/data/big.txt"   # a file of ~400 KB
ln -s ../usr/bin/hello "$rootfs/srv/hello-link"                    # relative symlink
ln "$rootfs/usr/bin/hello" "$rootfs/usr/bin/hello-hardlink"         # hardlink
chmod 1777 "$rootfs/var/tmp"
run umoci repack --refresh-bundle --image "$layout:$tag" "$bundle"

step "   layer 2: delete a file (a whiteout), change one, add one"
rm "$rootfs/srv/data/obsolete.txt"
printf 'record 1, revised\n' >"$rootfs/srv/data/record-1.txt"
printf 'added by layer 2\n' >"$rootfs/etc/motd"
run umoci repack --image "$layout:$tag" "$bundle"
run umoci ls --layout "$layout"

step "2. Generate a signing key (private in key, public in key.pub)"
st keygen "$tmp/key"

step "3. Create an empty repository (revision 1)"
st init "$tmp/repo" --key "$tmp/key" --name quickstart

step "4. Publish the image: every layer is unpacked once into content-addressed objects"
st publish "oci:$layout:$tag" --repo "$tmp/repo" --key "$tmp/key" --json

step "5. List the published images"
st images "$tmp/repo"
images_json=$("${stratum[@]}" images "$tmp/repo" --json)
if command -v jq >/dev/null 2>&1; then
    flat=$(jq -r --arg n "local/$name:$tag" '.[] | select(.name == $n) | .flat_path' <<<"$images_json")
else
    # no jq: the first flat_path is ours, the repository holds this one image only
    flat=$(grep -o '"flat_path" *: *"[^"]*"' <<<"$images_json" | head -n1 | sed 's/.*: *"\(.*\)"/\1/')
fi
if [[ -z $flat ]]; then
    echo "quickstart: local/$name:$tag is missing from 'stratum images --json':" >&2
    echo "$images_json" >&2
    exit 1
fi

step "6. List the image's flat rootfs ($flat) and one directory of it"
st ls "$tmp/repo" "$flat"
st ls "$tmp/repo" "$flat/srv/data"

step "7. Verify the signature and every catalog and object"
st check "$tmp/repo"

step "8. Pull the flat rootfs into a directory"
dest=$tmp/rootfs
if ! st pull "$tmp/repo" --image "local/$name:$tag" "$dest"; then
    echo "quickstart: 'stratum pull' failed (see above)" >&2
    exit 1
fi
run ls -la "$dest" "$dest/srv" "$dest/srv/data"

step "9. Run the image's own program from the pulled rootfs"
if [[ $(id -u) -eq 0 ]]; then
    run chroot "$dest" /bin/sh -c '. /etc/os-release; echo "hello from inside $NAME $VERSION"; /usr/bin/hello'
else
    run "$dest/bin/busybox" sh -c "echo 'hello from the image busybox (not root: no chroot)'; cat '$dest/etc/os-release'"
fi

step "done: the image was published, verified, pulled and run"
