#!/bin/sh
# build-libfabric.sh SRC PREFIX CUDA_HOME CUDA_ARCH: libfabric from its release tarball with the
# cxi provider (Slingshot) against libcxi in PREFIX, CUDA loaded at run time (dlopen).
set -eu
src=$1
prefix=$2
cuda=$3
cd "$src"
PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export PKG_CONFIG_PATH
./configure --prefix="$prefix" \
    --enable-cxi="$prefix" --with-cassini-headers="$prefix/include" --with-cxi-uapi-headers="$prefix/include" \
    --with-cuda="$cuda" --enable-cuda-dlopen \
    --disable-verbs --disable-efa --disable-psm3 --disable-usnic
make -j"$(nproc)"
make install
# The dynamic loader finds PREFIX/lib without LD_LIBRARY_PATH (which users and CE hooks also set).
echo "$prefix/lib" >/etc/ld.so.conf.d/cordee-net.conf
ldconfig
"$prefix/bin/fi_info" --version
