# shellcheck shell=bash
# Shared plumbing for the latency benchmarks in bench/ (exec_latency.sh,
# safe_exec_latency.sh). Sourced, not run, after `set -euo pipefail`:
#
#   bench_init NAME                  defaults for the options; NAME prefixes messages
#   parse_bench_args "$@"            --socket --python -n --client --broker --help
#   ...pick and check $python (each script has its own default)...
#   require_client                   $client must be executable
#   make_tmpdir                      $tmp; on exit the dev broker is stopped, $tmp removed
#   start_dev_broker_unless_socket   no --socket: a dev broker on $tmp/broker.sock
#   start_named_broker NAME BROKER [ARG...]   a dev broker on ${bsock[NAME]} (several at once)
#   install_package                  the Python package into $venv (CODEJAIL_BENCH_VENV)
#   "${preimports[@]}"               --preimport for each of $PREIMPORT (default json numpy)
#   stop_named_broker NAME           stop one of them (make_tmpdir's trap stops the rest)
#   pool_field NAME FIELD...         NAME's python pool's fields from `status --json`
#   wait_pool_full NAME SECONDS      poll until NAME's python pool is full
#   stamp; t0=$now ... stamp         microsecond timer, result in $now
#   percentiles SAMPLE...            "p50 p90" in ms of microsecond samples
#   series_percentiles WHAT...       p50[WHAT] p90[WHAT] from the samples in ${samples[WHAT]}
#   print_table_header TITLE WIDTH   the title line and the column heads
#   print_table_row LABEL P50 P90    one row, label column WIDTH wide
#   print_ratio LABEL WHO P50 BARE_P50
#
# Globals set here for the scripts: root release n socket python client broker (the
# options), tmp broker_pid (make_tmpdir, start_dev_broker_unless_socket), now (stamp).
# The --help text is the calling script's header comment (line 2 to the first blank line).

# start_broker: the one way scripts start a broker and wait for its socket.
# shellcheck source=scripts/lib/broker.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/broker.sh"

# Options and their defaults; NAME ($1) is used in messages and the temp dir's name.
bench_init() {
    bench_name=$1
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    release="${CARGO_TARGET_DIR:-$root/target}/release"

    n="${N:-50}"
    socket="${CODEJAIL_SOCKET:-}"
    python="${CODEJAIL_PYTHON:-}"
    client="$release/codejail-client"
    broker="$release/codejail-broker"
}

die() { echo "$bench_name: $*" >&2; exit 1; }

# The options common to both benchmarks (all they take), then a check of -n.
parse_bench_args() {
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
}

require_client() {
    [[ -x "$client" ]] || die "client '$client' not found; build it (see --help) or pass --client"
}

# A temp dir in $tmp, and traps that stop the dev broker (if started) and remove it.
make_tmpdir() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/$bench_name.XXXXXX")
    broker_pid=""
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

# install_package: the Python package (pip install ./python, this checkout's) into
# the venv $CODEJAIL_BENCH_VENV (default /var/tmp/codejail-python-test-venv,
# scripts/python-tests.sh's; made if missing), whose interpreter is then $venv/bin/python.
install_package() {
    venv=${CODEJAIL_BENCH_VENV:-/var/tmp/codejail-python-test-venv}
    [[ -x "$venv/bin/python" ]] || /usr/bin/python3 -m venv "$venv"
    PYO3_PYTHON=$venv/bin/python "$venv/bin/python" -m pip install --quiet \
        --disable-pip-version-check --force-reinstall --no-deps "$root/python" >&2
}

# The pools' preimports, as broker arguments: $PREIMPORT (default "json numpy", what a
# course's code usually imports; the interpreter must have them).
preimports=()
for module in ${PREIMPORT-json numpy}; do preimports+=(--preimport "$module"); done

# The brokers start_named_broker started, by name: pid and socket.
declare -A bpid=() bsock=()

# The v1 cgroup parents made for production-shape brokers (removed at exit).
cgroup_parents=()

cleanup() {
    local pid dir
    for pid in "$broker_pid" "${bpid[@]}"; do
        [[ -z "$pid" ]] || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "$broker_pid" "${bpid[@]}"; do
        [[ -z "$pid" ]] || wait "$pid" 2>/dev/null || true
    done
    for dir in "${cgroup_parents[@]+"${cgroup_parents[@]}"}"; do
        rmdir "$dir" 2>/dev/null || true
    done
    rm -rf "$tmp"
}

# Without --socket: start `codejail-broker --dev` on $tmp/broker.sock (log in
# $tmp/broker.log), set $socket and $broker_pid, and wait up to 10 s for the socket.
start_dev_broker_unless_socket() {
    [[ -z "$socket" ]] || return 0
    [[ -x "$broker" ]] || die "broker '$broker' not found; build it (see --help), pass --broker or --socket"
    socket="$tmp/broker.sock"
    BROKER_START_SECS=10 start_broker "$tmp/broker.log" "$socket" "$broker" --dev \
        --python "$python" || die "the dev broker did not start"
    broker_pid=$started_broker_pid
}

# broker_fail NAME MESSAGE: the named broker's log on stderr, then die.
broker_fail() {
    echo "--- $1 broker log ($tmp/$1.log) ---" >&2
    cat "$tmp/$1.log" >&2 || true
    die "$1 broker: $2"
}

