#!/bin/sh
# build-libcxi.sh SRC PREFIX CUDA_HOME CUDA_ARCH: HPE's libcxi (user-space access to the Slingshot
# NIC), which libfabric's cxi provider links. GPU support in libcxi only serves its test tools.
set -eu
src=$1
prefix=$2
cd "$src"
./autogen.sh
./configure --prefix="$prefix" CPPFLAGS="-I$prefix/include" \
    --with-udevrulesdir="$prefix/lib/udev/rules.d" \
    --with-systemdsystemunitdir="$prefix/lib/systemd/system" \
    --without-cuda --without-rocm --without-ze
make -j"$(nproc)"
make install
