#!/bin/bash
# The guest side of the host tests (tests/hosts/run.sh): runs as root inside a booted
# Debian 12 host (systemd-nspawn container or QEMU VM), started by the oneshot unit
# codejail-hosts.service that tests/hosts/rootfs.sh puts in the image. It follows the
# operator path (docs/operating.md) and writes one line per check to /mnt/results/results.tsv:
#
#   CHECK <TAB> PASS|FAIL|INFO|SKIP <TAB> DETAIL
#
# plus TIME lines (phase <TAB> TIME <TAB> seconds) and logs under /mnt/results/logs/.
# Every check runs whatever failed before it (one run shows every failure); the unit
# powers the host off when this script ends.
#
# Inputs: /mnt/payload (read-only: project/ = a snapshot of the checkout, bin/ = the
# four binaries, sandbox.tar = the lean sandbox venv, wheels/ = the Python package),
# /mnt/results/scenario.env (SCENARIO=..., KIND=nspawn|vm).
set -u
umask 022
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8 SYSTEMD_PAGER='' SYSTEMD_COLORS=0

P=/mnt/payload
R=/mnt/results
repo=$P/project
here=$repo/tests/hosts/guest
logs=$R/logs
mkdir -p "$logs"
SCENARIO=unknown KIND=unknown
# shellcheck disable=SC1091
[ -f "$R/scenario.env" ] && . "$R/scenario.env"
out=$R/results.tsv
: >"$out"
date +%s >"$R/started"

SANDENV=/usr/local/lib/codejail/sandbox
SOCKET=/run/codejail/broker.sock
RUN_IDS_FIRST=1879048192
RUN_IDS_COUNT=64

# ---------------------------------------------------------------- recording
oneline() { tr '\n\t' '  ' | sed 's/  */ /g; s/^ //; s/ $//' | cut -c1-400; }
record() { # STATUS CHECK DETAIL
    local detail
    detail=$(printf '%s' "$3" | oneline)
    printf '%s\t%s\t%s\n' "$2" "$1" "$detail" >>"$out"
    printf 'codejail-hosts: %-5s %s: %s\n' "$1" "$2" "$detail" >&2
}
pass() { record PASS "$1" "${2:-}"; }
fail() { record FAIL "$1" "${2:-}"; }
info() { record INFO "$1" "${2:-}"; }
skip() { record SKIP "$1" "${2:-}"; }
check() { # CHECK CONDITION-RC DETAIL: PASS when rc is 0
    if [ "$2" = 0 ]; then pass "$1" "$3"; else fail "$1" "$3"; fi
}
phase_start=$SECONDS
phase() { # NAME: the time since the previous phase mark
    printf '%s\tTIME\t%s\n' "$1" $((SECONDS - phase_start)) >>"$out"
    phase_start=$SECONDS
}
is_vm() { [ "$KIND" = vm ]; }

# As the app user (a member of codejail), with a bound on everything.
as_app() { # TIMEOUT CMD...
    local t=$1
    shift
    timeout -k 5 "$t" runuser -u app -- "$@"
}
client() { # TIMEOUT ARGS...: codejail-client as app
    local t=$1
    shift
    as_app "$t" /usr/local/bin/codejail-client "$@"
}
main_pid() { systemctl show -p MainPID --value codejail-broker.service 2>/dev/null; }
unit_state() { systemctl is-active "$1" 2>/dev/null; }
# The status verdict: 0 serving with every required layer, 1 degraded, else down.
broker_serving() { client 30 status >/dev/null 2>&1; [ $? -le 1 ]; }
served_count() { # HOW: the broker's runs this boot served HOW (cold, warm, forked)
    journalctl -u codejail-broker.service -b -o cat --no-pager "CODEJAIL_SERVED=$1" 2>/dev/null | wc -l
}
wait_until() { # SECONDS CMD...: poll every second
    local deadline=$((SECONDS + $1))
    shift
    while ! "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 1
    done
}
secs_of() { # a systemd time span ("30s", "1min 30s") in whole seconds
    systemd-analyze timespan "$1" 2>/dev/null | awk '/μs:/ { print int($2 / 1000000); f = 1 } END { if (!f) print 0 }'
}
json_get() { # FILE EXPR: python expression on `d` (the parsed JSON)
    python3 - "$1" "$2" <<'PY' 2>/dev/null
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print("unparsable: %s" % e)
    sys.exit(1)
r = eval(sys.argv[2], {"d": d})
print(r if isinstance(r, str) else json.dumps(r))
PY
}
# The last lines of the broker's journal, for a failure's detail.
broker_tail() {
    journalctl -u codejail-broker.service -b --no-pager -o cat -n "${1:-5}" 2>/dev/null | oneline
}
collect_logs() { # SUFFIX
    journalctl -u codejail-broker.service -u codejail-broker.socket -b --no-pager \
        >"$logs/broker.journal$1" 2>&1
    journalctl -u codejail-broker.service -b --no-pager -o cat -n 40 >"$logs/broker-tail$1.txt" 2>&1
    journalctl -u codejail-http.service -b --no-pager >"$logs/http.journal$1" 2>&1
    systemctl status --no-pager -l codejail-broker.socket codejail-broker.service \
        codejail-http.service >"$logs/systemctl-status$1.txt" 2>&1
}

echo "codejail-hosts: scenario $SCENARIO ($KIND) starting" >&2

