#!/usr/bin/env bash
# The container image's build steps (deploy/container/Containerfile runs this; CI runs
# it too, into a temporary root, since this project's machines run no container
# engine). Installs codejail into ROOT exactly as scripts/install.sh stages a host
# install (DESTDIR), then adds what the image needs beyond it.
#
#   deploy/container/build.sh ROOT [--bin-dir DIR] [--skip-venv] [--lean-sandbox]
#
# The image is a host install of the "local" layout (scripts/lib/layouts/local): ROOT
# ends up holding /usr/local/bin/codejail-{broker,client,http},
# /usr/local/lib/codejail/{codejail-jail,sandbox/}, /etc/codejail (the default
# configs; Kubernetes mounts its ConfigMap over it), /run/codejail, /var/lib/codejail.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=scripts/lib/layout.sh
source "$repo/scripts/lib/layout.sh"
layout_load local || die "no local layout"

[ $# -ge 1 ] || die "usage: build.sh ROOT [--bin-dir DIR] [--skip-venv] [--lean-sandbox]"
root=$1
shift
mkdir -p "$root"
root=$(cd "$root" && pwd)

# 1. Everything a host install puts in place, below ROOT (binaries built with cargo
#    build --release unless --bin-dir; the sandbox virtualenv, the edx-platform profile
#    or --lean-sandbox's, unless --skip-venv).
"$repo/scripts/install.sh" --layout local --destdir "$root" "$@"

# 2. The directories the pod mounts its emptyDirs on (deploy/kubernetes/deployment.yaml),
#    present in a read-only root filesystem.
install -d -m 0755 "$root/run/codejail" "$root/var/lib/codejail" "$root/tmp"
chmod 1777 "$root/tmp"

# 3. The front's uid (deployment.yaml runAsUser 10001), named, so that logs and
#    /etc/passwd lookups agree; the broker refuses run_ids that collide with it.
install -d -m 0755 "$root/etc"
printf 'codejail-http:x:10001:10001:codejail-http:/nonexistent:/usr/sbin/nologin\n' \
    >"$root/etc/passwd.codejail"
printf 'codejail-http:x:10001:\n' >"$root/etc/group.codejail"

# 4. Every installed binary must run here (a missing library shows now, not in a pod).
for b in codejail-broker codejail-client codejail-http; do
    "$root$BINDIR/$b" --version >/dev/null || die "$b does not run"
done
printf 'build.sh: image root ready in %s\n' "$root" >&2
