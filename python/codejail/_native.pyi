"""Type stubs for codejail._native, the Rust half of the package (python/src/lib.rs).

Every call releases the GIL while it waits for the broker. Failures raise the
exceptions of codejail.broker (BrokerUnavailable, BrokerBusy, BrokerRefused,
BrokerRequestError, BrokerError), constructed as (socket, reason, kind).
"""

from typing import Mapping, Optional, Sequence, Tuple, TypedDict, type_check_only

# What the module exports (pyo3 sets the runtime's __all__ from python/src/lib.rs).
__all__ = [
    "jail_code",
    "status_json",
    "connection_stats",
    "close_connections",
    "truncated_output_message",
    "SAFE_EXEC_WRAPPER",
    "DEFAULT_SOCKET",
    "PROTOCOL_VERSION",
]

# The shapes of the dicts the functions return: types for checkers only, the module
# has no such classes.
@type_check_only
class Usage(TypedDict):
    cpu_user_ms: int
    cpu_sys_ms: int
    wall_ms: int
    max_rss_kib: int
    peak_memory_bytes: Optional[int]

@type_check_only
class RunResult(TypedDict):
    stdout: bytes
    stderr: bytes
    status: int
    limit_hit: Optional[str]
    truncated: bool
    output_limit: int
    run_id: int
    workdir: str
    pid: int
    usage: Usage

@type_check_only
class ConnectionStats(TypedDict):
    pid: int
    idle: int
    connects: int
    reconnects: int

#: The program safe_exec runs in the jail (client/src/safe_exec_wrapper.py).
SAFE_EXEC_WRAPPER: str
#: The broker socket used when nothing else names one.
DEFAULT_SOCKET: str
#: The wire protocol version this module speaks.
PROTOCOL_VERSION: int

def jail_code(
    socket: str,
    command: str,
    code: Optional[str],
    files: Sequence[str],
    extra_files: Sequence[Tuple[str, bytes]],
    argv: Sequence[str],
    stdin: bytes,
    limits: Mapping[str, int],
    limits_context: Optional[str] = None,
    slug: Optional[str] = None,
    connect_timeout: Optional[float] = None,
    queue_timeout: Optional[float] = None,
    total_timeout: Optional[float] = None,
    start_timeout: Optional[float] = None,
) -> RunResult:
    """Run one program on the broker at `socket`; timeouts in seconds (None: the
    client's defaults, 2 s connect, 30 s for a starting broker's answer, 10 s queue,
    60 s total; a negative total: none).
    A kept connection found dead (the broker restarted) is replaced once."""

def status_json(
    socket: str,
    connect_timeout: Optional[float] = None,
    total_timeout: Optional[float] = None,
    start_timeout: Optional[float] = None,
) -> str:
    """The broker's status report as JSON (codejail-client status --json's shape)."""

def connection_stats() -> ConnectionStats:
    """This process's kept connections and counters (a forked child starts at zero)."""

def close_connections() -> None:
    """Close this process's kept connections."""

def truncated_output_message(limit: int) -> str:
    """The SafeExecException message for globals cut at the OUTPUT limit of `limit`
    bytes (the Rust client's text)."""
