#!/usr/bin/env bash
# Latency of safe_exec against a bare interpreter doing the same work.
#
# Times N runs of each of four commands, interleaved so that machine noise hits all
# alike, and prints p50 and p90 of each in ms plus the ratio of the p50s per workload:
#   codejail-client safe-exec -c 'x = 1 + 1'      vs  PYTHON -E -B -c 'x = 1 + 1'
#   codejail-client safe-exec -c 'import numpy'   vs  PYTHON -E -B -c 'import numpy'
# One untimed warm-up run of each comes first (and checks the output). The client
# times include its own process start, as the bare interpreter's include python's. The
# bare interpreter gets the thread caps the broker gives its python command
# (OPENBLAS_NUM_THREADS=1 ...): without them numpy's import starts a thread per CPU,
# which is slower and not the same work.
#
# Usage: bench/safe_exec_latency.sh [--socket PATH] [--python PATH] [-n N]
#                                   [--client PATH] [--broker PATH]
#   --socket  a running broker (default: $CODEJAIL_SOCKET). With neither, a dev broker
#             is started on a temporary socket (`codejail-broker --dev --socket TMP
#             --python PYTHON`) and stopped at the end. Run as root, that broker runs
#             as root too: fine for a benchmark (it never runs programs as root).
#   --python  the broker's interpreter, which must have numpy (default:
#             $CODEJAIL_PYTHON, else the sandbox venv of scripts/setup-sandbox-venv.sh,
#             /var/tmp/codejail-sandbox-venv/bin/python). With --socket, pass the python
#             the running broker is configured with.
#   -n        runs of each (default: $N, else 50).
#   --client/--broker  binaries (default: target/release/… under $CARGO_TARGET_DIR
#             or the repository's target/).
#
# Build first: cargo build --release -p codejail-client -p codejail-broker

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
release="${CARGO_TARGET_DIR:-$root/target}/release"

n="${N:-50}"
socket="${CODEJAIL_SOCKET:-}"
python="${CODEJAIL_PYTHON:-}"
client="$release/codejail-client"
broker="$release/codejail-broker"

die() { echo "safe_exec_latency: $*" >&2; exit 1; }

while (($#)); do
    case "$1" in
        --socket) socket="${2:?--socket needs a path}"; shift 2 ;;
        --python) python="${2:?--python needs a path}"; shift 2 ;;
        -n) n="${2:?-n needs a number}"; shift 2 ;;
        --client) client="${2:?--client needs a path}"; shift 2 ;;
        --broker) broker="${2:?--broker needs a path}"; shift 2 ;;
        -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

[[ "$n" =~ ^[1-9][0-9]*$ ]] || die "-n must be a positive integer, not '$n'"
python="${python:-/var/tmp/codejail-sandbox-venv/bin/python}"
[[ -x "$python" ]] || die "python '$python' is not executable (build the venv with scripts/setup-sandbox-venv.sh or pass --python)"
"$python" -E -B -c 'import numpy' 2>/dev/null || die "python '$python' cannot import numpy; pass one that can"
[[ -x "$client" ]] || die "client '$client' not found; build it (see --help) or pass --client"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/safe_exec_latency.XXXXXX")
broker_pid=""
cleanup() {
    if [[ -n "$broker_pid" ]]; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z "$socket" ]]; then
    [[ -x "$broker" ]] || die "broker '$broker' not found; build it (see --help), pass --broker or --socket"
    socket="$tmp/broker.sock"
    "$broker" --dev --socket "$socket" --python "$python" >"$tmp/broker.log" 2>&1 &
    broker_pid=$!
    for _ in $(seq 100); do
        [[ -S "$socket" ]] && break
        kill -0 "$broker_pid" 2>/dev/null || { cat "$tmp/broker.log" >&2; die "the dev broker exited"; }
        sleep 0.1
    done
    [[ -S "$socket" ]] || { cat "$tmp/broker.log" >&2; die "no socket at $socket after 10 s"; }
fi

# Microsecond timestamps: bash's $EPOCHREALTIME costs no fork; `date` is the fallback.
if [[ -n "${EPOCHREALTIME:-}" ]]; then
    stamp() { now=${EPOCHREALTIME//[.,]/}; }
else
    stamp() { now=$(( $(date +%s%N) / 1000 )); }
fi

trivial='x = 1 + 1'
numpy='import numpy'
run_safe_trivial() { "$client" --socket "$socket" safe-exec -c "$trivial" >"$tmp/out" 2>"$tmp/err"; }
# The broker's python environment (broker/src/config.rs), without an extra exec.
bare() {
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 LC_ALL=C.UTF-8 \
        "$python" -E -B -c "$1" >"$tmp/out" 2>"$tmp/err"
}
run_bare_trivial() { bare "$trivial"; }
run_safe_numpy() { "$client" --socket "$socket" safe-exec -c "$numpy" >"$tmp/out" 2>"$tmp/err"; }
run_bare_numpy() { bare "$numpy"; }

# What each prints: safe-exec the globals (a module is not JSON-safe: none for numpy).
declare -A expected=(
    [safe_trivial]='{"x": 2}' [bare_trivial]=''
    [safe_numpy]='{}' [bare_numpy]=''
)
whats=(safe_trivial bare_trivial safe_numpy bare_numpy)

# Warm-up (untimed), and a check of each output.
for what in "${whats[@]}"; do
    if ! "run_$what" || [[ "$(cat "$tmp/out")" != "${expected[$what]}" ]]; then
        cat "$tmp/out" "$tmp/err" >&2
        [[ -n "$broker_pid" ]] && cat "$tmp/broker.log" >&2
        die "warm-up run of $what failed"
    fi
done

declare -A samples=()
for ((i = 0; i < n; i++)); do
    for what in "${whats[@]}"; do
        stamp; t0=$now
        "run_$what" || { rc=$?; cat "$tmp/err" >&2; die "$what run $i failed (exit $rc)"; }
        stamp; samples[$what]+="$((now - t0)) "
    done
done

# p50 and p90 (nearest rank) of microsecond samples, printed in ms.
percentiles() {
    printf '%s\n' $1 | sort -n | awk '
        { v[NR] = $1 }
        END {
            i50 = int((NR * 50 + 99) / 100); i90 = int((NR * 90 + 99) / 100)
            printf "%.2f %.2f\n", v[i50] / 1000, v[i90] / 1000
        }'
}

declare -A p50=() p90=()
for what in "${whats[@]}"; do
    read -r "p50[$what]" "p90[$what]" < <(percentiles "${samples[$what]}")
done

echo "safe_exec latency: $n runs each, python $python, socket $socket"
printf '%-50s %10s %10s\n' "" "p50 ms" "p90 ms"
row() { printf '%-50s %10s %10s\n' "$1" "${p50[$2]}" "${p90[$2]}"; }
row "codejail-client safe-exec -c '$trivial'" safe_trivial
row "python -E -B -c '$trivial'" bare_trivial
row "codejail-client safe-exec -c '$numpy'" safe_numpy
row "python -E -B -c '$numpy'" bare_numpy
ratio() {
    awk -v c="${p50[$2]}" -v p="${p50[$3]}" -v l="$1" 'BEGIN {
        if (p > 0) printf "ratio of p50s, %s (safe_exec / bare python): %.2f\n", l, c / p
        else printf "ratio of p50s, %s: n/a (bare python p50 is 0)\n", l
    }'
}
ratio "'$trivial'" safe_trivial bare_trivial
ratio "'$numpy'" safe_numpy bare_numpy
