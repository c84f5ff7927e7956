# shellcheck shell=bash
# cordee Enroot hooks: shared functions, sourced by NN-cordee-*.sh (never run on its own;
# installed as hooks.d/cordee/common.sh, where Enroot does not look for hooks).
#
# Enroot runs every executable hooks.d/*.sh before the container switches root, with:
#   ENROOT_ENVIRON  file of KEY=VALUE lines the container starts with (the last line of a key
#                   wins); it already holds the image's /etc/environment, environ.d/*.env and
#                   `enroot start -e` / EDF [env] values; hooks append to it.
#   ENROOT_MOUNTS   file of fstab lines mounted into the container after the hooks ran.
#   ENROOT_ROOTFS   the container's root filesystem; ENROOT_PID its process.
# A hook that exits non-zero aborts the container start.

# Bash >= 4.4 (RHEL 8, SLES 15). Parameter expansions, not basename/dirname: every fork counts
# at each container start.
CORDEE_HOOK_NAME=${BASH_SOURCE[-1]##*/}
CORDEE_HOOK_NAME=${CORDEE_HOOK_NAME%.sh}
_cordee_lib=${BASH_SOURCE[0]}
if [[ $_cordee_lib != */* ]]; then _cordee_lib=./$_cordee_lib; fi
# shellcheck disable=SC2034 # used by the hooks: where profiles/ lives by default
CORDEE_LIBDIR=${_cordee_lib%/*}
# Tests point the host-side searches (/dev, /sys, library dirs) into a fake tree.
CORDEE_HOSTROOT=${CORDEE_HOOK_HOSTROOT:-}
CORDEE_HOSTROOT=${CORDEE_HOSTROOT%/}
CORDEE_SET=()
CORDEE_KEPT=()
declare -A CORDEE_ENVIRON=() CORDEE_MOUNTS=()

cordee_log() {
    printf '[cordee %s] %s\n' "$CORDEE_HOOK_NAME" "$*" >&2
}

cordee_info() {
    if [ "${CORDEE_VERBOSE:-0}" = 1 ]; then cordee_log "$@"; fi
}

cordee_warn() {
    cordee_log "warning: $*"
}

# Exit 2 (bad setting or input): Enroot then aborts the container start with our message.
cordee_die() {
    cordee_log "error: $*"
    exit 2
}

cordee_valid_key() {
    [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]
}

# Guard shared by every hook: it only makes sense inside `enroot start`.
cordee_init() {
    local var
    for var in ENROOT_ENVIRON ENROOT_MOUNTS; do
        if [ -z "${!var:-}" ]; then
            cordee_die "$var is not set: run this hook through Enroot (hooks.d), not by hand"
        fi
        if ! [ -f "${!var}" ] || ! [ -w "${!var}" ]; then
            cordee_die "$var=${!var}: not a writable file"
        fi
    done
    # One pass over ENROOT_ENVIRON (it can hold a whole Slurm job environment); kept up to date
    # by cordee_append_env / cordee_prepend_path. The last line of a key wins, as in Enroot.
    local line key lines=()
    mapfile -t lines <"$ENROOT_ENVIRON"
    for line in ${lines[@]+"${lines[@]}"}; do
        key=${line%%=*}
        if [[ $line == *=* && $key == [A-Za-z_]* && $key != *[!A-Za-z0-9_]* ]]; then
            CORDEE_ENVIRON[$key]=${line#*=}
        fi
    done
    mapfile -t lines <"$ENROOT_MOUNTS"
    for line in ${lines[@]+"${lines[@]}"}; do
        if [ -n "$line" ]; then CORDEE_MOUNTS[$line]=1; fi
    done
    CORDEE_VERBOSE=$(cordee_setting CORDEE_HOOK_VERBOSE 0)
}

# The value KEY will have in the container: the last KEY= line of ENROOT_ENVIRON, else the
# hook's (exported) environment, which Pyxis and the Container Engine pass on to the job.
# Prints it and returns 0, or returns 1 when KEY is set nowhere.
cordee_env_value() {
    local key=$1
    cordee_valid_key "$key" || cordee_die "invalid variable name: $key"
    if [[ -n ${CORDEE_ENVIRON[$key]+set} ]]; then
        printf '%s' "${CORDEE_ENVIRON[$key]}"
        return 0
    fi
    if compgen -e -X "!$key" >/dev/null; then
        printf '%s' "${!key}"
        return 0
    fi
    return 1
}

# True when KEY is already set for the container (even to an empty value: the user chose it).
cordee_env_is_set() {
    cordee_env_value "$1" >/dev/null
}

# A cordee setting (CORDEE_*), read like the container will see it; empty means DEFAULT.
cordee_setting() {
    local value
    value=$(cordee_env_value "$1") || value=
    printf '%s' "${value:-$2}"
}

# auto / on / off from the usual spellings; anything else stops the container start.
cordee_mode() {
    local name=$1 value=$2
    case ${value,,} in
        auto) echo auto ;;
        on | yes | true | 1 | enable | enabled) echo on ;;
        off | no | false | 0 | none | disable | disabled) echo off ;;
        *) cordee_die "$name=$value: allowed values are auto, on, off" ;;
    esac
}

_cordee_check_value() {
    local key=$1 value=$2 quoted=$'^["\'].*["\'][[:space:]]*$'
    cordee_valid_key "$key" || cordee_die "invalid variable name: $key"
    if [[ $value == *$'\n'* || $value == *$'\r'* ]]; then
        cordee_die "$key: the value holds a line break; ENROOT_ENVIRON has one KEY=VALUE per line"
    fi
    # Enroot strips one pair of surrounding quotes (common::envfmt): such a value would change.
    if [[ $value =~ $quoted ]]; then
        cordee_die "$key=$value: a value in quotes would lose them in ENROOT_ENVIRON"
    fi
}

# Append KEY=VALUE (checked by the caller) to ENROOT_ENVIRON and record it.
_cordee_put_env() {
    printf '%s=%s\n' "$1" "$2" >>"$ENROOT_ENVIRON"
    CORDEE_ENVIRON[$1]=$2
    CORDEE_SET+=("$1")
    cordee_info "set $1=$2"
}

# Set KEY=VALUE for the container unless the user (or the image) already set KEY.
cordee_append_env() {
    local key=$1 value=$2
    _cordee_check_value "$key" "$value"
    if cordee_env_is_set "$key"; then
        CORDEE_KEPT+=("$key")
        cordee_info "kept $key (already set for the container)"
        return 0
    fi
    _cordee_put_env "$key" "$value"
}

# Put DIR first in a colon-separated path variable (LD_LIBRARY_PATH, ...), keeping every entry
# the container already has after it. The one kind of edit cordee makes to a set variable:
# a library directory only takes effect in front of the others.
cordee_prepend_path() {
    local key=$1 dir=$2 old=
    old=$(cordee_env_value "$key") || old=
    if [[ ":$old:" == *":$dir:"* ]]; then
        cordee_info "kept $key ($dir already in it)"
        return 0
    fi
    _cordee_check_value "$key" "$dir${old:+:$old}"
    _cordee_put_env "$key" "$dir${old:+:$old}"
}

# fstab fields are blank-separated; Enroot reads them with getmntent(3), which decodes octal.
# Sets CORDEE_ESCAPED (no subshell: hooks run at every container start).
cordee_fstab_escape() {
    local s=$1
    if [[ $s == *$'\n'* ]]; then cordee_die "path with a line break cannot be mounted: $s"; fi
    s=${s//\\/\\134}
    s=${s// /\\040}
    s=${s//$'\t'/\\011}
    CORDEE_ESCAPED=$s
}

# Mount host SRC at container path DST (absolute, inside the rootfs) with FLAGS, e.g.
# x-create=file,bind,ro,nosuid,nodev,private. A missing SRC is skipped; a line already
# present is not repeated.
cordee_add_mount() {
    local src=$1 dst=$2 flags=$3 line
    if [[ $dst != /* ]]; then cordee_die "mount destination must be absolute: $dst"; fi
    if ! [ -e "$src" ]; then
        cordee_info "skipped mount of $dst: $src does not exist"
        return 0
    fi
    cordee_fstab_escape "$src"
    line=$CORDEE_ESCAPED
    cordee_fstab_escape "$dst"
    line+=" $CORDEE_ESCAPED none $flags"
    if [[ -n ${CORDEE_MOUNTS[$line]+set} ]]; then return 0; fi
    printf '%s\n' "$line" >>"$ENROOT_MOUNTS"
    CORDEE_MOUNTS[$line]=1
    cordee_info "mount $src -> $dst ($flags)"
}

# Host has Slingshot/CXI devices (same test as cordee's profile suggestion).
cordee_host_has_cxi() {
    local f
    for f in "$CORDEE_HOSTROOT"/dev/cxi* "$CORDEE_HOSTROOT"/sys/class/cxi/*; do
        if [ -e "$f" ]; then return 0; fi
    done
    return 1
}

cordee_summary() {
    cordee_info "done: ${#CORDEE_SET[@]} variable(s) set${CORDEE_SET[*]:+ (${CORDEE_SET[*]})}," \
        "${#CORDEE_KEPT[@]} kept${CORDEE_KEPT[*]:+ (${CORDEE_KEPT[*]})}"
}
