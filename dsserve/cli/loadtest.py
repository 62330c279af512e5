"""`dsserve loadtest SCENARIO --host URL`: an open-loop Locust load test gated by the scenario's SLO."""

from __future__ import annotations

import argparse
import sys

from dsserve.cli.base import Command, say
from dsserve.loadgen.options import LoadtestOptions

__all__ = ["LoadtestCommand"]

_default = LoadtestOptions.default


class LoadtestCommand(Command):
    """Each flag's ``dest`` is a :class:`LoadtestOptions` field, and its default is that field's."""

    name = "loadtest"
    help = "open-loop Locust load test of an OpenAI server, gated by the scenario's SLO"
    description = (
        "Run a load-test scenario (loadtest/scenarios/NAME.yaml or a path) against an OpenAI server with "
        "Locust, headless: open-loop arrivals at the target rate, TTFT/ITL/TPOT/E2E per request, then the "
        "SLO gate. Writes results.json, report.html, requests.csv and Locust's CSVs to --out. Exit status: "
        "0 pass, 1 fail, 2 bad input (nothing sent), 3 invalid (the load generator was the bottleneck, or "
        "the run did not complete). See docs/loadtesting.md."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        p = parser
        p.add_argument(
            "scenario",
            metavar="SCENARIO",
            help="shipped scenario name (smoke, slo-1200qps, chat-mixed, "
            "long-context, burst, soak, lora-mix, agent-tools) or a YAML path",
        )
        p.add_argument("--host", required=True, help="base URL of the server, e.g. http://127.0.0.1:8000")
        p.add_argument("--rate", type=float, help="override load.rate_rps (all generator processes together)")
        p.add_argument("--duration", type=float, help="override load.duration_s, the measured seconds")
        p.add_argument(
            "--processes",
            type=int,
            default=_default("processes"),
            help="Locust worker processes on this machine (the rate is split between them); "
            f"default {_default('processes')}",
        )
        p.add_argument(
            "--expect-workers",
            type=int,
            default=_default("expect_workers"),
            metavar="N",
            help="be a Locust master and wait for N `locust --worker` processes (any machine)",
        )
        p.add_argument(
            "--master-bind-host",
            default=_default("master_bind_host"),
            help=f"with --expect-workers (default {_default('master_bind_host')})",
        )
        p.add_argument(
            "--master-bind-port",
            type=int,
            default=_default("master_bind_port"),
            help=f"with --expect-workers (default {_default('master_bind_port')})",
        )
        p.add_argument("--prometheus", metavar="URL", help="also fetch the server-side TTFT/E2E percentiles")
        p.add_argument(
            "--prometheus-lag-s",
            type=float,
            default=_default("prometheus_lag_s"),
            metavar="S",
            help="read them S seconds after the window, once exported and scraped "
            f"(default {_default('prometheus_lag_s'):g})",
        )
        p.add_argument("--api-key-env", metavar="VAR", help="send the key in $VAR as Authorization: Bearer")
        p.add_argument("--out", metavar="DIR", help="results directory (default loadtest-results/NAME-TIME)")
        p.add_argument(
            "--engine",
            default=_default("engine"),
            choices=["auto", "real", "simulated"],
            help="label of the engine under test; auto asks the server (default)",
        )
        p.add_argument(
            "--tokenizer",
            metavar="PATH",
            help="tokenizer.json, a model directory or tiny:<name>; "
            "without it prompt lengths are estimated (and labelled so)",
        )
        p.add_argument("--sharegpt", metavar="FILE", help="take prompts from a ShareGPT JSON file")
        p.add_argument("--model", help="base model id (default: the scenario's, else the first /v1/models lists)")
        p.add_argument(
            "--set",
            dest="sets",
            action="append",
            default=_default("sets"),
            metavar="PATH=VALUE",
            help="override any scenario field, e.g. --set workload.context_window=2048 (repeatable)",
        )
        p.add_argument("--timeout-s", type=float, help="stop Locust if it runs longer than this")
        p.add_argument("-q", "--quiet", action="store_true", help="only the verdict lines (Locust's log is in --out)")

    def run(self, args: argparse.Namespace) -> int:
        """The gate's verdict: 0 pass, 1 fail, 3 invalid; bad input raises a LoadtestError (exit 2)."""
        from dsserve.loadgen.runner import run_loadtest

        return run_loadtest(LoadtestOptions.from_args(args, argv=sys.argv), say=say)
