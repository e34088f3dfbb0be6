#!/usr/bin/env bash
# Host tests: build real Debian 12 hosts from Debian's packages on this machine and run
# the operator path of docs/operating.md on them (docs/hosts.md).
#
#   tests/hosts/run.sh [SCENARIO...]     # default: every scenario
#   tests/hosts/run.sh --help
#
# Scenarios:
#   nspawn        systemd-nspawn boots the image with systemd as PID 1 on this machine's
#                 kernel (no AppArmor, no cgroup controllers: [cgroup] required = false)
#   vm-stock      QEMU (TCG) boots it with bookworm's stock kernel (6.1: Landlock ABI 2,
#                 AppArmor on, cgroup v2 delegation)
#   vm-backports  the same with bookworm-backports' kernel (6.12)
#   deb           systemd-nspawn as nspawn, the Debian package instead of the installer:
#                 apt-get install, a run, an upgrade to a newer build, dpkg -r, dpkg -P
#                 (tests/hosts/guest/deb.sh; the two builds: scripts/build-deb.sh)
#
# Each scenario boots a fresh host from the cached image, installs the project with
# scripts/install.sh, runs tests/hosts/guest/scenario.sh's checks inside it as root and
# powers it off. This script then prints a table (scenario, check, result, detail) and
# each scenario's times, and exits non-zero if any check failed.
#
# Needs root. Installs the Debian packages it lacks (mmdebstrap, systemd-container,
# qemu-system-x86, qemu-utils, e2fsprogs), builds the binaries (cargo build --workspace
# --bins --lib: the fork server's library too), the lean sandbox venv (scripts/setup-sandbox-venv.sh --lean) and the Python
# package's wheel (pip wheel ./python, maturin), and caches the image it builds in
# $CODEJAIL_HOSTS_CACHE (default /var/cache/codejail-hosts), keyed by the hash of
# tests/hosts/rootfs.sh (the package list and every file of the image): a second run
# reuses it, a fresh machine builds it again.
#
# Environment:
#   CODEJAIL_REQUIRE_PRIVILEGED=1   a scenario that cannot run here (no root, no QEMU)
#                                   fails instead of being skipped
#   CODEJAIL_HOSTS_CACHE=DIR        the cache (default /var/cache/codejail-hosts)
#   CODEJAIL_HOSTS_TIMEOUT=SECS     kill a scenario after this long (default: nspawn 900,
#                                   a VM 2400; QEMU runs under TCG, several times slower)
#   CODEJAIL_HOSTS_BIN_DIR=DIR      take the four binaries from DIR (default: build them
#                                   with cargo, take target/debug)
#   CODEJAIL_HOSTS_KEEP=1           keep each host's disk (the VM's qcow2 overlay, the
#                                   container's overlay upper dir) after the run
#
# Results: $CACHE/runs/SCENARIO/ (results/results.tsv, results/logs/, console.log), and
# the table in $CACHE/runs/summary.tsv.
set -euo pipefail
# The whole script is one block, read before it runs: a checkout edited (or pulled)
# while a scenario runs for many minutes cannot change what this run does next.
{

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
CACHE=${CODEJAIL_HOSTS_CACHE:-/var/cache/codejail-hosts}
ALL_SCENARIOS=(nspawn vm-stock vm-backports deb)
require_privileged=${CODEJAIL_REQUIRE_PRIVILEGED:-0}

log() { printf '==> hosts: %s\n' "$*" >&2; }
die() { printf 'tests/hosts/run.sh: error: %s\n' "$*" >&2; exit 2; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

scenarios=()
while [ $# -gt 0 ]; do
    case $1 in
        -h | --help) usage; exit 0 ;;
        nspawn | vm-stock | vm-backports | deb) scenarios+=("$1") ;;
        *) die "unknown argument $1 (scenarios: ${ALL_SCENARIOS[*]}; see --help)" ;;
    esac
    shift
