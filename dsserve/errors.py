"""The one exception tree of dsserve.

Every error a user can cause derives from :class:`DsserveError`, so the CLI can catch that one base,
print ``ErrorType: message`` and exit non-zero with no traceback::

    DsserveError
    ├── SpecError            the deployment spec (YAML) is missing, unreadable or invalid
    ├── ModelBuildError      a tiny model could not be built or a model source could not be resolved
    ├── DashboardPushError   Grafana refused or could not be reached (dsserve.render.dashboards)
    ├── LoadtestError        a load test could not run (dsserve.loadgen.errors)
    │   ├── ScenarioError    the scenario YAML or its --set overrides are invalid
    │   └── TargetError      the server under test is unreachable or lacks the scenario's models
    └── StackError           the local stack could not start, become healthy or stop
        ├── PortInUseError   a listener already holds a port the stack needs
        └── PrometheusError  the local Prometheus could not start (dsserve.local_prometheus)

Messages follow one rule: say what was wrong, where, and how to fix it.
"""

from __future__ import annotations

__all__ = ["DsserveError", "SpecError", "ModelBuildError", "StackError", "PortInUseError"]


class DsserveError(Exception):
    """Base of every error a user can cause or fix."""


class SpecError(DsserveError):
    """The deployment spec is invalid; the message names the YAML path, the value and the fix."""


class ModelBuildError(DsserveError):
    """A model source could not be built or resolved to weights on disk."""


class StackError(DsserveError):
    """The serving stack failed to start, to become healthy, or to stop."""


class PortInUseError(StackError):
    """A port the stack must bind is already held, usually by a stack that was not stopped cleanly."""
