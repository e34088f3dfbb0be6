"""The rest of the public names: codejail.broker, subproc, util, proxy, the package."""

import logging
import os

import pytest

import codejail
import codejail.broker as broker_mod
from codejail import _native, jail_code, proxy, subproc, util


def test_package_metadata():
    assert codejail.UPSTREAM_API_VERSION == "4.1.0"
    assert isinstance(codejail.__version__, str)
    assert _native.DEFAULT_SOCKET == "/run/codejail/broker.sock"
    assert "json_safe" in _native.SAFE_EXEC_WRAPPER


def test_socket_resolution_order(monkeypatch, tmp_path):
    monkeypatch.delenv("CODEJAIL_SOCKET", raising=False)
    assert broker_mod.socket_path() == "/run/codejail/broker.sock"
    monkeypatch.setenv("CODEJAIL_SOCKET", "/env.sock")
    assert broker_mod.socket_path() == "/env.sock"
    broker_mod.BROKER_SOCKET = tmp_path / "set.sock"
    assert broker_mod.socket_path() == str(tmp_path / "set.sock")


def test_status_reports_the_commands(broker):
    st = broker_mod.status()
    assert st["mode"] == "dev"
    assert set(st) >= {"broker_version", "protocol_version", "layers", "load", "commands"}
    assert st["protocol_version"] == _native.PROTOCOL_VERSION
    python = st["commands"]["python"]
    assert os.path.realpath(python["bin"]) == os.path.realpath(broker.python)
    assert python["allow_exec"] is False


def test_status_shows_allow_exec_from_the_config(make_broker):
    b = make_broker("--allow-exec")
    assert broker_mod.status(b.socket)["commands"]["python"]["allow_exec"] is True


def test_check_command_caches_success_only(broker, monkeypatch):
    calls = []
    real_status = broker_mod.status

    def counting_status(socket=None):
        calls.append(socket)
        return real_status(socket)

    monkeypatch.setattr(broker_mod, "status", counting_status)
    monkeypatch.setattr(broker_mod, "_checked", set())
    broker_mod.check_command("python", broker.python, broker.socket)
    broker_mod.check_command("python", broker.python, broker.socket)
    assert len(calls) == 1
    for _ in range(2):
        with pytest.raises(broker_mod.CommandMismatch):
            broker_mod.check_command("python", "/usr/bin/nothing-here", broker.socket)
    assert len(calls) == 3


def test_exception_hierarchy():
    for cls in (
        broker_mod.BrokerUnavailable,
        broker_mod.BrokerBusy,
        broker_mod.BrokerRefused,
        broker_mod.BrokerRequestError,
        broker_mod.CommandMismatch,
    ):
        assert issubclass(cls, broker_mod.BrokerError)
        assert not issubclass(cls, OSError)
        e = cls("/s.sock", "why", "kind")
        assert (e.socket, e.reason, e.kind) == ("/s.sock", "why", "kind")
        assert str(e) == "codejail broker at /s.sock: why"


def test_close_connections(broker):
    jail_code.jail_code("python", "print(1)")
    assert _native.connection_stats()["idle"] >= 1
    _native.close_connections()
    assert _native.connection_stats()["idle"] == 0
    assert jail_code.jail_code("python", "print(2)").stdout == b"2\n"


def test_subproc_log_is_the_codejail_logger():
    assert subproc.log is logging.getLogger("codejail")


def test_util_helpers(tmp_path):
    start = os.getcwd()
    with util.temp_directory() as d:
        assert os.path.basename(d).startswith("codejail-") and os.path.isdir(d)
        with util.change_directory(d) as now:
            assert now == d and os.path.samefile(os.getcwd(), d)
        assert os.getcwd() == start
    assert not os.path.exists(d)


@pytest.mark.parametrize("proxy_env", ["0", "1"])
def test_proxy_is_accepted_and_spawns_nothing(broker, monkeypatch, proxy_env):
    monkeypatch.setenv("CODEJAIL_PROXY", proxy_env)
    jail_code.set_limit("PROXY", int(proxy_env))
    assert jail_code.jail_code("python", "print('ok')").stdout == b"ok\n"
    assert proxy.PROXY_PROCESS is None
