#!/usr/bin/env bash
# Run the image as deploy/kubernetes/deployment.yaml runs the pod, with crun and no
# container engine, and check it from outside as the cluster would:
#
#   deploy/container/test-pod.sh [IMAGE.tar]    (default target/image/codejail-oci.tar,
#                                                from deploy/container/build-image.sh)
#
# The pod, as the manifests say: one user namespace for the pod (hostUsers: false; the
# pod's 0-65535 map to an unprivileged range of this host), one network namespace for
# both containers, the ConfigMap's broker.toml and http.toml read-only at /etc/codejail,
# the socket emptyDir shared by the two containers, a read-only root, no_new_privs,
# the runtime's usual RLIMIT_NOFILE of 1024. The broker: uid 0 of the pod, only
# CAP_SETUID and CAP_SETGID, the shipped seccomp profile
# (deploy/kubernetes/seccomp/codejail.json), /proc unmasked, tmpfs /tmp and
# /var/lib/codejail. The front: uid 10001, no capability, the usual masked /proc
# paths; its RuntimeDefault seccomp profile is containerd's, which this machine does
# not have (it runs without one here).
#
# Checks: /health/ answers 200; a run through the front (POST /api/v0/code-exec, as
# edx-platform sends it) returns its globals; a run through the client prints its
# output; attacks from inside a run fail with the errno the project's tests expect;
# the broker's status shows every layer and its connection cap fitted to the 1024
# open files. Prints a table of what ran and what was denied; exits 1 on any failure.
#
# This host's quirk (a hybrid cgroup v1/v2 host): crun runs in a private mount
# namespace with /sys/fs/cgroup/unified unmounted and --cgroup-manager=disabled (the
# ConfigMap's broker makes no cgroups: cgroup.mode = "none").
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
log() { printf 'test-pod: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

image=${1:-$repo/target/image/codejail-oci.tar}
[ "$(id -u)" = 0 ] || die "run as root (crun, a user namespace mapped to a host range)"
[ -f "$image" ] || die "no image at $image: build it with deploy/container/build-image.sh"

# A private mount namespace: the cgroup quirk's unmount and the bundle's mounts stay
# here.
if [ -z "${CODEJAIL_TEST_POD_UNSHARED:-}" ]; then
    missing=()
    for tool in crun:crun umoci:umoci skopeo:skopeo curl:curl ip:iproute2; do
        command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
    done
    python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]} (apt-get)"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
    CODEJAIL_TEST_POD_UNSHARED=1 exec unshare --mount --propagation private "$0" "$image"
fi
umount /sys/fs/cgroup/unified 2>/dev/null || true

