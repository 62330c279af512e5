"""The one exception tree of dsserve, and the exit status of every `dsserve` command.

Every error a user can cause derives from :class:`DsserveError`, so the CLI can catch that one base,
print ``ErrorType: message`` and exit with the class's :attr:`~DsserveError.exit_code`, with no
traceback. The status belongs to the class, not to the command that happened to raise it, so the same
mistake exits the same way under every command::

    DsserveError                 2  (the base; a CLI flag the parser cannot check raises UsageError)
    ├── UsageError           2  a flag's value or a combination of flags is wrong
    ├── SpecError            2  the deployment spec (YAML) is missing, unreadable or invalid
    ├── ModelBuildError      2  a tiny model or a model config cannot be built or read
    ├── DashboardPushError   2  Grafana refused the push or could not be reached (dsserve.render.dashboards)
    ├── LoadtestError        2  a load test could not be prepared (dsserve.loadgen.errors)
    │   ├── ScenarioError    2  the scenario YAML or its --set overrides are invalid
    │   └── TargetError      2  the server under test is unreachable or lacks the scenario's models
    └── StackError           1  the local stack did not come up or become healthy
        ├── StackSetupError  2  found before anything started: a port in use, an unset API-key variable
        │   └── PortInUseError
        └── PrometheusError  1  the local Prometheus could not start (dsserve.local_prometheus)
            └── PrometheusMissingError  2  its binary is not installed

Messages follow one rule: say what was wrong, where, and how to fix it.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar

__all__ = [
    "DsserveError",
    "ExitCode",
    "ModelBuildError",
    "PortInUseError",
    "SpecError",
    "StackError",
    "StackSetupError",
    "UsageError",
]


class ExitCode(IntEnum):
    """The exit status of every `dsserve` command (docs: README.md "Exit status")."""

    #: the command did what was asked; a plan fits and meets its SLO, a load test passed
    OK = 0
    #: the command ran and the answer is no: a plan does not fit or misses its SLO, a load test missed
    #: its SLO, or the deployment `dsserve up` started did not come up
    NOT_MET = 1
    #: nothing was done, because of what the command was given or found first: a spec, scenario, flag,
    #: file, variable, port or target to fix (argparse's usage errors exit 2 as well)
    BAD_INPUT = 2
    #: a load test ran but its measurement cannot be trusted (the generator was the bottleneck, a
    #: generator process was lost, or the run ended without results): nothing is concluded
    INVALID_MEASUREMENT = 3


class DsserveError(Exception):
    """Base of every error a user can cause or fix; by default bad input (exit 2)."""

    exit_code: ClassVar[ExitCode] = ExitCode.BAD_INPUT


class UsageError(DsserveError):
    """A flag's value or a combination of flags is wrong in a way argparse cannot check."""


class SpecError(DsserveError):
    """The deployment spec is invalid; the message names the YAML path, the value and the fix."""


class ModelBuildError(DsserveError):
    """A model source could not be built or resolved to weights on disk, or a model config is unreadable."""


class StackError(DsserveError):
    """The serving stack failed to start or to become healthy: the deployment does not work here."""

    exit_code: ClassVar[ExitCode] = ExitCode.NOT_MET


class StackSetupError(StackError):
    """Something the stack needs is missing before anything starts (nothing was started, so bad input)."""

    exit_code: ClassVar[ExitCode] = ExitCode.BAD_INPUT


class PortInUseError(StackSetupError):
    """A port the stack must bind is already held, usually by a stack that was not stopped cleanly."""
