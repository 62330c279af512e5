"""`dsserve dashboards push`: create or update dsserve's Grafana dashboards in a Grafana."""

from __future__ import annotations

import argparse
import os

from dsserve.cli.base import Command, CommandGroup, say
from dsserve.errors import UsageError

__all__ = ["DashboardsCommand"]


class _Push(Command):
    name = "push"
    help = "create or update the dashboards in a Grafana (idempotent)"
    description = (
        "Upload the Overview, Engine and SLO dashboards through Grafana's HTTP API (grafana-client), into "
        "--folder (created when missing), overwriting by uid."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--grafana-url", required=True, metavar="URL", help="e.g. http://127.0.0.1:3000")
        parser.add_argument(
            "--token-env",
            required=True,
            metavar="VAR",
            help="environment variable holding a Grafana service-account token (Editor role)",
        )
        parser.add_argument(
            "--folder", default="dsserve", help="Grafana folder title (default dsserve; '' for General)"
        )

    def run(self, args: argparse.Namespace) -> int:
        from dsserve.render.dashboards import push_dashboards

        token = os.environ.get(args.token_env, "").strip()
        if not token:
            raise UsageError(
                f"--token-env {args.token_env}: ${args.token_env} is unset or empty; export a Grafana "
                f"service-account token (Editor role) in it, e.g. export {args.token_env}=glsa_..."
            )
        push_dashboards(args.grafana_url, token, args.folder or None, progress=say)
        return 0


class DashboardsCommand(CommandGroup):
    name = "dashboards"
    help = "work with dsserve's Grafana dashboards"
    metavar = "ACTION"
    actions = (_Push(),)
