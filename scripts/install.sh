#!/usr/bin/env bash
# Install codejail as a system service (docs/operating.md), or remove it.
#
#   sudo scripts/install.sh                  # build, install, enable the socket
#   sudo scripts/install.sh --uninstall      # the reverse (config and accounts kept)
#   sudo scripts/install.sh --uninstall --purge   # also the config, state and accounts
#   scripts/install.sh --dry-run             # print every step, change nothing
#   DESTDIR=/tmp/stage scripts/install.sh    # install into a staging root
#
# Options:
#   --dry-run        print what would be done, do nothing
#   --destdir DIR    install below DIR (same as DESTDIR=DIR): files only; accounts,
#                    profile loading, cgroups and systemctl are skipped
#   --bin-dir DIR    take codejail-broker, codejail-jail, codejail-client and
#                    codejail-http from DIR
#                    instead of building them (cargo build --release)
#   --layout NAME    install with the paths of scripts/lib/layouts/NAME (default
#                    local: /usr/local; debian: the Debian package's, for staging it:
#                    only with --destdir)
#   --skip-venv      do not build the sandbox virtualenv (it is managed elsewhere)
#   --lean-sandbox   build the sandbox virtualenv with the lean profile
#                    (requirements/sandbox-lean.txt: numpy, six, networkx, matplotlib)
#                    instead of the edx-platform one (requirements/sandbox-edx-platform.txt:
#                    what edx-platform's problems import; docs/sandbox-profiles.md)
#   --uninstall      remove what an install put in place
#   --purge          with --uninstall: also /etc/codejail, /var/lib/codejail, the
#                    AppArmor local overrides, and the sandbox user and codejail group
#                    if this installer created them (recorded at install time in
#                    /var/lib/codejail/installed-accounts; accounts that existed before
#                    are kept, and it says so)
#
# What an install does, in order (each step says so as it runs):
#   1. build the binaries (unless --bin-dir);
#   2. create the `sandbox` user and the callers' group `codejail` (systemd-sysusers,
#      or useradd/groupadd where it is missing);
#   3. build the sandbox interpreter: a --copies virtualenv of the edx-platform
#      profile, requirements/sandbox-edx-platform.txt (--lean-sandbox: the lean one,
#      requirements/sandbox-lean.txt), in $SANDENV (scripts/setup-sandbox-venv.sh);
#   4. install the binaries, the systemd units (the broker's and codejail-http's),
#      sysusers.d and tmpfiles.d files, the AppArmor profiles, the README and docs/;
#   5. write a commented /etc/codejail/broker.toml and /etc/codejail/http.toml (an
#      existing one is kept);
#   6. load the AppArmor profiles, only where the kernel has AppArmor;
#   7. without systemd as PID 1 on a cgroup v1 host: make the v1 cgroup parents;
#   8. check the config (codejail-broker check-config: prints the confinement);
#   9. enable and start the socket (systemctl enable --now codejail-broker.socket),
#      only where PID 1 is systemd; elsewhere print how to start the broker.
#      codejail-http.service is installed, not enabled (docs/http.md).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Where things go (below $DESTDIR): the install layout, scripts/lib/layouts/local
# unless --layout says another (the units and AppArmor profiles are rendered for it).
# shellcheck source=scripts/lib/layout.sh
source "$repo/scripts/lib/layout.sh"
BROKER_USER=sandbox
CALLERS_GROUP=codejail
# Per-run outside uids/gids: 0x70000000.., a range systemd leaves unassigned
# (above container ranges, below 2^31), far from /etc/subuid ranges.
RUN_IDS_FIRST=1879048192
RUN_IDS_COUNT=64

dry=false
uninstall=false
purge=false
bin_dir=
skip_venv=false
sandbox_profile=edx-platform
layout=local
destdir=${DESTDIR:-}

