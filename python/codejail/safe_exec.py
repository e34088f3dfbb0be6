"""Python's ``exec`` with a globals dict that goes through JSON, run in a jail:
upstream's ``codejail.safe_exec`` API over ``codejail.jail_code``.

The program that runs in the jail is the project's one wrapper (the same text the Rust
client and the ``safe-exec`` CLI send, exposed as ``_native.SAFE_EXEC_WRAPPER``): it
discards ``print`` output, reads ``[code, globals]`` as JSON from stdin, appends the
``python_path`` base names to ``sys.path``, runs ``exec(code, globals)`` and writes
``json_safe(globals)`` as JSON to the real stdout. The JSON in and out on this side is
Python's own ``json``, and :func:`json_safe` is upstream's rule set, so the results are
upstream's by construction.

``ALWAYS_BE_UNSAFE``, ``jail_code.is_configured`` and ``not_safe_exec`` are looked up
at call time (tests patch them).
"""

import json
import logging
import os
import shutil
import sys

from codejail import jail_code
from codejail._native import SAFE_EXEC_WRAPPER, truncated_output_message
from codejail.util import change_directory, temp_directory

log = logging.getLogger("codejail")

#: Log the code, its stdin and the run's result at DEBUG (for debugging only).
LOG_ALL_CODE = False

#: Run every ``safe_exec`` with ``not_safe_exec``, unconfined, in this process. Deeply
#: dangerous: anyone who can submit code then owns this process. Local debugging only.
ALWAYS_BE_UNSAFE = False


class SafeExecException(Exception):
    """The code failed in the jail (or, from ``not_safe_exec``, in this process). The
    message carries the run's stdout, stderr and status."""


def safe_exec(
    code,
    globals_dict,
    files=None,
    python_path=None,
    limit_overrides_context=None,
    slug=None,
    extra_files=None,
):
    """Execute ``code`` as ``exec(code, globals_dict)`` would, in a jail.

    ``globals_dict`` goes in through :func:`json_safe` and is updated with what the code
    left in its globals (again through :func:`json_safe`): an update, so names the code
    deleted or that could not be serialised keep their old values here.

    ``files`` are copied into the run's directory; ``python_path`` entries (directories
    or zip files) are added to ``sys.path`` by base name and copied in unless an
    ``extra_files`` entry has that name; ``extra_files`` are ``(name, bytes)`` pairs;
    ``limit_overrides_context`` and ``slug`` are as for ``jail_code``.

    Raises :class:`SafeExecException` if the code failed, with upstream's exact message,
    or if its output went over the broker's ``OUTPUT`` limit (the message names the
    limit: the globals were cut); ``RuntimeError`` if python is not configured.
    """
    if ALWAYS_BE_UNSAFE:
        not_safe_exec(
            code,
            globals_dict,
            files=files,
            python_path=python_path,
            limit_overrides_context=limit_overrides_context,
            slug=slug,
            extra_files=extra_files,
        )
        return

    if not jail_code.is_configured("python"):
        raise RuntimeError("safe_exec has not been configured for Python")

    files = list(files or ())
    extra_files = list(extra_files or ())
    extra_names = {name for name, _ in extra_files}
    # The wrapper's arguments: its mode, then the sys.path entries, by base name.
    argv = ["jail"]
    for entry in python_path or ():
        base = os.path.basename(entry)
        if base not in extra_names and entry not in files:
            files.append(entry)
        argv.append(base)

    stdin = json.dumps([code, json_safe(globals_dict)])
    if LOG_ALL_CODE:  # pragma: no cover
        log.debug("Exec: %s", code)
        log.debug("Stdin: %s", stdin)

    res = jail_code.jail_code(
        "python",
        code=SAFE_EXEC_WRAPPER,
        files=files,
        extra_files=extra_files,
        argv=argv,
        stdin=stdin,
        limit_overrides_context=limit_overrides_context,
        slug=slug,
    )

    if LOG_ALL_CODE:  # pragma: no cover
        log.debug("Status: %s", res.status)
        log.debug("Stdout: %s", res.stdout)
        log.debug("Stderr: %s", res.stderr)

    if res.status != 0:
        raise SafeExecException(
            f"Couldn't execute jailed code: stdout: {res.stdout!r}, "
            f"stderr: {res.stderr!r} with status code: {res.status}"
        )
    if res.truncated:
        raise SafeExecException(truncated_output_message(res.output_limit))
    globals_dict.update(json.loads(res.stdout.decode("utf-8")))


