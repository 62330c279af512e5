"""Errors of the load generator, in dsserve's one exception tree.

::

    DsserveError                  (dsserve.errors)
    └── LoadtestError             a load test could not be prepared or run
        ├── ScenarioError         a scenario file or override is invalid (path, value and fix)
        └── TargetError           the server under test cannot be used (unreachable, 401, model not served)

Both subclasses are "bad input": `dsserve loadtest` exits 2 on them, before any load is sent. A load test
that ran but missed its SLO is not an error; it is a verdict (see :mod:`dsserve.loadgen.gate`).
"""

from __future__ import annotations

from dsserve.errors import DsserveError

__all__ = ["LoadtestError", "ScenarioError", "TargetError"]


class LoadtestError(DsserveError):
    """A load test could not be prepared or run."""


class ScenarioError(LoadtestError):
    """A scenario is invalid; the message names the YAML path, the bad value and the fix."""


class TargetError(LoadtestError):
    """The server under test cannot be load-tested as asked (unreachable, wrong key, model not served)."""
