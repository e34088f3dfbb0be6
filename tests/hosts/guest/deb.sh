# shellcheck shell=bash disable=SC2154  # logs, P, KIND: scenario.sh's
# The "deb" scenario's checks (tests/hosts/run.sh deb), sourced by scenario.sh after
# its host report: the Debian package's life on a booted Debian 12, as an operator
# lives it (docs/operating.md, "Install from the Debian package"). Install (apt, from
# the file: only Debian's packages, no network), a run through the socket-activated
# broker, an upgrade to a newer build (the broker restarts, edited config kept),
# dpkg -r (nothing of the host's deleted), dpkg -P (only what the package made gone).
#
# Inputs: $P/deb/codejail_*.deb, two builds of the same tree, versions 1 and 2 (their
# Version sorts them: build-deb.sh --version 0.0.0~hosts1 / ~hosts2).

debs=("$P"/deb/codejail_*.deb)
# A plain path for apt-get install (and for the checks' details).
old_deb=/root/codejail-old.deb
new_deb=/root/codejail-new.deb
cp "${debs[0]}" "$old_deb"
cp "${debs[${#debs[@]} - 1]}" "$new_deb"
old_v=$(dpkg-deb -f "$old_deb" Version)
new_v=$(dpkg-deb -f "$new_deb" Version)
client() { # TIMEOUT ARGS...: the package's codejail-client as app
    local t=$1
    shift
    as_app "$t" /usr/bin/codejail-client "$@"
}
dpkg_version() { dpkg-query -W -f '${Status} ${Version}' codejail 2>/dev/null; }
# Every path below the directories a package may touch, but the ones that change by
# themselves (dpkg's and apt's state, caches, logs, bytecode of the system's python).
host_tree() {
    find /etc /usr /lib /var/lib /opt -xdev 2>/dev/null |
        grep -vE '^/var/lib/(dpkg|apt|systemd|ucf)(/|$)|/__pycache__(/|$)|^/etc/(passwd|group|shadow|gshadow|subuid|subgid)-$|^/etc/ld\.so\.cache$' |
        sort
}

# ---------------------------------------------------------------- the host before
# A file of the site's own in /usr/local/bin (the old package's dpkg -r deleted it).
mkdir -p /usr/local/bin
printf '#!/bin/sh\necho site tool\n' >/usr/local/bin/site-tool
chmod 0755 /usr/local/bin/site-tool
host_tree >"$logs/tree-before.txt"
[ "$old_v" != "$new_v" ] && dpkg --compare-versions "$new_v" gt "$old_v"
check "deb: two builds, the second newer" $? "$old_v -> $new_v"
phase setup

# ---------------------------------------------------------------- 1. install
# apt resolves the dependencies from what the host has (the host has no network:
# nothing is downloaded).
DEBIAN_FRONTEND=noninteractive apt-get install -y "$old_deb" >"$logs/install.log" 2>&1
rc=$?
check "deb install: apt-get install ./codejail.deb" $rc "exit $rc; $(dpkg_version); last: $(tail -2 "$logs/install.log")"
on_local=$(dpkg -L codejail 2>/dev/null | grep -E '^/usr/local(/|$)')
[ -z "$on_local" ] && dpkg -L codejail | grep -qx /usr/bin/codejail-broker
check "deb install: Debian paths (/usr/bin, /usr/lib/codejail), nothing in /usr/local" $? "${on_local:-none in /usr/local}"
conffiles=$(dpkg-query -W -f '${Conffiles}' codejail | awk '{print $1}' | oneline)
grep -q /etc/codejail/http.toml <<<"$conffiles"
check "deb install: conffiles" $? "$conffiles"
gid=$(getent group codejail | cut -d: -f3)
getent passwd sandbox >/dev/null && [ -n "$gid" ] &&
    grep -qx "allowed_gids = \[$gid\]   # group codejail" /etc/codejail/broker.toml
check "deb install: accounts (sysusers), broker.toml names group codejail" $? \
    "sandbox: $(id sandbox 2>&1); $(grep '^allowed_gids' /etc/codejail/broker.toml 2>&1)"
[ -x /usr/lib/codejail/sandbox/bin/python ] &&
    /usr/lib/codejail/sandbox/bin/python -E -B -c 'import numpy' 2>"$logs/sandbox-python.txt"
