"""codejail.jail_code against a real dev broker: upstream's API and our additions."""

import logging
import os
import textwrap
import threading
import time

import pytest

import codejail.broker
from codejail import jail_code, subproc


def run(code, **kwargs):
    return jail_code.jail_code("python", textwrap.dedent(code), **kwargs)


def test_configure_fills_commands_as_upstream():
    jail_code.COMMANDS = {}
    assert not jail_code.is_configured("python")
    jail_code.configure("python", "/a/b/c/bin/python", user="python_executor")
    assert jail_code.is_configured("python")
    assert jail_code.COMMANDS["python"] == {
        "cmdline_start": ["/a/b/c/bin/python", "-E", "-B"],
        "user": "python_executor",
    }
    jail_code.configure("node", "/usr/bin/node")
    assert jail_code.COMMANDS["node"] == {"cmdline_start": ["/usr/bin/node"], "user": None}


def test_default_limits_and_overrides(caplog):
    assert jail_code.DEFAULT_LIMITS == {
        "CPU": 1, "REALTIME": 1, "VMEM": 0, "FSIZE": 0, "NPROC": 15, "PROXY": None,
    }
    assert jail_code.get_effective_limits() == jail_code.DEFAULT_LIMITS
    jail_code.set_limit("CPU", 5)
    jail_code.override_limit("REALTIME", 7, "course-v1:a+b+c")
    with caplog.at_level(logging.ERROR, logger="codejail"):
        jail_code.override_limit("PROXY", 1, "course-v1:a+b+c")
    assert "Overriding PROXY on a per-context basis is not permitted" in caplog.text
    assert jail_code.get_effective_limits()["CPU"] == 5
    assert jail_code.get_effective_limits("course-v1:a+b+c") == {
        "CPU": 5, "REALTIME": 7, "VMEM": 0, "FSIZE": 0, "NPROC": 15, "PROXY": None,
    }
    assert jail_code.get_effective_limits("unknown") == jail_code.LIMITS
    assert jail_code.LIMIT_OVERRIDES == {"course-v1:a+b+c": {"REALTIME": 7}}


def test_hello_world(broker):
    res = run("print('Hello, world!')")
    assert isinstance(res, jail_code.JailResult)
    assert (res.status, res.stdout, res.stderr) == (0, b"Hello, world!\n", b"")
    assert res.limit_hit is None and res.truncated is False


def test_argv_stdin_and_exit_status(broker):
    res = run(
        """
        import sys
        data = sys.stdin.read()
        print(':'.join(sys.argv[1:]), len(data))
        sys.exit(3)
        """,
        argv=["Hello", "world", "-x"],
        stdin="ünïcode" * 1000,
    )
    assert res.stdout == b"Hello:world:-x 7000\n"
    assert res.status == 3
    res = run("import sys; sys.stdout.buffer.write(sys.stdin.buffer.read()[::-1])", stdin=b"\x00\xffab")
    assert res.stdout == b"ba\xff\x00"


def test_exception_names_jailed_code(broker):
    res = run("raise ValueError('FAIL')")
    assert res.status == 1
    assert b"jailed_code" in res.stderr
    assert res.stderr.endswith(b"ValueError: FAIL\n")


def test_files_dirs_symlinks_and_extra_files(broker, tmp_path):
    (tmp_path / "hello.txt").write_text("Hello there.\n")
    pkg = tmp_path / "pylib"
    pkg.mkdir()
    (pkg / "module.py").write_text("const = 42\n")
    os.symlink("/etc/passwd", tmp_path / "outside")
    res = run(
        """
        import os, sys
        sys.path.append('pylib')
        import module
        print(open('hello.txt').read(), module.const, open('extra.bin', 'rb').read())
        print(os.path.islink('outside'), sorted(os.listdir('.')))
        try:
            open('outside').read()
            print('read through the link')
        except OSError:
            print('link unreadable')
        """,
        files=[str(tmp_path / "hello.txt"), str(pkg), str(tmp_path / "outside")],
        extra_files=[("extra.bin", b"\x01\x02")],
    )
    assert res.status == 0, res.stderr
    lines = res.stdout.decode().splitlines()
    assert lines[0] == "Hello there."
    assert lines[1] == " 42 b'\\x01\\x02'"
    assert lines[2] == "True ['extra.bin', 'hello.txt', 'jailed_code', 'outside', 'pylib', 'tmp']"
    assert lines[3] == "link unreadable"


