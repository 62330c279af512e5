"""`dsserve validate PROFILE...`: check deployment specs and explain every problem."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from dsserve.cli.base import Command

if TYPE_CHECKING:
    from dsserve.config import DeploymentSpec

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
            if spec.disaggregation is not None:
                dis = spec.disaggregation
                shape = (
                    f"prefill {_layout(spec.pool('prefill'))} x {dis.prefill.replicas}, decode "
                    f"{_layout(spec.pool('decode'))} x {dis.decode.replicas}, KV over {dis.connector}"
                )
            else:
                shape = f"{_layout(spec)}, {spec.serving.replicas} replica(s)"
            print(
                f"{path}: ok: {spec.name}: {spec.model.id} ({spec.model.architecture}) on "
                f"{spec.hardware.accelerator}, {shape}"
                + (" [SIMULATED engine]" if spec.engine.backend == "simulated" else "")
            )
        return 0


def _layout(spec: DeploymentSpec) -> str:
    eng = spec.engine
    layout = f"TP{eng.tensor_parallel_size} PP{eng.pipeline_parallel_size} DP{eng.data_parallel_size}"
    return layout + (" +EP" if eng.enable_expert_parallel else "")
