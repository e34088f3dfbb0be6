#!/usr/bin/env bash
# Latency of one jailed run against a bare interpreter start.
#
# Times N runs of `codejail-client exec -c 'print(1)'` and N spawns of
# `PYTHON -E -B -c 'print(1)'` (the interpreter the broker runs), interleaved so that
# machine noise hits both alike, and prints p50 and p90 of each in ms plus the ratio
# of the p50s. One untimed warm-up run of each comes first.
#
# Usage: bench/exec_latency.sh [--socket PATH] [--python PATH] [-n N]
#                              [--client PATH] [--broker PATH]
#   --socket  a running broker (default: $CODEJAIL_SOCKET). With neither, a dev broker
#             is started on a temporary socket (`codejail-broker --dev --socket TMP
#             --python PYTHON`) and stopped at the end. Run as root, that broker runs
#             as root too: fine for a benchmark (it never runs programs as root).
#   --python  the broker's interpreter (default: $CODEJAIL_PYTHON, else
#             /usr/bin/python3 if present, else python3 on PATH -- the dev default).
#             With --socket, pass the python the running broker is configured with.
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

die() { echo "exec_latency: $*" >&2; exit 1; }

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
if [[ -z "$python" ]]; then
    if [[ -x /usr/bin/python3 ]]; then python=/usr/bin/python3
    else python=$(command -v python3) || die "no python3 found; pass --python"; fi
fi
[[ -x "$python" ]] || die "python '$python' is not executable"
[[ -x "$client" ]] || die "client '$client' not found; build it (see --help) or pass --client"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/exec_latency.XXXXXX")
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

run_client() { "$client" --socket "$socket" exec -c 'print(1)' >"$tmp/out" 2>"$tmp/err"; }
run_python() { "$python" -E -B -c 'print(1)' >"$tmp/out" 2>"$tmp/err"; }

# Warm-up (untimed), and a check that both really print 1.
for what in client python; do
    if ! "run_$what" || [[ "$(cat "$tmp/out")" != 1 ]]; then
        cat "$tmp/err" >&2
        [[ -n "$broker_pid" ]] && cat "$tmp/broker.log" >&2
        die "warm-up run of $what failed"
    fi
done

client_us=()
python_us=()
for ((i = 0; i < n; i++)); do
    stamp; t0=$now
    run_client || { rc=$?; cat "$tmp/err" >&2; die "client run $i failed (exit $rc)"; }
    stamp; client_us+=($((now - t0)))

    stamp; t0=$now
    run_python || { rc=$?; cat "$tmp/err" >&2; die "python run $i failed (exit $rc)"; }
    stamp; python_us+=($((now - t0)))
done

# p50 and p90 (nearest rank) of microsecond samples, printed in ms.
percentiles() {
    printf '%s\n' "$@" | sort -n | awk '
        { v[NR] = $1 }
        END {
            i50 = int((NR * 50 + 99) / 100); i90 = int((NR * 90 + 99) / 100)
            printf "%.2f %.2f\n", v[i50] / 1000, v[i90] / 1000
        }'
}

read -r c50 c90 < <(percentiles "${client_us[@]}")
read -r p50 p90 < <(percentiles "${python_us[@]}")

echo "exec latency: $n runs each, python $python, socket $socket"
printf '%-36s %10s %10s\n' "" "p50 ms" "p90 ms"
printf '%-36s %10s %10s\n' "codejail-client exec -c 'print(1)'" "$c50" "$c90"
printf '%-36s %10s %10s\n' "python3 -E -B -c 'print(1)'" "$p50" "$p90"
awk -v c="$c50" -v p="$p50" 'BEGIN {
    if (p > 0) printf "ratio of p50s (client / bare python): %.2f\n", c / p
    else print "ratio of p50s: n/a (bare python p50 is 0)"
}'