done
[ ${#scenarios[@]} -gt 0 ] || scenarios=("${ALL_SCENARIOS[@]}")

if ! command -v cargo >/dev/null && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH=${HOME:-/root}/.cargo/bin:$PATH
fi
PATH=$PATH:/usr/sbin:/sbin

# ---------------------------------------------------------------- results
# One row per check: scenario, check, PASS|FAIL|INFO|SKIP, detail.
rows=()
row() { rows+=("$1"$'\t'"$2"$'\t'"$3"$'\t'"${4:-}"); }
declare -A t_boot t_install t_checks t_total t_build
build_notes=()

kind_of() { case $1 in nspawn | deb) echo nspawn ;; *) echo vm ;; esac; }
needs_vm=false
needs_nspawn=false
for s in "${scenarios[@]}"; do
    case $(kind_of "$s") in vm) needs_vm=true ;; nspawn) needs_nspawn=true ;; esac
done

# A scenario that cannot run: skipped, or failed under CODEJAIL_REQUIRE_PRIVILEGED=1.
cannot_run() { # SCENARIO REASON
    if [ "$require_privileged" = 1 ]; then
        row "$1" "scenario can run here" FAIL "$2 (CODEJAIL_REQUIRE_PRIVILEGED=1)"
    else
        row "$1" "scenario can run here" SKIP "$2"
    fi
}

print_table() {
    local summary=$CACHE/runs/summary.tsv
    if [ -d "$CACHE/runs" ] && [ -w "$CACHE/runs" ]; then
        {
            printf 'scenario\tcheck\tresult\tdetail\n'
            printf '%s\n' "${rows[@]+"${rows[@]}"}"
        } >"$summary"
    fi
    echo
    echo "== host tests: checks"
    printf '%-13s %-62s %-5s %s\n' SCENARIO CHECK RESULT DETAIL
    local r s c st d
    for r in "${rows[@]+"${rows[@]}"}"; do
        IFS=$'\t' read -r s c st d <<<"$r"
        [ ${#d} -gt 160 ] && d="${d:0:157}..."
        printf '%-13s %-62s %-5s %s\n' "$s" "$c" "$st" "$d"
    done
    echo
    echo "== host tests: times (seconds)"
    local b
    for b in "${build_notes[@]+"${build_notes[@]}"}"; do echo "   build: $b"; done
    printf '   %-13s %6s %6s %8s %7s %6s\n' SCENARIO BUILD BOOT INSTALL CHECKS TOTAL
    for s in "${scenarios[@]}"; do
        printf '   %-13s %6s %6s %8s %7s %6s\n' "$s" "${t_build[$s]:--}" "${t_boot[$s]:--}" \
            "${t_install[$s]:--}" "${t_checks[$s]:--}" "${t_total[$s]:--}"
    done
    echo "   (BUILD: what this run built for the scenario, 0 when cached; CHECKS: every"
    echo "   check after install, uninstall included; TOTAL: boot to power-off)"
    echo "   results: $CACHE/runs/ (summary.tsv; per scenario results/results.tsv, results/logs/, console.log)"
}

# The closing line: "hosts: N passed, N failed, N skipped"; 0 when nothing failed.
print_counts() {
    local r n_pass=0 n_fail=0 n_skip=0
    for r in "${rows[@]+"${rows[@]}"}"; do
        case $(cut -f3 <<<"$r") in PASS) n_pass=$((n_pass + 1)) ;; FAIL) n_fail=$((n_fail + 1)) ;; SKIP) n_skip=$((n_skip + 1)) ;; esac
    done
    echo
    echo "hosts: $n_pass passed, $n_fail failed, $n_skip skipped"
    [ "$n_fail" = 0 ]
}

# ---------------------------------------------------------------- preconditions
if [ "$(id -u)" != 0 ]; then
    for s in "${scenarios[@]}"; do cannot_run "$s" "needs root (mmdebstrap, nspawn, QEMU's 9p shares)"; done
    print_table
    print_counts
    exit $?
fi

mkdir -p "$CACHE" "$CACHE/logs" "$CACHE/runs"
chmod 0755 "$CACHE"
exec 9>"$CACHE/.lock"
flock -n 9 || { log "waiting for another run.sh (lock $CACHE/.lock)"; flock 9; }

