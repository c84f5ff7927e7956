#!/bin/sh
# build-cxi-driver.sh SRC PREFIX CUDA_HOME CUDA_ARCH: the CXI driver's user-space API headers
# (HPE shs-cxi-driver); the kernel driver itself comes from the host.
set -eu
src=$1
prefix=$2
mkdir -p "$prefix/include"
cp -R "$src/include/." "$prefix/include/"
