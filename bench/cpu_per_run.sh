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
#   codejail.jail_code.jail_code('python', 'print(1)') package (the forked broker, from one
#                                                      long-lived Python process, as the
#                                                      LMS calls it: no client process;
#                                                      that caller's CPU counts)
#   codejail-client status                             the client and one round trip
# with the broker's own share (its /proc/PID/stat utime + stime: its threads only; the
# stage, init and program are its children) and the rest ("other": the client or the
# bare interpreter, the jail's processes, the kernel's workers). Sustained throughput
# cannot pass cores / CPU per run: that bound is printed too, and each series' ratio to
# bare. The series are interleaved: $ROUNDS rounds (default 10), each running R/ROUNDS
# runs of every series in turn, so that a machine whose speed drifts weighs on all
# alike. Run on an idle machine: everything else the machine does in that time is
# counted.
#
# Usage: bench/cpu_per_run.sh [--python PATH] [-n R] [--client PATH] [--broker PATH]
#   --python  the brokers' interpreter (default: $CODEJAIL_PYTHON, else the sandbox venv
#             of scripts/setup-sandbox-venv.sh --lean).
#   -n        runs of each series (default: $N, else 200).
#   --client/--broker  binaries (default: target/release/… under $CARGO_TARGET_DIR or
#             the repository's target/; codejail-jail beside the broker).
#
# Build first: cargo build --release -p codejail-client -p codejail-broker -p codejail-jail \
#   -p codejail-zygote. The package series installs this checkout's package
# (lib.sh's install_package).

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
# The package: one Python process for the whole benchmark, started before any window,
# runs K calls when it reads the line K and answers "done" (any other answer is a
# failure, which it prints).
install_package
cat >"$tmp/package.py" <<'PY'
import os, sys
from codejail import jail_code
jail_code.configure("python", sys.argv[1])
for line in sys.stdin:
    try:
        for _ in range(int(line)):
            r = jail_code.jail_code("python", "print(1)")
            if r.status != 0 or r.stdout != b"1\n":
                raise RuntimeError("status %r, stdout %r, stderr %r" % (r.status, r.stdout, r.stderr))
        print("done", flush=True)
    except Exception as e:
        print("failed: %s" % e, flush=True)
PY
coproc PACKAGE { CODEJAIL_SOCKET="${bsock[forked]}" exec "$venv/bin/python" "$tmp/package.py" "$python"; }
run_package_batch() {
    local answer
    echo "$1" >&"${PACKAGE[1]}"
    read -r answer <&"${PACKAGE[0]}" || die "package: the caller process ended"
    [[ "$answer" == "done" ]] || die "package: $answer"
}

series=(bare cold warm forked package status)
rounds=${ROUNDS:-10}
((n >= rounds)) || die "-n $n: at least ROUNDS=$rounds runs are needed"
per_round=$((n / rounds))
declare -A busy=() own=()
for what in "${series[@]}"; do
    if [[ "$what" == package ]]; then run_package_batch 1; else "run_$what" >/dev/null || die "$what: the warm-up run failed"; fi
    busy[$what]=0 own[$what]=0
done
sleep 0.3
for ((round = 0; round < rounds; round++)); do
    for what in "${series[@]}"; do
        who=${bpid[cold]}
        [[ "$what" != warm && "$what" != forked && "$what" != package ]] || who=${bpid[forked]}
        [[ "$what" != warm ]] || who=${bpid[warm]}
        b0=$(busy_ticks) p0=$(proc_ticks "$who")
        if [[ "$what" == package ]]; then
            run_package_batch "$per_round"
        else
            for ((i = 0; i < per_round; i++)); do "run_$what" >/dev/null || die "$what run $i failed"; done
        fi
        # The last run's refill (warm) and the last cleanups finish inside the window.
        sleep 0.3
        b1=$(busy_ticks) p1=$(proc_ticks "$who")
        busy[$what]=$((busy[$what] + b1 - b0)) own[$what]=$((own[$what] + p1 - p0))
    done
done

runs=$((per_round * rounds))
printf '%-44s %10s %10s %10s %8s %12s\n' "CPU per run (ms), $runs runs each" total broker other "× bare" "bound runs/s"
for what in "${series[@]}"; do
    awk -v l="$what" -v b="${busy[$what]}" -v p="${own[$what]}" -v bare="${busy[bare]}" -v n="$runs" -v t="$tick" -v c="$cores" -v w="$what" 'BEGIN {
        total = b * 1000 / t / n; broker = (w == "bare") ? 0 : p * 1000 / t / n
        printf "%-44s %10.2f %10.2f %10.2f %8.2f %12.0f\n", l, total, broker, total - broker, b / bare, c * 1000 / total
    }'
done
