#!/usr/bin/env bash
# Run every fuzz target (fuzz/, cargo-fuzz + libFuzzer, stable toolchain: `-s none`)
# for SECONDS each (default 30), from the committed seeds (fuzz/seeds/TARGET) plus the
# corpus of earlier runs (fuzz/corpus/TARGET, not committed). Fails if any target
# crashes; the crashing input is left in fuzz/artifacts/TARGET/. Prints per target the
# executions and libFuzzer's final cov:/ft: counts (no llvm-tools here).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if ! command -v cargo >/dev/null && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH=${HOME:-/root}/.cargo/bin:$PATH
fi

seconds=${1:-30}
shift || true
case $seconds in '' | *[!0-9]*) echo "scripts/fuzz.sh: SECONDS must be a number" >&2; exit 2 ;; esac
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame request plan config pyjson)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
echo "==> $(cargo fuzz --version)" >&2

cargo fuzz build -s none
failed=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    log=$(mktemp)
    echo "==> fuzz $t for ${seconds}s" >&2
    if cargo fuzz run -s none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
            -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^#[0-9]+.*DONE' "$log" | tail -1 | sed "s/^/$t: /" || true
    else
        tail -n 40 "$log" >&2
        failed+=("$t")
    fi
    rm -f "$log"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "scripts/fuzz.sh: crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
