#!/usr/bin/env bash
# Debian packages the tests and the demo need (real components: Slurm, munge, libfabric...).
# Idempotent: installs only what is missing. Needs root (CI and dev machines run as root).
set -euo pipefail
pkgs=(slurm-wlm slurm-client munge libpmix2 iproute2 util-linux procps libfabric1 libfabric-bin
  # images: podman with runc (crun refuses hybrid cgroups), a locally made Debian base, squashfs export
  podman runc debootstrap squashfs-tools squashfuse fuse3
  # tests: Enroot hooks pass shellcheck; C net plugins are compiled with gcc
  shellcheck gcc
  # tests: ctypes struct layouts are checked against the installed libfabric header
  libfabric-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-system-deps: need root to install: ${missing[*]}" >&2
  exit 2
fi
echo "system packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