# The types a top-level global may have to be kept (subclasses too: bool, ...).
_KEPT_TYPES = (type(None), int, float, bytes, str, list, tuple, dict)


def _decoded(obj):
    """``obj`` with bytes as UTF-8 text and tuples as lists, at any depth (keys too).
    Raises for bytes that are not UTF-8; other types are left for ``json`` to judge."""
    if isinstance(obj, bytes):
        return obj.decode("utf-8")
    if isinstance(obj, (list, tuple)):
        return [_decoded(item) for item in obj]
    if isinstance(obj, dict):
        return {_decoded(k): _decoded(v) for k, v in obj.items()}
    return obj


def json_safe(d):
    """The part of the dict ``d`` that survives a trip through JSON, by upstream's rules.

    A top-level value is kept only if its type is None, int, float, bytes, str, list,
    tuple or dict (or a subclass); ``__builtins__`` never is. Bytes become text and
    tuples lists, at any depth. A key whose key or value fails that, or a JSON round
    trip, is dropped whole. A final round trip turns non-string keys into JSON strings.
    """
    safe = {}
    for key, value in d.items():
        if not isinstance(value, _KEPT_TYPES) or key == "__builtins__":
            continue
        try:
            value = json.loads(json.dumps(_decoded(value)))
            key = json.loads(json.dumps(_decoded(key)))
        except Exception:  # pylint: disable=broad-except
            continue
        safe[key] = value
    return json.loads(json.dumps(safe))


def _copy_in(path, directory):
    """Copy ``path`` into ``directory`` by base name: a symlink as a symlink, a file,
    or a directory recursively (its symlinks kept)."""
    dest = os.path.join(directory, os.path.basename(path))
    if os.path.islink(path):
        os.symlink(os.readlink(path), dest)
    elif os.path.isdir(path):
        shutil.copytree(path, dest, symlinks=True)
    else:
        shutil.copyfile(path, dest)


def not_safe_exec(
    code,
    globals_dict,
    files=None,
    python_path=None,
    limit_overrides_context=None,  # pylint: disable=unused-argument
    slug=None,
    extra_files=None,
):
    """``safe_exec``'s twin with no jail and no broker: the code runs in this process,
    in a temporary directory holding the files, with the same JSON trip for the globals.
    Limits do not apply. Not thread-safe (it changes the current directory and
    ``sys.path``). For debugging only: it is logged as dangerous.

    Raises :class:`SafeExecException` with ``"ExcClass: message"`` if the code raises.
    """
    log.warning("DANGER: Executing code with `not_safe_exec` for %s", slug)
    g_dict = json_safe(globals_dict)
    with temp_directory() as directory:
        with change_directory(directory):
            for path in files or ():
                _copy_in(path, directory)
            for name, contents in extra_files or ():
                with open(os.path.join(directory, name), "wb") as f:
                    f.write(contents)
            saved_path = sys.path
            sys.path = saved_path + list(python_path or ())
            try:
                exec(code, g_dict)  # pylint: disable=exec-used
            except Exception as e:  # pylint: disable=broad-except
                # As upstream: the class and message, no traceback.
                raise SafeExecException(f"{e.__class__.__name__}: {e!s}") from None
            finally:
                sys.path = saved_path
    globals_dict.update(json_safe(g_dict))
