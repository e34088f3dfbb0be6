#!/usr/bin/env bash
# Build the sandbox interpreter: a `--copies` virtualenv of /usr/bin/python3 holding the
# packages of a sandbox profile, readable by every uid (jailed programs run as an
# unprivileged uid, and the pyenv interpreters under /root are unreadable to them).
#
# Usage: scripts/setup-sandbox-venv.sh [--lean] [DIR]
#   (default)  the edx-platform profile, requirements/sandbox-edx-platform.txt: what
#              edx-platform's problems import (numpy, scipy, calc, eia, chem, nltk,
#              verifiers, random2, six, ...); DIR defaults to
#              /var/tmp/codejail-sandbox-venv.
#   --lean     the lean profile, requirements/sandbox-lean.txt (numpy, six, networkx,
#              matplotlib): what the tests and benchmarks need; DIR defaults to
#              /var/tmp/codejail-sandbox-venv-lean.
#   $CODEJAIL_SANDBOX_VENV, when set, replaces the default DIR (of either profile).
#   Prints DIR/bin/python on stdout; progress, and at the end the profile, the install
#   time and the venv's size, go to stderr. docs/sandbox-profiles.md compares the two.
#
# Idempotent: a venv whose interpreter works and whose stamp names the same profile
# and the same requirements is kept as it is (its start-up hook refreshed); otherwise
# it is rebuilt from scratch. One build at a time per DIR (a lock beside it).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf 'setup-sandbox-venv: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

profile=edx-platform
dir=
while [ $# -gt 0 ]; do
    case $1 in
        --lean) profile=lean ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *)
            [ -z "$dir" ] || die "one DIR only (see --help)"
            dir=$1
            ;;
    esac
    shift
done
case $profile in
    lean) default_dir=/var/tmp/codejail-sandbox-venv-lean ;;
    *) default_dir=/var/tmp/codejail-sandbox-venv ;;
esac
dir=${dir:-${CODEJAIL_SANDBOX_VENV:-$default_dir}}
base_python=${CODEJAIL_BASE_PYTHON:-/usr/bin/python3}
requirements=$repo/requirements/sandbox-$profile.txt

[ -f "$requirements" ] || die "$requirements is missing"
[ -x "$base_python" ] || die "$base_python not found (install Debian's python3)"
case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
dir=${dir%/}
stamp=$dir/.codejail-requirements

# Files we create must be readable by the jail's uid whatever the caller's umask.
umask 022

# The stamp a venv of this profile has: the profile's name, then its requirements. A
# change of either (another profile asked for the same DIR) rebuilds the venv.
expected_stamp() {
    printf '# codejail sandbox profile: %s\n' "$profile"
    cat "$requirements"
}

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

venv_size() { du -sh "$dir" 2>/dev/null | cut -f1; }

if [ -x "$dir/bin/python" ] && "$dir/bin/python" -E -B -c 'import sys' 2>/dev/null \
    && cmp -s <(expected_stamp) "$stamp"; then
    install_hook
    log "up to date: $dir (profile $profile, $(venv_size))"
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

log "building $dir from $base_python (profile $profile: ${requirements#"$repo"/})"
started=$SECONDS
rm -rf "$dir"
"$base_python" -m venv --copies "$dir"
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
    --upgrade pip >&2
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
    -r "$requirements" >&2
# Every installed distribution should be pinned: one that is not came in as a new
# dependency of a pinned one (pin it, so that every machine builds the same venv).
unpinned=$("$dir/bin/python" -E -B - "$requirements" <<'PY'
import re, sys
from importlib.metadata import distributions
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
pinned = set()
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if line:
        pinned.add(norm(re.split(r"[\[=<>!~ ;]", line, maxsplit=1)[0]))
tools = {"pip", "setuptools", "wheel"}
print(" ".join(sorted(
    f"{d.metadata['Name']}=={d.version}" for d in distributions()
    if norm(d.metadata["Name"]) not in pinned | tools
)))
PY
)
[ -z "$unpinned" ] || log "warning: installed but not pinned in ${requirements#"$repo"/}: $unpinned"
# Byte-compile now: the jail runs with -B and a read-only interpreter.
"$dir/bin/python" -m compileall -q "$dir/lib" >/dev/null 2>&1 || true
install_hook
chmod -R a+rX "$dir"
expected_stamp >"$stamp"
chmod a+r "$stamp"
"$dir/bin/python" -E -B -c 'import numpy, sys; print("sandbox python", sys.version.split()[0], "numpy", numpy.__version__)' >&2
log "built $dir: profile $profile, installed in $((SECONDS - started)) s, $(venv_size)"
echo "$dir/bin/python"
