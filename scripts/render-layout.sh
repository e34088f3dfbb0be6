#!/usr/bin/env bash
# Render the units and AppArmor profiles for one install layout (scripts/lib/layouts/):
#
#   scripts/render-layout.sh LAYOUT OUTDIR     # OUTDIR/systemd/..., OUTDIR/apparmor/...
#   scripts/render-layout.sh LAYOUT --print    # the layout's values, KEY=value
#
# scripts/install.sh, the container image and the Debian package install these
# rendered files; the ones in the repository are templates (@BINDIR@ and the like).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/layout.sh
source "$repo/scripts/lib/layout.sh"
[ $# -eq 2 ] || { echo "usage: render-layout.sh LAYOUT OUTDIR|--print" >&2; exit 2; }
layout_load "$1"
if [ "$2" = --print ]; then
    for k in "${LAYOUT_KEYS[@]}" SANDENV; do printf '%s=%s\n' "$k" "${!k}"; done
    exit 0
fi
layout_render_all "$2"
