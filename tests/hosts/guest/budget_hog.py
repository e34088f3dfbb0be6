# A run that takes every queued signal the kernel lets it (POSIX timers reserve one
# each), says so, and holds them (tests/hosts/guest/scenario.sh runs it beside the
# attacks, whose own timer_create must still work: docs/run-resources.md).
import ctypes
import time

libc = ctypes.CDLL(None, use_errno=True)


class SigEvent(ctypes.Structure):
    _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int),
                ("notify", ctypes.c_int), ("pad", ctypes.c_byte * 48)]


event, timer, n = SigEvent(notify=1), ctypes.c_void_p(), 0  # SIGEV_NONE
while libc.timer_create(time.CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(timer)) == 0:
    n += 1
print("exhausted", n, ctypes.get_errno(), flush=True)
time.sleep(60)  # until REALTIME ends the run, or the scenario does
