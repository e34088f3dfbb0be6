#!/usr/bin/env bash
# This build's CPU per forked run against an earlier build's: two fork-server brokers
# (a pool of 2, $PREIMPORT preimported, default json numpy), each with its own
# interpreter (an earlier build's start-up hook may speak an earlier zygote protocol),
# and a bare interpreter spawn take turns in batches of B runs of `exec -c 'print(1)'`
# (each build through its own client); each batch's CPU is the whole machine's, from
# /proc/stat (the runs' processes, the zygote, the broker, the client, the kernel's
# workers), so that what a change moves between processes still counts once. Machine
# noise between two runs of cpu_per_run.sh can exceed the difference between two builds
# (here: ±1.5 ms on ~11 ms); taking turns, batch by batch, is what makes them
# comparable. Prints CPU per run of each and this build's against the earlier one's.
#
# Usage: bench/compare_builds_cpu.sh --old DIR --old-python PATH [--python PATH]
#                                    [-n ROUNDS] [--client PATH] [--broker PATH]
#   --old         the release directory of the earlier build (codejail-client,
#                 codejail-broker, codejail-jail, libcodejail_zygote.so), e.g. after
#                   git worktree add /tmp/old COMMIT
#                   (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release \
#                      -p codejail-client -p codejail-broker -p codejail-jail -p codejail-zygote)
#   --old-python  an interpreter with the earlier build's start-up hook, e.g.
#                   /tmp/old/scripts/setup-sandbox-venv.sh --lean /var/tmp/old-venv
#   --python      this build's (default: the sandbox venv of setup-sandbox-venv.sh --lean).
#   -n            rounds (default: $N, else 10); $B runs per batch (default 50).
#
# Build first: cargo build --release -p codejail-client -p codejail-broker \
#   -p codejail-jail -p codejail-zygote

set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init compare_builds_cpu
n="${N:-10}"
old="" old_python="" args=()
while (($#)); do
    case "$1" in
        --old) old="${2:?--old needs a directory}"; shift 2 ;;
        --old-python) old_python="${2:?--old-python needs a path}"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
parse_bench_args "${args[@]+"${args[@]}"}"
[[ -z "$socket" ]] || die "--socket: this benchmark starts its own brokers"
[[ -n "$old" && -n "$old_python" ]] || die "--old DIR and --old-python PATH are required (see --help)"
for bin in codejail-client codejail-broker codejail-jail libcodejail_zygote.so; do
    [[ -e "$old/$bin" ]] || die "no $bin in --old $old"
done
python="${python:-/var/tmp/codejail-sandbox-venv-lean/bin/python}"
[[ -x "$python" && -x "$old_python" ]] || die "python '$python' or '$old_python' is not executable"
require_client
[[ -x "$broker" ]] || die "broker '$broker' not found; build it (see --help) or pass --broker"
batch="${B:-50}"

make_tmpdir
new_python=$python
python=$new_python start_named_broker new "$broker" --pool-size 2 --fork-server "${preimports[@]}"
python=$old_python start_named_broker old "$old/codejail-broker" --pool-size 2 --fork-server "${preimports[@]}"
wait_pool_full new 60
wait_pool_full old 60

run_bare() { OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 LC_ALL=C.UTF-8 "$new_python" -E -B -c 'print(1)'; }
run_new() { "$client" --socket "${bsock[new]}" exec -c 'print(1)'; }
run_old() { "$old/codejail-client" --socket "${bsock[old]}" exec -c 'print(1)'; }
# The machine's busy CPU so far, in clock ticks (user nice system irq softirq steal).
busy() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

declare -A ticks=([bare]=0 [new]=0 [old]=0)
for what in bare new old; do
    out=$("run_$what" 2>"$tmp/err") || { cat "$tmp/err" >&2; die "warm-up run of $what failed"; }
    [[ "$out" == 1 ]] || die "warm-up run of $what printed '$out', not 1"
done
for ((r = 0; r < n; r++)); do
    order=(bare new old)
    if ((r % 2)); then order=(bare old new); fi
    for what in "${order[@]}"; do
        start=$(busy)
        for ((i = 0; i < batch; i++)); do
            "run_$what" >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; die "$what run failed"; }
        done
        # The last run's teardown and its jail's refill belong to this batch.
        sleep 0.3
        ticks[$what]=$((ticks[$what] + $(busy) - start))
    done
done

hz=$(getconf CLK_TCK)
runs=$((n * batch))
echo "forked exec -c 'print(1)', preimport ${PREIMPORT-json numpy}: CPU per run, whole machine, $n rounds of $batch"
awk -v b="${ticks[bare]}" -v nw="${ticks[new]}" -v od="${ticks[old]}" -v hz="$hz" -v runs="$runs" 'BEGIN {
    f = 1000 / hz / runs
    printf "bare python -c      %6.2f ms\n", b * f
    printf "this build          %6.2f ms  (%.2f x bare)\n", nw * f, nw / b
    printf "earlier build       %6.2f ms  (%.2f x bare)\n", od * f, od / b
    printf "this build - earlier: %+.2f ms per run (%+.1f %%)\n", (nw - od) * f, (nw / od - 1) * 100
}'
