#!/usr/bin/env bash
# Latency of the codejail Python package (safe_exec, jail_code) against the CLI and a
# bare interpreter spawn, interleaved in one run (bench/python_package_latency.py).
#
# Usage: bench/python_package_latency.sh [--socket PATH] [--python PATH] [-n N]
#                                        [--client PATH] [--broker PATH]
#   $THROUGHPUT=SECONDS also measures two concurrent callers' runs/s (the .py's
#   --throughput); the numpy series runs when the broker's interpreter has numpy.
#   --socket  a running broker (default: $CODEJAIL_SOCKET); with neither, a dev broker
#             is started on a temporary socket and stopped at the end.
#   --python  the broker's interpreter (default: $CODEJAIL_PYTHON, else
#             /var/tmp/codejail-sandbox-venv-lean/bin/python).
#   -n        runs of each (default: $N, else 50).
#   --client/--broker  binaries (default: target/release/…).
# The package is installed (pip install ./python) into $CODEJAIL_BENCH_VENV (default
# /var/tmp/codejail-python-test-venv, scripts/python-tests.sh's venv; made if missing).
#
# Build first: cargo build --release -p codejail-client -p codejail-broker

set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init python_package_latency
parse_bench_args "$@"

python="${python:-/var/tmp/codejail-sandbox-venv-lean/bin/python}"
[[ -x "$python" ]] || die "python '$python' is not executable (scripts/setup-sandbox-venv.sh --lean, or pass --python)"
require_client
install_package

make_tmpdir
start_dev_broker_unless_socket
"$venv/bin/python" "$root/bench/python_package_latency.py" --socket "$socket" \
    --python "$python" --client "$client" -n "$n" --throughput "${THROUGHPUT:-0}" ||
    { show_broker_log; exit 1; }
