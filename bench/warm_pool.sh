#!/usr/bin/env bash
# What the warm pool buys: jailed runs served by a pre-started jail against cold
# jailed runs and a bare interpreter start.
#
# Starts dev brokers on temporary sockets, up for the whole run: a cold one (no pool)
# and three warm ones, each with a pool configured for the code it serves: lean
# (`--pool-size 2`), json (`--pool-size 2 --preimport json`: safe_exec's wrapper imports
# json) and numpy (`--pool-size 2 --preimport numpy`). Then, in one run with
# the series interleaved (each iteration takes one sample of every series in turn, so
# machine noise hits all alike; one untimed warm-up of each first, which also checks
# the output), prints p50 and p90 in ms of:
#   PYTHON -E -B -c 'print(1)'                              bare
#   codejail-client exec -c 'print(1)'                      cold, warm
#   codejail-client safe-exec -c 'x = 1 + 1'                cold, warm
#   PYTHON -E -B -c 'import numpy; x = int(numpy.arange(10).sum())'   bare
#   codejail-client safe-exec -c 'import numpy; x = ...'    cold, warm
# and the ratios of the p50s to the bare start doing the same work (for 'x = 1 + 1'
# that is the bare 'print(1)': both are an empty interpreter start). The bare
# interpreter gets the environment the broker gives its python command
# (OPENBLAS_NUM_THREADS=1 ...). The client times include the client's own process
# start. The warm pool's hits and misses over the run (from `status --json`) are
# printed too: every warm sample should be a hit, or it was not a warm sample. A pool
# refills once a warm run is over; after each warm sample the benchmark waits, untimed,
# until every pool is full again, so that no refill (numpy's takes ~100 ms of CPU)
# overlaps the samples that follow (--no-settle: it does, as under load).
#
# The warm 'print(1)' runs on a pool without preimport (lean), the warm 'x = 1 + 1'
# safe-exec on one with json preimported (what the safe_exec wrapper imports before the
# code runs), the warm numpy code on one with numpy preimported: a pool is configured
# for the code it serves (an interpreter with numpy loaded spends ~10 ms more at exit).
#
# Then the floors under any warm run, measured the same way: `/bin/true` (what any
# process start costs here), `codejail-client status` (the client's process start,
# connection and handshake, no run), and a warm
# interpreter outside any jail (the sandbox venv's hook on a socketpair, released with
# no files and no limits): the time from "go" to its exit, which is CPython's own
# remaining start-up, the script and its finalization.
#
# Then sustained throughput with 2 concurrent callers: M runs in all, 2 parallel loops
# of M/2 sequential runs each, of a bare 'print(1)' spawn, a cold exec, and a warm
# exec on each pool (every refill of the numpy pool imports numpy again), in runs/s,
# with the pools' hits and misses. Last, the idle RSS of one warm jail with numpy preimported
# (the numpy broker's) and without (a short-lived dev broker with `--pool-size 1`).
#
# Usage: bench/warm_pool.sh [--python PATH] [-n N] [-m M] [--no-settle]
#                           [--client PATH] [--broker PATH]
#   --python  the brokers' interpreter, which must have numpy and the warm hook
#             (default: $CODEJAIL_PYTHON, else the sandbox venv of
#             scripts/setup-sandbox-venv.sh --lean,
#             /var/tmp/codejail-sandbox-venv-lean/bin/python).
#   -n        samples of each latency series (default: $N, else 50).
#   -m        runs of each throughput series, split over the 2 callers (default: $M,
#             else 200).
#   --no-settle  do not wait for the pools to refill after each warm latency sample.
#   --client/--broker  binaries (default: target/release/… under $CARGO_TARGET_DIR
#             or the repository's target/; codejail-jail must be next to the broker).
# The brokers are always started here (no --socket): the benchmark needs one with a
# pool and one without. Run as root, they run as root too: fine for a benchmark (they
# never run programs as root).
#
# Build first: cargo build --release -p codejail-client -p codejail-broker -p codejail-jail

set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init warm_pool
m="${M:-200}"
settle=true
socket=""   # $CODEJAIL_SOCKET is not used: the brokers are started here
args=()
while (($#)); do
    case "$1" in
        -m) m="${2:?-m needs a number}"; shift 2 ;;
        --no-settle) settle=false; shift ;;
        --socket) die "--socket is not supported: this benchmark starts its own brokers (see --help)" ;;
        *) args+=("$1"); shift ;;
    esac
done
parse_bench_args "${args[@]+"${args[@]}"}"
if ! [[ "$m" =~ ^[1-9][0-9]*$ ]] || ((m < 2)); then die "-m must be an integer >= 2, not '$m'"; fi

