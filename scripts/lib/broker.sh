# shellcheck shell=bash
# Start a codejail broker for a script (benchmarks, test runners, the demo), as the
# invoking user or, when that is root, as another uid. Sourced, not run:
#
#   source "$repo/scripts/lib/broker.sh"
#   start_broker [--as UID [--setid-caps]] LOG SOCKET BROKER [ARG...] || die "..."
#   pid=$started_broker_pid
#
# start_broker runs `BROKER --socket SOCKET ARG...` in the background, in SOCKET's
# directory (also its TMPDIR), without XDG_RUNTIME_DIR (root's is no other uid's),
# stdout and stderr to LOG. It sets started_broker_pid and waits up to
# $BROKER_START_SECS (default 20) seconds for SOCKET to appear. If the broker exits
# first or never listens, it prints LOG on stderr and returns 1 (the broker stopped).
#
# --as UID, when run by root: the broker runs as UID:UID with no supplementary groups
# (setpriv; a broker never runs programs as root), and SOCKET's directory is chowned to
# UID. If UID cannot execute BROKER where it is (a checkout under /root, mode 0700),
# BROKER and the codejail-jail (and libcodejail_zygote.so) beside it are first copied
# into a root-owned "bin"
# directory next to SOCKET's directory and run from there. Without root, --as is
# ignored: the broker runs as the invoking user.
#
# --setid-caps (with --as, as root): the broker keeps CAP_SETUID and CAP_SETGID
# (inheritable, ambient, bounding) and runs with no_new_privs, as the systemd unit
# starts it: what per-run ids (--run-ids) need.
#
# The caller stops the broker (kill -TERM "$started_broker_pid"; wait) and removes the
# directories; SOCKET's directory must exist and be reachable by UID.
#
#   print_pool_counts CLIENT SOCKET PYTHON
#
# prints one line per warm pool of the broker at SOCKET (CLIENT's `status --json`, read
# with PYTHON): the runs it served warm (forked from a zygote or not), cold, and forked
# on demand. Prints nothing without a pool; never fails.

start_broker() {
    local uid='' setid_caps=()
    if [[ ${1:-} == --as ]]; then
        uid=${2:?start_broker: --as needs a uid}
        shift 2
    fi
    if [[ ${1:-} == --setid-caps ]]; then
        local caps=-all,+setuid,+setgid
        setid_caps=("--inh-caps=$caps" "--ambient-caps=$caps" "--bounding-set=$caps" --no-new-privs)
        shift
    fi
    local log=${1:?start_broker: LOG} socket=${2:?start_broker: SOCKET}
    local broker=${3:?start_broker: BROKER}
    shift 3
    [[ $broker == /* ]] || broker=$PWD/$broker # it runs from SOCKET's directory
    local dir as=()
    dir=$(dirname "$socket")
    if [[ -n $uid && $(id -u) == 0 ]]; then
        as=(setpriv "--reuid=$uid" "--regid=$uid" --clear-groups "${setid_caps[@]+"${setid_caps[@]}"}")
        chown "$uid:$uid" "$dir"
        if ! "${as[@]}" test -x "$broker"; then
            local staged
            staged=$(dirname "$dir")/bin
            install -d -m 755 "$staged"
            install -m 755 "$broker" "$(dirname "$broker")/codejail-jail" "$staged/"
            # The fork server's library, where it was built (--fork-server needs it).
            if [[ -f $(dirname "$broker")/libcodejail_zygote.so ]]; then
                install -m 644 "$(dirname "$broker")/libcodejail_zygote.so" "$staged/"
            fi
            broker=$staged/$(basename "$broker")
        fi
    fi
    (cd "$dir" && exec env -u XDG_RUNTIME_DIR TMPDIR="$dir" \
        "${as[@]+"${as[@]}"}" "$broker" --socket "$socket" "$@" >"$log" 2>&1) &
    started_broker_pid=$!
    local tries=$((${BROKER_START_SECS:-20} * 10))
    for ((; tries > 0; tries--)); do
        [[ -S $socket ]] && return 0
        kill -0 "$started_broker_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -S $socket ]]; then return 0; fi
    kill -TERM "$started_broker_pid" 2>/dev/null || true
    wait "$started_broker_pid" 2>/dev/null || true
    echo "--- broker log ($log) ---" >&2
    cat "$log" >&2 || true
    if ((tries > 0)); then
        echo "the broker exited before it listened on $socket" >&2
    else
        echo "the broker did not listen on $socket within ${BROKER_START_SECS:-20} s" >&2
    fi
    return 1
}

print_pool_counts() {
    "$1" --socket "$2" status --json 2>/dev/null | "$3" -c '
import json, sys
for name, p in json.load(sys.stdin).get("pool", {}).items():
    forked = " (forked from its zygote)" if p.get("fork_server") else ""
    print("warm pool %s: %d runs served warm%s, %d cold, %d forked on demand"
          % (name, p["hits"], forked, p["misses"], p.get("forked_now", 0)))
' || true
}