# Debian packages this run needs, installed only when missing.
ensure_packages() {
    local missing=()
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
    command -v unshare >/dev/null || missing+=(util-linux)
    if $needs_nspawn; then
        command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
    fi
    if $needs_vm; then
        command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
        command -v qemu-img >/dev/null || missing+=(qemu-utils)
        command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
    fi
    [ ${#missing[@]} -gt 0 ] || return 0
    log "installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >"$CACHE/logs/apt.log" 2>&1 || { tail -20 "$CACHE/logs/apt.log" >&2; return 1; }
    # qemu-system-x86 may have replaced a qemu-utils of another release (a backport
    # that its qemu-system-common breaks): then bookworm's comes in now.
    if $needs_vm && ! command -v qemu-img >/dev/null; then
        log "installing qemu-utils (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-utils \
            >>"$CACHE/logs/apt.log" 2>&1 || { tail -20 "$CACHE/logs/apt.log" >&2; return 1; }
    fi
}
t=$SECONDS
if ! ensure_packages; then
    for s in "${scenarios[@]}"; do cannot_run "$s" "the host packages could not be installed ($CACHE/logs/apt.log)"; done
    print_table
    print_counts
    exit 1
fi
build_notes+=("host packages: $((SECONDS - t)) s")

# ---------------------------------------------------------------- the image (cached)
rootfs_key=$(sha256sum "$here/rootfs.sh" | cut -c1-16)
rootfs=$CACHE/rootfs-$rootfs_key
rootfs_secs=0
build_rootfs() {
    if [ -f "$rootfs.ok" ] && [ -d "$rootfs" ]; then
        build_notes+=("rootfs $rootfs_key: cached")
        return 0
    fi
    log "building the rootfs $rootfs (mmdebstrap; log $CACHE/logs/rootfs-$rootfs_key.log)"
    local t=$SECONDS
    rm -rf "$rootfs" "$rootfs.tmp" "$rootfs.ok"
    if ! "$here/rootfs.sh" "$rootfs.tmp" >"$CACHE/logs/rootfs-$rootfs_key.log" 2>&1; then
        tail -20 "$CACHE/logs/rootfs-$rootfs_key.log" >&2
        rm -rf "$rootfs.tmp"
        return 1
    fi
    mv "$rootfs.tmp" "$rootfs"
    touch "$rootfs.ok"
    rootfs_secs=$((SECONDS - t))
    build_notes+=("rootfs $rootfs_key: built in $rootfs_secs s (mmdebstrap, both kernels)")
    # Older images (another rootfs.sh) are of no use any more.
    local old
    for old in "$CACHE"/rootfs-* "$CACHE"/vm-*; do
        [ -e "$old" ] || continue
        case $old in *"$rootfs_key"*) ;; *) log "removing the stale $old"; rm -rf "$old" ;; esac
    done
}

# The VM image: an ext4 file system of the rootfs (the base of each run's qcow2
# overlay) and both kernels with their initramfs, for direct kernel boot.
VM_IMAGE_VERSION=1
vmdir=$CACHE/vm-$rootfs_key-$VM_IMAGE_VERSION
vm_secs=0
build_vm_image() {
    if [ -f "$vmdir/ok" ]; then
        build_notes+=("vm image: cached ($(tr '\n' ' ' <"$vmdir/kernels.txt"))")
        return 0
    fi
    log "building the VM image $vmdir"
    local t=$SECONDS k
    rm -rf "$vmdir"
    mkdir -p "$vmdir"
    for k in "$rootfs"/boot/vmlinuz-*; do
        local v=${k##*/vmlinuz-} name
        case $v in 6.1.*) name=stock ;; *) name=backports ;; esac
        cp "$k" "$vmdir/vmlinuz-$name"
        cp "$rootfs/boot/initrd.img-$v" "$vmdir/initrd-$name"
        echo "$name=$v" >>"$vmdir/kernels.txt"
    done
    if [ ! -f "$vmdir/vmlinuz-stock" ] || [ ! -f "$vmdir/vmlinuz-backports" ]; then
        log "the rootfs lacks a kernel: $(ls "$rootfs/boot")"
        return 1
    fi
    # Room for the install (binaries, venvs) and the runs; sparse on disk.
    mkfs.ext4 -q -F -L codejail-host -d "$rootfs" "$vmdir/disk.img" 4G \
        >"$CACHE/logs/mkfs.log" 2>&1 || { cat "$CACHE/logs/mkfs.log" >&2; return 1; }
    touch "$vmdir/ok"
    vm_secs=$((SECONDS - t))
    build_notes+=("vm image: built in $vm_secs s ($(tr '\n' ' ' <"$vmdir/kernels.txt"))")
}

