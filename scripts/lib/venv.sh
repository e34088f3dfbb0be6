# shellcheck shell=bash
# A reusable virtualenv of /usr/bin/python3 holding a requirements file, for the
# scripts that run Python tools (python-lint.sh, python-tests.sh). Sourced, not run:
#
#   source "$repo/scripts/lib/venv.sh"
#   requirements_venv VENV REQUIREMENTS WHAT || exit 1
#
# VENV is rebuilt (logged as "building the WHAT venv VENV") only when it is broken or
# REQUIREMENTS changed since it was built (a copy is kept in VENV/.codejail-requirements);
# concurrent callers wait for each other on VENV.lock (fd 8 stays open, holding it).

requirements_venv() {
    local venv=$1 requirements=$2 what=$3 base_python=/usr/bin/python3
    local stamp=$venv/.codejail-requirements
    if ! [ -x "$base_python" ]; then
        printf 'error: %s not found (install Debian'"'"'s python3 and python3-venv)\n' "$base_python" >&2
        return 1
    fi
    mkdir -p "$(dirname "$venv")"
    exec 8>>"$venv.lock"
    flock 8
    if ! { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sys' 2>/dev/null \
        && cmp -s "$requirements" "$stamp"; }; then
        printf '==> building the %s venv %s\n' "$what" "$venv" >&2
        rm -rf "$venv"
        "$base_python" -m venv "$venv" &&
            "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" &&
            cp "$requirements" "$stamp"
    fi
}
