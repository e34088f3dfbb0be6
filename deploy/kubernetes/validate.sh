#!/usr/bin/env bash
# Validate the kustomize base (tests/tests/kubernetes.rs runs this; CI through
# scripts/test.sh):
#  - kustomization.yaml's resources list exactly the other .yaml files here, each one
#    existing (kubernetes-validate only warns on a kustomization);
#  - every resource passes `kubernetes-validate --strict` (schemas shipped with the
#    package, no cluster needed);
#  - with --extract-config DIR: the ConfigMap's broker.toml and http.toml are written
#    to DIR for their own checkers (codejail-broker check-config, codejail-http's).
# kubernetes-validate lives in a virtualenv this script creates
# ($CODEJAIL_K8S_VENV, default /var/tmp/codejail-k8s-venv).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${CODEJAIL_K8S_VENV:-/var/tmp/codejail-k8s-venv}
version=1.37.0
die() { printf 'validate.sh: error: %s\n' "$*" >&2; exit 1; }

extract=
case ${1:-} in
    --extract-config) [ $# -ge 2 ] || die "--extract-config needs a directory"; extract=$2 ;;
    "") ;;
    *) die "unknown argument $1" ;;
esac

# 1. The validator, pinned, in its own virtualenv (built once, under a lock).
exec 9>"$venv.lock"
flock 9
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qF "$version"; then
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$version"
fi
flock -u 9

# 2. The resources list, against the files.
"$venv/bin/python" - "$here" <<'PY'
import pathlib, sys, yaml
here = pathlib.Path(sys.argv[1])
k = yaml.safe_load((here / "kustomization.yaml").read_text())
listed = k.get("resources") or []
files = sorted(p.name for p in here.glob("*.yaml") if p.name != "kustomization.yaml")
problems = []
if len(set(listed)) != len(listed):
    problems.append(f"resources lists a file twice: {listed}")
for r in listed:
    if not (here / r).is_file():
        problems.append(f"resources lists {r}, which does not exist")
for f in files:
    if f not in listed:
        problems.append(f"{f} is not in kustomization.yaml's resources")
for f in files:
    docs = [d for d in yaml.safe_load_all((here / f).read_text()) if d is not None]
    if len(docs) != 1:
        problems.append(f"{f} holds {len(docs)} resources (one per file)")
if problems:
    sys.exit("kustomization.yaml: " + "; ".join(problems))
print(f"kustomization.yaml: {len(listed)} resources, all present", file=sys.stderr)
PY

# 3. Every resource, strictly.
cd "$here"
mapfile -t resources < <("$venv/bin/python" -c '
import sys, yaml
print("\n".join(yaml.safe_load(open("kustomization.yaml"))["resources"]))')
"$venv/bin/kubernetes-validate" --strict --kubernetes-version "$version" "${resources[@]}"

# 4. The configs, for their own checkers.
if [ -n "$extract" ]; then
    mkdir -p "$extract"
    "$venv/bin/python" - "$here/configmap.yaml" "$extract" <<'PY'
import pathlib, sys, yaml
cm = yaml.safe_load(open(sys.argv[1]))
for name, text in cm["data"].items():
    (pathlib.Path(sys.argv[2]) / name).write_text(text)
PY
fi
