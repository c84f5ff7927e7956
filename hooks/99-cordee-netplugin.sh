#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# 99-cordee-netplugin.sh: Enroot hook that gives the container the host's network stack for
# NCCL, as the Container Engine's aws_ofi_nccl and cxi hooks do on Alps:
#   - the host NCCL net plugin (aws-ofi-nccl libnccl-net-ofi.so), the host libfabric.so.1,
#     its provider directory and the libraries they need that the container lacks, bind-mounted
#     read-only into /opt/cordee/hostlib;
#   - the Slingshot devices /dev/cxi*;
#   - LD_LIBRARY_PATH with /opt/cordee/hostlib first (the container's entries kept after it), so
#     NCCL's default dlopen("libnccl-net.so") and the plugin's libfabric.so.1 resolve to the host
#     copies; FI_PROVIDER_PATH unless set. NCCL_NET_PLUGIN is left alone: set together with
#     NCCL_NET (profile slingshot-cscs) a plugin name NCCL cannot find stops it at start.
#
# CORDEE_NETPLUGIN        auto (default: when a host plugin is found) | on (must find one) | off
# CORDEE_NCCL_PLUGIN_DIR  host dir holding the plugin (default: search the usual locations)
# CORDEE_LIBFABRIC_DIR    host dir holding libfabric.so.1 (default: the one the plugin links to)
set -euo pipefail

hook_dir=.
if [[ ${BASH_SOURCE[0]} == */* ]]; then hook_dir=${BASH_SOURCE[0]%/*}; fi
lib=$hook_dir/cordee/common.sh # installed layout
[ -f "$lib" ] || lib=$hook_dir/common.sh # source tree
if ! [ -f "$lib" ]; then
    echo "[cordee ${0##*/}] error: common.sh not found next to the hook; reinstall with hooks/install.sh" >&2
    exit 2
fi
# shellcheck source=common.sh
source "$lib"

cordee_init

mode=$(cordee_mode CORDEE_NETPLUGIN "$(cordee_setting CORDEE_NETPLUGIN auto)")
if [ "$mode" = off ]; then exit 0; fi
if [ -z "${ENROOT_ROOTFS:-}" ] || ! [ -d "$ENROOT_ROOTFS" ]; then
    cordee_die "ENROOT_ROOTFS=${ENROOT_ROOTFS:-}: not a directory"
fi

readonly IN_CONTAINER=/opt/cordee/hostlib
readonly LIB_FLAGS=x-create=file,bind,ro,nosuid,nodev,private
readonly DIR_FLAGS=x-create=dir,bind,ro,nosuid,nodev,private
readonly DEV_FLAGS=x-create=file,bind,rw,nosuid,noexec,private
readonly LDD_TIMEOUT=30
arch=$(uname -m)
# aws-ofi-nccl's names; a bare libnccl-net.so is only taken from a directory the user named.
plugin_names=(libnccl-net-ofi.so libnccl-net-aws-ofi.so)
plugin_dirs=(/opt/amazon/ofi-nccl/lib /opt/amazon/ofi-nccl/lib64 /opt/aws-ofi-nccl/lib
    /opt/aws-ofi-nccl/lib64 /usr/local/lib /usr/local/lib64 /usr/lib64 "/usr/lib/$arch-linux-gnu")
container_lib_dirs=(/lib /lib64 /usr/lib /usr/lib64 "/lib/$arch-linux-gnu" "/usr/lib/$arch-linux-gnu"
    /usr/local/lib /usr/local/lib64)

# "SONAME PATH" lines for the libraries FILE needs, as the host's loader resolves them (ldd),
# into LDD[FILE] (each file is resolved once).
declare -A LDD=()
resolve_deps() {
    local line out=
    if [[ -n ${LDD[$1]+set} ]]; then return 0; fi
    while IFS= read -r line; do
        if [[ $line =~ ^[[:space:]]*([^[:space:]]+)[[:space:]]+=\>[[:space:]]+(/[^[:space:]]+) ]]; then
            out+="${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"$'\n'
        elif [[ $line =~ ^[[:space:]]*([^[:space:]]+)[[:space:]]+=\>[[:space:]]+not\ found ]]; then
            cordee_info "$1 needs ${BASH_REMATCH[1]}, which the host cannot resolve either"
        fi
    done < <(timeout "$LDD_TIMEOUT" ldd -- "$1" 2>/dev/null || true)
    LDD[$1]=$out
}

PLUGIN=
find_plugin() {
    local dir name
    dir=$(cordee_setting CORDEE_NCCL_PLUGIN_DIR "")
    if [ -n "$dir" ]; then
        for name in "${plugin_names[@]}" libnccl-net.so; do
            if [ -f "$dir/$name" ]; then PLUGIN=$dir/$name && return 0; fi
        done
        cordee_die "CORDEE_NCCL_PLUGIN_DIR=$dir: none of ${plugin_names[*]} libnccl-net.so there"
    fi
    for dir in "${plugin_dirs[@]}"; do
        for name in "${plugin_names[@]}"; do
            if [ -f "$CORDEE_HOSTROOT$dir/$name" ]; then PLUGIN=$CORDEE_HOSTROOT$dir/$name && return 0; fi
        done
    done
    return 1
}

