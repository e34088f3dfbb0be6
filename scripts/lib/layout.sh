# shellcheck shell=bash
# Install layouts: where each way of shipping codejail puts its files, and the
# templates (units, AppArmor profiles) that name those places. Sourced, not run:
#
#   source "$repo/scripts/lib/layout.sh"
#   layout_load NAME || exit 1     # sets BINDIR LIBEXECDIR SANDENV DOCDIR UNITDIR
#                                  # SYSUSERSDIR TMPFILESDIR APPARMORDIR CONFDIR STATEDIR
#   layout_render_all OUTDIR       # every file of LAYOUT_TEMPLATES, rendered, below
#                                  # OUTDIR at its repository path
#
# A layout is scripts/lib/layouts/NAME: KEY=absolute path lines (read, never sourced).
# A template names a place as @KEY@ (@BINDIR@/codejail-broker); rendering replaces each
# with the loaded layout's value and fails, naming the file and the placeholder, when
# one is left (an unknown key).

layout_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# The keys a layout must set (SANDENV is derived: LIBEXECDIR/sandbox).
LAYOUT_KEYS=(BINDIR LIBEXECDIR DOCDIR UNITDIR SYSUSERSDIR TMPFILESDIR APPARMORDIR CONFDIR STATEDIR)

# The files installed from the repository, all rendered (those without a placeholder
# come out as they are), relative to the repository.
LAYOUT_TEMPLATES=(
    systemd/codejail-broker.service
    systemd/codejail-broker.socket
    systemd/codejail-http.service
    systemd/sysusers.d/codejail.conf
    systemd/tmpfiles.d/codejail.conf
    apparmor/codejail-broker
    apparmor/codejail-sandbox
    apparmor/abstractions/codejail-stage
    apparmor/optional/codejail-userns
)

layout_names() {
    local f
    for f in "$layout_repo"/scripts/lib/layouts/*; do
        printf '%s\n' "${f##*/}"
    done
}

layout_load() {
    local name=$1 file line key value k
    file=$layout_repo/scripts/lib/layouts/$name
    if [ ! -f "$file" ]; then
        printf 'layout: no layout %s (known: %s)\n' "$name" "$(layout_names | tr '\n' ' ')" >&2
        return 1
    fi
    for k in "${LAYOUT_KEYS[@]}"; do unset "$k"; done
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in '' | '#'*) continue ;; esac
        key=${line%%=*}
        value=${line#*=}
        case " ${LAYOUT_KEYS[*]} " in
            *" $key "*) ;;
            *) printf 'layout: %s: unknown key in: %s\n' "$file" "$line" >&2; return 1 ;;
        esac
        case $value in
            /*) ;;
            *) printf 'layout: %s: %s is not an absolute path\n' "$file" "$key" >&2; return 1 ;;
        esac
        printf -v "$key" '%s' "${value%/}"
    done <"$file"
    for k in "${LAYOUT_KEYS[@]}"; do
        if [ -z "${!k:-}" ]; then
            printf 'layout: %s: %s is not set\n' "$file" "$k" >&2
            return 1
        fi
    done
    # shellcheck disable=SC2034  # the callers'
    SANDENV=$LIBEXECDIR/sandbox
    LAYOUT=$name
}

# layout_render SRC DST: SRC with the loaded layout's values.
layout_render() {
    local src=$1 dst=$2 script=() k left
    for k in "${LAYOUT_KEYS[@]}" SANDENV; do
        script+=(-e "s|@$k@|${!k}|g")
    done
    mkdir -p "$(dirname "$dst")"
    sed "${script[@]}" "$src" >"$dst"
    left=$(grep -noE '@[A-Z_]+@' "$dst" | head -n 3 | tr '\n' ' ')
    if [ -n "$left" ]; then
        printf 'layout: %s: placeholder left after rendering for layout %s: %s\n' \
            "$src" "$LAYOUT" "$left" >&2
        return 1
    fi
}

layout_render_all() {
    local out=$1 t
    for t in "${LAYOUT_TEMPLATES[@]}"; do
        layout_render "$layout_repo/$t" "$out/$t" || return 1
    done
}