python="${python:-/var/tmp/codejail-sandbox-venv-lean/bin/python}"
[[ -x "$python" ]] || die "python '$python' is not executable (build the venv with scripts/setup-sandbox-venv.sh --lean or pass --python)"
"$python" -E -B -c 'import numpy' 2>/dev/null || die "python '$python' cannot import numpy; pass one that can"
require_client
[[ -x "$broker" ]] || die "broker '$broker' not found; build it (see --help) or pass --broker"
[[ -x "$(dirname "$broker")/codejail-jail" ]] || die "no codejail-jail next to the broker '$broker'; build it (see --help)"
json_python=$(command -v python3 || echo "$python")

make_tmpdir

# start_bench_broker NAME [BROKER-ARG...]: `codejail-broker --dev` on $tmp/NAME.sock with the
# given extra arguments (log in $tmp/NAME.log), waiting up to 10 s for the socket and,
# with a pool, up to 60 s more until the pool is full.
start_bench_broker() {
    local name=$1; shift
    start_named_broker "$name" "$broker" "$@"
    [[ " $* " != *" --pool-size "* ]] || wait_pool_full "$name" 60
}

start_bench_broker cold
start_bench_broker lean --pool-size 2
start_bench_broker json --pool-size 2 --preimport json
start_bench_broker warm --pool-size 2 --preimport numpy

trivial='x = 1 + 1'
numpy='import numpy; x = int(numpy.arange(10).sum())'

# The broker's python environment (broker/src/config/commands.rs), without an extra exec.
bare() {
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 LC_ALL=C.UTF-8 \
        "$python" -E -B -c "$1"
}
jailed() { local name=$1; shift; "$client" --socket "${bsock[$name]}" "$@"; }

run_bare_print() { bare 'print(1)'; }
run_cold_exec() { jailed cold exec -c 'print(1)'; }
run_warm_exec() { jailed lean exec -c 'print(1)'; }
run_cold_safe() { jailed cold safe-exec -c "$trivial"; }
run_warm_safe() { jailed json safe-exec -c "$trivial"; }
run_bare_numpy() { bare "$numpy"; }
run_cold_numpy() { jailed cold safe-exec -c "$numpy"; }
run_warm_numpy() { jailed warm safe-exec -c "$numpy"; }
run_floor_client() { jailed cold status >/dev/null; }
run_floor_spawn() { /bin/true; }

whats=(bare_print cold_exec warm_exec cold_safe warm_safe bare_numpy cold_numpy warm_numpy floor_spawn floor_client)
declare -A expected=(
    [bare_print]=1 [cold_exec]=1 [warm_exec]=1
    [cold_safe]='{"x": 2}' [warm_safe]='{"x": 2}'
    [bare_numpy]='' [cold_numpy]='{"x": 45}' [warm_numpy]='{"x": 45}'
    [floor_spawn]='' [floor_client]=''
)
declare -A label=(
    [bare_print]="bare: python -E -B -c 'print(1)'"
    [cold_exec]="cold: exec -c 'print(1)'"
    [warm_exec]="warm (no preimport): exec -c 'print(1)'"
    [cold_safe]="cold: safe-exec -c '$trivial'"
    [warm_safe]="warm (json): safe-exec -c '$trivial'"
    [bare_numpy]="bare: python -E -B -c 'import numpy; ...'"
    [cold_numpy]="cold: safe-exec -c 'import numpy; ...'"
    [warm_numpy]="warm (numpy): safe-exec -c 'import numpy; ...'"
    [floor_spawn]="floor: /bin/true (any process start)"
    [floor_client]="floor: codejail-client status"
)
# After a warm sample: wait (untimed) until the pools have refilled, so that no refill
# overlaps the samples that follow. With --no-settle the samples between two warm ones
# give the pools their time to refill (the hits and misses printed show whether they
# did).
settle() { if $settle; then wait_pool_full lean 10; wait_pool_full json 10; wait_pool_full warm 10; fi; }

# one WHAT I: run WHAT once into $tmp/out and $tmp/err; die on failure (I: the sample's
# index, or "warm-up", for the message).
one() {
    "run_$1" >"$tmp/out" 2>"$tmp/err" || {
        local rc=$?
        cat "$tmp/out" "$tmp/err" >&2
        die "$1 run $2 failed (exit $rc)"
    }
}

# pool_counts: hits and misses of the three pools, summed.
pool_counts() {
    local name h m hits=0 misses=0
    for name in lean json warm; do
        read -r h m < <(pool_field "$name" hits misses) || die "status of the $name broker failed"
        hits=$((hits + h))
        misses=$((misses + m))
    done
    echo "$hits $misses"
}
read -r hits0 misses0 < <(pool_counts)

