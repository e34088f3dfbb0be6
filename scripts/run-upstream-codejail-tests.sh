#!/usr/bin/env bash
# Run upstream CodeJail's own test suite (openedx/codejail, tag v4.1.0,
# codejail/tests/) unmodified against our codejail package and a dev broker.
#
# Usage: scripts/run-upstream-codejail-tests.sh PATH [PYTEST-ARGS...]
#   PATH: a fetched openedx/codejail repository (a bare git dir or a clone with the
#   tag v4.1.0), or a directory that already holds codejail/tests/.
#
# What it does, as upstream's CI does it (Makefile: `CODEJAIL_PROXY=0|1 pytest
# --log-level=DEBUG`, the tests inside the installed codejail package):
#   1. a venv of /usr/bin/python3 ($CODEJAIL_UPSTREAM_TEST_VENV, default
#      /var/tmp/codejail-upstream-test-venv) with pytest, Django, numpy and six (the
#      in-process not_safe_exec tests import them) and our package (pip install ./python);
#   2. upstream's codejail/tests/ copied into that venv's installed codejail package
#      (never into this repository);
#   3. a dev broker (as a non-root uid when run as root) running the sandbox
#      interpreter (scripts/setup-sandbox-venv.sh --lean: numpy, six), CODEJAIL_TEST_VENV
#      pointing at that interpreter's venv, CODEJAIL_TEST_USER=sandbox;
#   4. pytest --log-level=DEBUG with CODEJAIL_PROXY=0, then CODEJAIL_PROXY=1.
#
# test_cant_use_network and test_cant_use_raw_network name outside hosts: they run
# only if the broker reports its namespaces layer (a network namespace with only a
# down loopback) as full, and are deselected otherwise. Nothing here runs code
# unconfined against them.
#
# Exit status: 0 when both runs pass (with CODEJAIL_PROXY=1, TestProxyProcess tests
# upstream's proxy process, which this package does not have: its failures are
# reported and not counted), 1 otherwise.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/broker.sh
source "$repo/scripts/lib/broker.sh"
log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'run-upstream-codejail-tests: error: %s\n' "$*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: $0 PATH-TO-OPENEDX-CODEJAIL [PYTEST-ARGS...]"
upstream=$(cd "$1" && pwd) || die "$1: not a directory"
shift
tag=v4.1.0

