"""codejail: Open edX CodeJail's Python API, with every run going through the codejail
broker (a daemon that builds a fresh jail per run) instead of sudo and AppArmor.

The modules and names are upstream's (openedx/codejail 4.1): ``codejail.jail_code``,
``codejail.safe_exec``, ``codejail.subproc`` (its ``log``), ``codejail.util``,
``codejail.proxy``, ``codejail.django_integration`` and
``codejail.django_integration_utils``. Ours besides: ``codejail.broker`` (where the
broker is, its status, and the exceptions of talking to it).
"""

__version__ = "0.1.0"

#: The upstream release whose API this package provides.
UPSTREAM_API_VERSION = "4.1.0"