# Warm-up (untimed), and a check of each output.
for what in "${whats[@]}"; do
    one "$what" warm-up
    if [[ "$(cat "$tmp/out")" != "${expected[$what]}" ]]; then
        cat "$tmp/out" "$tmp/err" >&2
        die "warm-up run of $what printed the above, not '${expected[$what]}'"
    fi
    [[ "$what" != warm_* ]] || settle
done

declare -A samples=()
for ((i = 0; i < n; i++)); do
    for what in "${whats[@]}"; do
        stamp; t0=$now
        one "$what" "$i"
        stamp; samples[$what]+="$((now - t0)) "
        [[ "$what" != warm_* ]] || settle
    done
done

read -r hits1 misses1 < <(pool_counts)
lat_hits=$((hits1 - hits0))
lat_misses=$((misses1 - misses0))

series_percentiles "${whats[@]}"

# ratio LABEL WHAT BARE [TARGET]: the ratio of WHAT's p50 to BARE's, and how it
# compares with the target (">= X" or "<= X"), if any.
ratio() {
    awk -v l="$1" -v c="$2" -v b="$3" -v t="${4:-}" 'BEGIN {
        if (b <= 0) { printf "  %-44s n/a (bare is 0)\n", l; exit }
        r = c / b; s = ""
        if (t != "") {
            split(t, a, " "); ok = (a[1] == "<=") ? (r <= a[2]) : (r >= a[2])
            s = sprintf("  (target %s: %s)", t, ok ? "met" : "NOT met")
        }
        printf "  %-44s %6.2f%s\n", l, r, s
    }'
}