# ---------------------------------------------------------------- the payload
# What each host gets, read-only: a snapshot of the checkout (the other files may
# change while a VM runs), the binaries, the sandbox venv as a tar, the wheel.
payload=$CACHE/payload
payload_secs=0
build_payload() {
    local t=$SECONDS bin_dir venv_python venv py
    if [ -n "${CODEJAIL_HOSTS_BIN_DIR:-}" ]; then
        bin_dir=$CODEJAIL_HOSTS_BIN_DIR
    else
        log "cargo build --workspace --bins --lib"
        (cd "$repo" && cargo build --workspace --bins --lib) >"$CACHE/logs/cargo.log" 2>&1 ||
            { tail -20 "$CACHE/logs/cargo.log" >&2; return 1; }
        bin_dir=${CARGO_TARGET_DIR:-$repo/target}/debug
    fi
    log "the lean sandbox venv (scripts/setup-sandbox-venv.sh --lean)"
    venv_python=$("$repo/scripts/setup-sandbox-venv.sh" --lean 2>"$CACHE/logs/venv.log") ||
        { tail -20 "$CACHE/logs/venv.log" >&2; return 1; }
    venv=$(dirname "$(dirname "$venv_python")")
    log "the Python package's wheel (pip wheel ./python)"
    # The same build as scripts/python-tests.sh's `pip install ./python` (maturin as
    # the PEP 517 backend), so cargo reuses its artifacts in python/target.
    py=$CACHE/tools/venv/bin/python
    if ! "$py" -m pip --version >/dev/null 2>&1; then
        rm -rf "$CACHE/tools/venv"
        /usr/bin/python3 -m venv "$CACHE/tools/venv"
    fi
    rm -rf "$payload.tmp"
    mkdir -p "$payload.tmp/bin" "$payload.tmp/wheels" "$payload.tmp/project"
    (cd "$repo" && PYO3_PYTHON=$py "$py" -m pip wheel --quiet --no-deps \
        --disable-pip-version-check -w "$payload.tmp/wheels" ./python) >"$CACHE/logs/wheel.log" 2>&1 ||
        { tail -20 "$CACHE/logs/wheel.log" >&2; return 1; }
    local b
    for b in codejail-broker codejail-jail codejail-client codejail-http; do
        [ -x "$bin_dir/$b" ] || { log "$bin_dir/$b is missing"; return 1; }
        cp "$bin_dir/$b" "$payload.tmp/bin/$b"
    done
    # The fork server's library, which scripts/install.sh installs beside codejail-jail.
    cp "$bin_dir/libcodejail_zygote.so" "$payload.tmp/bin/"
    tar -C "$venv" -cf "$payload.tmp/sandbox.tar" .
    # The deb scenario's two builds of the package (same tree, the second newer).
    if [[ " ${scenarios[*]} " == *" deb "* ]]; then
        log "the Debian package, twice (scripts/build-deb.sh --version 0.0.0~hosts1, ~hosts2)"
        mkdir -p "$payload.tmp/deb"
        local v deb
        for v in 0.0.0~hosts1 0.0.0~hosts2; do
            deb=$("$repo/scripts/build-deb.sh" --bin-dir "$bin_dir" --lean-sandbox \
                --sandbox-from "$venv" --version "$v" --fast 2>>"$CACHE/logs/deb.log") ||
                { tail -20 "$CACHE/logs/deb.log" >&2; return 1; }
            cp "$deb" "$payload.tmp/deb/"
        done
    fi
    # The checkout as git sees it (tracked and untracked, not ignored), with the
    # working tree's contents.
    if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$repo" && git ls-files -z -co --exclude-standard |
            while IFS= read -r -d '' f; do
                if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
            done | tar --null -T - -cf -) | tar -C "$payload.tmp/project" -xf -
    else
        tar -C "$repo" --exclude=./target --exclude=./python/target -cf - . |
            tar -C "$payload.tmp/project" -xf -
    fi
    chmod -R a+rX "$payload.tmp"
    rm -rf "$payload"
    mv "$payload.tmp" "$payload"
    payload_secs=$((SECONDS - t))
    build_notes+=("payload (cargo build, venv, wheel, snapshot): $payload_secs s; $(du -sh "$payload" | cut -f1)")
}

