"""The broker side of codejail (ours; upstream has no broker).

- where the broker is: :func:`socket_path`;
- what it runs: :func:`status` and :func:`check_command`, which ``jail_code`` calls on
  the first run of each configured command;
- what can go wrong talking to it: :class:`BrokerError` and its subclasses. Every one
  names the socket and the reason; :class:`BrokerBusy` means "try again later".
"""

import json
import os
import threading

from . import _native

#: The socket used when neither ``BROKER_SOCKET`` nor ``$CODEJAIL_SOCKET`` is set.
DEFAULT_SOCKET = _native.DEFAULT_SOCKET

#: The environment variable naming the broker's socket.
SOCKET_ENV = "CODEJAIL_SOCKET"

#: The broker's socket when set (``CODE_JAIL['broker_socket']`` sets it); read at call
#: time, so it may be changed at any point.
BROKER_SOCKET = None

#: Seconds to wait for connecting to the socket (``None``: 2 s).
CONNECT_TIMEOUT = None

#: Seconds to wait, once connected, for the broker's answer to the handshake
#: (``None``: 30 s): a broker systemd starts for this connection (socket activation)
#: answers once its start-up self-test passed; past it, :class:`BrokerUnavailable`.
START_TIMEOUT = None

#: Seconds a run may wait in the broker's queue for a slot (``None``: 10 s); past it the
#: call raises :class:`BrokerBusy`.
QUEUE_TIMEOUT = None


def socket_path():
    """The broker's socket: ``BROKER_SOCKET``, else ``$CODEJAIL_SOCKET``, else
    ``/run/codejail/broker.sock``."""
    if BROKER_SOCKET:
        return os.fspath(BROKER_SOCKET)
    from_env = os.environ.get(SOCKET_ENV)
    if from_env:
        return from_env
    return DEFAULT_SOCKET


class BrokerError(Exception):
    """Talking to the codejail broker failed.

    Attributes: ``socket`` (the broker's socket path), ``reason`` (what went wrong, one
    line) and ``kind`` (a short machine-readable word such as ``"connect"``, ``"busy"``,
    ``"refused"``, ``"unknown_limit"``).
    """

    def __init__(self, socket, reason, kind=None):
        super().__init__(socket, reason, kind)
        self.socket = socket
        self.reason = reason
        self.kind = kind

    def __str__(self):
        return f"codejail broker at {self.socket}: {self.reason}"


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached: no socket, nobody listening, the connection lost,
    the broker shutting down, or the connect timeout expired."""


class BrokerBusy(BrokerError):
    """The broker is at capacity (every slot and its queue full, or no slot within the
    queue timeout). Nothing ran: the caller may retry later."""


class BrokerRefused(BrokerError):
    """The broker refused this connection (this uid is not allowed, or it speaks
    another protocol version)."""


class BrokerRequestError(BrokerError):
    """The broker (or the client, before sending) rejected the request: an unknown
    command or limit, a limit above the broker's ceiling, a bad or unreadable file."""


class CommandMismatch(BrokerError):
    """``configure(command, bin_path)`` names another interpreter than the one the
    broker's command runs, or the broker has no such command."""


def status(socket=None):
    """The broker's status report as a dict (``codejail-client status --json``'s shape:
    ``broker_version``, ``protocol_version``, ``mode``, ``layers``, ``load``,
    ``commands``). Raises :class:`BrokerError` subclasses."""
    text = _native.status_json(
        socket or socket_path(), connect_timeout=CONNECT_TIMEOUT, start_timeout=START_TIMEOUT
    )
    return json.loads(text)


_checked = set()
_checked_lock = threading.Lock()


def check_command(command, bin_path, socket=None):
    """Check once per (socket, command, path) that the broker's ``command`` runs
    ``bin_path`` (compared by realpath); raise :class:`CommandMismatch` naming both
    paths if not."""
    socket = socket or socket_path()
    key = (socket, command, bin_path)
    with _checked_lock:
        if key in _checked:
            return
    commands = status(socket).get("commands", {})
    if command not in commands:
        raise CommandMismatch(
            socket,
            f"the broker has no {command!r} command (it has: "
            f"{', '.join(sorted(commands)) or 'none'}); "
            f"configure({command!r}, {bin_path!r}) cannot be served",
            "unknown_command",
        )
    theirs = commands[command]["bin"]
    if os.path.realpath(theirs) != os.path.realpath(bin_path):
        raise CommandMismatch(
            socket,
            f"configure({command!r}, {bin_path!r}) does not match the broker, whose "
            f"{command!r} command runs {theirs!r} "
            f"(realpaths {os.path.realpath(bin_path)!r} and {os.path.realpath(theirs)!r}); "
            f"point CODE_JAIL['python_bin'] (or configure()) at the broker's interpreter",
            "command_mismatch",
        )
    with _checked_lock:
        _checked.add(key)
