"""codejail.safe_exec: safe_exec through a real dev broker, not_safe_exec in process,
json_safe, and the call-time lookups callers and tests patch."""

import io
import math
import textwrap
import zipfile
from unittest import mock

import pytest

from codejail import jail_code, safe_exec


@pytest.fixture(params=["safe_exec", "not_safe_exec"])
def exec_fn(request, broker):
    """Both implementations must give the same results for ordinary code."""
    return getattr(safe_exec, request.param)


def test_sets_values_and_discards_print(exec_fn):
    globs = {"untouched": [1, 2]}
    exec_fn("a = 17; print('hi!')", globs)
    assert globs == {"untouched": [1, 2], "a": 17}


def test_globals_go_through_json(exec_fn):
    globs = {"x": (1, b"two"), "s": {1, 2}, "f": math.inf}
    exec_fn(
        textwrap.dedent(
            """\
            y = [x, f]
            d = {1: b'a', 2: (1, b'b')}
            bad = b'\\x99'
            n = float('nan')
            del x
            """
        ),
        globs,
    )
    assert globs["y"] == [[1, "two"], math.inf]
    assert globs["d"] == {"1": "a", "2": [1, "b"]}
    assert "bad" not in globs
    assert math.isnan(globs["n"])
    # An update: what the code deleted, or what could not go in, keeps its old value.
    assert globs["x"] == (1, b"two") and globs["s"] == {1, 2}


def test_files_python_path_and_extra_files(exec_fn, tmp_path):
    (tmp_path / "hello.txt").write_text("Hello there.\n")
    pylib = tmp_path / "pylib"
    pylib.mkdir()
    (pylib / "pymodule_for_test.py").write_text("const = 42\n")
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("zipped_for_test.py", "def twice(x):\n    return 2 * x\n")
    globs = {}
    exec_fn(
        textwrap.dedent(
            """\
            import pymodule_for_test, zipped_for_test
            a = open('hello.txt').read()
            b = pymodule_for_test.const
            c = zipped_for_test.twice(21)
            d = open('extra.dat', 'rb').read().hex()
            """
        ),
        globs,
        files=[str(tmp_path / "hello.txt")],
        python_path=[str(pylib), "code.zip"],
        extra_files=[("code.zip", zipped.getvalue()), ("extra.dat", b"\x01\xff")],
    )
    assert (globs["a"], globs["b"], globs["c"], globs["d"]) == ("Hello there.\n", 42, 42, "01ff")


def test_failure_message_is_upstreams(broker):
    with pytest.raises(safe_exec.SafeExecException) as info:
        safe_exec.safe_exec("raise ValueError(\"That's not how you pour soup!\")", {})
    msg = str(info.value)
    assert msg.startswith("Couldn't execute jailed code: stdout: b'', stderr: b'Traceback")
    assert msg.endswith("ValueError: That\\'s not how you pour soup!\\n' with status code: 1"), msg


def test_timeout_message_is_upstreams(broker):
    with pytest.raises(safe_exec.SafeExecException) as info:
        safe_exec.safe_exec("import time; time.sleep(5)", {})
    assert str(info.value) == "Couldn't execute jailed code: stdout: b'', stderr: b'' with status code: -9"


def test_globals_over_the_output_limit_raise_naming_it(broker):
    # {"a": 1, "big": "x..."} is 19 bytes around the string (and perhaps a newline).
    jail_code.set_limit("OUTPUT", 4096)
    globs = {"a": 1}
    safe_exec.safe_exec(f"big = 'x' * {4096 - 20}", globs)
    assert globs["big"] == "x" * (4096 - 20)
    globs = {"a": 1}
    with pytest.raises(safe_exec.SafeExecException) as info:
        safe_exec.safe_exec(f"big = 'x' * {4096 - 18}", globs)
    msg = str(info.value)
    assert msg.startswith("Couldn't execute jailed code: "), msg
    assert "OUTPUT limit of 4096 bytes" in msg, msg
    assert globs == {"a": 1}
    res = jail_code.jail_code("python", "print('y' * 5000)")
    assert res.truncated is True and res.output_limit == 4096 and len(res.stdout) == 4096


def test_not_safe_exec_message_has_no_traceback():
    with pytest.raises(safe_exec.SafeExecException) as info:
        safe_exec.not_safe_exec("raise KeyError('k')", {})
    assert str(info.value) == "KeyError: 'k'"


def test_unconfigured_raises_runtime_error():
    jail_code.COMMANDS = {}
    with pytest.raises(RuntimeError, match=r"^safe_exec has not been configured for Python$"):
        safe_exec.safe_exec("x = 1", {})


def test_lookups_happen_at_call_time(broker):
    with mock.patch("codejail.jail_code.is_configured", return_value=False) as is_configured:
        with pytest.raises(RuntimeError):
            safe_exec.safe_exec("x = 1", {})
    is_configured.assert_called_once_with("python")

    with mock.patch("codejail.safe_exec.not_safe_exec") as unsafe, mock.patch(
        "codejail.jail_code.is_configured"
    ) as is_configured, mock.patch.object(safe_exec, "ALWAYS_BE_UNSAFE", new=True):
        safe_exec.safe_exec("out = 1 + 2", {}, slug="s")
    is_configured.assert_not_called()
    unsafe.assert_called_once_with(
        "out = 1 + 2", {}, files=None, python_path=None, limit_overrides_context=None,
        slug="s", extra_files=None,
    )


def test_safe_exec_uses_the_limits_and_context(broker):
    jail_code.override_limit("REALTIME", 4, "course-v1:slow")
    globs = {}
    safe_exec.safe_exec("import time; time.sleep(1.5); x = 1", globs, limit_overrides_context="course-v1:slow")
    assert globs == {"x": 1}


def test_json_safe_rules():
    js = safe_exec.json_safe
    assert js({1: b"a", 2: "b", 3: {1: b"b", 2: (1, b"a")}}) == {"1": "a", "2": "b", "3": {"1": "b", "2": [1, "a"]}}
    assert js({b"\x99bad_key": b"good", "a": "b"}) == {"a": "b"}
    assert js({b"good_key": b"\x99bad", "a": "b"}) == {"a": "b"}
    assert js({"__builtins__": {}, "m": math, "f": len, "c": 1j, "s": {1}, "ok": True}) == {"ok": True}
    assert js({None: 1, True: 2, 1.5: 3}) == {"null": 1, "true": 2, "1.5": 3}
    cyclic = []
    cyclic.append(cyclic)
    assert js({"cyclic": cyclic, "nested_set": [{1}], "big": 10**40}) == {"big": 10**40}
    assert js({"lone": "\ud800"}) == {"lone": "\ud800"}
