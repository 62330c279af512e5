"""The `dsserve` command: a thin layer over the library, one module per command.

Each command (dsserve/cli/<name>.py) is a :class:`~dsserve.cli.base.Command` holding its flags next to its
handler. :func:`main` builds the parser from them, runs the chosen handler, and is the one place that
turns an error into an exit status: a :class:`~dsserve.errors.DsserveError` becomes one line on stderr
(``ErrorType: message``, no traceback) and its class's ``exit_code``, the same under every command.
Only :func:`run` calls ``sys.exit``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dsserve import __version__
from dsserve.cli.base import Command, add_command
from dsserve.cli.dashboards import DashboardsCommand
from dsserve.cli.loadtest import LoadtestCommand
from dsserve.cli.plan import PlanCommand
from dsserve.cli.render import RenderCommand
from dsserve.cli.tiny_model import TinyModelCommand
from dsserve.cli.up import UpCommand, default_profile
from dsserve.cli.validate import ValidateCommand
from dsserve.errors import DsserveError, ExitCode

__all__ = ["COMMANDS", "build_parser", "default_profile", "main", "run"]

#: every `dsserve` command, in the order `dsserve --help` lists them
COMMANDS: tuple[Command, ...] = (
    UpCommand(),
    ValidateCommand(),
    TinyModelCommand(),
    RenderCommand(),
    DashboardsCommand(),
    PlanCommand(),
    LoadtestCommand(),
)

EPILOG = f"""\
exit status, the same for every command:
  {ExitCode.OK:d}  ok (a plan fits and meets its SLO, a load test passed)
  {ExitCode.NOT_MET:d}  does not meet: a plan does not fit or misses its SLO, a load test missed its SLO,
     or the deployment `up` started did not come up
  {ExitCode.BAD_INPUT:d}  bad input, nothing was done: an invalid spec, scenario or flag, a missing file,
     variable or binary, a port in use, an unreachable server or Grafana
  {ExitCode.INVALID_MEASUREMENT:d}  invalid measurement: a load test ran, but its figures cannot be trusted

Start with `dsserve up` (tiny model, CPU, no network). Docs: README.md."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsserve",
        description="Serve DeepSeek-family models with vLLM on Ray Serve, driven by one YAML deployment spec.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dsserve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        add_command(sub, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (argparse exits 2 itself on a usage error)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except DsserveError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return int(exc.exit_code)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