log() { printf '==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry=true ;;
        --uninstall) uninstall=true ;;
        --purge) purge=true ;;
        --skip-venv) skip_venv=true ;;
        --lean-sandbox) sandbox_profile=lean ;;
        --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a directory"; bin_dir=$2; shift ;;
        --bin-dir=*) bin_dir=${1#*=} ;;
        --destdir) [ $# -ge 2 ] || die "--destdir needs a directory"; destdir=$2; shift ;;
        --destdir=*) destdir=${1#*=} ;;
        --layout) [ $# -ge 2 ] || die "--layout needs a name"; layout=$2; shift ;;
        --layout=*) layout=${1#*=} ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
$purge && ! $uninstall && die "--purge goes with --uninstall"
layout_load "$layout" || die "bad --layout $layout"
# Another layout's files belong to a package manager: only staged, never put in place.
[ "$layout" = local ] || [ -n "${destdir}" ] ||
    die "--layout $layout stages files for a package: give --destdir"
if [ -n "$destdir" ]; then
    case $destdir in /*) ;; *) destdir=$PWD/$destdir ;; esac
    destdir=${destdir%/}
fi

# Acting on the running system (not a staging root, not a dry run).
live=true
{ [ -n "$destdir" ] || $dry; } && live=false
if $live && [ "$(id -u)" != 0 ]; then
    die "run as root (or use --dry-run, or DESTDIR=... to stage the files)"
fi

systemd_pid1() { [ -d /run/systemd/system ]; }
# apparmor_parser lives in /usr/sbin, which a non-login PATH may lack.
PATH=$PATH:/usr/sbin:/sbin
kernel_has_apparmor() {
    [ -d /sys/kernel/security/apparmor ] &&
        [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ]
}

# Run a command, or print it in a dry run.
run() {
    if $dry; then
        printf '    + %s\n' "$*" >&2
    else
        "$@"
    fi
}

# install_file MODE SRC DEST: DEST is below $destdir.
install_file() {
    local mode=$1 src=$2 dst=$destdir$3
    note "$3"
    run install -D -m "$mode" "$src" "$dst"
}

# write_file MODE DEST < contents: DEST is below $destdir.
write_file() {
    local mode=$1 dst=$destdir$2 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    note "$2"
    run install -D -m "$mode" "$tmp" "$dst"
    rm -f "$tmp"
}

remove() {
    local p
    for p in "$@"; do
        if [ -e "$destdir$p" ] || [ -L "$destdir$p" ]; then
            note "remove $p"
            run rm -rf -- "$destdir$p"
        fi
    done
}

# The callers' group id, when the group exists here (it is written into the config).
callers_gid() {
    getent group "$CALLERS_GROUP" 2>/dev/null | cut -d: -f3
}

# The default broker.toml. Keys: broker/src/config/; every key and limit: docs/contracts.md §4, §6.
default_config() {
    local gid=$1 gids socket_gid
    if [ -n "$gid" ]; then
        gids="allowed_gids = [$gid]   # group $CALLERS_GROUP"
        socket_gid="gid = $gid   # group $CALLERS_GROUP"
    else
        gids="allowed_gids = []   # put the gid of group $CALLERS_GROUP here: getent group $CALLERS_GROUP"
        socket_gid="# gid = ...   # the gid of group $CALLERS_GROUP"
    fi
    cat <<EOF
# codejail broker configuration (written by scripts/install.sh; kept on reinstall).
# Check it with:  codejail-broker check-config /etc/codejail/broker.toml
# (exit 0: valid and every required layer holds here; 1: a required layer does not,
# and why; 2: invalid, with the key). Unknown keys are errors. Restart after a change:
#   systemctl restart codejail-broker.service

# Who may submit runs. A peer is allowed when its uid is in allowed_uids, or its
# primary or any supplementary group is in allowed_gids. The socket is group
# $CALLERS_GROUP, mode 0660: add an app's user to the group,
#   usermod -aG $CALLERS_GROUP www-data
# and restart the app.
allowed_uids = []
$gids

# Parallel runs, and requests that may wait for a slot (more: "busy").
max_running = 4
max_queue = 16
# Largest request accepted, bytes (code + files + stdin).
max_frame = 33554432
# Open connections at most: at the cap the connection idle the longest is closed to
# make room (clients reconnect); all busy, a new one is refused with the reason.
# Unset, the default 1024 is lowered at start-up (with a warning, and "fitted" in
# codejail-client status) when max_connections + max_running x 12 + 64 do not fit
# the open-file limit (the unit's LimitNOFILE fits them; a container runtime's usual
# 1024 does not); a value set here that does not fit refuses start-up instead.
# max_connections = 1024
# A connection idle this long between requests is closed.
idle_timeout_secs = 60
# Bytes of requests held in memory at once, all connections together; a request
# that would exceed it is answered "busy" before its body is read.
request_budget_bytes = 536870912
# On stop, running runs get this many seconds before they are killed.
shutdown_grace_secs = 5

# The jail stage binary (one exec per run).
jail_stage = "$LIBEXECDIR/codejail-jail"

# Each run's own outside uid/gid, one per running run (count >= max_running); the
# range must hold no account and no /etc/subuid range (checked at start-up).
run_ids = { first = $RUN_IDS_FIRST, count = $RUN_IDS_COUNT }

# AppArmor: stack this profile (apparmor/codejail-sandbox) on every program, where
# the kernel has AppArmor; elsewhere the layer is reported unavailable. Set
# apparmor_required = true to refuse to start without it.
apparmor_profile = "codejail-sandbox"
apparmor_required = false

# Landlock: the oldest ABI the broker serves with (1: any Landlock, e.g. Ubuntu
# 22.04's 5.15 or Debian 12's 6.1; each newer ABI adds rules the run's namespaces and
# seccomp already cover; docs/operating.md, "Kernels: Landlock ABIs and AppArmor"). 0: not
# required.
# landlock_min_abi = 1

# The listening socket. Under systemd, codejail-broker.socket creates it and these
# are not used; a broker started by hand binds it with this mode and group.
[socket]
path = "/run/codejail/broker.sock"
mode = "0660"
$socket_gid

# Commands by name, as upstream's configure(): python first.
[commands.python]
bin = "$SANDENV/bin/python"
# args = ["-E", "-B"]                            # the default
# env = { OPENBLAS_NUM_THREADS = "1" }           # default: thread caps, LC_ALL, MPLCONFIGDIR = "\$TMPDIR"
# allow_exec = false                             # true: the program may exec others (default: EACCES)
# ro_paths = ["/opt/course-packages"]            # more read-only directories

# Warm jails kept ready for python: a run then skips the interpreter's start (and the
# preimports). Each holds an id of run_ids (count >= max_running + size), three
# processes and an interpreter's memory (8 MiB idle, 25 MiB with numpy) while it waits.
# [pool.python]
# size = 2
# preimport = ["numpy"]
# max_age_secs = 600
# fork_server = true                             # fork the jails from one started interpreter
# zygote_max_forks = 1000                        # ...which is replaced after this many forks
# zygote_max_age_secs = 600                      # ...or this long

# Limits: upstream's names and units (CPU, REALTIME seconds; VMEM, FSIZE bytes;
# NPROC count) plus OUTPUT (bytes of stdout+stderr kept), TMP (bytes of the run's
# temporary space) and MEMORY (bytes, cgroup). Effective limits: these defaults, then
# the named context a request gives (an unknown context means no overrides), then the
# request's own values; a value above its ceiling is refused (0 = unlimited counts as
# above).
[limits.defaults]
CPU = 1
REALTIME = 1
NPROC = 15
# VMEM = 0
# FSIZE = 0
# MEMORY = 536870912

[limits.ceilings]
CPU = 10
REALTIME = 30
NPROC = 64

# Per-course (or per-app) overrides, selected by the request's limits context:
# [limits.contexts."course-v1:edX+Demo+2024"]
# CPU = 5
# REALTIME = 10

# Per-run cgroups: memory (the MEMORY limit, tmpfs pages) and pids. Under systemd the
# service's cgroup is delegated (Delegate=yes) and "auto" finds it; on a cgroup v1
# host, v1_memory and v1_pids must exist and belong to the broker's user.
[cgroup]
mode = "auto"
required = true
# v1_memory = "/sys/fs/cgroup/memory/codejail"
# v1_pids = "/sys/fs/cgroup/pids/codejail"
EOF
}

# The default http.toml. Keys: http/src/config.rs; docs/http.md, "Configuration".
default_http_config() {
    cat <<EOF
# codejail-http configuration (written by scripts/install.sh; kept on reinstall).
# Unknown keys are errors. Restart after a change: systemctl restart codejail-http
# The commented values are the defaults.

# The broker's socket (the service's user is in group $CALLERS_GROUP to reach it).
broker_socket = "/run/codejail/broker.sock"

# Where edx-platform's CODE_JAIL_REST_SERVICE_HOST points. There is NO authentication:
# anyone who reaches this port can run code in the jail. A non-loopback address is
# refused unless allow_non_loopback = true; then also restrict who can reach it
# (codejail-http.service's IPAddressAllow=, a firewall, a network policy).
# listen = "127.0.0.1:8550"
# allow_non_loopback = false
# false: every code-exec answers 500 "Codejail service not enabled" (upstream's
# CODEJAIL_ENABLED switch).
# enabled = true

# A request's deadline is the broker's REALTIME for its limit override context (read
# from the broker's status: broker.toml's [limits] is the one place to set it) plus
# deadline_slack_secs, at most max_deadline_secs (no default; edx-platform gives up
# after 3.5 s).
# deadline_slack_secs = 1.0

# A request the broker answers busy is retried this long, then answered 503 with
# Retry-After: retry_after_secs.
# queue_wait_secs = 0.5
# retry_after_secs = 1
# Requests handled at once (more: 503 at once); the largest body, bytes.
# max_in_flight = 64
# max_body_bytes = 10485760
# body_timeout_secs = 10.0
# A connection that has not sent a request's header block this long after it opened
# (or after its previous answer: also the keep-alive idle time) is closed.
# header_read_timeout_secs = 5.0
# Connections open at once (more wait in the listen backlog). Each may need two open
# files: it must fit the unit's LimitNOFILE (16384) as 2 * max_connections + 64, or
# the front refuses to start, naming both numbers.
# max_connections = 4096
# How often the broker is polled for /health/ (at most 30: below the broker's
# idle_timeout_secs).
# health_interval_secs = 1.0
EOF
}

# Whether this apparmor_parser accepts the userns rule (AppArmor >= 4).
parser_knows_userns() {
    command -v apparmor_parser >/dev/null || return 1
    printf 'profile codejail-userns-probe { userns, }\n' |
        apparmor_parser -Q -K >/dev/null 2>&1
}

# ---------------------------------------------------------------------------------
if $uninstall; then
    log "uninstalling codejail${destdir:+ from $destdir}"
    if $live && systemd_pid1; then
        run systemctl disable --now codejail-http.service codejail-broker.socket codejail-broker.service || true
    fi
    if $live && kernel_has_apparmor && command -v apparmor_parser >/dev/null; then
        for p in codejail-broker codejail-sandbox; do
            if [ -f "$APPARMORDIR/$p" ]; then
                run apparmor_parser -R "$APPARMORDIR/$p" || true
            fi
        done
    fi
    remove "$BINDIR/codejail-broker" "$BINDIR/codejail-client" "$BINDIR/codejail-http" \
        "$LIBEXECDIR" "$DOCDIR" \
        "$UNITDIR/codejail-broker.socket" "$UNITDIR/codejail-broker.service" \
        "$UNITDIR/codejail-http.service" \
        "$SYSUSERSDIR/codejail.conf" "$TMPFILESDIR/codejail.conf" \
        "$APPARMORDIR/codejail-broker" "$APPARMORDIR/codejail-sandbox" \
        "$APPARMORDIR/abstractions/codejail-stage" "$APPARMORDIR/abstractions/codejail-userns"
    if $live && ! systemd_pid1; then
        for d in /sys/fs/cgroup/memory/codejail /sys/fs/cgroup/pids/codejail; do
            [ -d "$d" ] && { note "rmdir $d"; run rmdir "$d" || true; }
        done
    fi
    if $live && systemd_pid1; then
        run systemctl daemon-reload
        # A unit that failed (e.g. a broker stopped by its start limit) stays listed
        # by `systemctl --failed` after its file is gone, until reset.
        run systemctl reset-failed codejail-broker.service codejail-broker.socket \
            codejail-http.service 2>/dev/null || true
    fi
    if $purge; then
        # Accounts first: their record is in $STATEDIR. Only those the installer
        # created go (a `sandbox` user may belong to another system).
        if $live; then
            run "$repo/scripts/install-accounts.sh" remove "$STATEDIR" "$BROKER_USER" "$CALLERS_GROUP"
        else
            note "accounts: only those recorded in $STATEDIR/installed-accounts would be removed"
        fi
        remove "$CONFDIR" "$STATEDIR" /run/codejail \
            "$APPARMORDIR/local/codejail-broker" "$APPARMORDIR/local/codejail-jail" \
            "$APPARMORDIR/local/codejail-sandbox"
    else
        note "kept: $CONFDIR, $STATEDIR, $APPARMORDIR/local/codejail-*, user $BROKER_USER, group $CALLERS_GROUP (--purge removes them, the accounts only if the installer created them)"
    fi
    log "uninstalled"
    exit 0
fi

# ---------------------------------------------------------------------------------
log "installing codejail${destdir:+ into $destdir}"
$dry && note "dry run: nothing is changed"

# 1. Binaries.
if [ -z "$bin_dir" ]; then
    command -v cargo >/dev/null || [ -x "${HOME:-/root}/.cargo/bin/cargo" ] ||
        die "cargo not found: install Rust, or pass --bin-dir with built binaries"
    command -v cargo >/dev/null || PATH=${HOME:-/root}/.cargo/bin:$PATH
    log "1. building the binaries (cargo build --release --bins --lib)"
    run cargo build --release --bins --lib --manifest-path "$repo/Cargo.toml"
    bin_dir=${CARGO_TARGET_DIR:-$repo/target}/release
else
    log "1. binaries from $bin_dir"
fi
for b in codejail-broker codejail-jail codejail-client codejail-http; do
    $dry || [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing"
done
# The fork server's native half (docs/architecture.md, "Fork server"), loaded by the
# sandbox interpreter from beside codejail-jail.
$dry || [ -f "$bin_dir/libcodejail_zygote.so" ] || die "$bin_dir/libcodejail_zygote.so is missing (cargo build --lib)"

# 2. The broker's user and the callers' group.
if $live; then
    log "2. user $BROKER_USER and group $CALLERS_GROUP"
    # What it creates is recorded, so that --purge removes only that.
    run "$repo/scripts/install-accounts.sh" create "$STATEDIR" "$BROKER_USER" "$CALLERS_GROUP" \
        "$repo/systemd/sysusers.d/codejail.conf"
else
    log "2. accounts: skipped (staging root or dry run); would create user $BROKER_USER, group $CALLERS_GROUP"
fi

# 3. The sandbox interpreter.
if $skip_venv; then
    log "3. sandbox virtualenv: skipped (--skip-venv)"
else
    log "3. sandbox virtualenv $SANDENV (--copies, profile $sandbox_profile: requirements/sandbox-$sandbox_profile.txt)"
    profile_flag=()
    [ "$sandbox_profile" = lean ] && profile_flag=(--lean)
    run "$repo/scripts/setup-sandbox-venv.sh" "${profile_flag[@]}" "$destdir$SANDENV" >/dev/null
    # The build lock setup-sandbox-venv.sh leaves beside the environment.
    run rm -f "$destdir$SANDENV.lock"
fi

# 4. Files: the units and AppArmor profiles rendered for the layout.
log "4. files (layout $layout)"
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
layout_render_all "$rendered" || die "rendering the units and profiles for layout $layout failed"
install_file 0755 "$bin_dir/codejail-broker" "$BINDIR/codejail-broker"
install_file 0755 "$bin_dir/codejail-client" "$BINDIR/codejail-client"
install_file 0755 "$bin_dir/codejail-http" "$BINDIR/codejail-http"
install_file 0755 "$bin_dir/codejail-jail" "$LIBEXECDIR/codejail-jail"
install_file 0644 "$bin_dir/libcodejail_zygote.so" "$LIBEXECDIR/libcodejail_zygote.so"
install_file 0644 "$rendered/systemd/codejail-broker.socket" "$UNITDIR/codejail-broker.socket"
install_file 0644 "$rendered/systemd/codejail-broker.service" "$UNITDIR/codejail-broker.service"
install_file 0644 "$rendered/systemd/codejail-http.service" "$UNITDIR/codejail-http.service"
install_file 0644 "$rendered/systemd/sysusers.d/codejail.conf" "$SYSUSERSDIR/codejail.conf"
install_file 0644 "$rendered/systemd/tmpfiles.d/codejail.conf" "$TMPFILESDIR/codejail.conf"
install_file 0644 "$rendered/apparmor/codejail-broker" "$APPARMORDIR/codejail-broker"
install_file 0644 "$rendered/apparmor/codejail-sandbox" "$APPARMORDIR/codejail-sandbox"
install_file 0644 "$rendered/apparmor/abstractions/codejail-stage" "$APPARMORDIR/abstractions/codejail-stage"
if parser_knows_userns; then
    install_file 0644 "$rendered/apparmor/optional/codejail-userns" "$APPARMORDIR/abstractions/codejail-userns"
else
    note "(abstractions/codejail-userns not installed: this apparmor_parser has no userns rule)"
fi
for p in codejail-broker codejail-jail codejail-sandbox; do
    if [ ! -e "$destdir$APPARMORDIR/local/$p" ]; then
        printf '# Site-specific additions to the %s AppArmor profile.\n' "$p" |
            write_file 0644 "$APPARMORDIR/local/$p"
    fi
done
install_file 0644 "$repo/README.md" "$DOCDIR/README.md"
# The README links to docs/: the same relative paths work in the installed copy.
for doc in "$repo"/docs/*.md; do
    install_file 0644 "$doc" "$DOCDIR/docs/${doc##*/}"
