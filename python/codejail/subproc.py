"""The ``codejail`` logger, as upstream's ``codejail.subproc.log``.

Upstream spawns each run here (``sudo`` + rlimits + a killer thread). Here the broker
runs it, so only the logger remains. ``codejail.jail_code`` logs through it, with
upstream's records:

- INFO ``Executed jailed code %s in %s, with PID %s`` (slug, the run's directory as the
  program saw it, a pid of the run on the broker's host), for runs with a slug;
- WARNING ``Killing process %r, ...`` when the REALTIME limit ended a run (the broker
  killed it).
"""

import logging

log = logging.getLogger("codejail")