check "deb install: sandbox interpreter (the system's python3.11) imports numpy" $? "$(oneline <"$logs/sandbox-python.txt")"
[ "$(systemctl is-enabled codejail-broker.socket 2>&1)" = enabled ] &&
    [ "$(unit_state codejail-broker.socket)" = active ]
check "deb install: codejail-broker.socket enabled and listening" $? \
    "$(systemctl is-enabled codejail-broker.socket 2>&1), $(unit_state codejail-broker.socket)"
phase install

# ---------------------------------------------------------------- 2. serve
if [ "$KIND" = nspawn ]; then
    # No cgroup controller reaches this container (see scenario.sh): an operator's edit
    # of the config, which the upgrade must keep.
    sed -i '/^\[cgroup\]/,/^\[/ s/^required = true/required = false/' /etc/codejail/broker.toml
fi
printf '\n# edited by the operator\n' >>/etc/codejail/http.toml
getent passwd app >/dev/null || useradd --create-home --shell /bin/bash app
usermod -aG codejail app
got=$(client 60 exec -c 'print(6*7)' 2>&1)
rc=$?
[ $rc = 0 ] && [ "$got" = 42 ]
check "deb serve: codejail-client exec through the socket-activated broker" $? "exit $rc: $(oneline <<<"$got"); $(broker_tail 3)"
client 30 status >"$logs/status-deb.txt" 2>&1
rc=$?
[ $rc -le 1 ]
check "deb serve: codejail-client status" $? "exit $rc; $(grep -E '^ +(namespaces|seccomp|landlock|apparmor|cgroup)' "$logs/status-deb.txt" | oneline)"
# The fork server, as an operator turns it on (docs/operating.md): the pool's jails
# are forked from a zygote, with the package's libcodejail_zygote.so beside
# codejail-jail. It stays on for the upgrade and the trigger below.
printf '\n[pool.python]\nsize = 2\npreimport = ["json"]\nfork_server = true\n' >>/etc/codejail/broker.toml
systemctl restart codejail-broker.service >"$logs/restart-fork.log" 2>&1
wait_until 60 broker_serving
got=$(client 60 exec -c 'import sys; print("json" in sys.modules)' 2>&1)
rc=$?
client 30 status >"$logs/status-fork.txt" 2>&1
[ $rc = 0 ] && [ "$got" = True ] && [ -n "$(journalctl -u codejail-broker.service -b -o cat --no-pager CODEJAIL_SERVED=forked 2>&1)" ] &&
    grep -q 'fork server python: zygote [0-9]' "$logs/status-fork.txt"
check "deb serve: fork_server = true, a run forked from the zygote, status shows it" $? \
    "exit $rc: $(oneline <<<"$got"); $(grep 'fork server' "$logs/status-fork.txt" | oneline); $(broker_tail 3)"
pid_before=$(main_pid)
phase serve

# ---------------------------------------------------------------- 3. upgrade
DEBIAN_FRONTEND=noninteractive apt-get install -y "$new_deb" >"$logs/upgrade.log" 2>&1
rc=$?
check "deb upgrade: apt-get install ./newer.deb" $rc "exit $rc; $(dpkg_version); last: $(tail -2 "$logs/upgrade.log")"
[ "$(dpkg_version)" = "install ok installed $new_v" ]
check "deb upgrade: the newer version installed" $? "$(dpkg_version)"
wait_until 60 broker_serving
pid_after=$(main_pid)
[ -n "$pid_before" ] && [ "$pid_before" != 0 ] && [ -n "$pid_after" ] && [ "$pid_after" != 0 ] &&
    [ "$pid_after" != "$pid_before" ]
check "deb upgrade: the broker restarted" $? "MainPID $pid_before -> $pid_after"
grep -qx '# edited by the operator' /etc/codejail/http.toml &&
    { [ "$KIND" != nspawn ] || sed -n '/^\[cgroup\]/,$p' /etc/codejail/broker.toml | grep -qx 'required = false'; }
check "deb upgrade: edited http.toml (conffile) and broker.toml kept" $? \
    "$(tail -1 /etc/codejail/http.toml); cgroup: $(sed -n '/^\[cgroup\]/,$p' /etc/codejail/broker.toml | grep '^required')"
