#!/usr/bin/env bash
# Where a run's CPU goes: the machine's CPU time per run (from /proc/stat: user, nice,
# system, irq, softirq of every core) over R sequential runs of each of
#   PYTHON -E -B -c 'print(1)'                         bare
#   codejail-client exec -c 'print(1)'                 cold (a broker without a pool)
#   codejail-client exec -c 'print(1)'                 warm (a broker with --pool-size 2
#                                                      and $PREIMPORT, default json numpy;
#                                                      each run's refill is built during
#                                                      the runs that follow, so it counts)
#   codejail-client exec -c 'print(1)'                 forked (the same pool, its jails
#                                                      forked from a zygote: --fork-server;
#                                                      the zygote's CPU counts in "other")
#   codejail-client status                             the client and one round trip
# with the broker's own share (its /proc/PID/stat utime + stime: its threads only; the
# stage, init and program are its children) and the rest ("other": the client or the
# bare interpreter, the jail's processes, the kernel's workers). Sustained throughput
# cannot pass cores / CPU per run: that bound is printed too. Run on an idle machine:
# everything else the machine does in that time is counted.
#
# Usage: bench/cpu_per_run.sh [--python PATH] [-n R] [--client PATH] [--broker PATH]
#   --python  the brokers' interpreter (default: $CODEJAIL_PYTHON, else the sandbox venv
#             of scripts/setup-sandbox-venv.sh --lean).
#   -n        runs of each series (default: $N, else 200).
#   --client/--broker  binaries (default: target/release/… under $CARGO_TARGET_DIR or
#             the repository's target/; codejail-jail beside the broker).
#
# Build first: cargo build --release -p codejail-client -p codejail-broker -p codejail-jail \
#   -p codejail-zygote

set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init cpu_per_run
n="${N:-200}"
parse_bench_args "$@"
[[ -z "$socket" ]] || die "--socket: this benchmark starts its own brokers"
python="${python:-/var/tmp/codejail-sandbox-venv-lean/bin/python}"
[[ -x "$python" ]] || die "python '$python' is not executable (scripts/setup-sandbox-venv.sh --lean builds it)"
require_client
[[ -x "$broker" ]] || die "broker '$broker' not found; build it (see --help) or pass --broker"

make_tmpdir
start_named_broker cold "$broker"
# The pools import $PREIMPORT (lib.sh's "${preimports[@]}"): a warm jail's build pays
# for them, a zygote holds them.
start_named_broker warm "$broker" --pool-size 2 "${preimports[@]}"
start_named_broker forked "$broker" --pool-size 2 --fork-server "${preimports[@]}"
sleep 2 # the pools' first builds

tick=$(getconf CLK_TCK)
cores=$(nproc)
# busy_ticks: the CPU ticks every core spent busy so far.
busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
# proc_ticks PID: utime + stime of PID.
proc_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

run_bare() { OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 LC_ALL=C.UTF-8 "$python" -E -B -c 'print(1)'; }
run_cold() { "$client" --socket "${bsock[cold]}" exec -c 'print(1)'; }
run_warm() { "$client" --socket "${bsock[warm]}" exec -c 'print(1)'; }
run_forked() { "$client" --socket "${bsock[forked]}" exec -c 'print(1)'; }
run_status() { "$client" --socket "${bsock[cold]}" status; }

printf '%-44s %10s %10s %10s %12s\n' "CPU per run (ms), $n runs each" total broker other "bound runs/s"
for what in bare cold warm forked status; do
    "run_$what" >/dev/null || die "$what: the warm-up run failed"
    sleep 0.3
    who=${bpid[cold]}
    [[ "$what" != warm && "$what" != forked ]] || who=${bpid[$what]}
    b0=$(busy_ticks) p0=$(proc_ticks "$who")
    for ((i = 0; i < n; i++)); do "run_$what" >/dev/null || die "$what run $i failed"; done
    # The last run's refill (warm) and the last cleanups finish inside the window.
    sleep 0.3
    b1=$(busy_ticks) p1=$(proc_ticks "$who")
    awk -v l="$what" -v b="$((b1 - b0))" -v p="$((p1 - p0))" -v n="$n" -v t="$tick" -v c="$cores" -v w="$what" 'BEGIN {
        total = b * 1000 / t / n; broker = (w == "bare") ? 0 : p * 1000 / t / n
        printf "%-44s %10.2f %10.2f %10.2f %12.0f\n", l, total, broker, total - broker, c * 1000 / total
    }'
done