# start_named_broker NAME BROKER [ARG...]: `BROKER --dev` on $tmp/NAME.sock with the
# given extra arguments (log in $tmp/NAME.log), into ${bpid[NAME]} and ${bsock[NAME]};
# waits up to 10 s for the socket. Run by root, the broker runs as uid
# $BENCH_BROKER_UID (default 4321), as the tests' do (root is exempt from NPROC, and a
# fork server needs the runs to have the broker's own ids), and lets root connect.
#
# BENCH_SHAPE=production (root only): as production runs it instead: the broker keeps
# CAP_SETUID and CAP_SETGID, each run gets its own uid from $BENCH_RUN_IDS (default
# 1900000000:64, FIRST:COUNT, one range per broker above it) and its own v1 memory and
# pids cgroups, below parents made for the broker and removed at exit.
start_named_broker() {
    local name=$1 bin=$2; shift 2
    local sock="$tmp/$name.sock" as=() shape=()
    local uid=${BENCH_BROKER_UID:-4321}
    [[ $(id -u) != 0 ]] || as=(--as "$uid")
    if [[ ${BENCH_SHAPE:-dev} == production ]]; then
        [[ $(id -u) == 0 ]] || die "BENCH_SHAPE=production needs root"
        local ids=${BENCH_RUN_IDS:-1900000000:64} memory pids
        local first=$((${ids%%:*} + ${#bpid[@]} * ${ids##*:}))
        memory=/sys/fs/cgroup/memory/codejail-bench-$name-$$
        pids=/sys/fs/cgroup/pids/codejail-bench-$name-$$
        mkdir "$memory" "$pids" || die "cannot make v1 cgroup parents (memory, pids)"
        cgroup_parents+=("$memory" "$pids")
        chown -R "$uid:$uid" "$memory" "$pids"
        as+=(--setid-caps)
        shape=(--run-ids "$first:${ids##*:}" --cgroup-v1 "$memory,$pids" --require-cgroups)
    fi
    BROKER_START_SECS=10 start_broker "${as[@]+"${as[@]}"}" "$tmp/$name.log" "$sock" "$bin" --dev \
        --python "$python" --allow-uid 0 "${shape[@]+"${shape[@]}"}" "$@" ||
        die "$name broker: did not start"
    bpid[$name]=$started_broker_pid
    bsock[$name]=$sock
}

# stop_named_broker NAME
stop_named_broker() {
    kill -TERM "${bpid[$1]}" 2>/dev/null || true
    wait "${bpid[$1]}" 2>/dev/null || true
    unset "bpid[$1]"
}

# pool_field NAME FIELD...: the python pool's fields from NAME's `status --json`,
# space-separated (null as "null"). Fails when there is no python pool.
pool_field() {
    local name=$1; shift
    "$client" --socket "${bsock[$name]}" status --json 2>"$tmp/status.err" |
        "$(command -v python3 || echo "$python")" -c '
import json, sys
pool = json.load(sys.stdin)["pool"]["python"]
print(" ".join("null" if pool[f] is None else str(pool[f]) for f in sys.argv[1:]))
' "$@"
}

# wait_pool_full NAME SECONDS: poll NAME's status until its python pool is full.
wait_pool_full() {
    local name=$1 ready size
    for _ in $(seq $(($2 * 100))); do
        read -r ready size < <(pool_field "$name" ready size) ||
            { cat "$tmp/status.err" >&2; broker_fail "$name" "status --json failed or has no python pool"; }
        ((ready == size)) && return 0
        kill -0 "${bpid[$name]}" 2>/dev/null || broker_fail "$name" "exited while filling its pool"
        sleep 0.01
    done
    broker_fail "$name" "pool not full after $2 s ($ready of $size ready)"
}

# The dev broker's log on stderr, if this script started one (for failure messages).
show_broker_log() {
    if [[ -n "$broker_pid" ]]; then cat "$tmp/broker.log" >&2; fi
}

# Microsecond timestamps into $now: bash's $EPOCHREALTIME costs no fork; `date` is the
# fallback.
# shellcheck disable=SC2034  # $now is read by the scripts
if [[ -n "${EPOCHREALTIME:-}" ]]; then
    stamp() { now=${EPOCHREALTIME//[.,]/}; }
else
    stamp() { now=$(( $(date +%s%N) / 1000 )); }
fi

# p50 and p90 (nearest rank) of microsecond samples (one per argument), printed in ms
# as "P50 P90".
percentiles() {
    printf '%s\n' "$@" | sort -n | awk '
        { v[NR] = $1 }
        END {
            i50 = int((NR * 50 + 99) / 100); i90 = int((NR * 90 + 99) / 100)
            printf "%.2f %.2f\n", v[i50] / 1000, v[i90] / 1000
        }'
}

# series_percentiles WHAT...: for each WHAT, its p50 and p90 (ms) from the space-separated
# microsecond samples in ${samples[WHAT]}, into the global arrays p50 and p90.
# shellcheck disable=SC2034,SC2154  # p50 and p90 are read, samples written, by the scripts
series_percentiles() {
    declare -gA p50=() p90=()
    local what us
    for what in "$@"; do
        read -ra us <<<"${samples[$what]}"
        read -r "p50[$what]" "p90[$what]" < <(percentiles "${us[@]}")
    done
}

# "TITLE: N runs each, python P, socket S", then the column heads over a label column
# WIDTH wide (which print_table_row keeps).
print_table_header() {
    table_width=$2
    echo "$1: $n runs each, python $python, socket $socket"
    print_table_row "" "p50 ms" "p90 ms"
}

print_table_row() {
    printf '%-*s %10s %10s\n' "$table_width" "$1" "$2" "$3"
}

# "LABEL (WHO / bare python): P50/BARE_P50", or n/a when BARE_P50 is 0.
print_ratio() {
    awk -v l="$1" -v w="$2" -v c="$3" -v p="$4" 'BEGIN {
        if (p > 0) printf "%s (%s / bare python): %.2f\n", l, w, c / p
        else printf "%s: n/a (bare python p50 is 0)\n", l
    }'
}
