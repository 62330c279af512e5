"""`dsserve validate PROFILE...`: check deployment specs and explain every problem."""

from __future__ import annotations

import argparse

from dsserve.cli.base import Command

__all__ = ["ValidateCommand"]


class ValidateCommand(Command):
    name = "validate"
    help = "check deployment spec files and explain every problem"
    description = (
        "Validate one or more deployment specs: one line per problem, naming the YAML path, the bad value "
        "and the fix. Exit status 0 when every spec is valid, 2 (bad input) at the first that is not."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("profiles", nargs="+", metavar="PROFILE", help="deployment spec YAML(s)")

    def run(self, args: argparse.Namespace) -> int:
        from dsserve.config import load_spec

        for path in args.profiles:
            spec = load_spec(path)
            eng = spec.engine
            layout = f"TP{eng.tensor_parallel_size} PP{eng.pipeline_parallel_size} DP{eng.data_parallel_size}"
            if eng.enable_expert_parallel:
                layout += " +EP"
            print(
                f"{path}: ok: {spec.name}: {spec.model.id} ({spec.model.architecture}) on "
                f"{spec.hardware.accelerator}, {layout}, {spec.serving.replicas} replica(s)"
                + (" [SIMULATED engine]" if eng.backend == "simulated" else "")
            )
        return 0
