"""Upstream's proxy process, which this package does not need.

Upstream forks every run from the caller, so a large app server could fail to fork; the
``PROXY`` limit (or ``$CODEJAIL_PROXY``) made a small long-lived process fork for it.
Here the caller never forks: each run is a request to the broker over its socket. So
``PROXY`` is accepted (as a limit, in ``CODE_JAIL['limits']``, or in the environment)
and changes nothing, and there is no proxy process: ``PROXY_PROCESS`` stays ``None``.
"""

#: Always ``None``: there is no proxy process (see the module docstring).
PROXY_PROCESS = None
