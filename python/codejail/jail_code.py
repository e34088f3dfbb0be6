"""Run code in a jail: upstream's ``codejail.jail_code`` API, with each run sent to the
codejail broker.

The module-level dicts (``COMMANDS``, ``LIMITS``, ``DEFAULT_LIMITS``,
``LIMIT_OVERRIDES``) are read at call time, so callers and tests may reassign them.
What differs from upstream, on purpose:

- the run happens on the broker's host, in a fresh jail the broker builds (its own
  namespaces, uid, cgroup, read-only root, Landlock, seccomp, rlimits), not through
  ``sudo``; ``user`` is accepted and unused, since the broker picks per-run uids;
- ``configure(command, bin_path)`` must match what the broker's command runs: the first
  run of each command asks the broker and raises
  :class:`codejail.broker.CommandMismatch` (naming both paths) if it differs;
- limits are resolved here (``LIMITS`` + the context's ``LIMIT_OVERRIDES``) and sent
  with each run, with the context name (the broker's ceilings still apply); ``PROXY``
  is accepted and ignored (there is no proxy process, see :mod:`codejail.proxy`);
- the broker may refuse or be unreachable: :class:`codejail.broker.BrokerError`
  subclasses, never a bare ``OSError``.
"""

import os
import sys

from . import _native, broker
from .subproc import log

#: ``{command: {"cmdline_start": [bin, ...], "user": user}}``, filled by ``configure``.
COMMANDS = {}


def configure(command, bin_path, user=None):
    """Configure ``command`` (e.g. ``"python"``) as running ``bin_path``.

    ``bin_path`` must be the interpreter the broker's command runs (checked on first
    use). ``user`` is kept in ``COMMANDS`` for compatibility and otherwise unused: the
    broker runs each program as a uid of its own.
    """
    cmdline_start = [bin_path]
    if command == "python":
        # As upstream: -E ignores PYTHON* variables, -B writes no .pyc files (the
        # broker's python command runs with these flags too).
        cmdline_start += ["-E", "-B"]
    COMMANDS[command] = {"cmdline_start": cmdline_start, "user": user}


def is_configured(command):
    """Whether ``configure`` was called for ``command``."""
    return command in COMMANDS


def _running_in_virtualenv():
    return hasattr(sys, "real_prefix") or getattr(sys, "base_prefix", sys.prefix) != sys.prefix


# As upstream: inside a virtualenv, configure python from the test variables, else from
# a "<venv>-sandbox" environment next to this one, if there is one.
if _running_in_virtualenv():
    _test_user = os.getenv("CODEJAIL_TEST_USER")
    _test_venv = os.getenv("CODEJAIL_TEST_VENV")
    if _test_venv and _test_user:
        configure("python", f"{_test_venv}/bin/python", _test_user)
    elif os.path.isdir(sys.prefix + "-sandbox"):
        configure("python", sys.prefix + "-sandbox/bin/python", "sandbox")


#: Upstream's defaults: CPU and REALTIME in seconds, VMEM and FSIZE in bytes (0: VMEM
#: unlimited, FSIZE nothing may be written), NPROC processes+threads (per run here),
#: PROXY unused.
DEFAULT_LIMITS = {
    "CPU": 1,
    "REALTIME": 1,
    "VMEM": 0,
    "FSIZE": 0,
    "NPROC": 15,
    "PROXY": None,
}

#: The limits of every run, changed by ``set_limit``. Besides upstream's names, the
#: broker knows ``OUTPUT``, ``TMP``, ``MEMORY`` (bytes) and ``NOFILE``.
LIMITS = DEFAULT_LIMITS.copy()

#: ``{context: {NAME: value}}``, changed by ``override_limit``.
LIMIT_OVERRIDES = {}

# Seconds the whole call may take beyond its REALTIME limit and the queue wait: the
# broker builds and removes the jail in that time.
_TOTAL_TIMEOUT_MARGIN = 30


def set_limit(limit_name, value):
    """Set the default ``limit_name`` for every later run (0 disables a limit, except
    FSIZE, where 0 means no file may be written)."""
    LIMITS[limit_name] = value


def get_effective_limits(overrides_context=None):
    """``LIMITS`` with the overrides of ``overrides_context`` applied (an unknown or
    missing context means no overrides)."""
    overrides = LIMIT_OVERRIDES.get(overrides_context, {}) if overrides_context else {}
    return {**LIMITS, **overrides}


def override_limit(limit_name, value, limit_overrides_context):
    """Override ``limit_name`` for runs with ``limit_overrides_context`` (LMS: the
    course id). ``PROXY`` cannot be overridden (logged and ignored, as upstream)."""
    if limit_name == "PROXY" and LIMITS.get("PROXY") != value:
        log.error(
            "Tried to override value of PROXY to %s. Overriding PROXY on a per-context "
            "basis is not permitted. Will use globally-configured value instead: %s.",
            value,
            LIMITS.get("PROXY"),
        )
        return
    LIMIT_OVERRIDES.setdefault(limit_overrides_context, {})[limit_name] = value