# ---------------------------------------------------------------- 0. the host
kernel=$(uname -r)
lsm=$(cat /sys/kernel/security/lsm 2>/dev/null || echo "?")
landlock_abi=$(python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); r = l.syscall(444, None, 0, 1); print(r if r >= 0 else "none (errno %d)" % ctypes.get_errno())' 2>&1)
aa_enabled=$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null || echo "no")
cgfs=$(stat -fc %T /sys/fs/cgroup 2>/dev/null)
info "host: kernel" "$kernel; LSMs $lsm; Landlock ABI $landlock_abi; AppArmor enabled: $aa_enabled; /sys/fs/cgroup: $cgfs; $(systemctl --version | head -1)"
have_apparmor=false
[ -d /sys/kernel/security/apparmor ] && [ "$aa_enabled" = Y ] && have_apparmor=true

# The Debian package's scenario has checks of its own (tests/hosts/guest/deb.sh).
if [ "$SCENARIO" = deb ]; then
    # shellcheck source=tests/hosts/guest/deb.sh
    . "$here/deb.sh"
    journalctl -b --no-pager >"$logs/journal-full.txt" 2>&1
    echo "codejail-hosts: scenario $SCENARIO done" >&2
    date +%s >"$R/finished"
    sync
    exit 0
fi

# ---------------------------------------------------------------- 1. install
# The sandbox venv, built on the build host as the installer would (a --copies venv
# of the same /usr/bin/python3.11): placed where the installer finds it up to date.
mkdir -p "$SANDENV"
if tar -C "$SANDENV" -xf "$P/sandbox.tar" 2>"$logs/sandbox-untar.log"; then
    pass "install: sandbox venv staged" "$(du -sh "$SANDENV" | cut -f1) at $SANDENV"
else
    fail "install: sandbox venv staged" "$(cat "$logs/sandbox-untar.log")"
fi
"$repo/scripts/install.sh" --bin-dir "$P/bin" --lean-sandbox >"$logs/install.log" 2>&1
rc=$?
check "install: scripts/install.sh --bin-dir --lean-sandbox" $rc \
    "exit $rc; $(grep -E 'up to date|building' "$logs/install.log" | head -1); last: $(tail -2 "$logs/install.log")"
cc=$(sed -n '/check-config/,/^==> 9/p' "$logs/install.log")
if grep -q 'a required layer does not hold' <<<"$cc"; then
    info "install: check-config" "a required layer does not hold: $(grep -E '(unavailable|partial) +required' <<<"$cc" | oneline)"
else
    info "install: check-config" "$(grep -cE '^ +[a-z_]+ +(full|partial|unavailable)' <<<"$cc") layers reported, every required one holds"
fi

if [ "$KIND" = nspawn ]; then
    # No cgroup controller reaches a container on the build host's hybrid hierarchy:
    # per-run cgroups are unavailable, so the config makes them optional.
    if sed -i '/^\[cgroup\]/,/^\[/ s/^required = true/required = false/' /etc/codejail/broker.toml &&
        sed -n '/^\[cgroup\]/,$p' /etc/codejail/broker.toml | grep -qx 'required = false'; then
        pass "config: [cgroup] required = false (nspawn)" "/etc/codejail/broker.toml edited before the first start"
    else
        fail "config: [cgroup] required = false (nspawn)" "could not edit /etc/codejail/broker.toml"
    fi
fi
if is_vm; then
    # QEMU without KVM (TCG) runs code many times slower than a real host: the
    # installer's default wall-clock limit (REALTIME = 1) kills ordinary runs there at
    # random. The checks that are about REALTIME set it themselves.
    if sed -i '/^\[limits.defaults\]/,/^\[/ s/^REALTIME = 1$/REALTIME = 10/' /etc/codejail/broker.toml &&
        sed -n '/^\[limits.defaults\]/,/^\[/p' /etc/codejail/broker.toml | grep -qx 'REALTIME = 10'; then
        pass "config: [limits.defaults] REALTIME = 10 (TCG is slow)" "/etc/codejail/broker.toml edited before the first start"
    else
        fail "config: [limits.defaults] REALTIME = 10 (TCG is slow)" "no 'REALTIME = 1' under [limits.defaults]: $(sed -n '/^\[limits.defaults\]/,/^\[/p' /etc/codejail/broker.toml | oneline)"
    fi
fi
timeout 60 systemd-run --quiet --wait --pipe --collect \
    -p User=sandbox -p Group=sandbox -p Delegate=yes \
    -p AmbientCapabilities="CAP_SETUID CAP_SETGID" \
    -p CapabilityBoundingSet="CAP_SETUID CAP_SETGID" -p NoNewPrivileges=yes \
    /usr/local/bin/codejail-broker check-config /etc/codejail/broker.toml >"$logs/check-config.txt" 2>&1
rc=$?
check "config: check-config (as the unit would)" $rc "exit $rc; $(grep -E 'unavailable|partial|error' "$logs/check-config.txt" | head -4)"

getent passwd app >/dev/null || useradd --create-home --shell /bin/bash app
usermod -aG codejail app
id app | grep -q '(codejail)'
check "install: app user in group codejail" $? "$(id app)"
phase install

# ---------------------------------------------------------------- 2. socket activation
sock_state=$(unit_state codejail-broker.socket)
[ "$sock_state" = active ] && [ "$(systemctl is-enabled codejail-broker.socket 2>&1)" = enabled ]
check "socket: codejail-broker.socket enabled and active" $? "$sock_state, $(systemctl is-enabled codejail-broker.socket 2>&1), $(ls -l $SOCKET 2>&1)"
svc_before=$(unit_state codejail-broker.service)
[ "$svc_before" = inactive ]
check "socket: service not started before the first connection" $? "codejail-broker.service: $svc_before"

