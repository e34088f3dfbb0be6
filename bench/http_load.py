#!/usr/bin/env python3
"""Fire N requests at once and time each (stdlib only; bench/http_load.sh drives it).

  http_load.py http ADDR N TIMEOUT [CONC]   N POST /api/v0/code-exec to ADDR, CONC (default N) at once
  http_load.py cli CLIENT SOCKET N CONC TIMEOUT   N `codejail-client safe-exec`, CONC at once

Every request has its own timeout; a request that gets no answer in it is "lost". The
result is one JSON line: counts by outcome, p50/p99 of the answered ones in ms,
requests/s over the wall time of the whole batch.
"""
import concurrent.futures
import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.parse

CODE = "x = 16 + 1"
PAYLOAD = json.dumps({"code": CODE, "globals_dict": {}, "python_path": None,
                      "limit_overrides_context": None, "slug": "bench", "unsafely": False})
BODY = urllib.parse.urlencode({"payload": PAYLOAD})


def one_http(host, port, timeout, barrier):
    if barrier is not None:
        barrier.wait()
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection(host, port, timeout=timeout)
        c.request("POST", "/api/v0/code-exec", BODY,
                  {"Content-Type": "application/x-www-form-urlencoded"})
        r = c.getresponse()
        body = json.loads(r.read())
        c.close()
    except Exception as e:  # no answer within the timeout, or a broken connection
        return ("lost: " + type(e).__name__, time.monotonic() - t0)
    dt = time.monotonic() - t0
    if r.status == 200 and body.get("globals_dict") == {"x": 17} and "emsg" not in body:
        return ("200", dt)
    if r.status == 503 and r.getheader("Retry-After") and "busy" in body.get("error", ""):
        return ("503-busy", dt)
    return (f"other: {r.status} {body}", dt)


def one_cli(client, socket, timeout, _barrier):
    t0 = time.monotonic()
    try:
        p = subprocess.run([client, "--socket", socket, "safe-exec", "-c", CODE],
                           capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return ("lost: timeout", time.monotonic() - t0)
    dt = time.monotonic() - t0
    if p.returncode == 0 and json.loads(p.stdout) == {"x": 17}:
        return ("ok", dt)
    if p.returncode == 125 and b"busy" in p.stderr:
        return ("busy", dt)
    return (f"other: exit {p.returncode} {p.stderr[:200]!r}", dt)


def pct(sorted_ms, p):
    if not sorted_ms:
        return None
    i = max(0, min(len(sorted_ms) - 1, int((len(sorted_ms) * p + 99) // 100) - 1))
    return round(sorted_ms[i], 1)


def main():
    mode = sys.argv[1]
    if mode == "http":
        host, port = sys.argv[2].rsplit(":", 1)
        n, timeout = int(sys.argv[3]), float(sys.argv[4])
        conc = int(sys.argv[5]) if len(sys.argv) > 5 else n

        def job(b):
            return one_http(host, int(port), timeout, b)
    else:
        client, socket = sys.argv[2], sys.argv[3]
        n, conc, timeout = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])

        def job(b):
            return one_cli(client, socket, timeout, b)

    # All N at once: each waits for the others before it connects.
    barrier = threading.Barrier(conc) if mode == "http" and conc == n else None
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=conc) as pool:
        results = list(pool.map(job, [barrier] * n))
    wall = time.monotonic() - t0
    counts = {}
    for outcome, _ in results:
        counts[outcome] = counts.get(outcome, 0) + 1
    answered = sorted(dt * 1000 for o, dt in results if not o.startswith("lost"))
    print(json.dumps({"mode": mode, "n": n, "concurrency": conc, "counts": counts,
                      "p50_ms": pct(answered, 50), "p99_ms": pct(answered, 99),
                      "wall_s": round(wall, 2), "req_per_s": round(n / wall, 1)}))


if __name__ == "__main__":
    main()