done
if $live; then
    run systemd-tmpfiles --create "$TMPFILESDIR/codejail.conf" ||
        note "systemd-tmpfiles failed; create $STATEDIR and /run/codejail as tmpfiles.d/codejail.conf says"
fi

# 5. The config.
log "5. config $CONFDIR/broker.toml"
if [ -e "$destdir$CONFDIR/broker.toml" ]; then
    note "$CONFDIR/broker.toml exists: kept (the default is in --dry-run's output)"
else
    default_config "$(callers_gid)" | write_file 0644 "$CONFDIR/broker.toml"
fi
$dry && default_config "$(callers_gid)" | sed 's/^/    | /' >&2
log "5. config $CONFDIR/http.toml"
if [ -e "$destdir$CONFDIR/http.toml" ]; then
    note "$CONFDIR/http.toml exists: kept"
else
    default_http_config | write_file 0644 "$CONFDIR/http.toml"
fi

# 6. AppArmor.
if $live && kernel_has_apparmor; then
    log "6. loading the AppArmor profiles"
    command -v apparmor_parser >/dev/null ||
        die "the kernel has AppArmor but apparmor_parser is missing: apt-get install apparmor"
    run apparmor_parser -r -W "$APPARMORDIR/codejail-sandbox" "$APPARMORDIR/codejail-broker"