# The operator's first command after install.
t0=$SECONDS
client 120 status >"$logs/status-first.txt" 2>&1
first_rc=$?
first_secs=$((SECONDS - t0))
# Started by that connection (Type=notify: active only once READY=1 came).
not_activating() { [ "$(unit_state codejail-broker.service)" != activating ]; }
wait_until 120 not_activating
svc_after=$(unit_state codejail-broker.service)
[ "$svc_after" = active ]
check "socket: first connection started the service" $? "codejail-broker.service: $svc_before -> $svc_after; $(systemctl show -p ActiveEnterTimestamp --value codejail-broker.service); restarts: $(systemctl show -p NRestarts --value codejail-broker.service); broker: $(broker_tail 3)"
restarts=$(systemctl show -p NRestarts --value codejail-broker.service)
[ "$restarts" = 0 ]
check "socket: the broker's first start succeeded (no restart)" $? "NRestarts=$restarts; $(journalctl -u codejail-broker.service -b -o cat --no-pager | grep -E 'refusing|failed|Failed' | head -3)"
[ $first_rc = 0 ]
check "status: first codejail-client status (socket activation)" $? "exit $first_rc after ${first_secs}s: $(tail -2 "$logs/status-first.txt")"

# The broker's start-up self-tests that failed so far (check-config's, in transient
# units, and the service's), from the journal.
selftests() {
    local lines
    lines=$(journalctl -b -o cat --no-pager 2>/dev/null | grep -E 'a required layer does not hold here: |start-up self-test failed, refusing' | sed 's/.*: probe run/probe run/')
    if [ -z "$lines" ]; then
        printf 'none'
    else
        printf '%s: %s' "$(grep -c . <<<"$lines")" "$(sort <<<"$lines" | uniq -c | head -3 | oneline)"
    fi
}
info "self-test: start-up self-tests failed so far" "$(selftests)"
# A broker that could not start is not serving: the operator restarts it, and every
# later check runs against that broker (the failure above stays recorded).
if ! broker_serving; then
    systemctl reset-failed codejail-broker.service codejail-broker.socket 2>/dev/null
    systemctl restart codejail-broker.socket
    t0=$SECONDS
    if wait_until 180 broker_serving; then
        info "recovery: systemctl restart codejail-broker.socket by hand" "serving again after $((SECONDS - t0))s (NRestarts=$(systemctl show -p NRestarts --value codejail-broker.service))"
    else
        info "recovery: systemctl restart codejail-broker.socket by hand" "still not serving after $((SECONDS - t0))s: $(broker_tail 3)"
    fi
fi

svc_type=$(systemctl show -p Type --value codejail-broker.service)
status_text=$(systemctl show -p StatusText --value codejail-broker.service)
systemctl status --no-pager codejail-broker.service >"$logs/systemctl-status-broker.txt" 2>&1
[ "$svc_type" = notify ] && [ -n "$status_text" ] && grep -q 'Status: "' "$logs/systemctl-status-broker.txt"
check "notify: Type=notify and a STATUS= line" $? "Type=$svc_type; Status: \"$status_text\""

# ---------------------------------------------------------------- 7. the confinement report
client 60 status >"$logs/status.txt" 2>&1
rc=$?
[ $rc = 0 ] && grep -q 'LAYER' "$logs/status.txt"
check "status: codejail-client status exit 0, layers printed" $? "exit $rc: $(grep -E '^verdict|error' "$logs/status.txt" | head -2)"
client 60 status --json >"$logs/status.json" 2>"$logs/status-json.err"
rc=$?
layers=$(json_get "$logs/status.json" '" ".join(sorted(d["layers"]))')
if [ $rc -le 1 ] && [ -n "$layers" ] && [ "${layers#unparsable}" = "$layers" ]; then
    pass "status: --json parses" "exit $rc; mode $(json_get "$logs/status.json" 'd["mode"]'); layers: $layers"
    while IFS=$'\t' read -r l text; do
        info "layer: $l" "$text"
    done < <(python3 - "$logs/status.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for name, l in sorted(d["layers"].items()):
    print("%s\t%s (%s%s): %s" % (name, l["state"], "required" if l["required"] else "optional",
                               "" if l["holds"] else ", does not hold", " ".join(l["detail"].split())))
PY
)
else
    fail "status: --json parses" "exit $rc: $(cat "$logs/status-json.err" "$logs/status.json" | head -3)"
    layers=
fi
layer_state() { json_get "$logs/status.json" "d['layers']['$1']['state']"; }
expect_layer() { # LAYER EXPECTED-STATE WHY
    local got
    got=$(layer_state "$1")
    [ "$got" = "$2" ]
    check "report: $1 $2" $? "got ${got:-nothing} ($3)"
}
# Landlock: full needs ABI 6 (TCP rules: 4, abstract-socket and signal scopes: 6);
# below it the filesystem rules still hold and the report says partial.
if [ "$landlock_abi" -ge 6 ] 2>/dev/null; then
    expect_layer landlock full "kernel Landlock ABI $landlock_abi"
else
    expect_layer landlock partial "kernel Landlock ABI $landlock_abi < 6"
fi
got=$(json_get "$logs/status.json" "'%s %s' % (d['layers']['landlock']['required'], d['layers']['landlock']['holds'])")
[ "$got" = "True True" ]
check "report: landlock required and holds" $? "required, holds: ${got:-nothing}"
expect_layer identity full "per-run uids from run_ids"
if is_vm; then
    expect_layer cgroups full "systemd's Delegate=yes on a cgroup v2 host"
else
    got=$(json_get "$logs/status.json" "'%s %s' % (d['layers']['cgroups']['state'], d['layers']['cgroups']['required'])")
    [ "$got" = "unavailable False" ]
    check "report: cgroups unavailable, optional (nspawn)" $? "got ${got:-nothing}"