# floor_interp N: p50 and p90 (ms) over N samples of a warm interpreter released
# outside any jail: $python started with the hook's fd 3 on a socketpair, told to import
# nothing, then timed from "go" to its exit (script: 'print(1)', stdout discarded).
floor_interp() {
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 LC_ALL=C.UTF-8 \
        "$json_python" - "$python" "$1" <<'PY'
import os, socket, subprocess, sys, time
python, n = sys.argv[1], int(sys.argv[2])
samples = []
for _ in range(n):
    ours, theirs = socket.socketpair()
    child = subprocess.Popen(
        [python, "-E", "-B", "-c", "print(1)"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        pass_fds=(3,), preexec_fn=lambda: os.dup2(theirs.fileno(), 3),
    )
    theirs.close()
    ours.sendall(b"codejail-warm 1\n")
    if ours.recv(64) != b"ready\n":
        sys.exit("the interpreter did not report ready: is the warm hook installed?")
    t0 = time.perf_counter()
    ours.sendall(b"go\0")
    ours.shutdown(socket.SHUT_WR)
    status = child.wait()
    samples.append((time.perf_counter() - t0) * 1000)
    ours.close()
    if status != 0:
        sys.exit(f"the released interpreter exited {status}")
samples.sort()
print("%.2f %.2f" % (samples[len(samples) // 2], samples[min(len(samples) - 1, len(samples) * 9 // 10)]))
PY
}
read -r floor_interp_p50 floor_interp_p90 < <(floor_interp "$n") || die "the warm interpreter floor could not be measured"

echo "warm pool: python $python; brokers: cold (no pool), lean (--pool-size 2), json (--pool-size 2 --preimport json), numpy (--pool-size 2 --preimport numpy)"
echo
table_width=46
echo "latency, $n interleaved samples each (ms):"
print_table_row "" "p50 ms" "p90 ms"
for what in "${whats[@]}"; do print_table_row "${label[$what]}" "${p50[$what]}" "${p90[$what]}"; done
print_table_row "floor: warm interpreter, no jail (go -> exit)" "$floor_interp_p50" "$floor_interp_p90"
echo "ratios of p50s:"
ratio "warm exec / bare" "${p50[warm_exec]}" "${p50[bare_print]}" "<= 0.3"
ratio "warm safe-exec / bare" "${p50[warm_safe]}" "${p50[bare_print]}"
ratio "warm numpy safe-exec / bare numpy" "${p50[warm_numpy]}" "${p50[bare_numpy]}" "<= 0.3"
ratio "cold exec / bare" "${p50[cold_exec]}" "${p50[bare_print]}" "<= 1.3"
ratio "cold safe-exec / bare" "${p50[cold_safe]}" "${p50[bare_print]}"
ratio "cold numpy safe-exec / bare numpy" "${p50[cold_numpy]}" "${p50[bare_numpy]}"
ratio "floor: client status / bare" "${p50[floor_client]}" "${p50[bare_print]}"
ratio "floor: warm interpreter, no jail / bare" "$floor_interp_p50" "${p50[bare_print]}"
sum() { awk -v a="$1" -v b="$2" 'BEGIN { print a + b }'; }
ratio "floor: /bin/true + warm interpreter / bare" "$(sum "${p50[floor_spawn]}" "$floor_interp_p50")" "${p50[bare_print]}"
ratio "floor: client status + warm interpreter / bare" "$(sum "${p50[floor_client]}" "$floor_interp_p50")" "${p50[bare_print]}"
ratio "floor of a cold run: client status + bare / bare" "$(sum "${p50[floor_client]}" "${p50[bare_print]}")" "${p50[bare_print]}"
warm_runs=$((3 * n + 3))
echo "warm pool over these runs ($warm_runs warm requests, warm-ups included): $lat_hits hits, $lat_misses misses"
if ((lat_misses > 0 || lat_hits != warm_runs)); then
    echo "  WARNING: not every warm request was a hit; the warm figures include cold runs"
fi

stop_named_broker json

# Sustained throughput: 2 callers, each $((m / 2)) or so sequential runs of WHAT.
# throughput WHAT: the runs/s into $rate.
throughput() {
    local what=$1 k pids=() c rc=0
    stamp; t0=$now
    for c in 0 1; do
        k=$(( c == 0 ? m / 2 : m - m / 2 ))
        (
            for ((j = 0; j < k; j++)); do
                "run_$what" >/dev/null 2>"$tmp/tput.$c.err" || { echo "run $j: exit $?" >>"$tmp/tput.$c.err"; exit 1; }
            done
        ) &
        pids+=($!)
    done
    for c in 0 1; do wait "${pids[$c]}" || rc=1; done
    stamp
    if ((rc != 0)); then
        cat "$tmp"/tput.*.err >&2
        die "a throughput run of $what failed"
    fi
    rate=$(awk -v m="$m" -v us="$((now - t0))" 'BEGIN { printf "%.1f", m * 1e6 / us }')
}

# The lean pool (what the pool itself sustains) and the numpy one (whose every refill
# imports numpy again).
wait_pool_full lean 10
wait_pool_full warm 10
run_lean_exec() { jailed lean exec -c 'print(1)'; }
run_npool_exec() { jailed warm exec -c 'print(1)'; }
declare -A tput=() tput_hits=() tput_misses=()
declare -A pool_of=([lean_exec]=lean [npool_exec]=warm)
for what in bare_print cold_exec npool_exec lean_exec; do
    broker_name=${pool_of[$what]:-}
    [[ -z "$broker_name" ]] ||
        { read -r hits0 misses0 < <(pool_field "$broker_name" hits misses) || die "status of the $broker_name broker failed"; }
    throughput "$what"
    tput[$what]=$rate
    if [[ -n "$broker_name" ]]; then
        # The next series starts on a quiet machine, not during this one's refills.
        wait_pool_full "$broker_name" 10
        read -r hits1 misses1 < <(pool_field "$broker_name" hits misses) || die "status of the $broker_name broker failed"
        tput_hits[$what]=$((hits1 - hits0))
        tput_misses[$what]=$((misses1 - misses0))
    fi
done
stop_named_broker lean

echo
echo "throughput, 2 concurrent callers, $m runs in all ('print(1)'), runs/s:"
printf '  %-44s %8s\n' "bare: python -E -B" "${tput[bare_print]}" "cold: exec" "${tput[cold_exec]}"
printf '  %-44s %8s   (%s hits, %s misses)\n' \
    "warm: exec (pool size 2, --preimport numpy)" "${tput[npool_exec]}" \
    "${tput_hits[npool_exec]}" "${tput_misses[npool_exec]}" \
    "warm: exec (pool size 2, no preimport)" "${tput[lean_exec]}" \
    "${tput_hits[lean_exec]}" "${tput_misses[lean_exec]}"
ratio "warm / bare (--preimport numpy)" "${tput[npool_exec]}" "${tput[bare_print]}" ">= 0.8"
ratio "warm / bare (no preimport)" "${tput[lean_exec]}" "${tput[bare_print]}" ">= 0.8"
ratio "cold / bare" "${tput[cold_exec]}" "${tput[bare_print]}"

# Idle footprint of one warm jail: with numpy (the warm broker's), and without (a
# short-lived broker with a pool of 1 and no preimport).
read -r rss_numpy mem_numpy < <(pool_field warm idle_rss_kib idle_memory_bytes) || die "status of the warm broker failed"
stop_named_broker warm
stop_named_broker cold
start_bench_broker plain --pool-size 1
read -r rss_plain mem_plain < <(pool_field plain idle_rss_kib idle_memory_bytes) || die "status of the plain broker failed"
stop_named_broker plain

mem() { if [[ "$1" == null ]]; then echo "n/a (no memory cgroup)"; else echo "$1 bytes"; fi; }
echo
echo "idle warm jail (status pool.python):"
printf '  %-44s %8s KiB RSS, cgroup memory %s\n' \
    "without preimport (--pool-size 1)" "$rss_plain" "$(mem "$mem_plain")" \
    "with --preimport numpy" "$rss_numpy" "$(mem "$mem_numpy")"