# The pod's user namespace: its 0-65535 at host 2000000 (away from every account).
host_base=2000000
pod=codejail-pod-$$
work=$(mktemp -d /var/tmp/codejail-pod.XXXXXX)
chmod 0755 "$work"
cleanup() {
    local c
    for c in "$pod-http" "$pod-broker"; do
        crun --cgroup-manager=disabled kill "$c" KILL 2>/dev/null || true
        sleep 0.2
        crun --cgroup-manager=disabled delete --force "$c" 2>/dev/null || true
    done
    ip netns del "$pod" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

log "unpacking $image (owners shifted to the pod's range from $host_base)"
tag=$(skopeo inspect --raw "oci-archive:$image" >/dev/null && \
    tar xOf "$image" index.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"].split(":")[-1])')
skopeo copy --quiet "oci-archive:$image" "oci:$work/layout:$tag"
umoci unpack --image "$work/layout:$tag" --uid-map "0:$host_base:65536" --gid-map "0:$host_base:65536" \
    "$work/image" >/dev/null
rootfs=$work/image/rootfs
chmod 0755 "$work/image"
log "rootfs: $(du -sh "$rootfs" | cut -f1) unpacked"

# The volumes: the ConfigMap's files, the socket emptyDir (0777, as the kubelet makes it).
mkdir -p "$work/config" "$work/socket"
python3 - "$repo/deploy/kubernetes/configmap.yaml" "$work/config" <<'EOF'
import sys, yaml
cm = yaml.safe_load(open(sys.argv[1]))
for name, text in cm["data"].items():
    open("%s/%s" % (sys.argv[2], name), "w").write(text)
EOF
chmod 0755 "$work/config"
chmod 0644 "$work/config"/*
chmod 0777 "$work/socket"
chown "$host_base:$host_base" "$work/socket"

# One network namespace for the pod, loopback up (the kubelet's probes reach the pod's
# address; here, the front's 0.0.0.0:8550 from inside the pod's namespace).
ip netns add "$pod"
ip -n "$pod" link set lo up

# Each container's runtime spec, from the manifests' securityContext.
python3 - "$work" "$rootfs" "$host_base" "$pod" "$repo/deploy/kubernetes/seccomp/codejail.json" <<'EOF'
import json, os, sys
work, rootfs, base, pod, seccomp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
ids = [{"containerID": 0, "hostID": base, "size": 65536}]
nofile = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
common_mounts = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
     "options": ["nosuid", "noexec", "nodev"]},
    # sysfs cannot be mounted afresh from a user namespace that does not own the
    # network namespace: a read-only bind, as rootless runtimes do.
    {"destination": "/sys", "type": "none", "source": "/sys",
     "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/run/codejail", "type": "none", "source": work + "/socket",
     "options": ["rbind", "rw"]},
    {"destination": "/etc/codejail", "type": "none", "source": work + "/config",
     "options": ["rbind", "ro"]},
]
# The runtime's masked and read-only /proc paths (procMount: Default).
masked = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
          "/sys/firmware"]
readonly = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

def spec(name, uid, caps, args, extra_mounts, seccomp_profile, unmasked):
    linux = {
        "uidMappings": ids, "gidMappings": ids,
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                       {"type": "user"}, {"type": "network", "path": "/run/netns/" + pod}],
    }
    if seccomp_profile:
        linux["seccomp"] = seccomp_profile
    if not unmasked:
        linux["maskedPaths"] = masked
        linux["readonlyPaths"] = readonly
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": uid, "additionalGids": []},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": nofile,
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": True},
        "hostname": pod,
        "mounts": common_mounts + extra_mounts,
        "linux": linux,
    }

broker = spec("broker", 0, ["CAP_SETUID", "CAP_SETGID"],
              ["/usr/local/bin/codejail-broker", "--config", "/etc/codejail/broker.toml"],
              [{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]},
               {"destination": "/var/lib/codejail", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=755", "size=65536k"]}],
              json.load(open(seccomp)), unmasked=True)
http = spec("http", 10001, [],
            ["/usr/local/bin/codejail-http", "--config", "/etc/codejail/http.toml"],
            [], None, unmasked=False)
for name, s in (("broker", broker), ("http", http)):
    os.makedirs("%s/%s" % (work, name))
    json.dump(s, open("%s/%s/config.json" % (work, name), "w"), indent=1)
EOF

crun_() { crun --cgroup-manager=disabled "$@"; }
fail=0
rows=()
row() { rows+=("$(printf '%-44s %-10s %s' "$1" "$2" "$3")"); }
check() { # check WHAT EXPECTED GOT
    if [ "$2" = "$3" ]; then
        row "$1" "$2" "ok"
    else
        row "$1" "$2" "FAILED: got ${3:0:120}"
        fail=1
    fi
}

log "starting the broker container"
t0=$(date +%s.%N)
crun_ run --detach --bundle "$work/broker" "$pod-broker" >"$work/broker.log" 2>&1 </dev/null \
    || die "crun could not start the broker: $(cat "$work/broker.log")"
for _ in $(seq 300); do
    [ -S "$work/socket/broker.sock" ] && break
    crun_ state "$pod-broker" 2>/dev/null | grep -q '"status": "running"' \
        || die "the broker exited: $(cat "$work/broker.log")"
    sleep 0.1
done
[ -S "$work/socket/broker.sock" ] || die "no broker socket after 30 s: $(cat "$work/broker.log")"
log "the broker serves $(python3 -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$(date +%s.%N)") s after start"

log "starting the front container"
crun_ run --detach --bundle "$work/http" "$pod-http" >"$work/http.log" 2>&1 </dev/null \
    || die "crun could not start the front: $(cat "$work/http.log")"
in_pod() { ip netns exec "$pod" "$@"; }
health=000
for _ in $(seq 100); do
    health=$(in_pod curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8550/health/ || true)
    [ "$health" = 200 ] && break
    sleep 0.1
done
check "GET /health/ (readiness probe)" 200 "$health"
check "GET /live (liveness probe)" 200 \
    "$(in_pod curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8550/live || true)"

# A run through the front, as edx-platform posts it.
code_exec() { # code_exec CODE: the response's globals_dict (JSON), or the whole answer
    local payload
    payload=$(python3 -c 'import json,sys; print(json.dumps({"code": sys.argv[1], "globals_dict": {},
        "python_path": None, "limit_overrides_context": None, "slug": "pod-test", "unsafely": False}))' "$1")
    in_pod curl -s --max-time 30 --data-urlencode "payload=$payload" http://127.0.0.1:8550/api/v0/code-exec
}
answer=$(code_exec $'import numpy\nanswer = int(numpy.arange(10).sum())')
check "POST /api/v0/code-exec (numpy sum)" 45 \
    "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d.get("globals_dict",{}).get("answer", d))' "$answer" 2>&1)"

# A run through the client, in the front's container (uid 10001, the allowed caller).
client() { crun_ exec --user 10001:10001 "$pod-http" /usr/local/bin/codejail-client "$@"; }
printed=$(client exec -c "print('hello from the pod')" 2>&1 || true)
check "codejail-client exec (prints its output)" "hello from the pod" "$printed"

# Attacks from inside a run, through the front: each one's errno name (or "ok ...").
attacks=$(cat <<'EOF'
import ctypes, errno, os, socket, subprocess
R = {}
def attempt(name, f):
    try:
        R[name] = "ok %r" % (f(),)
    except OSError as e:
        R[name] = errno.errorcode.get(e.errno, str(e.errno))
    except Exception as e:
        R[name] = "%s: %s" % (type(e).__name__, e)
def read(path):
    with open(path) as f:
        return len(f.read())
def connect():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(("127.0.0.1", 8550))
libc = ctypes.CDLL(None, use_errno=True)
def checked(r):
    if r == -1:
        raise OSError(ctypes.get_errno(), "")
    return r
attempt("read /etc/passwd", lambda: read("/etc/passwd"))
attempt("read /etc/shadow", lambda: read("/etc/shadow"))
attempt("list /", lambda: os.listdir("/"))
attempt("list /proc", lambda: os.listdir("/proc"))
attempt("AF_INET socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
attempt("connect 127.0.0.1:8550 (the front)", connect)
attempt("subprocess /bin/true", lambda: subprocess.run(["/bin/true"]).returncode)
attempt("inotify_init1", lambda: checked(libc.inotify_init1(0)))
attempt("memfd_create", lambda: os.memfd_create("m", 0))
attempt("shmget", lambda: checked(libc.shmget(0, 1 << 20, 0o600)))
attempt("unshare(CLONE_NEWUSER)", lambda: checked(libc.unshare(0x10000000)))
attempt("stat /etc/machine-id", lambda: os.stat("/etc/machine-id").st_size)
attempt("stat the broker socket", lambda: os.stat("/run/codejail/broker.sock").st_mode)
def write_tmp():
    p = os.path.join(os.environ["TMPDIR"], "probe")
    with open(p, "w") as f:
        f.write("x")
    return os.path.getsize(p)
attempt("write own tmp/ (control)", write_tmp)
EOF
)
got=$(code_exec "$attacks")
attack() { # attack NAME EXPECTED
    check "attack: $1" "$2" "$(python3 -c 'import json,sys
try:
    print(json.loads(sys.argv[1])["globals_dict"]["R"][sys.argv[2]])
except Exception as e:
    print("no result (%s): %s" % (e, sys.argv[1][:200]))' "$got" "$1")"
}
attack "read /etc/passwd" EACCES
attack "read /etc/shadow" EACCES
attack "list /" EACCES
attack "list /proc" EACCES
attack "AF_INET socket" EACCES
attack "connect 127.0.0.1:8550 (the front)" EACCES
attack "subprocess /bin/true" EACCES
attack "inotify_init1" EPERM
attack "memfd_create" EPERM
attack "shmget" EPERM
attack "unshare(CLONE_NEWUSER)" EPERM
attack "stat /etc/machine-id" ENOENT
attack "stat the broker socket" EACCES
attack "write own tmp/ (control)" "ok 1"

# The broker's status, as the front's uid reads it over the shared socket.
status=$(client status --json 2>&1 || true)
layers=$(python3 -c 'import json,sys
s = json.loads(sys.argv[1])
for name, l in sorted(s["layers"].items()):
    print("%s %s %s %s" % (name, l["state"], "required" if l["required"] else "optional", "holds" if l["holds"] else "does-not-hold"))' "$status" 2>&1 || true)
while read -r name state req holds; do
    [ -n "$name" ] || continue
    if [ "$req" = required ]; then
        check "status: layer $name ($req)" "holds" "$holds"
    else
        row "status: layer $name ($req)" "-" "$state"
    fi
done <<<"$layers"
[ -n "$layers" ] || check "status --json" "layers" "$status"
check "status: connection cap fitted to NOFILE 1024" "912 True" \
    "$(python3 -c 'import json,sys; l=json.loads(sys.argv[1])["load"]; print(l["max_connections"], l["connections_fitted"])' "$status" 2>&1 || true)"
warned=no
grep -q "max_connections lowered from its default 1024" "$work/broker.log" && warned=yes
check "broker log: the fitted cap's warning" yes "$warned"

printf '\n%-44s %-10s %s\n' "WHAT" "EXPECTED" "RESULT"
printf '%s\n' "${rows[@]}"
if [ "$fail" != 0 ]; then
    printf '\n--- broker log ---\n%s\n--- front log ---\n%s\n' "$(tail -n 40 "$work/broker.log")" \
        "$(tail -n 40 "$work/http.log")" >&2
    die "the pod does not hold (above)"
fi
log "the pod holds"
