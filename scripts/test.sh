#!/usr/bin/env bash
# THE test command (README): installs what the tests need, builds every binary, and runs
# every test of the workspace, then the Python package's tests (scripts/python-tests.sh).
# Extra arguments go to `cargo test`, e.g.
#   scripts/test.sh -p codejail-tests --test jail_code -- --nocapture
#
# Works as root (CI: the end-to-end tests then start each broker as its own non-root
# uid) and as a normal user (tests that need root then skip, unless
# CODEJAIL_REQUIRE_PRIVILEGED=1 makes them fail, as .ci/run does).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'scripts/test.sh: error: %s\n' "$*" >&2; exit 1; }

# rustup installs cargo in ~/.cargo/bin, which a non-login shell may not have on PATH.
if ! command -v cargo >/dev/null && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH=${HOME:-/root}/.cargo/bin:$PATH
fi

is_root=false
[ "$(id -u)" = 0 ] && is_root=true

# 1. System packages, only when missing (and only root can install them).
#    unshare/setpriv (util-linux) probe namespaces and permissions; flock too.
missing=()
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
command -v unshare >/dev/null || missing+=(util-linux)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v flock >/dev/null || missing+=(util-linux)
[ -x /usr/bin/python3 ] || missing+=(python3)
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
#    tests/tests/ops.rs checks the units and the AppArmor profiles with their tools.
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v apparmor_parser >/dev/null || [ -x /usr/sbin/apparmor_parser ] \
    || [ -x /sbin/apparmor_parser ] || missing+=(apparmor)
if [ ${#missing[@]} -gt 0 ]; then
    if $is_root && command -v apt-get >/dev/null; then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        die "missing packages: ${missing[*]} (install them as root)"
    fi
fi

# 2. The sandbox interpreters (scripts/setup-sandbox-venv.sh): the lean profile is the
#    one every test runs ($CODEJAIL_SANDBOX_VENV overrides its directory); the
#    edx-platform profile (what capa imports) is for tests/tests/edx_profile.rs.
venv=${CODEJAIL_SANDBOX_VENV:-/var/tmp/codejail-sandbox-venv-lean}
CODEJAIL_TEST_PYTHON=$(scripts/setup-sandbox-venv.sh --lean "$venv")
export CODEJAIL_TEST_PYTHON
log "sandbox interpreter: $CODEJAIL_TEST_PYTHON"
CODEJAIL_TEST_EDX_PYTHON=$(scripts/setup-sandbox-venv.sh /var/tmp/codejail-sandbox-venv)
export CODEJAIL_TEST_EDX_PYTHON
log "edx-platform sandbox interpreter: $CODEJAIL_TEST_EDX_PYTHON"

# 3. Build every binary: the end-to-end tests run the broker, the jail stage and the
#    client as separate processes (and the fork server's library, a cdylib: --lib).
log "cargo build --workspace --bins --lib"
cargo build --workspace --bins --lib

# 4. As root the tests start each broker as a non-root uid, which must reach the
#    binaries. A checkout under a private directory (e.g. /root, mode 0700) is not
#    reachable: stage copies in a world-readable directory for the tests.
target=${CARGO_TARGET_DIR:-$repo/target}
staged=
cleanup() { [ -n "$staged" ] && rm -rf "$staged"; return 0; }
trap cleanup EXIT
if $is_root; then
    probe_uid=199998
    if ! setpriv --reuid=$probe_uid --regid=$probe_uid --clear-groups \
            test -x "$target/debug/codejail-broker"; then
        staged=$(mktemp -d /var/tmp/codejail-test-bin.XXXXXX)
        chmod 755 "$staged"
        cp "$target"/debug/{codejail-broker,codejail-jail,codejail-client,codejail-http,libcodejail_zygote.so} "$staged/"
        chmod 755 "$staged"/*
        export CODEJAIL_TEST_BIN_DIR=$staged
        log "$repo is not reachable by other uids: binaries staged in $staged"
    fi
    for interpreter in "$CODEJAIL_TEST_PYTHON" "$CODEJAIL_TEST_EDX_PYTHON"; do
        setpriv --reuid=$probe_uid --regid=$probe_uid --clear-groups \
            "$interpreter" -E -B -c 'pass' \
            || die "the sandbox interpreter $interpreter is not usable by other uids"
    done
fi

if [ "${CODEJAIL_REQUIRE_PRIVILEGED:-}" = 1 ]; then
    log "CODEJAIL_REQUIRE_PRIVILEGED=1: tests that cannot run here fail instead of skipping"
fi

# 5. Every test. --no-fail-fast: one failing test binary must not hide the others'
#    results.
#    Given -p/--package, test those packages instead of the whole workspace.
scope=(--workspace)
for arg in "$@"; do
    case $arg in
        --) break ;;
        -p | -p* | --package | --package=*) scope=() ;;
    esac
done
log "cargo test ${scope[*]} --no-fail-fast $*"
cargo_status=0
cargo test "${scope[@]}" --no-fail-fast "$@" || cargo_status=$?

# 5b. The same suites against warm jails: every broker under test keeps a pool of 2
#     (CODEJAIL_TEST_POOL, tests/src/broker.rs), so each run with code is served warm.
#     Tests that look for a run's processes from the host find them by the name the
#     program gives itself (codejail_tests::Marked), which a warm run's command line
#     cannot show (its interpreter was exec'd before the request existed).
if [ ${#scope[@]} -gt 0 ]; then
    log "cargo test: jail_code, safe_exec, confinement, robustness, run_semantics, http with a warm pool (CODEJAIL_TEST_POOL=2)"
    CODEJAIL_TEST_POOL=2 cargo test -p codejail-tests --no-fail-fast \
        --test jail_code --test safe_exec --test confinement --test robustness \
        --test run_semantics --test http \
        || cargo_status=$?
    # 5c. Again with the warm jails forked from a zygote (CODEJAIL_TEST_FORK_SERVER=1:
    #     `--fork-server` for every broker, both shapes).
    log "cargo test: the same with a fork server (CODEJAIL_TEST_POOL=2 CODEJAIL_TEST_FORK_SERVER=1)"
    CODEJAIL_TEST_POOL=2 CODEJAIL_TEST_FORK_SERVER=1 cargo test -p codejail-tests --no-fail-fast \
        --test jail_code --test safe_exec --test confinement --test robustness \
        --test run_semantics --test http \
        || cargo_status=$?
fi

# 6. The Python package (python/, not a workspace member): built and installed into a
#    reusable venv of /usr/bin/python3 with pytest and Django, then its pytest suite
#    against real dev brokers (python/tests/conftest.py). Skipped only when the
#    arguments chose other packages (-p ...). A failure here or above fails the script.
pytest_status=0
if [ ${#scope[@]} -gt 0 ]; then
    scripts/python-tests.sh || pytest_status=$?
fi
if [ "$cargo_status" != 0 ] || [ "$pytest_status" != 0 ]; then
    die "tests failed (cargo test: exit $cargo_status, python tests: exit $pytest_status)"
fi
