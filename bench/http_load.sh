#!/usr/bin/env bash
# Load test of codejail-http: N requests at once (default 1000) to one front on a
# loopback port, in front of one dev broker; then the same N runs through the CLI
# (`codejail-client safe-exec`, CLI_CONC at once: N processes at once would measure
# process start-up on a small machine, not the broker), and through HTTP again at that
# concurrency, for a like-for-like row. Each request has a timeout
# (TIMEOUT s, default 60): every one must be answered 200 (the right globals) or 503
# busy with Retry-After; none lost (no answer), none hung. Prints p50/p99 latency of
# the answered requests and requests/s of each batch side by side; exits 1 if any
# request was lost or answered anything else.
#
# Usage: bench/http_load.sh [-n N] [--cli-conc C] [--timeout S] [--bin-dir DIR]
#                           [--python PATH]
#   --bin-dir  codejail-broker, codejail-jail, codejail-client, codejail-http
#              (default: target/release under $CARGO_TARGET_DIR or the repository's)
#   --python   the broker's interpreter (default: the sandbox venv,
#              /var/tmp/codejail-sandbox-venv-lean/bin/python)
#   Broker: --max-running $MAX_RUNNING (default 2) --max-queue $MAX_QUEUE (default 32),
#   then $BROKER_ARGS (split on spaces; e.g. "--fork-server --pool-size 2 --preimport
#   json"); front: max_in_flight $MAX_IN_FLIGHT (default 64), queue_wait_secs 0.5.
#
# Build first: cargo build --release --bins
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/broker.sh
source "$root/scripts/lib/broker.sh"
die() { echo "http_load: $*" >&2; exit 2; }
n=1000 cli_conc=64 timeout=60
bins="${CARGO_TARGET_DIR:-$root/target}/release"
python=/var/tmp/codejail-sandbox-venv-lean/bin/python
while (($#)); do
    case $1 in
        -n) n=${2:?}; shift 2 ;;
        --cli-conc) cli_conc=${2:?}; shift 2 ;;
        --timeout) timeout=${2:?}; shift 2 ;;
        --bin-dir) bins=${2:?}; shift 2 ;;
        --python) python=${2:?}; shift 2 ;;
        -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ "$n" =~ ^[1-9][0-9]*$ ]] || die "-n must be a positive integer"
for b in codejail-broker codejail-jail codejail-client codejail-http; do
    [[ -x "$bins/$b" ]] || die "$bins/$b missing: cargo build --release --bins (or --bin-dir)"
done
[[ -x "$python" ]] || die "no interpreter $python (scripts/setup-sandbox-venv.sh --lean)"

# Many sockets at once: the load generator and the front each need > N descriptors.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"

tmp=$(mktemp -d /var/tmp/codejail-http-load.XXXXXX)
chmod 755 "$tmp"
broker_pid='' http_pid=''
cleanup() {
    local p
    for p in $http_pid $broker_pid; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $http_pid $broker_pid; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# The dev broker; as root, as an unprivileged uid (it never runs programs as root).
mkdir "$tmp/broker"
socket=$tmp/broker/broker.sock
read -ra broker_args <<<"${BROKER_ARGS:-}"
start_broker --as "${BENCH_BROKER_UID:-199971}" "$tmp/broker.log" "$socket" \
    "$bins/codejail-broker" --dev --python "$python" --allow-uid "$(id -u)" \
    --max-running "${MAX_RUNNING:-2}" --max-queue "${MAX_QUEUE:-32}" \
    "${broker_args[@]+"${broker_args[@]}"}" || die "the broker did not start"
broker_pid=$started_broker_pid

cat >"$tmp/http.toml" <<TOML
listen = "127.0.0.1:0"
broker_socket = "$socket"
max_in_flight = ${MAX_IN_FLIGHT:-64}
queue_wait_secs = 0.5
TOML
NO_COLOR=1 RUST_LOG=warn,codejail_http=info "$bins/codejail-http" --config "$tmp/http.toml" \
    >"$tmp/http.log" 2>&1 &
http_pid=$!
addr=
for _ in $(seq 200); do
    addr=$(sed -n 's/.*codejail-http listening listen=\([0-9.:]*\).*/\1/p' "$tmp/http.log" | head -1)
    [[ -n $addr ]] && break
    sleep 0.1
done
[[ $addr == 127.* ]] || { cat "$tmp/http.log" >&2; die "codejail-http did not listen on loopback"; }
for _ in $(seq 300); do
    /usr/bin/python3 -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://$addr/health/').status != 200)" \
        2>/dev/null && break
    sleep 0.2
done
/usr/bin/python3 -c "import urllib.request; urllib.request.urlopen('http://$addr/health/')" \
    || { cat "$tmp/http.log" >&2; die "codejail-http not ready"; }

echo "http_load: $n requests; broker max_running ${MAX_RUNNING:-2} max_queue ${MAX_QUEUE:-32} ${BROKER_ARGS:-}; front max_in_flight ${MAX_IN_FLIGHT:-64}" >&2
http=$(/usr/bin/python3 "$root/bench/http_load.py" http "$addr" "$n" "$timeout")
http_c=$(/usr/bin/python3 "$root/bench/http_load.py" http "$addr" "$n" "$timeout" "$cli_conc")
cli=$(/usr/bin/python3 "$root/bench/http_load.py" cli "$bins/codejail-client" "$socket" "$n" "$cli_conc" "$timeout")
metrics=$(/usr/bin/python3 -c "import urllib.request; print(urllib.request.urlopen('http://$addr/metrics').read().decode())" |
    grep -E '^codejail_http_(requests_total|busy_rejections_total)' || true)

/usr/bin/python3 - "$http" "$cli" "$http_c" <<'PY'
import json, sys
h, c, hc = (json.loads(a) for a in sys.argv[1:4])
print(f"{'':28} {'answered':>22} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'wall s':>7}")
for label, r in ((f"HTTP, {h['concurrency']} at once", h), (f"HTTP, {hc['concurrency']} at once", hc),
                 (f"CLI, {c['concurrency']} at once", c)):
    counts = ", ".join(f"{v} {k}" for k, v in sorted(r["counts"].items()))
    print(f"{label:28} {counts:>22} {r['p50_ms']!s:>8} {r['p99_ms']!s:>8} {r['req_per_s']:>8} {r['wall_s']:>7}")
bad = {k: v for r in (h, hc) for k, v in r["counts"].items() if k not in ("200", "503-busy")}
bad.update({k: v for k, v in c["counts"].items() if k not in ("ok", "busy")})
if bad:
    sys.exit(f"http_load: lost or wrong answers: {bad}")
if any(sum(r["counts"].values()) != r["n"] for r in (h, hc, c)):
    sys.exit("http_load: some requests have no result")
PY
echo "front's counters after all HTTP batches:"
echo "$metrics"