got=$(client 60 exec -c 'print(6*7)' 2>&1)
rc=$?
[ $rc = 0 ] && [ "$got" = 42 ]
check "deb upgrade: a run after the upgrade" $? "exit $rc: $(oneline <<<"$got")"
phase upgrade

# ---------------------------------------------------------------- 3b. a python3.11 update
# An update of python3.11 installs a new /usr/bin/python3.11: dpkg then runs the
# package's file trigger, which copies it into the sandbox again. The host has no
# network for a real update, so the copy is made stale and the trigger activated by
# hand, as dpkg would (dpkg-trigger, then processing the pending trigger).
sandpy=/usr/lib/codejail/sandbox/bin/python3.11
cp /bin/true "$sandpy"
pid_before=$(main_pid)
dpkg-trigger --no-await /usr/bin/python3.11 >"$logs/trigger.log" 2>&1 &&
    dpkg --triggers-only codejail >>"$logs/trigger.log" 2>&1
rc=$?
cmp -s "$sandpy" "$(readlink -f /usr/bin/python3.11)"
check "deb trigger: a python3.11 update copies the interpreter again" $? \
    "trigger exit $rc; $(oneline <"$logs/trigger.log"); $(cmp "$sandpy" "$(readlink -f /usr/bin/python3.11)" 2>&1)"
wait_until 60 broker_serving
pid_after=$(main_pid)
got=$(client 60 exec -c 'print(6*7)' 2>&1)
rc=$?
[ $rc = 0 ] && [ "$got" = 42 ] && [ "$pid_after" != "$pid_before" ]
check "deb trigger: the broker restarted, a run works" $? \
    "MainPID $pid_before -> $pid_after; exit $rc: $(oneline <<<"$got")"
phase trigger

# ---------------------------------------------------------------- 4. remove
dpkg -r codejail >"$logs/remove.log" 2>&1
rc=$?
check "deb remove: dpkg -r codejail" $rc "exit $rc; last: $(tail -2 "$logs/remove.log")"
sleep 1
procs=$(pgrep -a -f 'codejail-(broker|jail|http)')
[ -z "$procs" ] && [ "$(unit_state codejail-broker.socket)" != active ]
check "deb remove: the units stopped, no codejail process" $? "${procs:-none}; socket $(unit_state codejail-broker.socket)"
gone=$(comm -23 "$logs/tree-before.txt" <(host_tree))
[ -z "$gone" ] && [ -x /usr/local/bin/site-tool ]
check "deb remove: nothing of the host's deleted (/usr/local/bin and the rest)" $? "${gone:-none}"
left=
for f in /usr/bin/codejail-broker /usr/bin/codejail-client /usr/bin/codejail-http /usr/lib/codejail \
    /lib/systemd/system/codejail-broker.socket /usr/share/doc/codejail; do
    [ -e "$f" ] && left="$left $f"
done
[ -z "$left" ] && [ -f /etc/codejail/http.toml ] && [ -f /etc/codejail/broker.toml ]
check "deb remove: the program gone, the configuration kept" $? "left: ${left:-none}; $(find /etc/codejail -type f 2>&1 | oneline)"
phase remove

# ---------------------------------------------------------------- 5. purge
dpkg -P codejail >"$logs/purge.log" 2>&1
rc=$?
check "deb purge: dpkg -P codejail" $rc "exit $rc; last: $(tail -2 "$logs/purge.log")"
host_tree >"$logs/tree-after.txt"
gone=$(comm -23 "$logs/tree-before.txt" "$logs/tree-after.txt")
added=$(comm -13 "$logs/tree-before.txt" "$logs/tree-after.txt")
[ -z "$gone" ] && [ -z "$added" ] && [ ! -e /run/codejail ]
check "deb purge: the host's tree as before (only what the package made is gone)" $? \
    "deleted: ${gone:-none}; left: ${added:-none}"
accounts=$(getent passwd sandbox; getent group codejail)
[ -n "$accounts" ]
check "deb purge: the sandbox user and codejail group stay (Debian practice)" $? "$(oneline <<<"$accounts")"
phase purge
