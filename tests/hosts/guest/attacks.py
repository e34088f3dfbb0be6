# Attacks from inside a run (tests/hosts/guest/scenario.sh runs this through
# `codejail-client exec --code-file attacks.py BROKER_PID`). Each attempt records
# `ok <result>` (it worked: a hole) or the errno's name, as the project's confinement
# battery (tests/tests/confinement.rs, its PRELUDE) does; one JSON line at the end.
import ctypes
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

R = {}


def attempt(name, f):
    try:
        r = f()
    except OSError as e:
        R[name] = errno.errorcode.get(e.errno, "errno %s" % e.errno) if e.errno else "%s: %s" % (type(e).__name__, e)
    except Exception as e:  # noqa: BLE001 - every outcome is a result
        R[name] = "%s: %s" % (type(e).__name__, e)
    else:
        R[name] = ("ok %r" % (r,))[:200]


broker_pid = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0


def read(path):
    with open(path) as f:
        return len(f.read())


def connect(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect((host, port))
    return "connected"


attempt("read /etc/shadow", lambda: read("/etc/shadow"))
attempt("read /etc/passwd", lambda: read("/etc/passwd"))
attempt("list /", lambda: os.listdir("/"))
attempt("list /proc", lambda: os.listdir("/proc"))
attempt("AF_INET socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
attempt("connect 127.0.0.1:8550", lambda: connect("127.0.0.1", 8550))
attempt("subprocess /bin/true", lambda: subprocess.run(["/bin/true"]).returncode)
attempt("kill broker", lambda: os.kill(broker_pid, signal.SIGKILL))
# Watching the host's files, memory no rlimit counts, host files to stat.
libc = ctypes.CDLL(None, use_errno=True)


def raise_errno(r):
    if r == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


attempt("inotify_init1", lambda: raise_errno(libc.inotify_init1(0)))
attempt("memfd_create", lambda: os.memfd_create("m", 0))
attempt("shmget", lambda: raise_errno(libc.shmget(0, 1 << 20, 0o600)))
attempt("stat /etc/machine-id", lambda: os.stat("/etc/machine-id").st_size)
# The host's uptime: the run's time namespace starts its clocks at its build (the
# host has been up for minutes by now).
attempt("boottime under a minute", lambda: time.clock_gettime(time.CLOCK_BOOTTIME) < 60)


# Beside a run that holds every queued signal it can (budget_hog.py), a timer of our
# own: each run's user namespace is charged to its own uid.
class SigEvent(ctypes.Structure):
    _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int),
                ("notify", ctypes.c_int), ("pad", ctypes.c_byte * 48)]


def timer():
    return raise_errno(libc.timer_create(1, ctypes.byref(SigEvent(notify=1)), ctypes.byref(ctypes.c_void_p())))


attempt("timer_create beside the hog", timer)
# Positive control: the run's own tmp/ is writable (the jail works, the denials are
# the layers').
def write_tmp():
    p = os.path.join(os.environ["TMPDIR"], "probe")
    with open(p, "w") as f:
        f.write("x")
    return os.path.getsize(p)


attempt("write own tmp/", write_tmp)
print(json.dumps(R), flush=True)
