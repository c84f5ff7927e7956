#!/bin/sh
# fetch-tarball.sh DEST URL SHA256: download a release tarball, check it against the sha256 pinned
# in the image spec, unpack it into DEST (top folder stripped). Fails on any mismatch.
set -eu
dest=$1
url=$2
sha256=$3
archive="$dest.download"
mkdir -p "$(dirname "$dest")"
curl -fsSL --retry 3 --connect-timeout 30 --max-time 900 -o "$archive" "$url"
echo "$sha256  $archive" | sha256sum -c -
mkdir -p "$dest"
tar -xf "$archive" -C "$dest" --strip-components=1
rm -f "$archive"