LIBFABRIC=
find_libfabric() {
    local dir soname path
    dir=$(cordee_setting CORDEE_LIBFABRIC_DIR "")
    if [ -n "$dir" ]; then
        [ -e "$dir/libfabric.so.1" ] || cordee_die "CORDEE_LIBFABRIC_DIR=$dir: no libfabric.so.1 there"
        LIBFABRIC=$dir/libfabric.so.1 && return 0
    fi
    # The libfabric the plugin was built against, as the host resolves it.
    resolve_deps "$PLUGIN"
    while read -r soname path; do
        if [ "$soname" = libfabric.so.1 ]; then LIBFABRIC=$path && return 0; fi
    done <<<"${LDD[$PLUGIN]}"
    # Else the usual places, newest HPE (Cray) libfabric first.
    while IFS= read -r dir; do
        if [ -e "$dir/libfabric.so.1" ]; then LIBFABRIC=$dir/libfabric.so.1 && return 0; fi
    done < <(
        printf '%s\n' "$CORDEE_HOSTROOT"/opt/cray/libfabric/*/lib64 | sort -rV
        for dir in /usr/lib64 "/usr/lib/$arch-linux-gnu" /usr/local/lib /usr/local/lib64; do
            printf '%s\n' "$CORDEE_HOSTROOT$dir"
        done
    )
    return 1
}

container_has() {
    local d
    for d in "${container_lib_dirs[@]}"; do
        if [ -e "$ENROOT_ROOTFS$d/$1" ] || [ -L "$ENROOT_ROOTFS$d/$1" ]; then return 0; fi
    done
    return 1
}

# Libraries the plugin and libfabric need that the container does not have (by soname).
# glibc and the CUDA / driver libraries always come from the container (and the GPU hook).
declare -A deps=()
collect_deps() {
    local soname path
    resolve_deps "$1"
    while read -r soname path; do
        if [ -z "$soname" ]; then continue; fi
        case $soname in
            ld-linux* | libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | libresolv.so* | \
                libutil.so* | libanl.so* | libnsl.so* | libmvec.so* | libBrokenLocale.so*) continue ;;
            libcuda.so* | libcudart.so* | libnvidia-* | libnccl.so* | libfabric.so.1) continue ;;
        esac
        if [[ -n ${deps[$soname]+set} ]]; then continue; fi
        if container_has "$soname"; then
            cordee_info "container has $soname: its own copy is used"
            continue
        fi
        deps[$soname]=$(readlink -f -- "$path")
    done <<<"${LDD[$1]}"
}

if find_plugin; then
    plugin_real=$(readlink -f -- "$PLUGIN")
    plugin_name=${PLUGIN##*/}
    cordee_add_mount "$plugin_real" "$IN_CONTAINER/$plugin_name" "$LIB_FLAGS"
    if [ "$plugin_name" != libnccl-net.so ]; then
        cordee_add_mount "$plugin_real" "$IN_CONTAINER/libnccl-net.so" "$LIB_FLAGS"
    fi
    provider_dir=
    if find_libfabric; then
        cordee_add_mount "$(readlink -f -- "$LIBFABRIC")" "$IN_CONTAINER/libfabric.so.1" "$LIB_FLAGS"
        collect_deps "$LIBFABRIC"
        if [ -d "${LIBFABRIC%/*}/libfabric" ]; then
            provider_dir=${LIBFABRIC%/*}/libfabric
            cordee_add_mount "$provider_dir" "$IN_CONTAINER/libfabric" "$DIR_FLAGS"
            for provider in "$provider_dir"/*.so; do
                if [ -f "$provider" ]; then collect_deps "$provider"; fi
            done
        fi
    else
        cordee_warn "no host libfabric.so.1 found for $PLUGIN: the container's own libfabric will be used" \
            "(set CORDEE_LIBFABRIC_DIR)"
    fi
    collect_deps "$PLUGIN"
    while IFS= read -r soname; do
        if [ -n "$soname" ]; then cordee_add_mount "${deps[$soname]}" "$IN_CONTAINER/$soname" "$LIB_FLAGS"; fi
    done < <(printf '%s\n' "${!deps[@]}" | sort)
elif [ "$mode" = on ]; then
    cordee_die "CORDEE_NETPLUGIN=on but no NCCL net plugin (${plugin_names[*]}) found in" \
        "${plugin_dirs[*]}; set CORDEE_NCCL_PLUGIN_DIR"
else
    cordee_info "no host NCCL net plugin found: nothing to inject"
fi

# Slingshot devices: already visible through Enroot's /dev, but not with ENROOT_RESTRICT_DEV.
for dev in "$CORDEE_HOSTROOT"/dev/cxi*; do
    if [ -e "$dev" ]; then cordee_add_mount "$dev" "/dev/${dev##*/}" "$DEV_FLAGS"; fi
done

if [ -n "$PLUGIN" ]; then
    cordee_prepend_path LD_LIBRARY_PATH "$IN_CONTAINER"
    if [ -n "$provider_dir" ]; then cordee_append_env FI_PROVIDER_PATH "$IN_CONTAINER/libfabric"; fi
fi
cordee_summary
