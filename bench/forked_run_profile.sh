#!/usr/bin/env bash
# Where a forked run's CPU goes: a fork-server broker (dev shape, or production with
# BENCH_SHAPE=production; pool of 2, $PREIMPORT preimported, default "json numpy")
# serves jail_code('print(1)') back to back from the Python package for SECONDS
# (default 5) while `perf record -a -g` samples the whole machine; the samples are
# split by process (the run's init and program, the zygote, the broker, the
# caller) and by kind of work (copy-on-write faults, exit, fork, unshare, seccomp,
# mounts, the rest) into CPU per run (bench/forked_run_profile.py). Needs perf (Debian:
# linux-perf) and root; run on an idle machine.
#
# Usage: bench/forked_run_profile.sh [--python PATH] [--broker PATH] [SECONDS]
#
# Build first: cargo build --release --bins --lib

set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init forked_run_profile
seconds=5
if [[ ${*: -1} =~ ^[0-9]+$ ]]; then
    seconds=${*: -1}
    set -- "${@:1:$#-1}"
fi
parse_bench_args "$@"
[[ $(id -u) == 0 ]] || die "perf record -a needs root"
command -v perf >/dev/null || die "perf is missing (apt-get install linux-perf)"
python="${python:-/var/tmp/codejail-sandbox-venv-lean/bin/python}"
[[ -x "$python" ]] || die "python '$python' is not executable (scripts/setup-sandbox-venv.sh --lean)"
[[ -x "$broker" ]] || die "broker '$broker' not found; build it (see --help) or pass --broker"
install_package

make_tmpdir
start_named_broker forked "$broker" --pool-size 2 --fork-server "${preimports[@]}"
sleep 2
zygote=$(sed -n 's/.*zygote started.* zygote=\([0-9]*\).*/\1/p' "$tmp/forked.log" | tail -1)
[[ -n $zygote ]] || broker_fail forked "no zygote started"

profile=$root/bench/forked_run_profile.py
perf record -a -g -q -o "$tmp/perf.data" -- sleep $((seconds + 1)) >/dev/null 2>&1 &
perf_pid=$!
sleep 0.5
"$venv/bin/python" "$profile" loop "${bsock[forked]}" "$python" "$seconds" >"$tmp/runs" &
caller=$!
wait "$caller" || broker_fail forked "the loop failed"
wait "$perf_pid" || die "perf record failed"
perf script -i "$tmp/perf.data" -F comm,pid,ip,sym,dso >"$tmp/perf.txt" 2>/dev/null
echo "forked run profile: ${BENCH_SHAPE:-dev} shape, preimport ${PREIMPORT-json numpy}, $seconds s"
/usr/bin/python3 "$profile" split "$tmp/perf.txt" "$(cat "$tmp/runs")" "$zygote" "${bpid[forked]}" "$caller"
