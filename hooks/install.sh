#!/usr/bin/env bash
# Install cordee's Enroot hooks for the current user (`make hooks-install`), or remove them.
#
#   bash hooks/install.sh [--prefix DIR] [--uninstall]
#
# DIR is Enroot's configuration directory: default ${ENROOT_CONFIG_PATH:-${XDG_CONFIG_HOME:-$HOME/.config}/enroot}
# (use /etc/enroot, Enroot's ENROOT_SYSCONF_PATH, for every user of a node). Layout:
#   DIR/hooks.d/NN-cordee-*.sh             the hooks (0755: Enroot runs executable *.sh)
#   DIR/hooks.d/cordee/common.sh           their shared functions (a subdirectory: never run)
#   DIR/hooks.d/cordee/profiles/NAME.env   fabric profiles, generated from
#                                          platform/cordee/profiles/data/*.toml (one source of truth)
#   DIR/hooks.d/cordee/installed           the hooks installed, so that --uninstall and a
#                                          reinstall remove exactly those
# Idempotent; every file is written to a temporary name and renamed, the library and profiles
# before the hooks, so a container starting meanwhile sees either the old or the new set.
set -euo pipefail

die() {
    echo "hooks/install.sh: error: $*" >&2
    exit 2
}

usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"
}

prefix=
action=install
while (($#)); do
    case $1 in
        --prefix) (($# >= 2)) || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        --uninstall) action=uninstall; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (allowed: --prefix DIR, --uninstall, --help)" ;;
    esac
done
if [ -z "$prefix" ]; then
    prefix=${ENROOT_CONFIG_PATH:-${XDG_CONFIG_HOME:-${HOME:?HOME is not set}/.config}/enroot}
fi

src=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname -- "$src")
hooks_d=$prefix/hooks.d
libdir=$hooks_d/cordee
manifest=$libdir/installed
hook_re='^[0-9][0-9]-cordee-[A-Za-z0-9_.-]+\.sh$'

# copy SRC DEST MODE, atomically (temporary name in the same directory, then rename)
copy() {
    local tmp
    tmp=$(mktemp "$(dirname -- "$2")/.${2##*/}.XXXXXX") || die "cannot write into $(dirname -- "$2")"
    if ! cp -- "$1" "$tmp" || ! chmod "$3" "$tmp" || ! mv -f -- "$tmp" "$2"; then
        rm -f -- "$tmp"
        die "cannot install $2"
    fi
}

installed_hooks() {
    local name
    if [ -f "$manifest" ]; then
        while IFS= read -r name; do
            if [[ $name =~ $hook_re ]]; then printf '%s\n' "$name"; fi
        done <"$manifest"
    fi
}

if [ "$action" = uninstall ]; then
    removed=0
    for name in $(installed_hooks); do
        if [ -e "$hooks_d/$name" ]; then rm -f -- "$hooks_d/$name" && removed=$((removed + 1)); fi
    done
    if [ -d "$libdir" ]; then
        rm -f -- "$libdir"/profiles/*.env "$libdir/common.sh" "$manifest"
        rmdir -- "$libdir/profiles" "$libdir" 2>/dev/null ||
            echo "hooks/install.sh: kept $libdir: it holds files cordee did not install" >&2
    fi
    echo "removed $removed cordee hook(s) and their files from $hooks_d"
    exit 0
fi

# Profiles first: the only step that can fail on bad data, before anything is replaced.
python=${CORDEE_PYTHON:-}
if [ -z "$python" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then python=$repo/.venv/bin/python; else python=python3; fi
fi
command -v "$python" >/dev/null || die "$python not found (set CORDEE_PYTHON to a Python >= 3.11)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$python is older than 3.11 (tomllib is needed); set CORDEE_PYTHON"
mkdir -p -- "$libdir/profiles" || die "cannot create $libdir"
PYTHONPATH="$repo/platform${PYTHONPATH:+:$PYTHONPATH}" \
    "$python" -m cordee.profiles.envfile --all --out "$libdir/profiles" >/dev/null ||
    die "rendering the fabric profiles failed (see above)"
nprofiles=$(find "$libdir/profiles" -maxdepth 1 -name '*.env' | wc -l)

copy "$src/common.sh" "$libdir/common.sh" 0644

new=()
for hook in "$src"/[0-9][0-9]-cordee-*.sh; do
    name=${hook##*/}
    [[ $name =~ $hook_re ]] || die "unexpected hook name $name"
    copy "$hook" "$hooks_d/$name" 0755
    new+=("$name")
done
# Hooks of an earlier install that this version no longer ships.
for name in $(installed_hooks); do
    if [[ " ${new[*]} " != *" $name "* ]]; then rm -f -- "$hooks_d/$name"; fi
done
copy <(printf '%s\n' "${new[@]}") "$manifest" 0644

echo "installed ${#new[@]} cordee hook(s) (${new[*]}), common.sh and $nprofiles fabric profile(s) into $hooks_d"
