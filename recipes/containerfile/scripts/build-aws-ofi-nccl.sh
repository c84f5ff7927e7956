#!/bin/sh
# build-aws-ofi-nccl.sh SRC PREFIX CUDA_HOME CUDA_ARCH: the NCCL net plugin over libfabric
# (aws-ofi-nccl, GitHub source archive: needs autogen) against the libfabric in PREFIX.
set -eu
src=$1
prefix=$2
cuda=$3
cd "$src"
./autogen.sh
./configure --prefix="$prefix" --with-libfabric="$prefix" --with-cuda="$cuda" --disable-tests
make -j"$(nproc)"
make install
# NCCL loads libnccl-net.so unless NCCL_NET_PLUGIN names another file; cordee's Slingshot profiles
# set NCCL_NET, which must not be combined with NCCL_NET_PLUGIN (cscs-docs software/communication/nccl.md; README "Fabric profiles").
if [ ! -e "$prefix/lib/libnccl-net.so" ]; then
    ln -s libnccl-net-ofi.so "$prefix/lib/libnccl-net.so"
fi
echo "$prefix/lib" >/etc/ld.so.conf.d/cordee-net.conf
ldconfig
test -e "$prefix/lib/libnccl-net.so"
