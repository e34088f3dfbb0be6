#!/usr/bin/env bash
# The broker's peak memory under concurrent big requests: for each K in 1 20 40, a
# fresh dev broker with a request budget of BUDGET MiB (default 512, the default of
# request_budget_bytes), K `codejail-client exec --file BIG` at once (BIG is 30 MiB;
# --stdin sends it as the program's stdin instead), and the broker's peak RSS (VmHWM)
# once all have been answered (run or busy). Prints per K the peak, how many ran and
# how many were busy, the peak over the budget, and whether it meets the target of
# issue 13 and 19: at most 1.5 x the budget + 64 MiB (832 MiB with 512 MiB).
#
# With --old-broker/--old-client (binaries of an earlier build, the jail stage next to
# the broker), the same for that build, side by side.
#
# Usage: bench/request_memory.sh [--python PATH] [--client PATH] [--broker PATH]
#                                [--old-broker PATH --old-client PATH] [--mib N]
#                                [--budget-mib N] [--stdin]
# Build first: cargo build --release -p codejail-client -p codejail-broker -p codejail-jail

set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init request_memory
old_broker=""
old_client=""
mib=30
budget_mib=512
payload="file"
args=()
while (($#)); do
    case "$1" in
        --old-broker) old_broker="${2:?}"; shift 2 ;;
        --old-client) old_client="${2:?}"; shift 2 ;;
        --mib) mib="${2:?}"; shift 2 ;;
        --budget-mib) budget_mib="${2:?}"; shift 2 ;;
        --stdin) payload=stdin; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
parse_bench_args "${args[@]+"${args[@]}"}"
python=${python:-/usr/bin/python3}
require_client
make_tmpdir
head -c $((mib << 20)) /dev/urandom >"$tmp/big.bin"
if [[ "$payload" == stdin ]]; then
    send=(--stdin-file "$tmp/big.bin")
else
    send=(--file "$tmp/big.bin")
fi
target_mib=$((budget_mib * 3 / 2 + 64))

# measure BROKER CLIENT K: prints "peak_mib ran busy other".
measure() {
    local bin=$1 cli=$2 k=$3 sock="$tmp/m.sock"
    rm -f "$sock"
    BROKER_START_SECS=10 start_broker "$tmp/broker.log" "$sock" "$bin" --dev \
        --python "$python" --request-budget $((budget_mib << 20)) || die "no broker socket"
    local pid=$started_broker_pid
    local jobs=()
    for ((i = 0; i < k; i++)); do
        "$cli" --socket "$sock" exec --limit REALTIME=30 "${send[@]}" \
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

# row BUILD K HWM RAN BUSY OTHER: one line of the table.
row() {
    local verdict=ok
    (($3 <= target_mib)) || verdict=OVER
    printf '%-10s %4d %12d %6d %6d %6d %12d %6s %8s\n' "$1" "$2" "$3" "$4" "$5" "$6" \
        "$budget_mib" "$(awk -v p="$3" -v b="$budget_mib" 'BEGIN { printf "%.2f", p / b }')" "$verdict"
}

echo "payload: ${mib} MiB as the run's ${payload}; budget ${budget_mib} MiB"
printf '%-10s %4s %12s %6s %6s %6s %12s %6s %8s\n' build K "peak MiB" ran busy failed \
    "budget MiB" ratio target
for k in 1 20 40; do
    read -r hwm ran busy other < <(measure "$broker" "$client" "$k")
    row this "$k" "$hwm" "$ran" "$busy" "$other"
    if [[ -n "$old_broker" ]]; then
        read -r hwm ran busy other < <(measure "$old_broker" "${old_client:-$client}" "$k")
        row old "$k" "$hwm" "$ran" "$busy" "$other"
    fi
done
echo "target (issues 13, 19): peak RSS <= 1.5 x budget + 64 MiB = ${target_mib} MiB at any K" \
    "(ratio <= $(awk -v t="$target_mib" -v b="$budget_mib" 'BEGIN { printf "%.2f", t / b }'));" \
    "one ${mib} MiB request <= $((mib * 3 / 2 + 64)) MiB"