class JailResult:
    """What ``jail_code`` returns: ``stdout`` and ``stderr`` (bytes), ``status`` (the
    exit code, or minus the signal number). Ours besides: ``limit_hit`` (the limit that
    ended the run, e.g. ``"REALTIME"``, or ``None``), ``truncated`` (output beyond the
    broker's cap was dropped), ``output_limit`` (that cap: the run's ``OUTPUT`` limit in
    bytes, stdout and stderr together), ``workdir`` and ``pid`` (the run's directory as the
    program saw it and a pid of the run), ``run_id`` and ``usage`` (a dict)."""

    def __init__(self):
        self.stdout = self.stderr = self.status = None
        self.limit_hit = None
        self.truncated = False
        self.output_limit = None
        self.workdir = None
        self.pid = None
        self.run_id = None
        self.usage = {}

    def __repr__(self):
        return (
            f"JailResult(status={self.status!r}, stdout={self.stdout!r}, "
            f"stderr={self.stderr!r}, limit_hit={self.limit_hit!r})"
        )


def _wire_limits(effective):
    """The limits sent to the broker: every named limit with a value (PROXY is not a
    limit of the broker's), as non-negative integers."""
    wire = {}
    for name, value in effective.items():
        if name == "PROXY" or value is None:
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"limit {name} must be a non-negative integer, not {value!r}")
        wire[name] = int(value)
    return wire


def _as_bytes(data, what):
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be str or bytes, not {type(data).__name__}")


def jail_code(
    command,
    code=None,
    files=None,
    extra_files=None,
    argv=None,
    stdin=None,
    limit_overrides_context=None,
    slug=None,
):
    """Run ``code`` (written to ``jailed_code``), or the copied file named by
    ``argv[0]`` when there is no code, with the configured ``command`` in a fresh jail.

    ``files``: paths copied into the run's directory (directories recursively, symlinks
    as symlinks); ``extra_files``: ``(name, bytes)`` pairs written there; ``argv``: the
    program's arguments; ``stdin``: its standard input (str or bytes);
    ``limit_overrides_context``: the ``LIMIT_OVERRIDES`` context (and the broker's);
    ``slug``: a label for the logs.

    Returns a :class:`JailResult`. Raises ``Exception`` if ``command`` is not configured
    (as upstream), :class:`codejail.broker.BrokerError` subclasses when the broker is
    unreachable, busy or refuses.
    """
    if not is_configured(command):
        raise Exception(f"jail_code needs to be configured for {command!r}")  # pylint: disable=broad-exception-raised
    socket = broker.socket_path()
    broker.check_command(command, COMMANDS[command]["cmdline_start"][0], socket)

    effective = get_effective_limits(limit_overrides_context)
    if slug:
        log.info(
            "Preparing to execute jailed code %r (overrides context = %r, resource limits = %r).",
            slug,
            limit_overrides_context,
            effective,
        )
    limits = _wire_limits(effective)
    realtime = limits.get("REALTIME", 0)
    queue = broker.QUEUE_TIMEOUT if broker.QUEUE_TIMEOUT is not None else 10
    # No total timeout without a REALTIME limit: the run may legitimately go on.
    total = queue + realtime + _TOTAL_TIMEOUT_MARGIN if realtime else -1.0

    if isinstance(code, bytes):
        code = code.decode("utf-8")
    raw = _native.jail_code(
        socket,
        command,
        code or None,
        [os.fspath(f) for f in files or ()],
        [(name, _as_bytes(content, f"extra file {name!r}")) for name, content in extra_files or ()],
        [str(a) for a in argv or ()],
        _as_bytes(stdin, "stdin") if stdin else b"",
        limits,
        limits_context=limit_overrides_context,
        slug=slug,
        connect_timeout=broker.CONNECT_TIMEOUT,
        start_timeout=broker.START_TIMEOUT,
        queue_timeout=broker.QUEUE_TIMEOUT,
        total_timeout=total,
    )

    result = JailResult()
    result.stdout = raw["stdout"]
    result.stderr = raw["stderr"]
    result.status = raw["status"]
    result.limit_hit = raw["limit_hit"]
    result.truncated = raw["truncated"]
    result.output_limit = raw["output_limit"]
    result.workdir = raw["workdir"]
    result.pid = raw["pid"]
    result.run_id = raw["run_id"]
    result.usage = raw["usage"]

    if slug:
        log.info("Executed jailed code %s in %s, with PID %s", slug, result.workdir, result.pid)
    if result.limit_hit == "REALTIME":
        log.warning(
            "Killing process %r, ran too long: %.1fs (REALTIME limit %ss)",
            result.pid,
            result.usage.get("wall_ms", 0) / 1000,
            realtime,
        )
    return result