def test_running_a_copied_file_without_code(broker, tmp_path):
    (tmp_path / "doit.py").write_text("import sys; print('doit', sys.argv[1:])\n")
    res = jail_code.jail_code("python", files=[str(tmp_path / "doit.py")], argv=["doit.py", "1", "2"])
    assert res.stdout == b"doit ['1', '2']\n", res.stderr


def test_slug_is_logged_with_the_runs_directory_and_pid(broker, caplog):
    with caplog.at_level(logging.INFO, logger="codejail"):
        res = run("import os; print(os.getcwd())", slug="HELLO")
    cwd = res.stdout.decode().strip()
    assert res.workdir == cwd
    assert os.path.basename(cwd).startswith("codejail-")
    assert res.pid > 1
    executed = [r for r in caplog.records if r.getMessage().startswith("Executed jailed code")]
    assert [r.getMessage() for r in executed] == [f"Executed jailed code HELLO in {cwd}, with PID {res.pid}"]
    assert executed[0].levelno == logging.INFO and executed[0].name == "codejail"
    assert subproc.log is logging.getLogger("codejail")


def test_realtime_kills_and_logs(broker, caplog):
    jail_code.set_limit("REALTIME", 1)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="codejail"):
        res = run("import time; time.sleep(10); print('woke')")
    assert time.monotonic() - started < 6
    assert (res.status, res.stdout, res.limit_hit) == (-9, b"", "REALTIME")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"Killing process {res.pid}, ran too long")


def test_limits_are_read_at_call_time_and_contexts_apply(broker):
    sleeper = "import time; time.sleep(1.5); print('done')"
    assert run(sleeper).status == -9  # REALTIME 1 by default
    jail_code.override_limit("REALTIME", 4, "course-v1:slow")
    assert run(sleeper, limit_overrides_context="course-v1:slow").stdout == b"done\n"
    assert run(sleeper, limit_overrides_context="course-v1:other").status == -9
    # Reassigning the module dict (as upstream's tests do) takes effect at once.
    jail_code.LIMITS = dict(jail_code.DEFAULT_LIMITS, REALTIME=4)
    assert run(sleeper).stdout == b"done\n"


def test_vmem_and_fsize_reach_the_jail(broker):
    jail_code.set_limit("VMEM", 80 * 1024 * 1024)
    res = run("x = bytearray(200 * 1024 * 1024)")
    assert res.status != 0 and b"MemoryError" in res.stderr
    jail_code.set_limit("VMEM", 0)
    writer = """
        with open('tmp/f', 'w') as f:
            f.write('x' * 10)
        print('wrote')
        """
    res = run(writer)
    # FSIZE 0: nothing may be written.
    assert res.status != 0 and b"File too large" in res.stderr, res.stderr
    jail_code.set_limit("FSIZE", 100)
    assert run(writer).stdout == b"wrote\n"


def test_unconfigured_command_raises_as_upstream(broker):
    jail_code.COMMANDS = {}
    with pytest.raises(Exception, match=r"jail_code needs to be configured for 'python'"):
        run("print(1)")


def test_interpreter_must_match_the_brokers(broker):
    jail_code.configure("python", "/nonexistent/venv/bin/python", user="x")
    with pytest.raises(codejail.broker.CommandMismatch) as info:
        run("print(1)")
    msg = str(info.value)
    assert "/nonexistent/venv/bin/python" in msg and broker.python in msg and broker.socket in msg
    jail_code.configure("ruby", "/usr/bin/ruby")
    with pytest.raises(codejail.broker.CommandMismatch, match="has no 'ruby' command"):
        jail_code.jail_code("ruby", "puts 1")


