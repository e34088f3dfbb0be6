#!/usr/bin/env bash
# Build the Debian package, codejail_VERSION_amd64.deb, in target/deb/ (docs/operating.md,
# "Install from the Debian package"):
#
#   scripts/build-deb.sh [--bin-dir DIR] [--lean-sandbox] [--sandbox-from VENV]
#                        [--version VERSION] [--fast]
#
#   --bin-dir DIR        take the four binaries from DIR (default: cargo build --release)
#   --lean-sandbox       the sandbox virtualenv of the lean profile (default: edx-platform)
#   --sandbox-from VENV  start from this virtualenv of the same profile (copied; the
#                        installer then finds it up to date instead of building it)
#   --version VERSION    the package's version (default: the workspace's)
#   --fast               lighter compression (tests)
#
# Steps: the files of the "debian" layout staged with scripts/install.sh --layout debian
# into target/deb/stage (units and AppArmor profiles rendered for it), the sandbox
# virtualenv built there from the pinned requirements (pip, from PyPI: at build time,
# never at install), the default broker.toml moved to /usr/share/codejail (postinst
# writes /etc/codejail/broker.toml with the codejail group's gid), binaries stripped,
# then cargo deb --no-build (cargo-deb: installed into ~/.cargo when missing).
# Prints the .deb's path on stdout.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-deb.sh: error: %s\n' "$*" >&2; exit 1; }

bin_dir=
profile_flag=()
sandbox_from=
version=
fast=()
while [ $# -gt 0 ]; do
    case $1 in
        --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a directory"; bin_dir=$2; shift ;;
        --lean-sandbox) profile_flag=(--lean-sandbox) ;;
        --sandbox-from) [ $# -ge 2 ] || die "--sandbox-from needs a directory"; sandbox_from=$2; shift ;;
        --version) [ $# -ge 2 ] || die "--version needs a value"; version=$2; shift ;;
        --fast) fast=(--fast) ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
# shellcheck source=scripts/lib/layout.sh
source "$repo/scripts/lib/layout.sh"
layout_load debian || die "no debian layout"

export PATH=$HOME/.cargo/bin:$PATH
if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb (cargo install cargo-deb --locked)"
    cargo install cargo-deb --locked
fi
if [ -z "$bin_dir" ]; then
    log "building the binaries (cargo build --release)"
    (cd "$repo" && cargo build --release --workspace --bins --lib)
    bin_dir=$repo/target/release
fi
bin_dir=$(cd "$bin_dir" && pwd)

stage=$repo/target/deb/stage
rm -rf "$stage"
mkdir -p "$stage"
if [ -n "$sandbox_from" ]; then
    mkdir -p "$(dirname "$stage$SANDENV")"
    cp -a "$sandbox_from" "$stage$SANDENV"
fi
log "staging the debian layout in $stage"
"$repo/scripts/install.sh" --layout debian --destdir "$stage" --bin-dir "$bin_dir" \
    "${profile_flag[@]}" >/dev/null 2>"$repo/target/deb/install.log" ||
    { cat "$repo/target/deb/install.log" >&2; die "scripts/install.sh --layout debian failed"; }

# The sandbox: its interpreter comes from the installed python3.11 at configure
# (postinst); the virtualenv's own tools (pip, activate scripts) and its build stamp
# name the build's paths and are not needed to run programs.
find "$stage$SANDENV/bin" -mindepth 1 -delete
rm -f "$stage$SANDENV/lib64" "$stage$SANDENV/.codejail-requirements"
sed -i '/^command = /d' "$stage$SANDENV/pyvenv.cfg"
rm -rf "$stage$SANDENV"/lib/python3*/site-packages/pip "$stage$SANDENV"/lib/python3*/site-packages/pip-*.dist-info
# Bytecode is compiled at configure, by the installed interpreter (postinst).
find "$stage$SANDENV" -name __pycache__ -type d -prune -exec rm -rf {} +

# broker.toml: the default, completed by postinst.
install -D -m 0644 "$stage$CONFDIR/broker.toml" "$stage/usr/share/codejail/broker.toml"
rm "$stage$CONFDIR/broker.toml"

# As dh_strip does. (The wheels' libraries are left as their projects built them:
# strip is known to corrupt the patchelf-edited libraries auditwheel makes.)
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$stage$BINDIR"/codejail-* "$stage$LIBEXECDIR/codejail-jail" \
    "$stage$LIBEXECDIR/libcodejail_zygote.so"

if [ -z "$version" ]; then
    version=$(cd "$repo" && cargo metadata --no-deps --format-version 1 |
        python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "codejail-broker"))')
fi
# The Debian changelog cargo-deb installs (one entry: this build).
cat >"$repo/target/deb/changelog" <<CHANGELOG
codejail ($version-1) unstable; urgency=medium

  * Built from $(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo "a checkout")
    by scripts/build-deb.sh; what changed: CHANGELOG.md.

 -- codejail maintainers <maintainers@users.noreply.r-seed-f677140b.example>  $(date -R)
CHANGELOG

args=(--no-build --no-strip -p codejail-broker -o "$repo/target/deb/" --deb-version "$version-1" "${fast[@]}")
log "cargo deb ${args[*]}"
# cargo-deb warns about every asset outside target/release/: they are the stage's.
(cd "$repo" && cargo deb "${args[@]}" 2> >(grep -v "are detected as Cargo target dir" >&2)) | tail -n 1
