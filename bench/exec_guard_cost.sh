#!/usr/bin/env bash
# What exec denial costs a run: the same `codejail-client exec -c 'print(1)'` against a
# dev broker that denies exec after the program's start (the default: the init's
# seccomp user-notification guard answers the program's own exec) and one started
# with --allow-exec (no guard), interleaved with a bare interpreter spawn as the
# baseline, so that machine noise hits all alike. Prints p50/p90 of each in ms, the
# ratios to the bare spawn, and the guard's cost (difference of the p50s).
#
# With --old-broker PATH (a broker built from an earlier commit, its codejail-jail
# beside it), a third broker of that build joins the interleaving: the difference to
# it is what this build's jail changes cost as a whole (e.g. the exec guard plus the
# random /tmp/codejail-XXXXXXXX directory).
#
# Usage: bench/exec_guard_cost.sh [--python PATH] [-n N] [--client PATH]
#                                 [--broker PATH] [--old-broker PATH]
#   --python  the interpreter the brokers run (default: $CODEJAIL_PYTHON, else
#             /usr/bin/python3).
#   -n        runs of each (default: $N, else 100).
#   --client/--broker  binaries (default: target/release/… under $CARGO_TARGET_DIR
#             or the repository's target/).
#
# Build first: cargo build --release -p codejail-client -p codejail-broker

set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init exec_guard_cost
n="${N:-100}"
old_broker=""
args=()
while (($#)); do
    case "$1" in
        --old-broker) old_broker="${2:?--old-broker needs a path}"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
parse_bench_args "${args[@]+"${args[@]}"}"
[[ -z "$socket" ]] || die "--socket: this benchmark starts its own brokers"
python=${python:-/usr/bin/python3}
[[ -x "$python" ]] || die "python '$python' is not executable"
[[ -x "$broker" ]] || die "broker '$broker' not found; build it (see --help) or pass --broker"
[[ -z "$old_broker" || -x "$old_broker" ]] || die "old broker '$old_broker' is not executable"
require_client

make_tmpdir
pids=()
stop_brokers() {
    for p in "${pids[@]+"${pids[@]}"}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]+"${pids[@]}"}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap stop_brokers EXIT

# start NAME BROKER [FLAGS...]: a dev broker on $tmp/NAME.sock.
start() {
    local name=$1 bin=$2
    shift 2
    BROKER_START_SECS=10 start_broker "$tmp/$name.log" "$tmp/$name.sock" "$bin" --dev \
        --python "$python" "$@" || die "broker $name did not start"
    pids+=("$started_broker_pid")
}

start denied "$broker"
start allowed "$broker" --allow-exec
kinds=(denied allowed)
if [[ -n "$old_broker" ]]; then
    start old "$old_broker"
    kinds+=(old)
fi

run_denied() { "$client" --socket "$tmp/denied.sock" exec -c 'print(1)' >"$tmp/out" 2>"$tmp/err"; }
run_allowed() { "$client" --socket "$tmp/allowed.sock" exec -c 'print(1)' >"$tmp/out" 2>"$tmp/err"; }
run_old() { "$client" --socket "$tmp/old.sock" exec -c 'print(1)' >"$tmp/out" 2>"$tmp/err"; }
run_python() { "$python" -E -B -c 'print(1)' >"$tmp/out" 2>"$tmp/err"; }

# The guard really is on in one and off in the other (a subprocess is denied, or runs).
probe='import subprocess
try:
    subprocess.run(["/usr/bin/true"], check=True); print("ran")
except PermissionError:
    print("denied")'
[[ "$("$client" --socket "$tmp/denied.sock" exec -c "$probe")" == denied ]] \
    || die "the default broker did not deny exec"
[[ "$("$client" --socket "$tmp/allowed.sock" exec -c "$probe")" == ran ]] \
    || die "the --allow-exec broker did not allow exec"

for what in "${kinds[@]}" python; do
    if ! "run_$what" || [[ "$(cat "$tmp/out")" != 1 ]]; then
        cat "$tmp/err" >&2
        die "warm-up run of $what failed"
    fi
done

declare -A samples
for what in "${kinds[@]}" python; do samples[$what]=""; done
for ((i = 0; i < n; i++)); do
    for what in "${kinds[@]}" python; do
        stamp; t0=$now
        "run_$what" || { rc=$?; cat "$tmp/err" >&2; die "$what run $i failed (exit $rc)"; }
        stamp; samples[$what]+=" $((now - t0))"
    done
done

declare -A p50 p90
for what in "${kinds[@]}" python; do
    # shellcheck disable=SC2086  # the samples are space-separated on purpose
    read -r "p50[$what]" "p90[$what]" < <(percentiles ${samples[$what]})
done

print_table_header "exec guard cost" 40
print_table_row "exec -c 'print(1)', exec denied" "${p50[denied]}" "${p90[denied]}"
print_table_row "exec -c 'print(1)', --allow-exec" "${p50[allowed]}" "${p90[allowed]}"
[[ -z "$old_broker" ]] || print_table_row "exec -c 'print(1)', old build" "${p50[old]}" "${p90[old]}"
print_table_row "python3 -E -B -c 'print(1)'" "${p50[python]}" "${p90[python]}"
print_ratio "exec denied" client "${p50[denied]}" "${p50[python]}"
print_ratio "--allow-exec" client "${p50[allowed]}" "${p50[python]}"
[[ -z "$old_broker" ]] || print_ratio "old build" client "${p50[old]}" "${p50[python]}"
awk -v d="${p50[denied]}" -v a="${p50[allowed]}" \
    'BEGIN { printf "exec guard cost (p50 denied - p50 allowed): %+.2f ms\n", d - a }'
if [[ -n "$old_broker" ]]; then
    awk -v d="${p50[denied]}" -v o="${p50[old]}" \
        'BEGIN { printf "this build vs the old one (p50 denied - p50 old): %+.2f ms\n", d - o }'
fi