t_all=$SECONDS
if ! build_rootfs; then
    for s in "${scenarios[@]}"; do row "$s" "build: rootfs (mmdebstrap)" FAIL "see $CACHE/logs/rootfs-$rootfs_key.log"; done
    print_table
    print_counts
    exit 1
fi
if $needs_vm && ! build_vm_image; then
    for s in "${scenarios[@]}"; do
        [ "$(kind_of "$s")" = vm ] && row "$s" "build: vm image" FAIL "see $CACHE/logs/mkfs.log"
    done
    print_table
    print_counts
    exit 1
fi
if ! build_payload; then
    for s in "${scenarios[@]}"; do row "$s" "build: payload" FAIL "cargo, venv or wheel failed (logs in $CACHE/logs)"; done
    print_table
    print_counts
    exit 1
fi

# ---------------------------------------------------------------- one scenario
# Wait for the host to finish (or time out), noting when the guest started its checks.
# Sets: boot_secs, total_secs, timed_out.
watch_host() { # PID RUNDIR TIMEOUT
    local pid=$1 run=$2 limit=$3 t0=$SECONDS
    boot_secs='' timed_out=false
    while kill -0 "$pid" 2>/dev/null; do
        if [ -z "$boot_secs" ] && [ -f "$run/results/started" ]; then
            boot_secs=$((SECONDS - t0))
            log "$(basename "$run"): booted in $boot_secs s, checks running"
        fi
        if [ $((SECONDS - t0)) -ge "$limit" ]; then
            timed_out=true
            log "$(basename "$run"): timed out after $limit s: killing it"
            kill -TERM "$pid" 2>/dev/null || true
            sleep 10
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 1
    done
    wait "$pid" 2>/dev/null || true
    total_secs=$((SECONDS - t0))
}

start_nspawn() { # RUNDIR
    local run=$1
    mkdir -p "$run/upper" "$run/work" "$run/root"
    # A private mount namespace: the overlay (the cached tree stays pristine) and the
    # tmpfs nspawn needs on /run/systemd/nspawn without a systemd host. The landlock
    # syscalls are outside nspawn's default seccomp allow list.
    # shellcheck disable=SC2016 # expanded by the inner sh
    unshare -m --propagation private sh -c '
        set -e
        mkdir -p /run/systemd/nspawn
        mount -t tmpfs tmpfs /run/systemd/nspawn
        mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/work" "$2/root"
        exec systemd-nspawn --quiet -D "$2/root" -b -M codejail-hosts \
            --register=no --keep-unit --private-network --console=pipe \
            --system-call-filter="landlock_create_ruleset landlock_add_rule landlock_restrict_self" \
            --bind-ro="$3:/mnt/payload" --bind="$2/results:/mnt/results"
    ' sh "$rootfs" "$run" "$payload" </dev/null >"$run/console.log" 2>&1 &
    host_pid=$!
}

start_vm() { # RUNDIR KERNEL(stock|backports)
    local run=$1 k=$2
    qemu-img create -q -f qcow2 -F raw -b "$vmdir/disk.img" "$run/disk.qcow2"
    # The payload as a read-only disk: reading 400 MB over 9p takes minutes under TCG
    # (6.12's 9p most of all), a virtio disk seconds.
    local mib
    mib=$(( $(du -sm "$payload" | cut -f1) * 5 / 4 + 64 ))
    mkfs.ext4 -q -F -L cjpayload -d "$payload" "$run/payload.img" "${mib}M" >"$run/mkfs-payload.log" 2>&1 ||
        { log "mkfs of the payload failed: $(cat "$run/mkfs-payload.log")"; return 1; }
    # No network device at all; the payload on its disk, the results over 9p.
    qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp 2 \
        -display none -monitor none -serial "file:$run/console.log" -no-reboot \
        -kernel "$vmdir/vmlinuz-$k" -initrd "$vmdir/initrd-$k" \
        -append "root=/dev/vda rw console=ttyS0 panic=1 fsck.mode=skip systemd.show_status=1" \
        -drive "file=$run/disk.qcow2,if=virtio,format=qcow2,cache=unsafe" \
        -drive "file=$run/payload.img,if=virtio,format=raw,readonly=on" \
        -nic none -device virtio-rng-pci \
        -virtfs "local,path=$run/results,mount_tag=results,security_model=none" \
        </dev/null >"$run/qemu.log" 2>&1 &
    host_pid=$!
}