fi
if $have_apparmor; then
    expect_layer apparmor full "the kernel has AppArmor, the profiles are loaded"
else
    expect_layer apparmor unavailable "no AppArmor in this kernel"
fi

# ------------------------------------------------ 1. the documented calls (operating.md)
client 60 exec -c 'print(6*7)' >"$logs/exec.txt" 2>&1
rc=$?
[ $rc = 0 ] && [ "$(cat "$logs/exec.txt")" = 42 ]
check "client: exec -c 'print(6*7)'" $? "exit $rc: $(head -c 300 "$logs/exec.txt")"

client 60 safe-exec -c 'x = 1 + 1' >"$logs/safe-exec.txt" 2>&1
rc=$?
[ $rc = 0 ] && [ "$(cat "$logs/safe-exec.txt")" = '{"x": 2}' ]
check "client: safe-exec -c 'x = 1 + 1'" $? "exit $rc: $(head -c 300 "$logs/safe-exec.txt")"

# numpy, an extension module of the sandbox below /usr/local (the installer's layout):
# every profile of the program's stack must let it be mapped.
client 120 exec --limit CPU=10 --limit REALTIME=30 -c 'import numpy; print(int(numpy.arange(10).sum()))' >"$logs/numpy.txt" 2>&1
rc=$?
[ $rc = 0 ] && [ "$(cat "$logs/numpy.txt")" = 45 ]
check "client: exec -c 'import numpy ...' (cold)" $? "exit $rc: $(head -c 300 "$logs/numpy.txt")"

# The program's environment: TMPDIR names the run's writable tmp/ (docs/compat.md §1), so
# tempfile works. (glibc drops TMPDIR from a secure-exec's environment, AT_SECURE.)
client 60 exec --limit FSIZE=1048576 -c '
import os, sys, tempfile
print(os.environ.get("TMPDIR"))
with tempfile.NamedTemporaryFile() as f:
    f.write(b"x")
    f.flush()
    print(f.name)
