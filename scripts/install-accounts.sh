#!/usr/bin/env bash
# The accounts codejail's installer creates and its --purge removes: the broker's user
# (with its group of the same name) and the callers' group, with the user a member of
# it. Only what the installer itself created is ever removed: a host may already have
# a `sandbox` user (upstream CodeJail's instructions create exactly that one) or a
# `codejail` group, and deleting those would take another system's account and every
# member's group away.
#
#   scripts/install-accounts.sh create STATEDIR USER GROUP SYSUSERS_CONF
#       Create what is missing (systemd-sysusers with SYSUSERS_CONF, else
#       useradd/groupadd/usermod), and append to STATEDIR/installed-accounts one line
#       per account or membership this call created ("user NAME", "group NAME",
#       "member USER GROUP"). Lines already there stay: a reinstall over an earlier
#       install finds the accounts existing, and they are still the installer's.
#   scripts/install-accounts.sh remove STATEDIR USER GROUP
#       Remove exactly what STATEDIR/installed-accounts records, say what it keeps and
#       why, then remove the record. Without a record (nothing created, or an install
#       older than the record) every account is kept.
#
# Called by scripts/install.sh (live installs only, as root); tested in a private
# mount namespace with a copy of /etc (tests/tests/ops.rs).
set -euo pipefail

note() { printf '    %s\n' "$*" >&2; }
die() { printf 'install-accounts.sh: error: %s\n' "$*" >&2; exit 1; }

has_user() { getent passwd "$1" >/dev/null; }
has_group() { getent group "$1" >/dev/null; }
is_member() { id -nG "$1" 2>/dev/null | tr ' ' '\n' | grep -qx "$2"; }

create() {
    local statedir=$1 user=$2 group=$3 conf=$4
    local had_user=false had_user_group=false had_group=false was_member=false
    has_user "$user" && had_user=true
    has_group "$user" && had_user_group=true
    has_group "$group" && had_group=true
    is_member "$user" "$group" && was_member=true

    if command -v systemd-sysusers >/dev/null; then
        # Works without systemd as PID 1: it only edits /etc/passwd and friends.
        systemd-sysusers "$conf"
    else
        $had_group || groupadd --system "$group"
        $had_user || useradd --system --user-group --home-dir "$statedir" --no-create-home \
            --shell /usr/sbin/nologin --comment "codejail broker" "$user"
        usermod -a -G "$group" "$user"
    fi
    has_user "$user" || die "user $user was not created"
    has_group "$group" || die "group $group was not created"

    local record=$statedir/installed-accounts made=()
    $had_user || made+=("user $user")
    $had_user_group || ! has_group "$user" || made+=("group $user")
    $had_group || made+=("group $group")
    $was_member || made+=("member $user $group")
    mkdir -p "$statedir"
    touch "$record"
    chmod 0644 "$record"
    local line
    for line in "${made[@]+"${made[@]}"}"; do
        grep -qxF "$line" "$record" || printf '%s\n' "$line" >>"$record"
        note "created $line (recorded in $record)"
    done
    $had_user && note "user $user existed already: kept as it is, never removed by --purge"
    $had_group && note "group $group existed already: kept as it is, never removed by --purge"
    return 0
}

remove() {
    local statedir=$1 user=$2 group=$3
    local record=$statedir/installed-accounts
    if [ ! -f "$record" ]; then
        note "kept user $user and groups $user, $group: no record of the installer creating them ($record)"
        return 0
    fi
    recorded() { grep -qxF "$1" "$record"; }
    # The membership first (while both exist), then the user, then the groups.
    if recorded "member $user $group" && ! recorded "user $user" && ! recorded "group $group" \
        && has_user "$user" && has_group "$group"; then
        gpasswd -d "$user" "$group" >/dev/null
        note "removed $user from group $group (the installer added it)"
    fi
    if recorded "user $user"; then
        if has_user "$user"; then
            userdel "$user"
            note "removed user $user"
        fi
    else
        has_user "$user" && note "kept user $user: it existed before codejail was installed"
    fi
    local g
    for g in "$user" "$group"; do
        if recorded "group $g"; then
            if has_group "$g"; then
                groupdel "$g"
                note "removed group $g"
            fi
        else
            has_group "$g" && note "kept group $g: it existed before codejail was installed"
        fi
    done
    rm -f "$record"
}

[ $# -ge 1 ] || die "usage: $0 create STATEDIR USER GROUP SYSUSERS_CONF | remove STATEDIR USER GROUP"
cmd=$1
shift
case $cmd in
    create) [ $# -eq 4 ] || die "create STATEDIR USER GROUP SYSUSERS_CONF"; create "$@" ;;
    remove) [ $# -eq 3 ] || die "remove STATEDIR USER GROUP"; remove "$@" ;;
    *) die "unknown command $cmd (create or remove)" ;;
esac
