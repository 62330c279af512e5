"""What `dsserve loadtest` was asked: one :class:`LoadtestOptions` field per command-line flag.

Kept apart from :mod:`dsserve.loadgen.runner` (which imports the scenario model and the gate) so that the
CLI can build its parser from these defaults without paying for those imports on every `dsserve --help`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

__all__ = ["LoadtestOptions"]


@dataclass
class LoadtestOptions:
    """The flags of `dsserve loadtest`, each under its argparse ``dest`` (``--set`` is ``sets``).

    The parser (dsserve/cli/loadtest.py) takes its defaults from here, and :meth:`from_args` takes every
    field from the parsed flag of the same name, so a flag is declared once and copied nowhere; a unit
    test checks that the flags and the fields stay the same set.
    """

    scenario: str
    host: str
    rate: float | None = None
    duration: float | None = None
    processes: int = 1
    expect_workers: int = 0
    master_bind_host: str = "127.0.0.1"
    master_bind_port: int = 5557
    prometheus: str | None = None
    prometheus_lag_s: float = 15.0
    api_key_env: str | None = None
    out: str | None = None
    engine: str = "auto"
    tokenizer: str | None = None
    sharegpt: str | None = None
    model: str | None = None
    sets: list[str] = field(default_factory=list)
    quiet: bool = False
    timeout_s: float | None = None
    #: the command line as typed, recorded in results.json; not a flag
    argv: Sequence[str] = ()

    #: fields that are not flags
    NOT_FLAGS: ClassVar[frozenset[str]] = frozenset({"argv"})

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, argv: Sequence[str] = ()) -> LoadtestOptions:
        """The options from a parsed command line: each field is the parsed flag of the same name."""
        parsed = vars(args)
        values: dict[str, Any] = {f.name: parsed[f.name] for f in fields(cls) if f.name not in cls.NOT_FLAGS}
        values["sets"] = list(values["sets"])
        return cls(**values, argv=list(argv))

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (what the flag's parser default and help text say)."""
        f = next(f for f in fields(cls) if f.name == name)
        if f.default is not MISSING:
            return f.default
        if f.default_factory is not MISSING:
            return f.default_factory()
        raise KeyError(f"{name} has no default")
