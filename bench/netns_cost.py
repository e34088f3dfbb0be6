#!/usr/bin/env python3
"""What a network namespace per run costs the machine: a child is forked, unshares the
namespaces a run gets (user, mount, IPC, UTS, with or without network) and exits, over
and over; the two series are interleaved in batches, and each batch's CPU is read
from /proc/stat (the whole machine: the kernel's asynchronous clean-up of a network
namespace runs in its worker threads, not in the child). Prints CPU per run for each
series and their difference. Run it on an idle machine; any user that may create user
namespaces can.

Usage: bench/netns_cost.py [RUNS_PER_BATCH [ROUNDS]]   (default 300 5)
"""

import ctypes
import os
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
RUN = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS

libc = ctypes.CDLL(None, use_errno=True)
tick = os.sysconf("SC_CLK_TCK")


def busy_seconds():
    """CPU time the whole machine has spent busy so far, in seconds."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    return (sum(fields[:8]) - fields[3] - fields[4]) / tick


def batch(flags, runs):
    """CPU per run (ms) of `runs` children that unshare `flags` and exit."""
    start = busy_seconds()
    for _ in range(runs):
        pid = os.fork()
        if pid == 0:
            os._exit(0 if libc.unshare(flags) == 0 else 1)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            sys.exit("unshare failed: %s" % os.strerror(ctypes.get_errno() or 1))
    # The network namespace's clean-up is queued to a kernel worker: let it finish
    # inside the batch that caused it.
    time.sleep(1)
    return (busy_seconds() - start) * 1000 / runs


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    series = {"without network": [], "with network": []}
    for _ in range(rounds):
        series["without network"].append(batch(RUN, runs))
        series["with network"].append(batch(RUN | CLONE_NEWNET, runs))
    mid = {name: sorted(v)[len(v) // 2] for name, v in series.items()}
    print("CPU per run, whole machine (median of %d batches of %d):" % (rounds, runs))
    for name, value in mid.items():
        print("  %-16s %.3f ms" % (name, value))
    print("  a network namespace costs %.3f ms per run"
          % (mid["with network"] - mid["without network"]))


if __name__ == "__main__":
    main()