run_scenario() { # SCENARIO
    local s=$1 kind run limit
    kind=$(kind_of "$s")
    run=$CACHE/runs/$s
    rm -rf "$run"
    mkdir -p "$run/results"
    printf 'SCENARIO=%s\nKIND=%s\n' "$s" "$kind" >"$run/results/scenario.env"
    t_build[$s]=$((rootfs_secs + payload_secs))
    case $kind in
        nspawn)
            command -v systemd-nspawn >/dev/null || { cannot_run "$s" "systemd-nspawn missing"; return; }
            limit=${CODEJAIL_HOSTS_TIMEOUT:-900}
            log "$s: booting (systemd-nspawn, kernel $(uname -r)); timeout $limit s"
            start_nspawn "$run"
            ;;
        vm)
            command -v qemu-system-x86_64 >/dev/null || { cannot_run "$s" "qemu-system-x86_64 missing"; return; }
            t_build[$s]=$((rootfs_secs + vm_secs + payload_secs))
            limit=${CODEJAIL_HOSTS_TIMEOUT:-2400}
            local k=${s#vm-}
            log "$s: booting (QEMU TCG, kernel $(grep "^$k=" "$vmdir/kernels.txt" | cut -d= -f2)); timeout $limit s"
            start_vm "$run" "$k" || { row "$s" "host: booted, checks started" FAIL "could not start the VM"; return; }
            ;;
    esac
    watch_host "$host_pid" "$run" "$limit"
    # The host's disks go (hundreds of MB each); the results and logs stay.
    if [ "${CODEJAIL_HOSTS_KEEP:-0}" != 1 ]; then
        rm -rf "$run/payload.img" "$run/disk.qcow2" "$run/upper" "$run/work" "$run/root"
    fi
    t_boot[$s]=${boot_secs:--}
    t_total[$s]=$total_secs

    local res=$run/results/results.tsv
    if [ -n "$boot_secs" ]; then
        row "$s" "host: booted, checks started" PASS "after $boot_secs s"
    else
        row "$s" "host: booted, checks started" FAIL "no sign of the guest's checks after $total_secs s; console: $(tail -5 "$run/console.log" 2>/dev/null | tr '\n\t' '  ')"
    fi
    if [ -f "$res" ]; then
        local c st d
        while IFS=$'\t' read -r c st d; do
            case $st in
                TIME)
                    case $c in
                        install) t_install[$s]=$d ;;
                        *) t_checks[$s]=$((${t_checks[$s]:-0} + d)) ;;
                    esac
                    ;;
                *) row "$s" "$c" "$st" "$d" ;;
            esac
        done <"$res"
    fi
    if $timed_out; then
        row "$s" "host: finished within the timeout" FAIL "killed after $limit s; last check: $(tail -1 "$res" 2>/dev/null | cut -f1); console: $(tail -3 "$run/console.log" | tr '\n\t' '  ' | cut -c1-300)"
    elif [ -f "$run/results/finished" ]; then
        row "$s" "host: checks ran to the end, host powered off" PASS "in $total_secs s"
    else
        row "$s" "host: checks ran to the end, host powered off" FAIL "the host stopped after $total_secs s before the end of the checks; console: $(tail -3 "$run/console.log" | tr '\n\t' '  ' | cut -c1-300)"
    fi
}

for s in "${scenarios[@]}"; do
    run_scenario "$s"
done

set +e
print_table
# The evidence of every failed scenario: the broker's journal, the console's tail.
for s in "${scenarios[@]}"; do
    run=$CACHE/runs/$s
    printf '%s\n' "${rows[@]+"${rows[@]}"}" | grep -q "^$s"$'\t'".*"$'\t'"FAIL"$'\t' || continue
    echo
    echo "== $s: broker journal, last lines ($run/results/logs/broker.journal)"
    tail -25 "$run/results/logs/broker-tail.txt" 2>/dev/null | sed 's/^/   | /'
    echo "== $s: console, last lines ($run/console.log)"
    tail -15 "$run/console.log" 2>/dev/null | sed 's/^/   | /'
done
echo
echo "hosts: total $((SECONDS - t_all)) s"
print_counts
exit $?
}
