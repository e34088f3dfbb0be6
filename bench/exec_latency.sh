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

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init exec_latency
parse_bench_args "$@"

if [[ -z "$python" ]]; then
    if [[ -x /usr/bin/python3 ]]; then python=/usr/bin/python3
    else python=$(command -v python3) || die "no python3 found; pass --python"; fi
fi
[[ -x "$python" ]] || die "python '$python' is not executable"
require_client

make_tmpdir
start_dev_broker_unless_socket

run_client() { "$client" --socket "$socket" exec -c 'print(1)' >"$tmp/out" 2>"$tmp/err"; }
run_python() { "$python" -E -B -c 'print(1)' >"$tmp/out" 2>"$tmp/err"; }

# Warm-up (untimed), and a check that both really print 1.
for what in client python; do
    if ! "run_$what" || [[ "$(cat "$tmp/out")" != 1 ]]; then
        cat "$tmp/err" >&2
        show_broker_log
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

read -r c50 c90 < <(percentiles "${client_us[@]}")
read -r p50 p90 < <(percentiles "${python_us[@]}")

print_table_header "exec latency" 36
print_table_row "codejail-client exec -c 'print(1)'" "$c50" "$c90"
print_table_row "python3 -E -B -c 'print(1)'" "$p50" "$p90"
print_ratio "ratio of p50s" client "$c50" "$p50"
