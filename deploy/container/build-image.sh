#!/usr/bin/env bash
# Build the codejail container image as an OCI archive, without a container engine or
# daemon: one image for both of the pod's containers (deploy/kubernetes/deployment.yaml
# runs the broker and codejail-http from the same `image: codejail`; the front adds
# 10 MiB to an image the sandbox interpreter makes 600 MiB, and one image is one
# build, one pull and one version to keep in step).
#
#   deploy/container/build-image.sh [--out FILE] [--lean-sandbox] [--bin-dir DIR]
#
#   --out FILE       the OCI archive (default target/image/codejail-oci.tar); its
#                    image is tagged codejail:VERSION (the workspace's version)
#   --lean-sandbox   the lean sandbox profile (requirements/sandbox-lean.txt) instead
#                    of edx-platform's (requirements/sandbox-edx-platform.txt)
#   --bin-dir DIR    take the binaries from DIR instead of `cargo build --release`
#   $CODEJAIL_IMAGE_CACHE  where the slow parts are kept (default
#                    /var/cache/codejail-image)
#
# How, and why this way: mmdebstrap builds the Debian 12 base (minbase + python3, the
# sandbox interpreter's standard library) straight from Debian's archive, umoci
# stacks layers on it and writes the image config, skopeo writes the oci-archive.
# All three are Debian packages (installed here when missing) that need no daemon, no
# registry and no base image: `buildah bud --isolation chroot` would need a base image
# anyway, which here would be this same mmdebstrap base, so it adds a tool and nothing
# else. The Containerfile builds the same thing for operators with a registry (the
# same build.sh, the same base packages, the same user and entry point).
#
# Layers, each cached under $CODEJAIL_IMAGE_CACHE keyed by a hash of its inputs, so a
# fresh machine builds them once and a rerun only adds the project's layer:
#   1. the base: mmdebstrap's tarball (key: suite, packages, mirrors, options);
#   2. the sandbox interpreter: scripts/setup-sandbox-venv.sh's --copies virtualenv
#      (key: the profile's requirements, the warm-start hook, the script, the base),
#      its python binary replaced by the base's own so that interpreter and standard
#      library are the same build;
#   3. the project: deploy/container/build.sh (scripts/install.sh --destdir), never
#      cached.
# Prints the archive's path on stdout; progress, the layer sizes and the image's size
# on stderr.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# The image is a host install of the local layout (scripts/lib/layouts/local).
# shellcheck source=scripts/lib/layout.sh
source "$repo/scripts/lib/layout.sh"
layout_load local || die "no local layout"

out=$repo/target/image/codejail-oci.tar
profile=edx-platform
bin_dir=
while [ $# -gt 0 ]; do
    case $1 in
        --out) [ $# -ge 2 ] || die "--out needs a file"; out=$2; shift ;;
        --lean-sandbox) profile=lean ;;
        --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a directory"; bin_dir=$2; shift ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || die "run as root: the image's files must be owned by root, and mmdebstrap's root mode needs it"
cache=${CODEJAIL_IMAGE_CACHE:-/var/cache/codejail-image}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
[ -n "$version" ] || die "no version in Cargo.toml"
tag=$version
start=$SECONDS

# The tools, from Debian's archive.
missing=()
for tool in mmdebstrap:mmdebstrap umoci:umoci skopeo:skopeo; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (apt-get)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

