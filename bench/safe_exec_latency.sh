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
#             $CODEJAIL_PYTHON, else the lean sandbox venv of
#             scripts/setup-sandbox-venv.sh --lean,
#             /var/tmp/codejail-sandbox-venv-lean/bin/python). With --socket, pass the
#             python the running broker is configured with.
#   -n        runs of each (default: $N, else 50).
#   --client/--broker  binaries (default: target/release/… under $CARGO_TARGET_DIR
#             or the repository's target/).
#
# Build first: cargo build --release -p codejail-client -p codejail-broker

set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init safe_exec_latency
parse_bench_args "$@"

python="${python:-/var/tmp/codejail-sandbox-venv-lean/bin/python}"
[[ -x "$python" ]] || die "python '$python' is not executable (build the venv with scripts/setup-sandbox-venv.sh --lean or pass --python)"
"$python" -E -B -c 'import numpy' 2>/dev/null || die "python '$python' cannot import numpy; pass one that can"
require_client

make_tmpdir
start_dev_broker_unless_socket

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
        show_broker_log
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

series_percentiles "${whats[@]}"

print_table_header "safe_exec latency" 50
row() { print_table_row "$1" "${p50[$2]}" "${p90[$2]}"; }
row "codejail-client safe-exec -c '$trivial'" safe_trivial
row "python -E -B -c '$trivial'" bare_trivial
row "codejail-client safe-exec -c '$numpy'" safe_numpy
row "python -E -B -c '$numpy'" bare_numpy
ratio() { print_ratio "ratio of p50s, $1" safe_exec "${p50[$2]}" "${p50[$3]}"; }
ratio "'$trivial'" safe_trivial bare_trivial
ratio "'$numpy'" safe_numpy bare_numpy