elif $live; then
    log "6. AppArmor profiles: not loaded (the kernel has no AppArmor)"
else
    log "6. AppArmor profiles: not loaded (staging root or dry run)"
fi

# 7. cgroup v1 parents, for a broker started by hand on a v1 host.
if $live && ! systemd_pid1 && [ -d /sys/fs/cgroup/memory ] && [ -d /sys/fs/cgroup/pids ]; then
    log "7. cgroup v1 parents for the runs (lost at reboot: rerun the installer or recreate them)"
    for d in /sys/fs/cgroup/memory/codejail /sys/fs/cgroup/pids/codejail; do
        run mkdir -p "$d"
        run chown -R "$BROKER_USER:$BROKER_USER" "$d"
    done
else
    log "7. cgroups: nothing to prepare (under systemd: Delegate=yes)"
fi

# 8. Check the config.
if $live; then
    log "8. codejail-broker check-config (as $BROKER_USER, with the unit's capabilities)"
    set +e
    if systemd_pid1; then
        # In a transient unit like the service: its own delegated cgroup.
        systemd-run --quiet --wait --pipe --collect \
            -p User="$BROKER_USER" -p Group="$BROKER_USER" -p Delegate=yes \
            -p AmbientCapabilities="CAP_SETUID CAP_SETGID" \
            -p CapabilityBoundingSet="CAP_SETUID CAP_SETGID" -p NoNewPrivileges=yes \
            "$BINDIR/codejail-broker" check-config "$CONFDIR/broker.toml"
    else
        setpriv --reuid="$BROKER_USER" --regid="$BROKER_USER" --init-groups \
            --inh-caps=+setuid,+setgid --ambient-caps=+setuid,+setgid \
            --bounding-set=-all,+setuid,+setgid --no-new-privs \
            "$BINDIR/codejail-broker" check-config "$CONFDIR/broker.toml"
    fi
    rc=$?
    set -e
    case $rc in
        0) ;;
        1) note "a required layer does not hold on this host (see above); the broker will refuse to start until it does" ;;
        *) die "check-config rejected $CONFDIR/broker.toml (exit $rc)" ;;
    esac
else
    log "8. check-config: skipped (staging root or dry run)"
fi

# 9. Start.
if $live && systemd_pid1; then
    log "9. enabling codejail-broker.socket"
    run systemctl daemon-reload
    run systemctl enable --now codejail-broker.socket
    note "callers: usermod -aG $CALLERS_GROUP <app user>; then: codejail-client status"
    note "the HTTP front (codejail-service's API on 127.0.0.1:8550): systemctl enable --now codejail-http.service"
else
    if $live; then
        log "9. socket not enabled (PID 1 is not systemd)"
    else
        log "9. socket not enabled (staging root or dry run)"
    fi
    note "under systemd: systemctl daemon-reload && systemctl enable --now codejail-broker.socket"
    note "without systemd, start the broker as the unit would:"
    note "  setpriv --reuid=$BROKER_USER --regid=$BROKER_USER --init-groups --inh-caps=+setuid,+setgid --ambient-caps=+setuid,+setgid --bounding-set=-all,+setuid,+setgid --no-new-privs $BINDIR/codejail-broker --config $CONFDIR/broker.toml"
fi
log "installed"
