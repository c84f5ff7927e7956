#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# 50-cordee-fabric-profile.sh: Enroot hook that applies a cordee fabric profile (the NCCL /
# libfabric / torch variables of platform/cordee/profiles/data/NAME.toml) to the container.
#
# CORDEE_FABRIC_PROFILE  NAME | auto (default) | none
#   auto: $CORDEE_PROFILE when set (the launcher's own choice, so both agree), else
#         slingshot-cscs on a host with Slingshot/CXI devices (/dev/cxi*), else nothing.
# Each variable is added to the container environment unless already set there (image,
# environ.d, `enroot start -e`, EDF [env]) or exported by the user; CORDEE_PROFILE records
# the profile for `cordee launch` / `cordee env check` inside. An unknown profile stops the
# container start. Profiles are read from hooks.d/cordee/profiles/NAME.env (hooks/install.sh
# generates them from the profile data) or $CORDEE_HOOK_PROFILE_DIR.
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

setting=$(cordee_setting CORDEE_FABRIC_PROFILE auto)
origin="CORDEE_FABRIC_PROFILE=$setting"
case ${setting,,} in
    none | off | no | false | 0) exit 0 ;;
    auto)
        if name=$(cordee_env_value CORDEE_PROFILE) && [ -n "$name" ]; then
            origin="CORDEE_PROFILE=$name (CORDEE_FABRIC_PROFILE=auto)"
            if [ "$name" = none ]; then exit 0; fi
        elif cordee_host_has_cxi; then
            name=slingshot-cscs
        else
            cordee_info "no Slingshot/CXI device on this host and no CORDEE_PROFILE: nothing to apply"
            exit 0
        fi
        ;;
    *) name=$setting ;;
esac

profile_dir=$(cordee_setting CORDEE_HOOK_PROFILE_DIR "$CORDEE_LIBDIR/profiles")
known() {
    local f list=
    for f in "$profile_dir"/*.env; do
        if [ -f "$f" ]; then list+="${list:+, }$(basename -- "$f" .env)"; fi
    done
    printf '%s' "${list:-(none in $profile_dir: run hooks/install.sh)}"
}
if ! [[ $name =~ ^[a-z0-9][a-z0-9.-]*$ ]] || ! [ -f "$profile_dir/$name.env" ]; then
    cordee_die "$origin: unknown profile; known profiles: $(known); set CORDEE_FABRIC_PROFILE=none to apply none"
fi

file=$profile_dir/$name.env
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    case $line in '' | '#'*) continue ;; esac
    if ! [[ $line =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then
        cordee_die "$file line $lineno: expected KEY=VALUE, got: $line"
    fi
    cordee_append_env "${line%%=*}" "${line#*=}"
done <"$file"
cordee_append_env CORDEE_PROFILE "$name"

cordee_info "applied fabric profile $name ($origin)"
cordee_summary
