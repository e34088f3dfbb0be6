#!/usr/bin/env bash
# The Python checks: ruff (ruff.toml) over every .py and .pyi of the repository, then
# mypy's stubtest of python/codejail/_native.pyi against the extension module as
# maturin builds it (./python installed into the lint venv), so a function, argument
# or constant added to or removed from python/src without its stub fails here.
#
# Environment: CODEJAIL_PYTHON_LINT_VENV (default /var/tmp/codejail-python-lint-venv),
# a venv of /usr/bin/python3 with requirements/python-lint.txt, rebuilt when those
# change. Arguments: --ruff-only skips the build and the stub check.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'scripts/python-lint.sh: error: %s\n' "$*" >&2; exit 1; }

ruff_only=false
case ${1:-} in
    '') ;;
    --ruff-only) ruff_only=true ;;
    *) die "unknown argument $1 (only --ruff-only)" ;;
esac

if ! command -v cargo >/dev/null && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH=${HOME:-/root}/.cargo/bin:$PATH
fi
venv=${CODEJAIL_PYTHON_LINT_VENV:-/var/tmp/codejail-python-lint-venv}

# 1. The venv, rebuilt only when it is broken or its requirements changed.
# shellcheck source=scripts/lib/venv.sh
source "$repo/scripts/lib/venv.sh"
requirements_venv "$venv" "$repo/requirements/python-lint.txt" lint || die "building the lint venv $venv failed"

# 2. The linter, over the whole checkout (ruff skips what .gitignore names, e.g. target/).
log "ruff check ($("$venv/bin/ruff" --version))"
"$venv/bin/ruff" check --no-cache .
$ruff_only && exit 0

# 3. The stubs against the built module: maturin builds python/ for this interpreter.
log "pip install ./python into $venv"
PYO3_PYTHON=$venv/bin/python "$venv/bin/python" -m pip install --quiet \
    --disable-pip-version-check --force-reinstall --no-deps ./python
log "stubtest codejail._native (python/codejail/_native.pyi)"
(cd / && "$venv/bin/python" -m mypy.stubtest codejail._native)
