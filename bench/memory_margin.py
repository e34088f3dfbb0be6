# Run inside a jail (docs/run-resources.md): how much kernel memory one process can
# hold in pipe and AF_UNIX socket buffers before its NOFILE limit stops it. Prints
# the MiB held in each and the errno that stopped each loop (24 = EMFILE).
import fcntl
import os
import socket

held = {"pipe": 0, "socket": 0}
fds = []


def fill(fd, kind):
    os.set_blocking(fd, False)
    try:
        while True:
            held[kind] += os.write(fd, b"x" * 65536)
    except BlockingIOError:
        pass


try:
    while True:
        r, w = os.pipe()
        fds += [r, w]
        try:
            fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ
        except OSError:
            pass
        fill(w, "pipe")
except OSError as e:
    pipes_stopped = e.errno
# Half the descriptors back for the sockets (the pipes keep what they hold).
for fd in fds[len(fds) // 2:]:
    os.close(fd)
try:
    while True:
        a, b = socket.socketpair()
        fds += [a, b]
        fill(a.fileno(), "socket")
        fill(b.fileno(), "socket")
except OSError as e:
    sockets_stopped = e.errno
print({k: v >> 20 for k, v in held.items()}, "MiB; stopped by errno", pipes_stopped, sockets_stopped)
