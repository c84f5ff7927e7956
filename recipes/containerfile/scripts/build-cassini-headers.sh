#!/bin/sh
# build-cassini-headers.sh SRC PREFIX CUDA_HOME CUDA_ARCH: Cassini hardware headers and CSR
# definitions (HPE shs-cassini-headers), needed to build libcxi and libfabric's cxi provider.
set -eu
src=$1
prefix=$2
mkdir -p "$prefix/include" "$prefix/share"
cp -R "$src/include/." "$prefix/include/"
cp -R "$src/share/." "$prefix/share/"
