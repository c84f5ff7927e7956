#!/bin/sh
# build-nccl-tests.sh SRC PREFIX CUDA_HOME CUDA_ARCH: NVIDIA nccl-tests (single process per node,
# MPI=0) for compute capability CUDA_ARCH, binaries into PREFIX/bin.
set -eu
src=$1
prefix=$2
cuda=$3
arch=$4
cd "$src"
make -j"$(nproc)" MPI=0 CUDA_HOME="$cuda" NVCC_GENCODE="-gencode=arch=compute_$arch,code=sm_$arch"
mkdir -p "$prefix/bin"
cp build/*_perf "$prefix/bin/"
