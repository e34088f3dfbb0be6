#!/usr/bin/env bash
# Quickstart demo: build, start a dev broker on a temporary socket (it prints its
# confinement report), run programs through `codejail-client exec` (a normal one and one
# killed by a limit), print `codejail-client status`, stop the broker with SIGTERM.
# Exits 0 only if every step did what it should.
#
# The broker runs as the invoking user; it never runs programs as root (a dev broker
# started by root maps each run to an unprivileged uid). The interpreter is
# $CODEJAIL_DEMO_PYTHON, else /usr/bin/python3.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=scripts/lib/broker.sh
source scripts/lib/broker.sh

# rustup installs cargo in ~/.cargo/bin, which a non-login shell may not have on PATH.
if ! command -v cargo >/dev/null && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH=${HOME:-/root}/.cargo/bin:$PATH
fi

python=${CODEJAIL_DEMO_PYTHON:-/usr/bin/python3}
bin=$repo/target/release
failures=0

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; }
fail() { printf 'DEMO FAILED: %s\n' "$*" >&2; failures=$((failures + 1)); }

step "cargo build --release --workspace --bins --lib"
cargo build --release --workspace --bins --lib

work=$(mktemp -d /tmp/codejail-demo.XXXXXX)
chmod 755 "$work"
socket=$work/broker.sock
broker_pid=
cleanup() {
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        sleep 1
        kill -KILL "$broker_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step "start a dev broker on $socket"
show "codejail-broker --dev --socket $socket --python $python"
if ! start_broker "$work/broker.log" "$socket" "$bin/codejail-broker" --dev \
        --python "$python"; then
    echo "DEMO FAILED: the broker did not start" >&2
    exit 1
fi
broker_pid=$started_broker_pid
sleep 0.2
echo "--- broker output (confinement report) ---"
cat "$work/broker.log"
echo "------------------------------------------"

client() { "$bin/codejail-client" --socket "$socket" "$@"; }

step "a normal program"
show "codejail-client exec -c 'print(\"hello from the jail\")'"
out=$(client exec -c 'print("hello from the jail")') && rc=0 || rc=$?
printf '%s\n(exit %s)\n' "$out" "$rc"
if [ "$rc" != 0 ] || [ "$out" != "hello from the jail" ]; then
    fail "expected 'hello from the jail' and exit 0"
fi

step "a program killed by its REALTIME limit (1 s)"
show "codejail-client exec --limit REALTIME=1 -c 'import time; time.sleep(5)'"
client exec --limit REALTIME=1 -c 'import time; time.sleep(5)' && rc=0 || rc=$?
echo "(exit $rc: 128 + SIGKILL)"
[ "$rc" = 137 ] || fail "expected exit 137, got $rc"

show "codejail-client exec --json --limit REALTIME=1 -c 'import time; time.sleep(5)'"
json=$(client exec --json --limit REALTIME=1 -c 'import time; time.sleep(5)') || true
echo "$json"
echo "$json" | "$python" -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if d["status"] == -9 and d["limit_hit"] == "REALTIME" else 1)
' || fail "expected status -9 and limit_hit REALTIME"

step "broker status"
show "codejail-client status"
client status && rc=0 || rc=$?
case $rc in
    0) echo "(exit 0: every required layer is in place)" ;;
    1) echo "(exit 1: serving, degraded: a dev broker confines with what this user has)" ;;
    *) fail "status exited $rc" ;;
esac

step "stop the broker (SIGTERM)"
kill -TERM "$broker_pid"
wait "$broker_pid" && rc=0 || rc=$?
broker_pid=
echo "(broker exit $rc)"
[ "$rc" = 0 ] || fail "the broker exited $rc on SIGTERM"

if [ "$failures" -gt 0 ]; then
    echo
    echo "--- broker output ---"
    cat "$work/broker.log"
    echo "DEMO FAILED ($failures step(s))" >&2
    exit 1
fi
echo
echo "Demo OK."
