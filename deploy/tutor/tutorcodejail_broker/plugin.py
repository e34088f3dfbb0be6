"""The Tutor plugin `codejail-broker`.

It renders, from the templates next to this file:
- the broker's and the front's configs (broker.toml, http.toml) and the broker's
  seccomp profile, under env/plugins/codejail-broker/apps/;
- for `tutor local`, two compose services: `codejail-broker` (the broker, no network)
  and `codejail-http` (the front the LMS calls), sharing the broker's socket;
- for `tutor k8s`, one Deployment whose pods run both as two containers (as
  deploy/kubernetes/ does), a Service `codejail-http`, a NetworkPolicy and the
  ConfigMap of the two configs;
- the LMS's and CMS's settings that make edx-platform send its safe_exec runs there.

It refuses (at every full config load: `tutor config save`, `tutor local ...`) to run
next to the `codejail` plugin (tutor-contrib-codejail), which deploys the older
codejail-service on the same edx-platform settings, and refuses a broker config the
broker itself would refuse at start (unknown limit names, too few run uids), so the
operator hears of it before anything is deployed.
"""

from __future__ import annotations

import os
import re
import typing as t
from importlib import resources as importlib_resources

from tutor import exceptions, hooks

from .__about__ import __version__

NAME = "codejail-broker"

# The limit names the broker knows (docs/contracts.md §4); anything else in
# CODEJAIL_BROKER_LIMITS or CODEJAIL_BROKER_LIMIT_CEILINGS would stop it at start.
LIMIT_NAMES = ("CPU", "REALTIME", "VMEM", "FSIZE", "NPROC", "OUTPUT", "TMP", "MEMORY", "NOFILE")

# The plugin that deploys codejail-service (PyPI: tutor-contrib-codejail).
CONFLICTING_PLUGIN = "codejail"

# A dotted Python module name (CODEJAIL_BROKER_POOL_PREIMPORT).
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

hooks.Filters.CONFIG_DEFAULTS.add_items(
    [
        ("CODEJAIL_BROKER_VERSION", __version__),
        # The project's image (deploy/container/): both the broker and the front run it.
        ("CODEJAIL_BROKER_DOCKER_IMAGE", "codejail:{{ CODEJAIL_BROKER_VERSION }}"),
        # edx-platform's own defaults (openedx/envs/common.py): how long the LMS/CMS
        # wait to connect to the front, and for its answer, in seconds.
        ("CODEJAIL_BROKER_CONNECT_TIMEOUT", 0.5),
        ("CODEJAIL_BROKER_READ_TIMEOUT", 3.5),
        # broker.toml [limits.defaults]: a typical Open edX deployment's (matplotlib
        # needs VMEM >= 300 MiB of address space).
        (
            "CODEJAIL_BROKER_LIMITS",
            {"CPU": 3, "REALTIME": 3, "VMEM": 536870912, "FSIZE": 10485760, "NPROC": 15},
        ),
        # broker.toml [limits.ceilings]: the most a request may ask for.
        ("CODEJAIL_BROKER_LIMIT_CEILINGS", {"CPU": 10, "REALTIME": 30, "NPROC": 64}),
        # Runs at once per broker, and requests waiting for a slot.
        ("CODEJAIL_BROKER_MAX_RUNNING", 4),
        ("CODEJAIL_BROKER_MAX_QUEUE", 8),
        # Warm jails kept ready for python (0: none) and what they import while waiting.
        ("CODEJAIL_BROKER_POOL_SIZE", 2),
        ("CODEJAIL_BROKER_POOL_PREIMPORT", ["json"]),
        # The runs' outside uids/gids: one per running run and per warm jail.
        ("CODEJAIL_BROKER_RUN_IDS_FIRST", 60000),
        ("CODEJAIL_BROKER_RUN_IDS_COUNT", 64),
        # tutor k8s: pods (each one broker and one front).
        ("CODEJAIL_BROKER_REPLICAS", 1),
        # tutor k8s: the broker's seccomp profile, installed on every node under
        # /var/lib/kubelet/seccomp/ (a copy is rendered in
        # env/plugins/codejail-broker/apps/seccomp/codejail.json).
        ("CODEJAIL_BROKER_K8S_SECCOMP_PROFILE", "profiles/codejail.json"),
    ]
)