print(" ".join(sorted(os.environ)))' >"$logs/tmpdir.txt" 2>&1
rc=$?
tmpdir=$(sed -n 1p "$logs/tmpdir.txt")
tmpname=$(sed -n 2p "$logs/tmpdir.txt")
[ $rc = 0 ] && [[ $tmpdir == /tmp/codejail-*/tmp ]] && [[ $tmpname == "$tmpdir"/* ]]
check "jail: TMPDIR is the run's tmp/ and tempfile works" $? "exit $rc: TMPDIR=$tmpdir; tempfile: $tmpname; environment: $(sed -n 3p "$logs/tmpdir.txt"); $(tail -1 "$logs/tmpdir.txt")"

# The Python package, from the app's own venv, installed offline from the wheel.
wheel=$(find "$P/wheels" -name 'codejail-*.whl' 2>/dev/null | head -1)
# pip runs from Debian's own pip wheel (python3-venv ships it): ensurepip's
# install of pip into the venv takes a minute under TCG and adds nothing here.
pip_whl=$(find /usr/share/python-wheels -name 'pip-*.whl' 2>/dev/null | head -1)
as_app 300 python3 -m venv --without-pip /home/app/venv >"$logs/app-venv.log" 2>&1 &&
    as_app 300 /home/app/venv/bin/python "$pip_whl/pip" install --no-index --no-deps --no-compile \
        --disable-pip-version-check "$wheel" >>"$logs/app-venv.log" 2>&1
rc=$?
check "python: pip install the wheel (offline) as app" $rc "exit $rc: ${wheel##*/}; $(tail -1 "$logs/app-venv.log")"
as_app 120 /home/app/venv/bin/python - >"$logs/python-package.txt" 2>&1 <<PY
from codejail import jail_code, safe_exec
jail_code.configure("python", "$SANDENV/bin/python")
# Upstream's default REALTIME is 1 s, and under TCG a cold run can take about that
# long: this check is the package's round trip (REALTIME itself is checked below).
jail_code.set_limit("REALTIME", 30)
r = jail_code.jail_code("python", "print(6 * 7)")
assert r.stdout == b"42\n", (r.status, r.stdout, r.stderr)
g = {"x": 16}
safe_exec.safe_exec("x = x + 1", g)
assert g == {"x": 17}, g
print("jail_code stdout %r, safe_exec globals %r" % (r.stdout, g))
PY
rc=$?
check "python: jail_code + safe_exec from the app's venv" $rc "exit $rc: $(tail -3 "$logs/python-package.txt")"

# codejail-http, as its unit runs it.
systemctl start codejail-http.service >"$logs/http-start.txt" 2>&1
health() { [ "$(curl -s -o /dev/null -m 5 -w '%{http_code}' http://127.0.0.1:8550/health/)" = 200 ]; }
t0=$SECONDS
wait_until 150 health
rc=$?
check "http: codejail-http.service, GET /health/ 200" $rc "$(unit_state codejail-http.service); after $((SECONDS - t0))s: $(curl -s -m 5 http://127.0.0.1:8550/health/ 2>&1 | head -c 200); $(journalctl -u codejail-http -b -o cat -n 2 --no-pager | oneline)"
payload='{"code": "x = x + 1\ny = 6 * 7", "globals_dict": {"x": 16}, "python_path": null, "limit_overrides_context": null, "slug": "hosts-http"}'
curl -s -m 60 -w '\n%{http_code}' --data-urlencode "payload=$payload" \
    http://127.0.0.1:8550/api/v0/code-exec >"$logs/http-exec.txt" 2>&1
body=$(head -n -1 "$logs/http-exec.txt")
code=$(tail -n 1 "$logs/http-exec.txt")
[ "$code" = 200 ] && python3 -c 'import json, sys; d = json.loads(sys.argv[1]); assert d == {"globals_dict": {"x": 17, "y": 42}}, d' "$body" 2>/dev/null
check "http: POST /api/v0/code-exec returns the globals" $? "HTTP $code: $(head -c 300 <<<"$body")"
phase readme

# ---------------------------------------------------------------- 4. journald fields
client 60 exec --json --slug hosts-realtime --limit REALTIME=1 -c 'import time; time.sleep(10)' >"$logs/realtime.json" 2>&1
rc=$?
hit=$(json_get "$logs/realtime.json" 'd.get("limit_hit")')
[ $rc = 137 ] && [ "$hit" = REALTIME ]
check "limits: REALTIME=1 kills a sleep(10)" $? "exit $rc, limit_hit $hit: $(head -c 200 "$logs/realtime.json")"
fields="CODEJAIL_RUN_ID CODEJAIL_SLUG CODEJAIL_PEER_UID CODEJAIL_COMMAND CODEJAIL_LIMITS CODEJAIL_OUTCOME CODEJAIL_STATUS CODEJAIL_LIMIT_HIT CODEJAIL_WALL_MS CODEJAIL_WARM"
journal_entry() {
    journalctl -u codejail-broker.service -b -o verbose --no-pager CODEJAIL_LIMIT_HIT=REALTIME CODEJAIL_SLUG=hosts-realtime >"$logs/journal-realtime.txt" 2>&1
    grep -q 'CODEJAIL_RUN_ID=' "$logs/journal-realtime.txt"
}
wait_until 20 journal_entry
missing=
for f in $fields; do grep -q "^ *$f=" "$logs/journal-realtime.txt" || missing="$missing $f"; done
app_uid=$(id -u app)
[ -z "$missing" ] && grep -q "CODEJAIL_PEER_UID=$app_uid\$" "$logs/journal-realtime.txt"
check "journal: CODEJAIL_* fields of a REALTIME-killed run" $? "${missing:+missing:$missing; }$(grep -oE 'CODEJAIL_(RUN_ID|PEER_UID|OUTCOME|STATUS|LIMIT_HIT|WALL_MS|WARM)=[^ ]*' "$logs/journal-realtime.txt" | head -7 | oneline)"

# ---------------------------------------------------------------- 5. limits and cgroups
client 120 exec --json --limit MEMORY=67108864 --limit REALTIME=30 --limit CPU=10 \
    -c 'b = bytearray(200 << 20)
for i in range(0, len(b), 4096): b[i] = 1
print("allocated", len(b))' >"$logs/memory.json" 2>&1
rc=$?
hit=$(json_get "$logs/memory.json" 'd.get("limit_hit")')
if is_vm; then
    [ "$hit" = MEMORY ]
    check "cgroup: MEMORY=64MiB, 200 MB allocated -> OOM, limit_hit MEMORY" $? "exit $rc, limit_hit $hit: $(head -c 250 "$logs/memory.json")"
else
    info "cgroup: MEMORY=64MiB, 200 MB allocated (no cgroups here)" "exit $rc, limit_hit $hit: $(head -c 250 "$logs/memory.json")"
fi
client 120 exec --limit NPROC=5 --limit REALTIME=30 --limit CPU=10 -c '
import threading
ev = threading.Event()
n, err = 0, None
try:
    for i in range(50):
        t = threading.Thread(target=ev.wait)
        t.start()
        n += 1
except Exception as e:
    err = "%s: %s" % (type(e).__name__, e)
ev.set()
print(n, err)' >"$logs/nproc.txt" 2>&1
rc=$?
started=$(awk 'NR==1{print $1}' "$logs/nproc.txt")
[ $rc = 0 ] && [ -n "$started" ] && [ "$started" -lt 50 ] 2>/dev/null && grep -q "can't start new thread" "$logs/nproc.txt"
check "limits: NPROC=5 holds (50 threads)" $? "exit $rc: $(head -c 200 "$logs/nproc.txt")"

# A run that sleeps, looked at from the host while it runs: its outside uid, its
# cgroup, its AppArmor label. The broker's pid is given to the attack probe later.
client 90 exec --json --slug hosts-sleep --limit REALTIME=30 -c 'import time; time.sleep(20); print("slept")' >"$logs/sleep.json" 2>&1 &
sleeper=$!
prog_pid() { # the sleeping program: a python process of a run_ids uid
    ps -eo pid=,uid=,args= | awk -v lo=$RUN_IDS_FIRST -v hi=$((RUN_IDS_FIRST + RUN_IDS_COUNT)) \
        '$2 >= lo && $2 < hi && /python/ && /jailed_code/ { print $1; exit }'
}
pid=
broker_label=$(cat "/proc/$(main_pid)/attr/current" 2>&1)
find_prog() { pid=$(prog_pid); [ -n "$pid" ]; }
wait_until 30 find_prog
if [ -n "$pid" ]; then
    uid=$(ps -o uid= -p "$pid" | tr -d ' ')
    pass "identity: the program runs as a run_ids uid" "pid $pid uid $uid (run_ids $RUN_IDS_FIRST+$RUN_IDS_COUNT): $(ps -o args= -p "$pid")"
    cg=$(cat "/proc/$pid/cgroup" 2>&1)
    if is_vm; then
        grep -qE '^0::/system\.slice/codejail-broker\.service/(.*/)?run-[0-9]+$' <<<"$cg"
        check "cgroup: the run's cgroup is codejail-broker.service/.../run-N" $? "$cg"
    else
        info "cgroup: the run's cgroup (nspawn)" "$cg"
    fi
    label=$(cat "/proc/$pid/attr/current" 2>&1)
    label_aa=$(cat "/proc/$pid/attr/apparmor/current" 2>&1)
    broker_label=$(cat "/proc/$(main_pid)/attr/current" 2>&1)
    if $have_apparmor; then
        grep -q 'codejail-sandbox' <<<"$label" && grep -q 'codejail-broker' <<<"$label"
        check "apparmor: the program's label is stacked" $? "program: $label; broker: $broker_label"
    else
        info "apparmor: labels (no AppArmor)" "program: $label / $label_aa; broker: $broker_label"
    fi
else
    ps -eo pid=,ruid=,euid=,suid=,args= >"$logs/ps-no-sleeper.txt" 2>&1
    fail "identity: the program runs as a run_ids uid" "no python process of a run_ids uid within 30 s; $(head -c 200 "$logs/sleep.json"); python processes: $(grep -E 'python|codejail-jail' "$logs/ps-no-sleeper.txt" | head -5 | oneline)"
    is_vm && fail "cgroup: the run's cgroup is codejail-broker.service/.../run-N" "no sleeping run found"
    $have_apparmor && fail "apparmor: the program's label is stacked" "no sleeping run found"
fi
ls -R /sys/fs/cgroup/system.slice/codejail-broker.service >"$logs/broker-cgroup-tree.txt" 2>&1
wait "$sleeper"
rc=$?
[ $rc = 0 ] && [ "$(json_get "$logs/sleep.json" 'd["stdout"]')" = slept ]
check "limits: a 20 s sleep with REALTIME=30 completes" $? "exit $rc: $(head -c 200 "$logs/sleep.json")"

# ---------------------------------------------------------------- 6. AppArmor
if $have_apparmor; then
    aa-status >"$logs/aa-status.txt" 2>&1
    profiles=$(grep codejail /sys/kernel/security/apparmor/profiles 2>&1 | sort | oneline)
    for p in codejail-broker codejail-jail codejail-sandbox; do
        grep -q "^$p (enforce)" /sys/kernel/security/apparmor/profiles
        check "apparmor: $p loaded, enforce" $? "$profiles"
    done
    grep -q "codejail-broker (enforce)" <<<"$broker_label"
    check "apparmor: the broker runs confined" $? "broker pid $(main_pid): ${broker_label:-?}"
else
    skip "apparmor: profiles" "the kernel has no AppArmor ($lsm)"
fi
phase limits

# ---------------------------------------------------------------- 8. attacks
bpid=$(main_pid)
# A run holding every queued signal (and so POSIX timer) it can, beside the attacks.
client 90 exec --limit REALTIME=30 --limit CPU=10 --code-file "$here/budget_hog.py" >"$logs/budget-hog.txt" 2>&1 &
hog=$!
hog_ready() { grep -q '^exhausted' "$logs/budget-hog.txt"; }
wait_until 60 hog_ready
check "attack: a run exhausts its queued signals (the hog)" $? "$(head -c 200 "$logs/budget-hog.txt")"
ps -eo pid=,ruid=,euid=,suid=,args= >"$logs/ps-hog.txt" 2>&1
client 120 exec --limit REALTIME=30 --limit CPU=10 --limit FSIZE=1048576 --code-file "$here/attacks.py" "$bpid" >"$logs/attack.txt" 2>&1
rc=$?
# The hog must still hold its timers for the check below to mean anything.
kill -0 "$hog" 2>/dev/null
check "attack: the hog held its timers through the attacks" $? "$(head -c 200 "$logs/budget-hog.txt")"
# End the hog (its client: the broker then ends the run), and wait for it.
pkill -f -- "--code-file $here/budget_hog.py" 2>/dev/null
wait "$hog" 2>/dev/null
attack() { # NAME EXPECTED-ERRNO... (tests/tests/confinement.rs), from $attacks
    local name=$1 got
    shift
    got=$(json_get "$logs/$attacks.json" "d.get('$name', 'not recorded')")
    local e
    for e in "$@"; do
        if [ "$got" = "$e" ]; then
            pass "$attacks: $name" "$got"
            return
        fi
    done
    fail "$attacks: $name" "got ${got:-nothing}, expected $*; exit $rc: $(head -c 200 "$logs/$attacks.txt")"
}
check_attacks() { # the results of attacks.py in $logs/$attacks.txt
    grep '^{' "$logs/$attacks.txt" | tail -1 >"$logs/$attacks.json"
    attack "read /etc/shadow" EACCES
    attack "read /etc/passwd" EACCES
    attack "list /" EACCES
    attack "list /proc" EACCES
    attack "AF_INET socket" EACCES
    attack "connect 127.0.0.1:8550" EACCES
    attack "subprocess /bin/true" EACCES
    attack "kill broker" ESRCH
    attack "inotify_init1" EPERM
    attack "memfd_create" EPERM
    attack "shmget" EPERM
    attack "stat /etc/machine-id" ENOENT
    attack "boottime under a minute" "ok True"
    attack "timer_create beside the hog" "ok 0"
    attack "write own tmp/" "ok 1"
}
attacks=attack
check_attacks
[ "$(main_pid)" = "$bpid" ] && [ "$(unit_state codejail-broker.service)" = active ]
check "attack: the broker survived" $? "MainPID $bpid -> $(main_pid), $(unit_state codejail-broker.service)"
phase attacks

collect_logs ""

# ---------------------------------------------------------------- 3. the watchdog
wd=$(systemctl show -p WatchdogUSec --value codejail-broker.service)
old=$(main_pid)
if [ -n "$old" ] && [ "$old" != 0 ]; then
    t0=$SECONDS
    kill -STOP "$old"
    restarted() {
        local p
        p=$(main_pid)
        [ -n "$p" ] && [ "$p" != 0 ] && [ "$p" != "$old" ] && [ "$(unit_state codejail-broker.service)" = active ]
    }
    # The unit's bound: WatchdogSec, then RestartSec and a start (its self-test) of
    # at most TimeoutStartSec.
    bound=0
    for p in WatchdogUSec RestartUSec TimeoutStartUSec; do
        bound=$((bound + $(secs_of "$(systemctl show -p $p --value codejail-broker.service)")))
    done
    wait_until 180 restarted
    took=$((SECONDS - t0))
    wd_line=$(journalctl -u codejail-broker.service -b -o cat --no-pager | grep -i 'watchdog timeout' | tail -1)
    if restarted && [ "$took" -le "$bound" ] && broker_serving; then
        pass "watchdog: SIGSTOP'd broker restarted and serves" "in ${took}s <= ${bound}s (WatchdogSec=$wd + RestartSec + TimeoutStartSec; pid $old -> $(main_pid)); journal: ${wd_line:-no watchdog line}"
    else
        fail "watchdog: SIGSTOP'd broker restarted and serves" "after ${took}s (bound ${bound}s): MainPID $old -> $(main_pid), $(unit_state codejail-broker.service); journal: ${wd_line:-no watchdog line}; $(broker_tail 3)"
    fi
    kill -CONT "$old" 2>/dev/null
else
    fail "watchdog: SIGSTOP'd broker restarted and serves" "no broker main pid ($(unit_state codejail-broker.service)): $(broker_tail 3)"
fi
phase watchdog

# ---------------------------------------------------------------- 10. the fork server
# Turned on as an operator would (docs/operating.md), the installed config's AppArmor
# profile kept: the pool's jails are forked from a zygote with numpy preimported.
fork_since=$(date '+%Y-%m-%d %H:%M:%S')
printf '\n[pool.python]\nsize = 2\npreimport = ["json", "numpy"]\nfork_server = true\n' >>/etc/codejail/broker.toml
systemctl restart codejail-broker.service >"$logs/restart-fork.log" 2>&1
wait_until 120 broker_serving
numpy_runs=0
for _ in 1 2 3 4 5; do
    got=$(client 120 exec --limit CPU=10 --limit REALTIME=30 -c 'import numpy; print(int(numpy.arange(10).sum()))' 2>&1)
    [ "$got" = 45 ] && numpy_runs=$((numpy_runs + 1))
done
client 30 status >"$logs/status-fork.txt" 2>&1
served=$(served_count forked)
[ "$numpy_runs" = 5 ] && [ "$served" -gt 0 ] && grep -q 'fork server python: zygote [0-9]' "$logs/status-fork.txt"
check "fork server: numpy runs forked from the zygote (AppArmor profile kept)" $? \
    "$numpy_runs/5 printed 45 (last: $(oneline <<<"$got" | head -c 200)); $served runs served forked; $(grep 'fork server' "$logs/status-fork.txt" | oneline); $(broker_tail 3)"
zygote=$(sed -n 's/.*fork server python: zygote \([0-9]*\).*/\1/p' "$logs/status-fork.txt" | head -1)
client 90 exec --slug hosts-forked-sleep --limit REALTIME=30 -c 'import time; time.sleep(8); print("slept")' >"$logs/forked-sleep.txt" 2>&1 &
sleeper=$!
forked_prog() { # a process of a run_ids uid confined by the sandbox profile
    local p
    for p in $(ps -eo pid=,uid= | awk -v lo=$RUN_IDS_FIRST -v hi=$((RUN_IDS_FIRST + RUN_IDS_COUNT)) '$2 >= lo && $2 < hi { print $1 }'); do
        grep -q codejail-sandbox "/proc/$p/attr/current" 2>/dev/null && { pid=$p; return 0; }
    done
    return 1
}
pid=
wait_until 30 forked_prog
label=$( [ -n "$pid" ] && cat "/proc/$pid/attr/current" 2>&1)
parent=$( [ -n "$pid" ] && ps -o ppid= -p "$(ps -o ppid= -p "$pid" | tr -d ' ')" | tr -d ' ')
zlabel=$( [ -n "$zygote" ] && cat "/proc/$zygote/attr/current" 2>&1)
if $have_apparmor; then
    [ "$label" = "codejail-broker//&codejail-jail//&codejail-sandbox (enforce)" ] &&
        [ "$zlabel" = "codejail-broker//&codejail-jail (enforce)" ] &&
        [ -n "$parent" ] && [ "$parent" = "$zygote" ]
    check "fork server: the forked program's label is a cold one's, the zygote's a stage's" $? \
        "program $pid: ${label:-none}; zygote $zygote: ${zlabel:-none}; program's grandparent (the zygote, its init's parent) $parent"
else
    info "fork server: labels (no AppArmor)" "zygote $zygote: ${zlabel:-none}"
fi
wait "$sleeper"
rc=$?
[ $rc = 0 ] && [ "$(cat "$logs/forked-sleep.txt")" = slept ]
check "fork server: a forked sleep completes" $? "exit $rc: $(head -c 200 "$logs/forked-sleep.txt")"
# The attacks again, from a forked run (no hog beside it this time: its line holds
# anyway, a run's timers are its own).
forked_before=$(served_count forked)
client 120 exec --limit REALTIME=30 --limit CPU=10 --limit FSIZE=1048576 --code-file "$here/attacks.py" "$(main_pid)" >"$logs/forked-attack.txt" 2>&1
rc=$?
forked_grew() { [ "$(served_count forked)" -gt "$forked_before" ]; }
wait_until 10 forked_grew
check "forked-attack: the attacks' run was forked from the zygote" $? "served forked $forked_before -> $(served_count forked)"
attacks=forked-attack
check_attacks
# The same pool without the fork server: each warm jail an interpreter of its own.
sed -i 's/^fork_server = true$/fork_server = false/' /etc/codejail/broker.toml
systemctl restart codejail-broker.service >"$logs/restart-warm.log" 2>&1
wait_until 120 broker_serving
# The self-test took a warm jail: wait for its replacement (numpy imported: seconds
# under TCG), or the run goes cold.
pool_ready() {
    client 30 status --json 2>/dev/null |
        python3 -c 'import json, sys; sys.exit(json.load(sys.stdin)["pool"]["python"]["ready"] < 1)' 2>/dev/null
}
wait_until 120 pool_ready
warm_before=$(served_count warm)
got=$(client 120 exec --limit CPU=10 --limit REALTIME=30 -c 'import sys; print("numpy" in sys.modules)' 2>&1)
rc=$?
warm_grew() { [ "$(served_count warm)" -gt "$warm_before" ]; }
wait_until 10 warm_grew
warm_after=$(served_count warm)
[ $rc = 0 ] && [ "$got" = True ] && [ "$warm_after" -gt "$warm_before" ]
check "warm pool: a run served warm, numpy preimported (AppArmor profile kept)" $? \
    "exit $rc: $(oneline <<<"$got" | head -c 200); served warm $warm_before -> $warm_after; $(broker_tail 3)"
if $have_apparmor; then
    journalctl -k --since "$fork_since" --no-pager | grep -i 'apparmor="DENIED"' >"$logs/apparmor-denials-fork.txt" 2>&1
    n=$(wc -l <"$logs/apparmor-denials-fork.txt")
    [ "$n" = 0 ]
    check "fork server and warm pool: no AppArmor denial" $? "$n; first: $(head -3 "$logs/apparmor-denials-fork.txt" | sed 's/.*apparmor=/apparmor=/' | cut -c1-300 | oneline)"
fi
phase fork-server

# ---------------------------------------------------------------- 9. uninstall
collect_logs ".end"
info "self-test: start-up self-tests failed in the whole run" "$(selftests)"
if $have_apparmor; then
    journalctl -k -b --no-pager | grep -i 'apparmor="DENIED"' >"$logs/apparmor-denials.txt" 2>&1
    n=$(wc -l <"$logs/apparmor-denials.txt")
    info "apparmor: kernel denials during the run" "$n; first: $(head -3 "$logs/apparmor-denials.txt" | sed 's/.*apparmor=/apparmor=/' | cut -c1-200 | oneline)"
fi
"$repo/scripts/install.sh" --uninstall --purge >"$logs/uninstall.log" 2>&1
rc=$?
check "uninstall: install.sh --uninstall --purge" $rc "exit $rc: $(tail -2 "$logs/uninstall.log")"
systemctl daemon-reload
units=$(systemctl list-unit-files --no-legend 'codejail-broker*' 'codejail-http*' 2>&1)
[ -z "$units" ]
check "uninstall: no codejail unit file left" $? "${units:-none}"
units=$(systemctl list-units --all --no-legend 'codejail-broker*' 'codejail-http*' 2>&1)
[ -z "$units" ]
check "uninstall: no codejail unit left loaded (e.g. failed)" $? "${units:-none}"
accounts=$(getent passwd sandbox; getent group sandbox; getent group codejail)
[ -z "$accounts" ]
check "uninstall: no sandbox user, no codejail group" $? "${accounts:-none}"
left=
for f in /usr/local/bin/codejail-broker /usr/local/bin/codejail-client /usr/local/bin/codejail-http \
    /usr/local/lib/codejail /usr/local/share/doc/codejail /etc/codejail /var/lib/codejail /run/codejail \
    /etc/systemd/system/codejail-broker.socket /etc/systemd/system/codejail-broker.service \
    /etc/systemd/system/codejail-http.service /etc/sysusers.d/codejail.conf /etc/tmpfiles.d/codejail.conf \
    /etc/apparmor.d/codejail-broker /etc/apparmor.d/codejail-sandbox \
    /etc/apparmor.d/abstractions/codejail-stage /etc/apparmor.d/abstractions/codejail-userns \
    /etc/apparmor.d/local/codejail-broker /etc/apparmor.d/local/codejail-jail \
    /etc/apparmor.d/local/codejail-sandbox /sys/fs/cgroup/system.slice/codejail-broker.service; do
    [ -e "$f" ] && left="$left $f"
done
[ -z "$left" ]
check "uninstall: no codejail file left" $? "${left:-none}"
procs=$(ps -eo pid=,uid=,args= | awk -v lo=$RUN_IDS_FIRST -v hi=$((RUN_IDS_FIRST + RUN_IDS_COUNT)) \
    '($2 >= lo && $2 < hi) || /codejail-(broker|jail|http)/' | grep -v awk)
[ -z "$procs" ]
check "uninstall: no codejail process left" $? "${procs:-none}"
if $have_apparmor; then
    loaded=$(grep codejail /sys/kernel/security/apparmor/profiles 2>&1)
    [ -z "$loaded" ]
    check "uninstall: AppArmor profiles unloaded" $? "${loaded:-none}"
fi
phase uninstall

journalctl -b --no-pager >"$logs/journal-full.txt" 2>&1
dmesg >"$logs/dmesg.txt" 2>&1
echo "codejail-hosts: scenario $SCENARIO done" >&2
date +%s >"$R/finished"
sync
