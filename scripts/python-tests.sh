#!/usr/bin/env bash
# The Python package's tests: build and install ./python (maturin, from PyPI, as the
# PEP 517 backend) into a reusable venv of /usr/bin/python3 with
# requirements/python-test.txt, then run python/tests/ with pytest against real dev
# brokers. Called by scripts/test.sh; can run alone once the binaries are built.
#
# Environment: CODEJAIL_PYTHON_TEST_VENV (default /var/tmp/codejail-python-test-venv),
# CODEJAIL_TEST_BIN_DIR (the broker binaries; default target/debug, staged in a
# world-readable directory when other uids cannot reach it), CODEJAIL_TEST_PYTHON (the
# brokers' interpreter; default: the lean profile's, scripts/setup-sandbox-venv.sh
# --lean). Extra arguments go to pytest.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'scripts/python-tests.sh: error: %s\n' "$*" >&2; exit 1; }

if ! command -v cargo >/dev/null && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH=${HOME:-/root}/.cargo/bin:$PATH
fi
venv=${CODEJAIL_PYTHON_TEST_VENV:-/var/tmp/codejail-python-test-venv}

# 1. The venv, rebuilt only when it is broken or its requirements changed.
# shellcheck source=scripts/lib/venv.sh
source "$repo/scripts/lib/venv.sh"
requirements_venv "$venv" "$repo/requirements/python-test.txt" test || die "building the test venv $venv failed"

# 2. The package, from this checkout (maturin builds python/ against this interpreter).
log "pip install ./python into $venv"
PYO3_PYTHON=$venv/bin/python "$venv/bin/python" -m pip install --quiet \
    --disable-pip-version-check --force-reinstall --no-deps ./python

# 3. What the brokers under test need: the binaries and the sandbox interpreter, both
#    reachable by the non-root uids the fixture runs them as when we are root.
if [ -z "${CODEJAIL_TEST_PYTHON:-}" ]; then
    CODEJAIL_TEST_PYTHON=$(scripts/setup-sandbox-venv.sh --lean)
fi
export CODEJAIL_TEST_PYTHON
staged=
cleanup() { [ -n "$staged" ] && rm -rf "$staged"; return 0; }
trap cleanup EXIT
if [ -z "${CODEJAIL_TEST_BIN_DIR:-}" ]; then
    bins=${CARGO_TARGET_DIR:-$repo/target}/debug
    if ! [ -x "$bins/codejail-broker" ] || ! [ -x "$bins/codejail-jail" ] ||
        ! [ -f "$bins/libcodejail_zygote.so" ]; then
        cargo build --bins --lib
    fi
    if [ "$(id -u)" = 0 ] && ! setpriv --reuid=209999 --regid=209999 --clear-groups \
            test -x "$bins/codejail-broker"; then
        staged=$(mktemp -d /var/tmp/codejail-pytest-bin.XXXXXX)
        chmod 755 "$staged"
        cp "$bins"/{codejail-broker,codejail-jail,codejail-client,libcodejail_zygote.so} "$staged/"
        bins=$staged
    fi
    export CODEJAIL_TEST_BIN_DIR=$bins
fi

# 4. The tests, from python/ (the installed package is the one imported: pytest runs
#    from its own entry point, so the source tree is not on sys.path).
log "pytest python/tests (brokers: $CODEJAIL_TEST_BIN_DIR, interpreter: $CODEJAIL_TEST_PYTHON)"
cd "$repo/python"
PYTHONDONTWRITEBYTECODE=1 "$venv/bin/pytest" -p no:cacheprovider -v -rfEs tests "$@"
# 5. Again with every broker's warm jails forked from a zygote (conftest.py).
log "pytest python/tests with a fork server (CODEJAIL_TEST_FORK_SERVER=1)"
CODEJAIL_TEST_FORK_SERVER=1 PYTHONDONTWRITEBYTECODE=1 \
    "$venv/bin/pytest" -p no:cacheprovider -q -rfEs tests "$@"
