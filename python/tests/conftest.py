"""Fixtures: real dev brokers (``codejail-broker --dev``) on temporary sockets.

As root (CI), each broker runs as its own non-root uid (``setpriv``), from 210000 up:
root is exempt from RLIMIT_NPROC, and a broker must never run programs as root. The
binaries come from ``$CODEJAIL_TEST_BIN_DIR`` (``scripts/test.sh`` sets it when it had
to stage them where other uids can reach them), else the checkout's ``target/debug``;
the sandbox interpreter from ``$CODEJAIL_TEST_PYTHON``, else
``/var/tmp/codejail-sandbox-venv-lean/bin/python``, else ``/usr/bin/python3``.
"""

import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import codejail.broker
import codejail.jail_code

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
REQUIRE_PRIVILEGED = os.environ.get("CODEJAIL_REQUIRE_PRIVILEGED") == "1"
FORK_SERVER = os.environ.get("CODEJAIL_TEST_FORK_SERVER") == "1"
_UIDS = itertools.count(210000 + (os.getpid() % 1000) * 20)


def bin_path(name):
    """A codejail binary."""
    for d in (os.environ.get("CODEJAIL_TEST_BIN_DIR"), REPO / "target" / "debug"):
        if d and (Path(d) / name).exists():
            return str(Path(d) / name)
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(f"{name} not found: run `cargo build --bins` or set CODEJAIL_TEST_BIN_DIR")


def sandbox_python():
    """The interpreter the brokers under test run."""
    for candidate in (
        os.environ.get("CODEJAIL_TEST_PYTHON"),
        "/var/tmp/codejail-sandbox-venv-lean/bin/python",
        "/usr/bin/python3",
    ):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("no sandbox interpreter: run scripts/setup-sandbox-venv.sh")


def skip_or_fail(reason):
    """Skip, or fail when CODEJAIL_REQUIRE_PRIVILEGED=1 (CI)."""
    if REQUIRE_PRIVILEGED:
        pytest.fail(f"CODEJAIL_REQUIRE_PRIVILEGED=1 and this test cannot run: {reason}")
    pytest.skip(reason)


class Broker:
    """One ``codejail-broker --dev`` process on a socket in a fresh directory."""

    def __init__(self, *extra_args, allow_caller=True):
        self.extra_args = list(extra_args)
        self.allow_caller = allow_caller
        self.uid = next(_UIDS) if IS_ROOT else None
        self.dir = tempfile.mkdtemp(prefix="codejail-pytest-")
        os.chmod(self.dir, 0o755)
        if self.uid is not None:
            os.chown(self.dir, self.uid, self.uid)
        self.socket = os.path.join(self.dir, "b.sock")
        self.log_path = os.path.join(self.dir, "broker.log")
        self.python = sandbox_python()
        self.proc = None
        self.start()

    def command(self):
        cmd = [bin_path("codejail-broker"), "--dev", "--socket", self.socket, "--python", self.python]
        if self.allow_caller:
            cmd += ["--allow-uid", str(os.getuid())]
        cmd += self.extra_args
        # CODEJAIL_TEST_FORK_SERVER=1 (scripts/python-tests.sh's second pass): warm jails
        # forked from a zygote, for every broker that has no pool of its own.
        if FORK_SERVER and not {"--pool-size", "--fork-server"} & set(self.extra_args):
            cmd += ["--fork-server", "--pool-size", "2"]
        if self.uid is not None:
            cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups"] + cmd
        return cmd

    def start(self):
        """Start the broker and wait until it answers a status request."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "info", "TMPDIR": self.dir}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=self.dir
            )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the broker exited with {self.proc.returncode}:\n{self.log()}")
            if os.path.exists(self.socket):
                try:
                    codejail.broker.status(self.socket)
                    return
                except codejail.broker.BrokerRefused:
                    return  # listening, and refusing us as asked
                except codejail.broker.BrokerError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the broker did not start listening:\n{self.log()}")
            time.sleep(0.05)

    def stop(self):
        """SIGTERM, and wait for the exit."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self):
        """The broker's output so far."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError as e:
            return f"(no log: {e})"

    def close(self):
        """Stop the broker and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def broker():
    """The session's broker; ``$CODEJAIL_SOCKET`` names it and python is configured
    with its interpreter for the whole session."""
    b = Broker()
    saved_env = os.environ.get("CODEJAIL_SOCKET")
    os.environ["CODEJAIL_SOCKET"] = b.socket
    codejail.jail_code.configure("python", b.python, user="unused")
    yield b
    if saved_env is None:
        os.environ.pop("CODEJAIL_SOCKET", None)
    else:
        os.environ["CODEJAIL_SOCKET"] = saved_env
    b.close()


@pytest.fixture
def make_broker():
    """Start extra brokers for one test (``make_broker("--max-running", "1")``)."""
    made = []

    def make(*args, **kwargs):
        b = Broker(*args, **kwargs)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


@pytest.fixture(autouse=True)
def clean_jail_state():
    """Each test starts from upstream's module state (limits, overrides, the socket
    setting) and the session's python configuration, and leaves no change behind."""
    jc = codejail.jail_code
    saved = (jc.COMMANDS, jc.LIMITS, jc.LIMIT_OVERRIDES, codejail.broker.BROKER_SOCKET)
    jc.COMMANDS = dict(saved[0])
    jc.LIMITS = jc.DEFAULT_LIMITS.copy()
    jc.LIMIT_OVERRIDES = {}
    yield
    jc.COMMANDS, jc.LIMITS, jc.LIMIT_OVERRIDES, codejail.broker.BROKER_SOCKET = saved