def test_unknown_limit_is_a_request_error(broker):
    jail_code.set_limit("NOSUCH", 1)
    with pytest.raises(codejail.broker.BrokerRequestError) as info:
        run("print(1)")
    assert "NOSUCH" in str(info.value) and info.value.socket == broker.socket


def test_many_threads_run_at_once(broker):
    jail_code.set_limit("REALTIME", 5)
    results = [None] * 4
    errors = []

    def work(i):
        try:
            results[i] = run(f"import time; time.sleep(1); print({i})")
        except Exception as e:  # pylint: disable=broad-except
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert not errors, errors
    assert [r.stdout for r in results] == [b"0\n", b"1\n", b"2\n", b"3\n"]
    # 4 one-second runs one after the other take > 4 s; the GIL is released, so they
    # overlap (the dev broker runs 4 at once).
    assert elapsed < 3.5, elapsed


def test_connections_are_kept_and_not_shared_after_fork(broker):
    from codejail import _native

    run("print(1)")
    before = _native.connection_stats()
    run("print(2)")
    after = _native.connection_stats()
    assert after["pid"] == os.getpid()
    assert after["connects"] == before["connects"], "the kept connection was reused"
    assert after["idle"] >= 1

    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.close(read_end)
            res = run("print('from the child')")
            stats = _native.connection_stats()
            ok = (
                res.stdout == b"from the child\n"
                and stats["pid"] == os.getpid()
                and stats["connects"] == 1
            )
            os.write(write_end, f"{ok} {res.stdout!r} {stats}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        report = f.read()
    os.waitpid(child, 0)
    assert report.startswith("True"), report
    assert run("print('parent again')").stdout == b"parent again\n"
    assert _native.connection_stats()["pid"] == os.getpid()


def test_broker_restart_between_calls_is_invisible(make_broker):
    from codejail import _native

    b = make_broker()
    codejail.broker.BROKER_SOCKET = b.socket
    jail_code.configure("python", b.python)
    assert run("print('before')").stdout == b"before\n"
    reconnects = _native.connection_stats()["reconnects"]
    b.stop()
    b.start()
    assert run("print('after')").stdout == b"after\n"
    assert _native.connection_stats()["reconnects"] == reconnects + 1


def test_unreachable_broker_names_the_socket(tmp_path):
    codejail.broker.BROKER_SOCKET = str(tmp_path / "none.sock")
    with pytest.raises(codejail.broker.BrokerUnavailable) as info:
        run("print(1)")
    err = info.value
    assert not isinstance(err, OSError)
    assert err.socket == str(tmp_path / "none.sock") and str(tmp_path / "none.sock") in str(err)
    assert err.kind == "connect" and "No such file" in err.reason


def test_busy_broker_is_distinguishable(make_broker):
    b = make_broker("--max-running", "1", "--max-queue", "0")
    codejail.broker.BROKER_SOCKET = b.socket
    jail_code.configure("python", b.python)
    jail_code.set_limit("REALTIME", 5)
    first = threading.Thread(target=run, args=("import time; time.sleep(2)",))
    first.start()
    deadline = time.monotonic() + 5
    while codejail.broker.status(b.socket)["load"]["running"] < 1:
        assert time.monotonic() < deadline, "the first run never started"
        time.sleep(0.02)
    with pytest.raises(codejail.broker.BrokerBusy) as info:
        run("print(1)")
    first.join()
    assert info.value.kind == "busy" and b.socket in str(info.value)
    assert isinstance(info.value, codejail.broker.BrokerError)


def test_refusing_broker_names_the_reason(make_broker):
    from conftest import IS_ROOT, skip_or_fail

    if not IS_ROOT:
        skip_or_fail("a broker refuses only other uids than its own: needs root to run it as another uid")
    b = make_broker(allow_caller=False)
    codejail.broker.BROKER_SOCKET = b.socket
    with pytest.raises(codejail.broker.BrokerRefused) as info:
        codejail.broker.status()
    assert info.value.kind == "refused" and b.socket in str(info.value)
    assert "uid 0" in info.value.reason or "not allowed" in info.value.reason
