#!/usr/bin/env python3
"""Probe codejail-http's /live while clients abuse it (stdlib only; bench/http_slow_clients.sh
drives it).

  http_slow_clients.py ADDR FRONT_PID [--duration S] [--interval S] [--timeout S]
                       [--stalled N] [--floods N] [--flood-bytes B]

Three phases, each DURATION seconds, during which a GET /live (a new connection each)
starts every INTERVAL seconds, each with its own TIMEOUT (a probe with no answer in it
counts as a timeout, at TIMEOUT in the figures):

  idle     nothing else;
  stalled  STALLED connections that each sent half a header block and stall; one the
           front closes is opened again at once (the attacker stays);
  floods   FLOODS clients each POSTing, over and over, a multipart body of FLOOD_BYTES
           made of tiny file parts with distinct names.

Prints per phase: probes, timeouts, p50/p99/max latency in ms, and the front's CPU
seconds (utime + stime from /proc/FRONT_PID/stat) over the phase; for the floods, how
their uploads ended.
"""
import argparse
import collections
import os
import selectors
import socket
import threading
import time

LIVE = b"GET /live HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
HALF = b"GET /live HTTP/1.1\r\nHost: bench\r\n"
BOUNDARY = "8d1f0a6b0c2e4f6a"


def front_cpu(pid):
    """utime + stime of the front, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def probe(host, port, timeout):
    """One GET /live: (ok, seconds). Not ok: no whole 200 answer within timeout."""
    t0 = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(max(0.001, timeout - (time.monotonic() - t0)))
            s.sendall(LIVE)
            data = b""
            while True:
                left = timeout - (time.monotonic() - t0)
                if left <= 0:
                    raise TimeoutError
                s.settimeout(left)
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        ok = data.startswith(b"HTTP/1.1 200") and data.endswith(b'{"status": "OK"}')
        return ok, time.monotonic() - t0
    except OSError:
        return False, timeout


def pct(sorted_ms, p):
    i = max(0, min(len(sorted_ms) - 1, int((len(sorted_ms) * p + 99) // 100) - 1))
    return sorted_ms[i]


def run_probes(host, port, duration, interval, timeout):
    """Probes started every interval for duration; waits for the last one."""
    results = []
    lock = threading.Lock()

    def one():
        r = probe(host, port, timeout)
        with lock:
            results.append(r)

    threads = []
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < duration:
        t = threading.Thread(target=one, daemon=True)
        t.start()
        threads.append(t)
        k += 1
        time.sleep(max(0.0, start + k * interval - time.monotonic()))
    for t in threads:
        t.join()
    return results


class Stallers:
    """N connections that each sent half a header block; reopened when closed."""

    def __init__(self, host, port, n):
        self.addr = (host, port)
        self.sel = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.reopened = 0
        self.failed = 0
        for _ in range(n):
            self.open()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def open(self):
        try:
            s = socket.create_connection(self.addr, timeout=10)
            s.sendall(HALF)
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ)
        except OSError:
            self.failed += 1

    def run(self):
        while not self.stop.is_set():
            for key, _ in self.sel.select(timeout=0.1):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(s)
                    s.close()
                    self.reopened += 1
                    self.open()

    def close(self):
        self.stop.set()
        self.thread.join()
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()


def flood_body(size):
    """A multipart body of about size bytes: a payload, then tiny distinct file parts."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="payload"\r\n\r\n'
        '{"code": "x = 1", "globals_dict": {}}\r\n'
    ]
    total, i = len(parts[0]), 0
    while total < size - 64:
        p = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f{i}"; '
             f'filename="f"\r\n\r\nx\r\n')
        parts.append(p)
        total += len(p)
        i += 1
    parts.append(f"--{BOUNDARY}--\r\n")
    return "".join(parts).encode(), i


def flood(host, port, body, stop, outcomes, durations, lock):
    head = (f"POST /api/v0/code-exec HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=120) as s:
                s.sendall(head + body)
                answer = s.recv(64)
            what = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "closed"
        except OSError as e:
            what = "closed early: " + type(e).__name__
        with lock:
            outcomes[what] += 1
            durations.append(time.monotonic() - t0)


def phase(name, host, port, pid, args, during=None):
    cpu0 = front_cpu(pid)
    results = run_probes(host, port, args.duration, args.interval, args.timeout)
    cpu = front_cpu(pid) - cpu0
    ms = sorted(dt * 1000 for _, dt in results)
    timeouts = sum(1 for ok, _ in results if not ok)
    print(f"{name:34} {len(results):>6} {timeouts:>8} {pct(ms, 50):>9.1f} {pct(ms, 99):>9.1f} "
          f"{ms[-1]:>9.1f} {cpu:>8.1f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("pid", type=int)
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=5)
    ap.add_argument("--stalled", type=int, default=1100)
    ap.add_argument("--floods", type=int, default=4)
    ap.add_argument("--flood-bytes", type=int, default=int(9.6 * 1024 * 1024))
    args = ap.parse_args()
    host, port = args.addr.rsplit(":", 1)
    port = int(port)

    print(f"{'GET /live while':34} {'probes':>6} {'timeouts':>8} {'p50 ms':>9} {'p99 ms':>9} "
          f"{'max ms':>9} {'front s':>8}")
    phase("idle", host, port, args.pid, args)

    stallers = Stallers(host, port, args.stalled)
    phase(f"{args.stalled} stalled clients", host, port, args.pid, args)
    stallers.close()
    stall_note = (f"stalled clients: {stallers.reopened} closed by the front and reopened, "
                  f"{stallers.failed} could not connect")
    # Let the front see the stalled connections go before the next phase.
    time.sleep(2)

    body, parts = flood_body(args.flood_bytes)
    stop, lock = threading.Event(), threading.Lock()
    outcomes, durations = collections.Counter(), []
    floods = [threading.Thread(target=flood,
                               args=(host, port, body, stop, outcomes, durations, lock),
                               daemon=True) for _ in range(args.floods)]
    for t in floods:
        t.start()
    phase(f"{args.floods} multipart floods", host, port, args.pid, args)
    stop.set()
    for t in floods:
        t.join()
    print(stall_note)
    print(f"floods: {args.floods} clients, each body {len(body) / 2**20:.1f} MiB of {parts} "
          f"file parts; uploads: " + ", ".join(f"{v} {k}" for k, v in sorted(outcomes.items())))
    if durations:
        print(f"flood uploads: {len(durations)}, seconds each: mean {sum(durations) / len(durations):.2f}, "
              f"max {max(durations):.2f}")


if __name__ == "__main__":
    main()