if ! command -v cargo >/dev/null && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH=${HOME:-/root}/.cargo/bin:$PATH
fi
base_python=/usr/bin/python3
venv=${CODEJAIL_UPSTREAM_TEST_VENV:-/var/tmp/codejail-upstream-test-venv}
work=$(mktemp -d /tmp/codejail-upstream.XXXXXX)
chmod 755 "$work"
broker_pid=
# shellcheck disable=SC2317  # run by the EXIT trap (shellcheck 0.9 misses it)
cleanup() {
    if [ -n "$broker_pid" ]; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# 1. The tests, from the checkout, at the tag.
mkdir "$work/upstream"
if git --git-dir="$upstream" rev-parse --verify -q "$tag^{commit}" >/dev/null 2>&1; then
    git --git-dir="$upstream" archive "$tag" codejail/tests | tar -x -C "$work/upstream"
elif git -C "$upstream" rev-parse --verify -q "$tag^{commit}" >/dev/null 2>&1; then
    git -C "$upstream" archive "$tag" codejail/tests | tar -x -C "$work/upstream"
elif [ -d "$upstream/codejail/tests" ]; then
    cp -r "$upstream/codejail/tests" "$work/upstream/codejail-tests" \
        && mkdir -p "$work/upstream/codejail" \
        && mv "$work/upstream/codejail-tests" "$work/upstream/codejail/tests"
else
    die "$upstream has neither the tag $tag nor codejail/tests/"
fi
[ -f "$work/upstream/codejail/tests/test_jail_code.py" ] || die "no codejail/tests/test_jail_code.py in $upstream"

# 2. The venv and our package; upstream's tests inside the installed package.
if ! { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import pytest, django, numpy, six' 2>/dev/null; }; then
    log "building $venv"
    rm -rf "$venv"
    "$base_python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$repo/requirements/python-test.txt" numpy==2.2.6 six==1.17.0
fi
log "pip install ./python into $venv"
PYO3_PYTHON=$venv/bin/python "$venv/bin/python" -m pip install --quiet \
    --disable-pip-version-check --force-reinstall --no-deps "$repo/python"
site=$("$venv/bin/python" -c 'import codejail, os; print(os.path.dirname(codejail.__file__))')
rm -rf "$site/tests"
cp -r "$work/upstream/codejail/tests" "$site/tests"
log "upstream's codejail/tests ($tag) at $site/tests"

# 3. The sandbox interpreter and a dev broker running it.
sandbox_python=$("$repo/scripts/setup-sandbox-venv.sh" --lean)
sandbox_venv=$(dirname "$(dirname "$sandbox_python")")
"$sandbox_python" -c 'import numpy, six' || die "the sandbox venv $sandbox_venv lacks numpy or six"
(cd "$repo" && cargo build --bins --lib -q)
bins=${CARGO_TARGET_DIR:-$repo/target}/debug
socket=$work/broker/broker.sock
mkdir "$work/broker"
# $CODEJAIL_BROKER_ARGS: more broker arguments, e.g. "--pool-size 2" for a warm pool.
read -ra extra_args <<<"${CODEJAIL_BROKER_ARGS:-}"
log "starting a dev broker on $socket (as uid 219999 when root)"
start_broker --as 219999 "$work/broker.log" "$socket" \
    "$bins/codejail-broker" --dev --python "$sandbox_python" --allow-uid "$(id -u)" \
    "${extra_args[@]+"${extra_args[@]}"}" || die "the broker did not start listening"
broker_pid=$started_broker_pid

status_json=$("$bins/codejail-client" --socket "$socket" status --json || true)
netns=$(printf '%s' "$status_json" | "$venv/bin/python" -c \
    'import json, sys; print(json.load(sys.stdin)["layers"]["namespaces"]["state"])')
deselect=()
if [ "$netns" != full ]; then
    log "the broker's namespaces layer is '$netns', not full: the network tests are deselected"
    deselect=(--deselect "$site/tests/test_jail_code.py::TestLimits::test_cant_use_network"
              --deselect "$site/tests/test_jail_code.py::TestLimits::test_cant_use_raw_network")
fi

# 4. Both proxy settings, as upstream's Makefile.
overall=0
for proxy in 0 1; do
    log "CODEJAIL_PROXY=$proxy pytest --log-level=DEBUG (upstream's codejail/tests, $tag)"
    rc=0
    (cd "$work" && env CODEJAIL_PROXY=$proxy CODEJAIL_SOCKET="$socket" \
        CODEJAIL_TEST_VENV="$sandbox_venv" CODEJAIL_TEST_USER=sandbox \
        PYTHONDONTWRITEBYTECODE=1 \
        "$venv/bin/pytest" -p no:cacheprovider --log-level=DEBUG -rfEs \
        --junitxml="$work/proxy$proxy.xml" "${deselect[@]}" "$@" "$site/tests") || rc=$?
    failed_outside_proxy=$("$venv/bin/python" - "$work/proxy$proxy.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
bad = []
for case in ET.parse(sys.argv[1]).iter("testcase"):
    if case.find("failure") is not None or case.find("error") is not None:
        if case.get("classname", "").endswith("TestProxyProcess"):
            continue
        bad.append(f"{case.get('classname')}.{case.get('name')}")
print(" ".join(bad))
EOF
) || failed_outside_proxy="(pytest wrote no report: exit $rc)"
    if [ -n "$failed_outside_proxy" ]; then
        log "CODEJAIL_PROXY=$proxy: failed: $failed_outside_proxy"
        overall=1
    elif [ "$rc" != 0 ]; then
        log "CODEJAIL_PROXY=$proxy: only TestProxyProcess failed (upstream's proxy process, which this package does not have)"
    fi
done
# With a warm pool ($CODEJAIL_BROKER_ARGS): how the runs were served.
print_pool_counts "$bins/codejail-client" "$socket" "$venv/bin/python"
rm -rf "$site/tests"
exit $overall
