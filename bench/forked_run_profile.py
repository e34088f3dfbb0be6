"""Where a forked run's CPU goes, by process and by kind of work (bench/forked_run_profile.sh).

  forked_run_profile.py loop SOCKET PYTHON SECONDS   jail_code('print(1)') back to back
  forked_run_profile.py split PERF_SCRIPT RUNS ZYGOTE BROKER CALLER

`split` reads `perf script -F comm,pid,ip,sym,dso` output (a system-wide profile taken
while `loop` ran) and prints the CPU per run of each process role and kind of work.
Roles: the run's program (its samples reach CPython's evaluator), its init (the pid
before the program's: the zygote clones the init, which forks the program at once; a
forked run has no stage process), the zygote, the broker, the caller (the package's
process), the kernel's threads, the rest. Kinds, by the first match in a sample's stack: page fault
(copy-on-write of pages shared with the zygote), exit (tearing the address space
down), fork (copying it), unshare, seccomp, mount (and pivot_root), other.
"""

import collections
import os
import re
import sys
import time

FRAME = re.compile(r"\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$")
KINDS = (
    ("page fault", ("exc_page_fault",)),
    ("exit", ("do_exit",)),
    ("fork", ("copy_process",)),
    ("unshare", ("ksys_unshare",)),
    ("seccomp", ("do_seccomp",)),
    ("mount", ("path_mount", "__do_sys_pivot_root", "fc_mount", "do_umount")),
)


def loop(socket, python, seconds):
    os.environ["CODEJAIL_SOCKET"] = socket
    from codejail import jail_code

    jail_code.configure("python", python)
    end, n = time.monotonic() + float(seconds), 0
    while time.monotonic() < end:
        res = jail_code.jail_code("python", "print(1)")
        if (res.status, res.stdout) != (0, b"1\n"):
            sys.exit(f"jail_code gave {res!r}")
        n += 1
    print(n)


def samples(path):
    cur = None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if cur:
                    yield cur
                cur = None
            elif not line[0].isspace():
                parts = line.split()
                cur = (parts[0], int(parts[1]), [])
            elif cur is not None:
                m = FRAME.match(line)
                if m:
                    cur[2].append(m.group(2))
    if cur:
        yield cur


def split(path, runs, zygote, broker, caller):
    runs, zygote, broker, caller = int(runs), int(zygote), int(broker), int(caller)
    all_samples = list(samples(path))
    programs = {pid for _, pid, frames in all_samples if any("_PyEval_EvalFrame" in f for f in frames)}
    programs -= {zygote, caller}
    # A run whose program was not caught in CPython's evaluator: its two processes are
    # still two pids in a row of the interpreter's name.
    run_pids = {pid for comm, pid, _ in all_samples if comm == "python"} - {zygote, caller}
    for pid in sorted(run_pids):
        near = {pid - 1, pid, pid + 1} & programs
        if not near and pid + 1 in run_pids:
            programs.add(pid + 1)

    def role(comm, pid):
        if pid == zygote:
            return "zygote"
        if pid == broker:
            return "broker"
        if pid == caller:
            return "caller (package)"
        if pid in programs:
            return "program"
        if pid + 1 in programs:
            return "init"
        if comm == "swapper":
            return "idle"
        if pid == 0 or comm.startswith(("kworker", "ksoftirqd", "rcu", "kdamond", "migration")):
            return "kernel threads"
        return "other"

    def kind(frames):
        for name, marks in KINDS:
            if any(f in marks for f in frames):
                return name
        return "other"

    per_role = collections.Counter()
    per_kind = collections.Counter()
    for comm, pid, frames in all_samples:
        r = role(comm, pid)
        per_role[r] += 1
        per_kind[(r, kind(frames))] += 1
    busy = sum(v for r, v in per_role.items() if r != "idle")
    # perf's default sampling: 4000 Hz per CPU, so one sample is 0.25 ms of CPU.
    ms = 0.25 / runs
    print(f"{runs} runs; CPU per run (ms), whole machine: {busy * ms:.2f}")
    print(f"{'role':18} {'total':>6}   by kind")
    for r, v in per_role.most_common():
        if r == "idle":
            continue
        kinds = sorted(((k, n) for (rr, k), n in per_kind.items() if rr == r), key=lambda x: -x[1])
        detail = ", ".join(f"{k} {n * ms:.2f}" for k, n in kinds if n * ms >= 0.01)
        print(f"{r:18} {v * ms:6.2f}   {detail}")


if __name__ == "__main__":
    what, *rest = sys.argv[1:]
    {"loop": loop, "split": split}[what](*rest)
