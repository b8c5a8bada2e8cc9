#!/usr/bin/env bash
# stratum quickstart: build a small two-layer OCI image with umoci, publish it into a
# fresh local repository, inspect it, verify it and pull its flat rootfs back out.
#
#   examples/quickstart.sh                 # uses `cargo run --release -q --`
#   STRATUM=target/release/stratum examples/quickstart.sh
#   KEEP=1 examples/quickstart.sh          # keep the temp dir for a look afterwards
#
# Needs: umoci (Debian package `umoci`). Everything happens in a temp dir.
set -euo pipefail

if ! command -v umoci >/dev/null 2>&1; then
    echo "quickstart: skipped, umoci is not installed (Debian: apt-get install -y umoci)" >&2
    exit 0
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -n ${STRATUM:-} ]]; then
    stratum=("$STRATUM")
else
    stratum=(cargo run --release -q --manifest-path "$root/Cargo.toml" --)
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

step "   layer 1: a few directories, text files, a symlink and a hardlink"
rootfs=$bundle/rootfs
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

step "done: the image was published, verified and pulled"
