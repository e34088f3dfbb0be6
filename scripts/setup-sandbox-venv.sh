#!/usr/bin/env bash
# Build the sandbox interpreter: a `--copies` virtualenv of /usr/bin/python3 holding the
# packages of requirements/sandbox.txt, readable by every uid (jailed programs run as an
# unprivileged uid, and the pyenv interpreters under /root are unreadable to them).
#
# Usage: scripts/setup-sandbox-venv.sh [DIR]
#   DIR defaults to $CODEJAIL_SANDBOX_VENV, else /var/tmp/codejail-sandbox-venv.
#   Prints DIR/bin/python on stdout (progress goes to stderr).
#
# Idempotent: a venv whose interpreter works and whose installed requirements match
# requirements/sandbox.txt is kept as it is; otherwise it is rebuilt from scratch.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:-${CODEJAIL_SANDBOX_VENV:-/var/tmp/codejail-sandbox-venv}}
base_python=${CODEJAIL_BASE_PYTHON:-/usr/bin/python3}
requirements=$repo/requirements/sandbox.txt
stamp=$dir/.codejail-requirements

log() { printf 'setup-sandbox-venv: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ -x "$base_python" ] || die "$base_python not found (install Debian's python3)"
case $dir in /*) ;; *) dir=$PWD/$dir; stamp=$dir/.codejail-requirements ;; esac

# Files we create must be readable by the jail's uid whatever the caller's umask.
umask 022

# One builder at a time (two test runs starting together).
mkdir -p "$(dirname "$dir")"
if { exec 9>>"$dir.lock"; } 2>/dev/null; then
    flock 9 || true
fi

# The warm-start hook (jail/warm/): inert unless a warm jail hands the interpreter its
# socket on fd 3. Placed in the venv's site-packages, after every other .pth file.
install_hook() {
    local site
    site=$("$dir/bin/python" -E -B -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    install -m 0644 "$repo/jail/warm/_codejail_warm.py" "$site/_codejail_warm.py"
    install -m 0644 "$repo/jail/warm/zz-codejail-warm.pth" "$site/zz-codejail-warm.pth"
    # Compiled now: the jail runs with -B (reads bytecode, never writes it).
    "$dir/bin/python" -E -m py_compile "$site/_codejail_warm.py"
    chmod -R a+rX "$site/__pycache__"
}

if [ -x "$dir/bin/python" ] && "$dir/bin/python" -E -B -c 'import sys' 2>/dev/null \
    && cmp -s "$requirements" "$stamp"; then
    install_hook
    log "up to date: $dir"
    echo "$dir/bin/python"
    exit 0
fi

# venv needs ensurepip (Debian's python3-venv).
if ! "$base_python" -c 'import ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing python3-venv"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    else
        die "$base_python has no venv support: install python3-venv (as root: apt-get install python3-venv)"
    fi
fi

log "building $dir from $base_python"
rm -rf "$dir"
"$base_python" -m venv --copies "$dir"
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
    --upgrade pip >&2
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
    -r "$requirements" >&2
# Byte-compile now: the jail runs with -B and a read-only interpreter.
"$dir/bin/python" -m compileall -q "$dir/lib" >/dev/null 2>&1 || true
install_hook
chmod -R a+rX "$dir"
cp "$requirements" "$stamp"
chmod a+r "$stamp"
"$dir/bin/python" -E -B -c 'import numpy, sys; print("sandbox python", sys.version.split()[0], "numpy", numpy.__version__)' >&2
echo "$dir/bin/python"
