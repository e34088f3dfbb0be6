#!/usr/bin/env bash
# This build against an earlier one: the same cold `codejail-client exec -c 'print(1)'`
# through each build's own client, broker and jail stage (so that builds speaking
# different protocol versions compare), interleaved with a bare interpreter spawn, so
# that machine noise hits all alike. Prints p50/p90 of each in ms, the ratios to the
# bare spawn, and this build's p50 against the earlier one's (the structure step's
# "within 5 %" check, for one).
#
# With --pool, both brokers keep one warm jail (`--pool-size 1`) and every jailed
# sample is a warm run: after each, the benchmark waits (untimed) until the pool has
# refilled; the pools' hits and misses are printed (every sample should be a hit).
#
# Usage: bench/compare_builds.sh --old DIR [--pool] [--python PATH] [-n N]
#                                [--client PATH] [--broker PATH]
#   --old     the release directory of the earlier build, with its codejail-client,
#             codejail-broker and codejail-jail, e.g. after
#               git worktree add /tmp/old COMMIT
#               (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release --bins)
#             --old /tmp/old-target/release
#   --python  the interpreter both brokers run (default: $CODEJAIL_PYTHON, else the
#             sandbox venv of scripts/setup-sandbox-venv.sh --lean, else /usr/bin/python3).
#   -n        runs of each (default: $N, else 100).
#   --client/--broker  this build's binaries (default: target/release/… under
#             $CARGO_TARGET_DIR or the repository's target/; codejail-jail beside the
#             broker).
#
# Build first: cargo build --release -p codejail-client -p codejail-broker -p codejail-jail

set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init compare_builds
n="${N:-100}"
old=""
pool=false
args=()
while (($#)); do
    case "$1" in
        --old) old="${2:?--old needs a directory}"; shift 2 ;;
        --pool) pool=true; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
parse_bench_args "${args[@]+"${args[@]}"}"
[[ -z "$socket" ]] || die "--socket: this benchmark starts its own brokers"
[[ -n "$old" ]] || die "--old DIR is required (see --help)"
for bin in codejail-client codejail-broker codejail-jail; do
    [[ -x "$old/$bin" ]] || die "no $bin in --old $old"
done
if [[ -z "$python" ]]; then
    python=/var/tmp/codejail-sandbox-venv-lean/bin/python
    [[ -x "$python" ]] || python=/usr/bin/python3
fi
[[ -x "$python" ]] || die "python '$python' is not executable"
require_client
[[ -x "$broker" ]] || die "broker '$broker' not found; build it (see --help) or pass --broker"
[[ -x "$(dirname "$broker")/codejail-jail" ]] || die "no codejail-jail next to the broker '$broker'"

make_tmpdir
broker_args=()
if $pool; then broker_args=(--pool-size 1); fi
start_named_broker new "$broker" "${broker_args[@]+"${broker_args[@]}"}"
start_named_broker old "$old/codejail-broker" "${broker_args[@]+"${broker_args[@]}"}"
# settle NAME: with --pool, wait (untimed) until NAME's warm jail is ready.
settle() { if $pool; then wait_pool_full "$1" 60; fi; }
settle new
settle old

run_bare() { OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 LC_ALL=C.UTF-8 "$python" -E -B -c 'print(1)'; }
run_new() { "$client" --socket "${bsock[new]}" exec -c 'print(1)'; }
run_old() { "$old/codejail-client" --socket "${bsock[old]}" exec -c 'print(1)'; }
whats=(bare new old)

# One untimed warm-up of each, which also checks the output.
for what in "${whats[@]}"; do
    out=$("run_$what" 2>"$tmp/err") || { cat "$tmp/err" >&2; die "warm-up run of $what failed"; }
    [[ "$out" == 1 ]] || { cat "$tmp/err" >&2; die "warm-up run of $what printed '$out', not 1"; }
    [[ "$what" == bare ]] || settle "$what"
done
if $pool; then
    read -r new_hits0 new_misses0 < <(pool_field new hits misses)
    read -r old_hits0 old_misses0 < <(pool_field old hits misses)
fi

declare -A samples=()
# The two builds take turns going first: a sample that follows the other build's run
# meets the tail of its teardown (and, with --pool, of its refill).
for ((i = 0; i < n; i++)); do
    order=(bare new old)
    if ((i % 2)); then order=(bare old new); fi
    for what in "${order[@]}"; do
        stamp; t0=$now
        "run_$what" >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; die "$what run $i failed"; }
        stamp; samples[$what]+="$((now - t0)) "
        [[ "$what" == bare ]] || settle "$what"
    done
done

series_percentiles "${whats[@]}"

table_width=40
if $pool; then kind=warm; else kind=cold; fi
echo "$kind exec -c 'print(1)', this build against $old, $n interleaved runs each, python $python"
print_table_row "" "p50 ms" "p90 ms"
print_table_row "bare: python -E -B -c 'print(1)'" "${p50[bare]}" "${p90[bare]}"
print_table_row "this build: codejail-client exec" "${p50[new]}" "${p90[new]}"
print_table_row "earlier build: codejail-client exec" "${p50[old]}" "${p90[old]}"
awk -v nw="${p50[new]}" -v od="${p50[old]}" -v b="${p50[bare]}" 'BEGIN {
    if (b > 0) printf "this build / bare %.2f; earlier build / bare %.2f\n", nw / b, od / b
    if (od > 0) printf "this build / earlier build (p50): %.3f (%+.1f %%)\n", nw / od, (nw / od - 1) * 100
}'
if $pool; then
    read -r new_hits new_misses < <(pool_field new hits misses)
    read -r old_hits old_misses < <(pool_field old hits misses)
    echo "warm pool hits/misses over the samples: this build $((new_hits - new_hits0))/$((new_misses - new_misses0)), earlier build $((old_hits - old_hits0))/$((old_misses - old_misses0))"
fi
