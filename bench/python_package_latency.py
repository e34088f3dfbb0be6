"""Latency of the codejail Python package against the CLI and a bare interpreter spawn
(run by bench/python_package_latency.sh, which says how to use it).

For each workload, three ways, interleaved run by run so that machine noise hits all
alike:
  safe_exec:  codejail.safe_exec.safe_exec('x = 1 + 1', g)
              codejail-client safe-exec -c 'x = 1 + 1'      (a client process per run)
              PYTHON -E -B -c 'x = 1 + 1'                   (no jail at all)
  jail_code:  codejail.jail_code.jail_code('python', 'print(1)')
              codejail-client exec -c 'print(1)'
              PYTHON -E -B -c 'print(1)'
  numpy:      the same three with NUMPY_CODE (when the broker's interpreter has numpy)
Prints p50 and p90 in ms and the ratios of the p50s: the package saves the client
process the CLI costs, so its p50 should be below the CLI's.

With --throughput SECONDS, then sustained throughput with two concurrent callers: two
threads calling the package's jail_code back to back for SECONDS, against two threads
spawning the bare interpreter back to back, for print(1) and NUMPY_CODE, in runs per
second and their ratio (the package releases the GIL for the whole call).
"""

import argparse
import os
import subprocess
import sys
import threading
import time

from codejail import jail_code, safe_exec

NUMPY_CODE = "import numpy; x = int(numpy.arange(10).sum()); print(x)"
# What the broker's python command sets (docs/compat.md), for the bare spawns too.
THREADS_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def percentile(samples, pct):
    ordered = sorted(samples)
    return ordered[max(0, (len(ordered) * pct + 99) // 100 - 1)]


def timed(fn):
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--python", required=True, help="the broker's interpreter")
    ap.add_argument("--client", required=True)
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("--throughput", type=float, default=0.0, metavar="SECONDS")
    args = ap.parse_args()

    jail_code.configure("python", args.python)
    os.environ["CODEJAIL_SOCKET"] = args.socket
    env = dict(os.environ, **THREADS_ENV)
    has_numpy = subprocess.run([args.python, "-E", "-B", "-c", "import numpy"], env=env, check=False).returncode == 0

    def run(cmd, expect):
        out = subprocess.run(cmd, capture_output=True, env=env, check=False)
        if out.returncode != 0 or out.stdout != expect:
            sys.exit(f"{cmd}: exit {out.returncode}, stdout {out.stdout!r}, stderr {out.stderr!r}")

    def package_safe_exec():
        g = {}
        safe_exec.safe_exec("x = 1 + 1", g)
        if g != {"x": 2}:
            sys.exit(f"safe_exec gave {g!r}")

    def package_jail_code(code="print(1)", expect=b"1\n"):
        res = jail_code.jail_code("python", code)
        if (res.status, res.stdout) != (0, expect):
            sys.exit(f"jail_code gave {res!r}")

    cli = [args.client, "--socket", args.socket]
    ways = {
        "safe_exec": [
            ("package safe_exec()", package_safe_exec),
            ("codejail-client safe-exec", lambda: run(cli + ["safe-exec", "-c", "x = 1 + 1"], b'{"x": 2}\n')),
            ("bare python -c", lambda: run([args.python, "-E", "-B", "-c", "x = 1 + 1"], b"")),
        ],
        "jail_code": [
            ("package jail_code()", package_jail_code),
            ("codejail-client exec", lambda: run(cli + ["exec", "-c", "print(1)"], b"1\n")),
            ("bare python -c", lambda: run([args.python, "-E", "-B", "-c", "print(1)"], b"1\n")),
        ],
    }
    if has_numpy:
        ways["numpy"] = [
            ("package jail_code()", lambda: package_jail_code(NUMPY_CODE, b"45\n")),
            ("codejail-client exec", lambda: run(cli + ["exec", "-c", NUMPY_CODE], b"45\n")),
            ("bare python -c", lambda: run([args.python, "-E", "-B", "-c", NUMPY_CODE], b"45\n")),
        ]
    else:
        print(f"numpy: skipped ({args.python} has no numpy)")
    samples = {(w, label): [] for w, rows in ways.items() for label, _ in rows}
    for rows in ways.values():  # warm-up, which also checks every output once
        for _, fn in rows:
            fn()
    for _ in range(args.n):
        for w, rows in ways.items():
            for label, fn in rows:
                samples[(w, label)].append(timed(fn))

    print(f"python package latency: {args.n} runs each, interleaved; broker python {args.python}, socket {args.socket}")
    print(f"{'':38} {'p50 ms':>10} {'p90 ms':>10}")
    for w, rows in ways.items():
        p50 = {}
        for label, _ in rows:
            s = samples[(w, label)]
            p50[label] = percentile(s, 50)
            print(f"{w + ': ' + label:38} {p50[label]:10.2f} {percentile(s, 90):10.2f}")
        package, cli_p50, bare = (p50[label] for label, _ in rows)
        print(f"{w}: package / CLI p50 = {package / cli_p50:.2f}, "
              f"package / bare python = {package / bare:.2f}, CLI / bare python = {cli_p50 / bare:.2f}")
        if package >= cli_p50:
            print(f"{w}: NOTE: the package's p50 is not below the CLI's")

    if args.throughput > 0:
        workloads = [("print(1)", "print(1)", b"1\n")]
        if has_numpy:
            workloads.append(("numpy", NUMPY_CODE, b"45\n"))
        print(f"throughput, 2 concurrent callers, {args.throughput:g} s each:")
        for name, code, expect in workloads:
            package = rate(lambda c=code, e=expect: package_jail_code(c, e), args.throughput)
            bare = rate(lambda c=code, e=expect: run([args.python, "-E", "-B", "-c", c], e), args.throughput)
            print(f"{name}: package jail_code {package:.1f} runs/s, bare python {bare:.1f} runs/s, "
                  f"package / bare = {package / bare:.2f}")


def rate(fn, seconds, callers=2):
    """Runs per second of `fn` called back to back by `callers` threads for `seconds`."""
    counts = [0] * callers
    deadline = time.monotonic() + seconds

    def caller(i):
        while time.monotonic() < deadline:
            fn()
            counts[i] += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - start)


if __name__ == "__main__":
    main()
