#!/usr/bin/env bash
# Run openedx/codejail-service's own api_tests/ against codejail-http on a dev broker
# (docs/http.md). CI cannot fetch the checkout: pass its path.
#
#   scripts/run-codejail-service-api-tests.sh PATH-TO-CODEJAIL-SERVICE-CHECKOUT [PYTEST-ARGS...]
#
# Starts `codejail-broker --dev` (plus $CODEJAIL_BROKER_ARGS, e.g. "--pool-size 2
# --preimport numpy" for a warm pool) with a typical deployment's limits (CPU 3, REALTIME 3,
# VMEM 512 MiB, FSIZE 10 MiB, NPROC 15) on a temporary socket, and a codejail-http on
# an ephemeral loopback port in front of it; waits until /health/ is 200 (its safety
# checks passed); runs pytest on CHECKOUT/api_tests with API_TEST_SERVICE_BASE pointing
# at it (pytest, requests and ddt in a virtualenv this script creates); prints the
# counts; stops both. Exit status: pytest's.
#
# Nothing here contacts an outside address: pytest only talks to 127.0.0.1, and the
# api_tests' network tests (example.org, example.com) run inside the jail, which has
# no network at all. As root, the broker runs as an unprivileged uid (it never runs
# programs as root). The sandbox interpreter is scripts/setup-sandbox-venv.sh's default,
# the edx-platform profile (requirements/sandbox-edx-platform.txt: what edx-platform's
# problems import; the api_tests import numpy, networkx and matplotlib), as a deployment
# behind codejail-http has it.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/broker.sh
source "$repo/scripts/lib/broker.sh"
log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'run-codejail-service-api-tests: error: %s\n' "$*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: $0 PATH-TO-CODEJAIL-SERVICE-CHECKOUT [PYTEST-ARGS...]"
checkout=$(cd "$1" && pwd) || die "no such directory: $1"
shift
[ -f "$checkout/api_tests/utils.py" ] || die "$checkout has no api_tests/ (a codejail-service checkout?)"

if ! command -v cargo >/dev/null && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH=${HOME:-/root}/.cargo/bin:$PATH
fi

# 1. Binaries and interpreters.
log "cargo build --bins --lib"
cargo build --quiet --bins --lib --manifest-path "$repo/Cargo.toml"
target=${CARGO_TARGET_DIR:-$repo/target}/debug
sandbox_python=$("$repo/scripts/setup-sandbox-venv.sh")
venv=${CODEJAIL_API_TESTS_VENV:-/var/tmp/codejail-api-tests-venv}
reqs=(pytest==8.3.4 requests==2.32.3 ddt==1.7.2)
if ! "$venv/bin/python" -c 'import pytest, requests, ddt' 2>/dev/null; then
    log "test virtualenv $venv (${reqs[*]})"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${reqs[@]}"
fi

# 2. A work directory the broker's uid can reach (not /tmp: a jail mounts over it).
work=$(mktemp -d /var/tmp/codejail-api-tests.XXXXXX)
chmod 755 "$work"
broker_pid='' http_pid=''
# shellcheck disable=SC2317  # run by the EXIT trap (shellcheck 0.9 misses it)
cleanup() {
    local pid
    for pid in $http_pid $broker_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $http_pid $broker_pid; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

mkdir "$work/broker"
socket=$work/broker/broker.sock

# 3. The broker, with a typical deployment's limits; as root, as an unprivileged uid.
#    $CODEJAIL_BROKER_ARGS: more broker arguments, split on blanks.
read -ra extra_args <<<"${CODEJAIL_BROKER_ARGS:-}"
log "codejail-broker --dev (CPU 3, REALTIME 3, VMEM 512 MiB, FSIZE 10 MiB, NPROC 15)"
start_broker --as "${CODEJAIL_API_TESTS_BROKER_UID:-199970}" "$work/broker.log" "$socket" \
    "$target/codejail-broker" --dev --python "$sandbox_python" --allow-uid "$(id -u)" \
    --default CPU=3 --default REALTIME=3 --default VMEM=536870912 \
    --default FSIZE=10485760 --default NPROC=15 --max-running 2 --max-queue 16 \
    "${extra_args[@]+"${extra_args[@]}"}" || die "the broker did not start"
broker_pid=$started_broker_pid

# 4. The front, on an ephemeral loopback port; its deadline follows the broker's
#    REALTIME (3), which it reads from the broker.
cat >"$work/http.toml" <<TOML
listen = "127.0.0.1:0"
broker_socket = "$socket"
queue_wait_secs = 5.0
TOML
NO_COLOR=1 "$target/codejail-http" --config "$work/http.toml" >"$work/http.log" 2>&1 &
http_pid=$!
addr=
for _ in $(seq 200); do
    addr=$(sed -n 's/.*codejail-http listening listen=\([0-9.:]*\).*/\1/p' "$work/http.log" | head -1)
    [ -n "$addr" ] && break
    kill -0 "$http_pid" 2>/dev/null || { cat "$work/http.log" >&2; die "codejail-http exited"; }
    sleep 0.1
done
[ -n "$addr" ] || die "codejail-http did not listen"
case $addr in 127.*) ;; *) die "codejail-http listens on $addr, not loopback" ;; esac
base=http://$addr
log "codejail-http on $base; waiting for /health/ (its safety checks)"
if ! "$venv/bin/python" - "$base" <<'PY'
import sys, time, urllib.request
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(sys.argv[1] + "/health/", timeout=5) as r:
            if r.status == 200:
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.25)
sys.exit(1)
PY
then
    cat "$work/http.log" >&2
    die "codejail-http did not become ready (see its log above)"
fi

# 5. The api_tests. No proxy may be used for the loopback address.
log "pytest $checkout/api_tests"
set +e
(cd "$checkout" && env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY \
    NO_PROXY='*' no_proxy='*' API_TEST_SERVICE_BASE="$base" \
    "$venv/bin/python" -m pytest -p no:cacheprovider -o addopts= -q -rfE \
    --junitxml="$work/junit.xml" "$@" api_tests)
rc=$?
set -e
"$venv/bin/python" - "$work/junit.xml" <<'PY' || true
import sys, xml.etree.ElementTree as ET
s = ET.parse(sys.argv[1]).getroot()
s = s if s.tag == "testsuite" else s.find("testsuite")
total, failed, errors, skipped = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
print(f"codejail-service api_tests against codejail-http: {total - failed - errors - skipped} passed, "
      f"{failed} failed, {errors} errors, {skipped} skipped (of {total})")
PY
# With a warm pool: how many of the runs it served.
print_pool_counts "$target/codejail-client" "$socket" "$venv/bin/python"
if [ "$rc" != 0 ]; then
    log "codejail-http log tail:"; tail -n 20 "$work/http.log" >&2
fi
exit "$rc"
