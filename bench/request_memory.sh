#!/usr/bin/env bash
# The broker's peak memory under concurrent big requests: for each K in 1 20 40, a
# fresh dev broker, K `codejail-client exec --file BIG` at once (BIG is 30 MiB), and the
# broker's peak RSS (VmHWM) once all have been answered (run or busy). Prints per K the
# peak, how many ran and how many were busy, and the target of issue 13 (1.5 x the
# request bytes the broker may hold + 64 MiB: with the default budget of 512 MiB,
# at most 832 MiB; one request: 109 MiB).
#
# With --old-broker/--old-client (binaries of an earlier build), the same for that
# build, side by side.
#
# Usage: bench/request_memory.sh [--python PATH] [--client PATH] [--broker PATH]
#                                [--old-broker PATH --old-client PATH] [--mib N]
# Build first: cargo build --release -p codejail-client -p codejail-broker

set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init request_memory
old_broker=""
old_client=""
mib=30
args=()
while (($#)); do
    case "$1" in
        --old-broker) old_broker="${2:?}"; shift 2 ;;
        --old-client) old_client="${2:?}"; shift 2 ;;
        --mib) mib="${2:?}"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
parse_bench_args "${args[@]+"${args[@]}"}"
python=${python:-/usr/bin/python3}
require_client
make_tmpdir
head -c $((mib << 20)) /dev/urandom >"$tmp/big.bin"

# measure BROKER CLIENT K: prints "peak_mib ran busy other".
measure() {
    local bin=$1 cli=$2 k=$3 sock="$tmp/m.sock"
    rm -f "$sock"
    "$bin" --dev --socket "$sock" --python "$python" >"$tmp/broker.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do [[ -S "$sock" ]] && break; sleep 0.1; done
    [[ -S "$sock" ]] || { cat "$tmp/broker.log" >&2; die "no broker socket"; }
    local jobs=()
    for ((i = 0; i < k; i++)); do
        "$cli" --socket "$sock" exec --limit REALTIME=30 --file "$tmp/big.bin" \
            -c 'import time; time.sleep(1)' >"$tmp/out.$i" 2>"$tmp/err.$i" &
        jobs+=($!)
    done
    local ran=0 busy=0 other=0
    for ((i = 0; i < k; i++)); do
        if wait "${jobs[$i]}"; then ran=$((ran + 1))
        elif grep -qi busy "$tmp/err.$i"; then busy=$((busy + 1))
        else other=$((other + 1)); fi
    done
    local hwm
    hwm=$(awk '/^VmHWM:/ { print int($2 / 1024) }' "/proc/$pid/status")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    echo "$hwm $ran $busy $other"
}

printf '%-10s %4s %12s %6s %6s %6s\n' build K "peak MiB" ran busy failed
for k in 1 20 40; do
    read -r hwm ran busy other < <(measure "$broker" "$client" "$k")
    printf '%-10s %4d %12d %6d %6d %6d\n' this "$k" "$hwm" "$ran" "$busy" "$other"
    if [[ -n "$old_broker" ]]; then
        read -r hwm ran busy other < <(measure "$old_broker" "${old_client:-$client}" "$k")
        printf '%-10s %4d %12d %6d %6d %6d\n' old "$k" "$hwm" "$ran" "$busy" "$other"
    fi
done
echo "target (issue 13): one ${mib} MiB request <= $((mib * 3 / 2 + 64)) MiB; any number at once <= 832 MiB (default 512 MiB budget)"
