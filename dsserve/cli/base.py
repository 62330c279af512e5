"""What every `dsserve` command is made of: a :class:`Command` with its flags next to its handler.

Modelled on vLLM's ``CLISubcommand`` (vllm/entrypoints/cli/types.py): a command names itself, adds its
own arguments to the parser it is given, and runs from the parsed namespace, returning its exit status.
Handlers import what they use when they run, so `dsserve --help` and `dsserve validate` stay fast (no
Ray, vLLM, torch or Locust at import).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import ClassVar

from dsserve.errors import UsageError

__all__ = ["Command", "CommandGroup", "REPO_ROOT", "add_command", "display_path", "say", "say_about", "write_output"]

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


class Command:
    """One command (or one action of a command group): ``dsserve NAME [flags]``."""

    name: ClassVar[str]
    #: one line in the parent's command list
    help: ClassVar[str]
    #: the paragraph `dsserve NAME --help` prints (default: none)
    description: ClassVar[str | None] = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this command's positional arguments and flags; a command without any keeps this."""

    def run(self, args: argparse.Namespace) -> int:
        """Do the work; return the exit status (dsserve.errors.ExitCode), or raise a DsserveError."""
        raise NotImplementedError


class CommandGroup(Command):
    """A command made of actions (``dsserve render WHAT``): each action is a :class:`Command` of its own."""

    #: how the action is named in usage lines (WHAT, ACTION)
    metavar: ClassVar[str]
    actions: ClassVar[tuple[Command, ...]]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="what", metavar=self.metavar, required=True)
        for action in self.actions:
            add_command(sub, action)


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], command: Command) -> None:
    """Register ``command`` under ``subparsers``; the parsed namespace's ``run`` is its handler."""
    parser = subparsers.add_parser(command.name, help=command.help, description=command.description)
    command.add_arguments(parser)
    if not isinstance(command, CommandGroup):  # a group's actions set their own
        parser.set_defaults(run=command.run)


def say(msg: str) -> None:
    """A progress line on stdout, prefixed so it stands apart from Ray's and vLLM's."""
    print(f"dsserve: {msg}", flush=True)


def say_about(name: str, msg: str) -> None:
    say(f"{name}: {msg}")


def display_path(path: str) -> str:
    """``path`` relative to the checkout when inside it (what generated files record as their source)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def write_output(path: str | None, text: str) -> None:
    """Write ``-o PATH``, or stdout without one; a path that cannot be written is bad input, not a traceback."""
    if path is None:
        sys.stdout.write(text)
        return
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise UsageError(f"-o {path}: cannot write it ({exc.strerror or exc}); pick a writable path") from None
    print(f"wrote {path}", file=sys.stderr)
