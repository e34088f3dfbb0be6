"""Django integration: CODE_JAIL settings through apply_django_settings and the
middleware, and a real run with the settings a Django app would have."""

import os
import subprocess
import sys
import textwrap

import pytest

import codejail.broker
from codejail import jail_code
from codejail.django_integration_utils import apply_django_settings


def test_empty_settings_change_nothing():
    apply_django_settings({})
    assert jail_code.get_effective_limits() == jail_code.DEFAULT_LIMITS
    assert codejail.broker.BROKER_SOCKET is None


def test_all_keys(tmp_path):
    jail_code.COMMANDS = {}
    apply_django_settings(
        {
            "python_bin": "/a/b/c/bin/python",
            "user": "python_executor",
            "limits": {"CPU": 5, "REALTIME": 7, "VMEM": 123456789, "PROXY": 1},
            "limit_overrides": {
                "course-v1:a+b+c": {"CPU": 50, "FSIZE": 88},
                "pathway-v1:x+y+z": {"VMEM": 987654321, "PROXY": 0},
            },
            "broker_socket": str(tmp_path / "b.sock"),
        }
    )
    assert jail_code.COMMANDS["python"] == {
        "cmdline_start": ["/a/b/c/bin/python", "-E", "-B"],
        "user": "python_executor",
    }
    base = {"CPU": 5, "REALTIME": 7, "VMEM": 123456789, "FSIZE": 0, "NPROC": 15, "PROXY": 1}
    assert jail_code.get_effective_limits() == base
    assert jail_code.get_effective_limits("course-v1:a+b+c") == dict(base, CPU=50, FSIZE=88)
    # The PROXY override is ignored, as upstream.
    assert jail_code.get_effective_limits("pathway-v1:x+y+z") == dict(base, VMEM=987654321)
    assert codejail.broker.BROKER_SOCKET == str(tmp_path / "b.sock")
    assert codejail.broker.socket_path() == str(tmp_path / "b.sock")


def test_python_bin_needs_user_as_upstream():
    with pytest.raises(KeyError):
        apply_django_settings({"python_bin": "/x/bin/python"})


def test_django_app_settings_run_code(broker, tmp_path):
    """A fresh interpreter configured the way edx-platform is: settings.CODE_JAIL, the
    middleware (which raises MiddlewareNotUsed), then safe_exec through the broker."""
    program = textwrap.dedent(
        """
        import sys
        import django
        from django.conf import settings
        settings.configure(CODE_JAIL={
            "python_bin": sys.argv[1],
            "user": "sandbox",
            "limits": {"REALTIME": 3, "CPU": 2, "VMEM": 512 * 1024 * 1024, "PROXY": 0},
            "limit_overrides": {"course-v1:edX+Demo+2024": {"REALTIME": 5}},
            "broker_socket": sys.argv[2],
        })
        django.setup()
        from codejail.django_integration import ConfigureCodeJailMiddleware, MiddlewareNotUsed
        try:
            ConfigureCodeJailMiddleware(get_response=lambda request: None)
        except MiddlewareNotUsed:
            pass
        else:
            raise SystemExit("the middleware did not take itself out")
        from codejail import jail_code
        from codejail.safe_exec import safe_exec
        assert jail_code.get_effective_limits("course-v1:edX+Demo+2024")["REALTIME"] == 5
        g = {"x": 16}
        safe_exec("x = x + 1", g, limit_overrides_context="course-v1:edX+Demo+2024", slug="django")
        print(g["x"])
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CODEJAIL_SOCKET", "CODEJAIL_TEST_VENV")}
    out = subprocess.run(
        [sys.executable, "-c", program, broker.python, broker.socket],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=60, check=False,
    )
    assert (out.returncode, out.stdout) == (0, "17\n"), out.stderr
