"""Proof under faults (issue 6): drivers that run syncd as real processes and break things on
purpose, the invariants they check, and the summary ``make soak`` prints.

- ``crash``: SIGKILL `syncd run` at chosen moments (during a write transaction, between pages,
  after a webhook's 200, during a job poll, at random), restart, check after every kill and at the end.
- ``daemon_chaos``: `syncd run` behind the fault-injecting proxy; it must stay up and converge.
- ``readers``: read-only reader processes querying the mirror and following the log during a large
  sync: no "database is locked", no torn page, latency percentiles.
- ``invariants``: the checks, counted (a summary reports how many ran and how many failed).
- ``report``: one row per scenario run, collected in ``$SYNCD_SOAK_REPORT`` and printed as a table.

The CI suite runs short versions of each; ``make soak`` runs the long ones (``-m soak``). Every run
prints its seed; rerun with ``SYNCD_SOAK_SEED=<seed>`` to replay the same plan (kill moments, loads,
jobs, faults; the interleaving with the daemon's own timing still varies).
"""
