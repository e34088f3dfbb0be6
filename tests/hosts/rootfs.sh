#!/usr/bin/env bash
# Build the test hosts' root file system: Debian 12 (bookworm) from Debian's packages
# (mmdebstrap), with systemd as PID 1, AppArmor's tools, python3 + venv, and two
# kernels for the VM scenarios: bookworm's stock linux-image-amd64 (6.1) and
# bookworm-backports' (6.12). One tree serves every scenario: systemd-nspawn boots it
# as it is (host kernel), QEMU boots an ext4 image of it with one of its kernels.
#
#   tests/hosts/rootfs.sh DIR        # DIR must not exist; root only
#
# run.sh keys its cache on this file's hash: every package and every file the image
# gets is named here, so changing any of them rebuilds the image (and only then).
# The checks themselves (guest/scenario.sh) are NOT in the image: they come with the
# project snapshot each run, so editing them never rebuilds anything.
set -euo pipefail

dir=${1:?usage: rootfs.sh DIR}
[ ! -e "$dir" ] || { echo "rootfs.sh: $dir exists" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "rootfs.sh: run as root" >&2; exit 1; }

mirror=http://deb.debian.org/debian
security=http://deb.debian.org/debian-security

# What the hosts need, beyond Debian's essential set (--variant=apt):
packages=(
    # PID 1 and what an operator's host has: systemd's units, journald, logind, udev
    # (virtio modules), dbus (systemd-run, systemctl), kmod, the accounts tools.
    systemd systemd-sysv udev dbus kmod passwd login mount util-linux procps iproute2
    # The installer's and the broker's tools: AppArmor (apparmor_parser, aa-status),
    # Python 3.11 for the sandbox venv and the app's venv (python3-venv: ensurepip).
    apparmor python3 python3-venv
    # The HTTP checks.
    curl
    # The VM kernels' boot: an initramfs with virtio and ext4.
    initramfs-tools linux-image-amd64
)

# A hook writes its files into the tree ($1) after the packages are installed.
customize=$(mktemp)
trap 'rm -f "$customize"' EXIT
cat >"$customize" <<'HOOK'
#!/bin/sh
set -eu
root=$1
# The backports kernel beside the stock one: upgrading the meta package keeps the
# stock versioned image installed (nothing is autoremoved).
chroot "$root" apt-get install -y -q --no-install-recommends -t bookworm-backports linux-image-amd64
chroot "$root" apt-get clean

echo codejail-host >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 codejail-host\n::1 localhost\n' >"$root/etc/hosts"
: >"$root/etc/fstab"
# Boot to multi-user, quietly; nothing periodic that would compete with the checks.
ln -sf /lib/systemd/system/multi-user.target "$root/etc/systemd/system/default.target"
for t in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer man-db.timer systemd-tmpfiles-clean.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$t"
done
# Root may log in on the serial console without a password (debugging a VM by hand).
chroot "$root" passwd -d root >/dev/null

# The scenario's entry point: mount the shares (VM: 9p; nspawn binds them already),
# then run the checks that came with the project snapshot. The unit powers the host
# off when it ends, however it ends.
mkdir -p "$root/usr/local/sbin" "$root/mnt/payload" "$root/mnt/results"
cat >"$root/usr/local/sbin/codejail-hosts-guest" <<'EOF'
#!/bin/bash
# codejail host tests: the guest side's entry point (tests/hosts/rootfs.sh).
set -u
# The payload (project, binaries, venv, wheel): a read-only ext4 disk labelled
# cjpayload (fast to read under TCG), else a 9p share; the results: a 9p share.
if ! mountpoint -q /mnt/payload; then
    dev=$(blkid -L cjpayload 2>/dev/null)
    if [ -n "$dev" ]; then
        mount -o ro,noload "$dev" /mnt/payload
    else
        mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576,ro payload /mnt/payload
    fi || echo "codejail-hosts-guest: cannot mount the payload" >&2
fi
if ! mountpoint -q /mnt/results; then
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 results /mnt/results ||
        echo "codejail-hosts-guest: cannot mount the results share" >&2
fi
scenario=/mnt/payload/project/tests/hosts/guest/scenario.sh
if [ ! -f "$scenario" ]; then
    echo "codejail-hosts-guest: $scenario missing" >&2
    exit 1
fi
exec bash "$scenario"
EOF
chmod 0755 "$root/usr/local/sbin/codejail-hosts-guest"
cat >"$root/etc/systemd/system/codejail-hosts.service" <<'EOF'
[Unit]
Description=codejail host tests (tests/hosts/guest/scenario.sh)
After=multi-user.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/codejail-hosts-guest
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/codejail-hosts.service \
    "$root/etc/systemd/system/multi-user.target.wants/codejail-hosts.service"
# The kernels and initramfs images are read by the host (direct kernel boot).
chmod 0644 "$root"/boot/vmlinuz-* "$root"/boot/initrd.img-*
HOOK
chmod 0755 "$customize"

# Only MODULES=list with what a VM's root needs: a small initramfs, built fast.
setup=$(mktemp)
trap 'rm -f "$customize" "$setup"' EXIT
cat >"$setup" <<'HOOK'
#!/bin/sh
set -eu
mkdir -p "$1/etc/initramfs-tools/conf.d"
printf 'MODULES=list\n' >"$1/etc/initramfs-tools/conf.d/codejail-hosts.conf"
# initramfs-tools reads its module list from every file in modules.d too.
mkdir -p "$1/usr/share/initramfs-tools/modules.d"
printf 'virtio_pci\nvirtio_blk\next4\n' >"$1/usr/share/initramfs-tools/modules.d/codejail-hosts"
HOOK
chmod 0755 "$setup"

IFS=,
include="${packages[*]}"
unset IFS
mmdebstrap --variant=apt --mode=root --format=directory \
    --include="$include" \
    --aptopt='Acquire::Languages "none"' \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --setup-hook="$setup \"\$1\"" \
    --customize-hook="$customize \"\$1\"" \
    bookworm "$dir" \
    "deb $mirror bookworm main" \
    "deb $mirror bookworm-updates main" \
    "deb $security bookworm-security main" \
    "deb $mirror bookworm-backports main"