install -d -m 0700 "$cache"
work=$(mktemp -d /var/tmp/codejail-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
umask 022
key() { sha256sum | cut -c1-16; }

# 1. The base. Debian 12 (bookworm) with its updates and security fixes: minbase and
#    python3, without documentation, manuals and translations (as debian:*-slim), and
#    no apt lists (mmdebstrap's cleanup).
suite=bookworm
packages=python3
mirrors=(
    "deb http://deb.debian.org/debian $suite main"
    "deb http://deb.debian.org/debian $suite-updates main"
    "deb http://deb.debian.org/debian-security $suite-security main"
)
mmopts=(
    --variant=minbase "--include=$packages"
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
)
base_key=$(printf '%s\n' "$suite" "${mirrors[@]}" "${mmopts[@]}" | key)
base=$cache/base-$suite-$base_key.tar
if [ -f "$base" ]; then
    log "1. base: cached $base"
else
    t=$SECONDS
    log "1. base: mmdebstrap $suite ($packages)"
    mmdebstrap --quiet "${mmopts[@]}" "$suite" "$work/base.tar" "${mirrors[@]}"
    mv "$work/base.tar" "$base"
    log "1. base: built in $((SECONDS - t))s"
fi
base_python=$(tar tf "$base" | sed -n 's|^\./usr/bin/\(python3\.[0-9]*\)$|\1|p' | head -n1)
[ -n "$base_python" ] || die "the base has no /usr/bin/python3.X"
host_python=$(python3 -c 'import sys; print("python%d.%d" % sys.version_info[:2])')
[ "$host_python" = "$base_python" ] \
    || die "the sandbox virtualenv is built with this machine's $host_python, the image has $base_python: build on Debian $suite"

# 2. The sandbox interpreter and its OCI layout (base + sandbox layers), cached together.
requirements=$repo/requirements/sandbox-$profile.txt
sandbox_key=$(cat "$requirements" "$repo/scripts/setup-sandbox-venv.sh" "$repo"/jail/warm/* \
    <(printf '%s\n' "$base_key" "$base_python") | key)
layout=$cache/layout-$profile-$sandbox_key
# The local layout's (scripts/lib/layouts/local), as deploy/container/build.sh installs.
sandenv=${SANDENV:?}
if [ -f "$layout/index.json" ]; then
    log "2. sandbox ($profile): cached $layout"
else
    t=$SECONDS
    rm -rf "$layout.tmp"
    venv=$work/venv$sandenv
    profile_flag=()
    [ "$profile" = lean ] && profile_flag=(--lean)
    log "2. sandbox ($profile): scripts/setup-sandbox-venv.sh"
    "$repo/scripts/setup-sandbox-venv.sh" "${profile_flag[@]}" "$venv" >/dev/null
    rm -f "$venv.lock"
    # The interpreter the standard library of the image belongs to.
    tar xf "$base" -C "$work" "./usr/bin/$base_python"
    for b in python python3; do
        install -m 0755 "$work/usr/bin/$base_python" "$venv/bin/$b"
    done
    log "2. layers: base, then sandbox (umoci)"
    mkdir -p "$work/baseroot"
    tar xf "$base" -C "$work/baseroot" --numeric-owner
    umoci init --layout "$layout.tmp"
    umoci new --image "$layout.tmp:build"
    umoci insert --image "$layout.tmp:build" --history.created_by "mmdebstrap $suite ($packages)" \
        "$work/baseroot" /
    umoci insert --image "$layout.tmp:build" \
        --history.created_by "scripts/setup-sandbox-venv.sh ($profile)" "$work/venv$sandenv" "$sandenv"
    umoci gc --layout "$layout.tmp"
    rm -rf "${work:?}/baseroot" "${work:?}/venv" "${work:?}/usr"
    mv "$layout.tmp" "$layout"
    log "2. sandbox and layers built in $((SECONDS - t))s"
fi

# 3. The project, on a copy of the cached layout.
t=$SECONDS
stage=$work/stage
build_args=(--skip-venv)
[ -n "$bin_dir" ] && build_args+=(--bin-dir "$bin_dir")
log "3. project: deploy/container/build.sh ${build_args[*]}"
"$repo/deploy/container/build.sh" "$stage" "${build_args[@]}" >&2
rmdir "$stage$sandenv" 2>/dev/null || true
# Without their debug information (a --bin-dir of debug builds is 200 MiB otherwise).
if command -v strip >/dev/null; then
    strip --strip-debug "$stage$BINDIR"/codejail-* "$stage$LIBEXECDIR/codejail-jail"
fi
# The front's account, beside the base's (build.sh leaves the lines to add).
for f in passwd group; do
    tar xOf "$base" "./etc/$f" >"$stage/etc/$f"
    cat "$stage/etc/$f.codejail" >>"$stage/etc/$f"
    rm "$stage/etc/$f.codejail"
    chmod 0644 "$stage/etc/$f"
done
cp -a "$layout" "$work/layout"
umoci insert --image "$work/layout:build" --history.created_by "deploy/container/build.sh" "$stage" /
# As the Containerfile: the unprivileged user by default (the pod sets each
# container's), the front's port, its command.
umoci config --image "$work/layout:build" --tag "$tag" \
    --config.user 10001 \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.workingdir / \
    --config.exposedports 8550/tcp \
    --config.cmd "$BINDIR/codejail-http" --config.cmd --config --config.cmd /etc/codejail/http.toml \
    --config.label "org.opencontainers.image.title=codejail" \
    --config.label "org.opencontainers.image.version=$version" \
    --history.created_by "image config (user 10001, codejail-http)"
umoci rm --image "$work/layout:build"
umoci gc --layout "$work/layout"
mkdir -p "$(dirname "$out")"
rm -f "$out"
skopeo copy --quiet "oci:$work/layout:$tag" "oci-archive:$out:codejail:$tag"
log "3. project layer and archive in $((SECONDS - t))s"

# The image's size: the archive (its layers gzip-compressed: what a registry stores and
# a node pulls) and each layer's.
python3 - "$work/layout" "$tag" <<'EOF2' >&2
import json, os, sys
layout, tag = sys.argv[1], sys.argv[2]
blob = lambda d: os.path.join(layout, "blobs", *d.split(":"))
index = json.load(open(os.path.join(layout, "index.json")))
desc = next(m for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
manifest = json.load(open(blob(desc["digest"])))
config = json.load(open(blob(manifest["config"]["digest"])))
made = [h.get("created_by", "?") for h in config.get("history", []) if not h.get("empty_layer")]
for layer, by in zip(manifest["layers"], made):
    print("build-image:   layer %6.1f MiB  %s" % (layer["size"] / 2**20, by))
EOF2
log "image codejail:$tag ($profile sandbox): $out, $(($(stat -c %s "$out") / 1048576)) MiB; built in $((SECONDS - start))s"
printf '%s\n' "$out"