hooks.Filters.ENV_TEMPLATE_ROOTS.add_item(str(importlib_resources.files("tutorcodejail_broker") / "templates"))
hooks.Filters.ENV_TEMPLATE_TARGETS.add_items(
    [
        ("codejail-broker/apps", "plugins"),
        ("codejail-broker/k8s", "plugins"),
    ]
)

# Each file in patches/ is the patch of its name.
_patches = importlib_resources.files("tutorcodejail_broker") / "patches"
for _path in sorted(_patches.iterdir(), key=lambda p: p.name):
    if _path.is_file() and not _path.name.startswith("."):
        hooks.Filters.ENV_PATCHES.add_item((os.path.basename(_path.name), _path.read_text(encoding="utf-8")))


def _check_limits(key: str, value: t.Any) -> None:
    if not isinstance(value, dict):
        raise exceptions.TutorError(f"{key} must be a mapping of limit names to integers, not {value!r}")
    for name, amount in value.items():
        if name not in LIMIT_NAMES:
            raise exceptions.TutorError(
                f"{key}: unknown limit {name!r} (the broker knows {', '.join(LIMIT_NAMES)})"
            )
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise exceptions.TutorError(f"{key}: {name} must be a non-negative integer, not {amount!r}")


def _int(config: dict[str, t.Any], key: str, minimum: int) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise exceptions.TutorError(f"{key} must be an integer >= {minimum}, not {value!r}")
    return value


@hooks.Actions.CONFIG_LOADED.add()
def _check_config(config: dict[str, t.Any]) -> None:
    if NAME not in config.get("PLUGINS", []):
        return
    if CONFLICTING_PLUGIN in config.get("PLUGINS", []):
        raise exceptions.TutorError(
            f"the '{NAME}' and '{CONFLICTING_PLUGIN}' plugins cannot be enabled together: both deploy "
            "a CodeJail service and set the LMS's and CMS's CODE_JAIL_REST_SERVICE_HOST. "
            f"Disable one: `tutor plugins disable {CONFLICTING_PLUGIN}` (tutor-contrib-codejail) "
            f"or `tutor plugins disable {NAME}`."
        )
    _check_limits("CODEJAIL_BROKER_LIMITS", config["CODEJAIL_BROKER_LIMITS"])
    _check_limits("CODEJAIL_BROKER_LIMIT_CEILINGS", config["CODEJAIL_BROKER_LIMIT_CEILINGS"])
    running = _int(config, "CODEJAIL_BROKER_MAX_RUNNING", 1)
    _int(config, "CODEJAIL_BROKER_MAX_QUEUE", 0)
    pool = _int(config, "CODEJAIL_BROKER_POOL_SIZE", 0)
    _int(config, "CODEJAIL_BROKER_REPLICAS", 0)
    first = _int(config, "CODEJAIL_BROKER_RUN_IDS_FIRST", 1)
    count = _int(config, "CODEJAIL_BROKER_RUN_IDS_COUNT", 1)
    # The broker checks the same at start: each running run and each warm jail holds
    # one of these uids.
    if count < running + pool:
        raise exceptions.TutorError(
            f"CODEJAIL_BROKER_RUN_IDS_COUNT ({count}) must cover CODEJAIL_BROKER_MAX_RUNNING ({running}) "
            f"plus CODEJAIL_BROKER_POOL_SIZE ({pool})"
        )
    # The Kubernetes pod's user namespace maps ids 0-65535; 65534 is nobody, 10001 the front.
    if first <= 10001 < first + count or first + count > 65534:
        raise exceptions.TutorError(
            f"the run ids CODEJAIL_BROKER_RUN_IDS_FIRST.. ({first}..{first + count - 1}) must stay below "
            "65534 and away from the front's uid 10001"
        )
    preimport = config["CODEJAIL_BROKER_POOL_PREIMPORT"]
    if not isinstance(preimport, list) or not all(isinstance(m, str) and _MODULE.fullmatch(m) for m in preimport):
        raise exceptions.TutorError(f"CODEJAIL_BROKER_POOL_PREIMPORT must be a list of module names, not {preimport!r}")
