"""Apply Django's ``settings.CODE_JAIL`` to ``codejail.jail_code`` (as upstream's, plus
our ``broker_socket`` key). Kept apart from ``django_integration`` so that it can be
used and tested without Django."""

from . import broker, jail_code


def apply_django_settings(code_jail_settings):
    """Configure codejail from a ``CODE_JAIL`` settings dict.

    Keys (all optional):

    - ``python_bin``: the interpreter the broker's ``python`` command runs (checked
      against the broker on first use); ``user`` is then required, as upstream, and
      unused (the broker gives each run its own uid);
    - ``limits``: ``{NAME: value}`` defaults, as ``set_limit``;
    - ``limit_overrides``: ``{context: {NAME: value}}``, as ``override_limit``;
    - ``broker_socket``: the broker's socket (else ``$CODEJAIL_SOCKET``, else
      ``/run/codejail/broker.sock``).
    """
    python_bin = code_jail_settings.get("python_bin")
    if python_bin:
        jail_code.configure("python", python_bin, user=code_jail_settings["user"])
    for name, value in code_jail_settings.get("limits", {}).items():
        jail_code.set_limit(limit_name=name, value=value)
    for context, overrides in code_jail_settings.get("limit_overrides", {}).items():
        for name, value in overrides.items():
            jail_code.override_limit(
                limit_name=name, value=value, limit_overrides_context=context
            )
    socket = code_jail_settings.get("broker_socket")
    if socket:
        broker.BROKER_SOCKET = socket
