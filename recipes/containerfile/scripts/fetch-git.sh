#!/bin/sh
# fetch-git.sh DEST URL COMMIT: clone URL and check out COMMIT (12 to 40 hex digits, pinned in the
# image spec; used where upstream publishes no release tarball with a checksum). Fails unless
# HEAD is that commit afterwards.
set -eu
dest=$1
url=$2
commit=$3
timeout 900 git clone --quiet --no-checkout "$url" "$dest"
git -C "$dest" -c advice.detachedHead=false checkout --quiet --detach "$commit"
head=$(git -C "$dest" rev-parse HEAD)
case "$head" in
"$commit"*) echo "fetch-git: $url at $head" ;;
*)
    echo "fetch-git: $url: HEAD is $head, not the pinned commit $commit" >&2
    exit 1
    ;;
esac
