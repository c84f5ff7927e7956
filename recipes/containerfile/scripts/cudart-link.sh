#!/bin/sh
# cudart-link.sh LIBDIR: make sure LIBDIR/libcudart.so exists (the CE aws_ofi_nccl hook's cuda-dl
# variant loads the unversioned name); link it to the first libcudart.so.N there if it is missing.
set -eu
cd "$1"
if [ ! -e libcudart.so ]; then
    for lib in libcudart.so.[0-9]*; do
        if [ ! -e "$lib" ]; then
            echo "cudart-link: no libcudart.so.N in $1" >&2
            exit 1
        fi
        ln -s "$lib" libcudart.so
        break
    done
fi
test -e libcudart.so
