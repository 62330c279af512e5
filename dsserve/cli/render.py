"""`dsserve render WHAT`: deployable files from a profile (Serve config, Helm values) or from dsserve itself."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from dsserve.cli.base import Command, CommandGroup, display_path, write_output

__all__ = ["RenderCommand"]


class _ProfileRender(Command):
    """Render one profile with ``render(spec, source=...)`` to --output or stdout."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("profile", metavar="PROFILE", help="deployment spec YAML")
        parser.add_argument("-o", "--output", help="write here instead of stdout")

    def renderer(self) -> Callable[..., str]:
        raise NotImplementedError

    def run(self, args: argparse.Namespace) -> int:
        from dsserve.config import load_spec

        text = self.renderer()(load_spec(args.profile), source=display_path(args.profile))
        write_output(args.output, text)
        return 0


class _ServeConfig(_ProfileRender):
    name = "serve-config"
    help = "Ray Serve YAML for `serve deploy` / KubeRay serveConfigV2"

    def renderer(self) -> Callable[..., str]:
        from dsserve.render.serve_config import render_serve_config

        return render_serve_config


class _HelmValues(_ProfileRender):
    name = "helm-values"
    help = "Helm values for helm/dsserve (KubeRay RayService) from a profile"
    description = (
        "Write a values file for `helm install -f`: the profile's Ray Serve config (serveConfigV2, the text "
        "`render serve-config` writes) plus the sizing it implies (GPUs per worker pod, worker pods, "
        "autoscaling bounds, ports, HAProxy, API-key variable). The profile must set api.host: 0.0.0.0. "
        "See docs/kubernetes.md."
    )

    def renderer(self) -> Callable[..., str]:
        from dsserve.render.helm_values import render_helm_values

        return render_helm_values


class _PrometheusRules(Command):
    name = "prometheus-rules"
    help = "Prometheus recording and alerting rules (deploy/prometheus/rules)"
    description = (
        "Write dsserve-recording.yaml and dsserve-alerts.yaml (the rules `make render` puts in "
        "deploy/prometheus/rules/ and the Helm chart ships). See docs/observability.md."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-o", "--output", metavar="DIR", help="write both files into DIR instead of stdout")
        parser.add_argument(
            "--runbook-base-url",
            default="docs/runbook.md",
            metavar="URL",
            help="what each alert's runbook_url starts with (default docs/runbook.md; point it at your "
            "copy, e.g. https://git.example.com/dsserve/blob/main/docs/runbook.md)",
        )

    def run(self, args: argparse.Namespace) -> int:
        from dsserve.render.prometheus_rules import render_alerts, render_recording, write_rules

        if args.output:
            for path in write_rules(args.output, args.runbook_base_url):
                print(f"wrote {path}", file=sys.stderr)
        else:
            sys.stdout.write(render_recording() + "---\n" + render_alerts(args.runbook_base_url))
        return 0


class _Dashboards(Command):
    name = "dashboards"
    help = "Grafana dashboards (deploy/grafana/dashboards)"
    description = "Write the Overview, Engine and SLO dashboards as Grafana JSON."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-o", "--output", metavar="DIR", help="write the JSON files into DIR instead of stdout")

    def run(self, args: argparse.Namespace) -> int:
        from dsserve.render.dashboards import dashboards, render_dashboard, write_dashboards

        if args.output:
            for path in write_dashboards(args.output):
                print(f"wrote {path}", file=sys.stderr)
        else:
            sys.stdout.write("".join(render_dashboard(d) for d in dashboards().values()))
        return 0


class _SpecReference(Command):
    name = "spec-reference"
    help = "the deployment spec reference (docs/spec-reference.md) from the spec's models"
    description = (
        "Write the Markdown reference of every deployment-spec key: type, default, allowed values and "
        "description, and each section's cross-field rules (what `make render` writes to docs/spec-reference.md)."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")

    def run(self, args: argparse.Namespace) -> int:
        from dsserve.render.spec_reference import render_spec_reference

        text = render_spec_reference()
        write_output(args.output, text)
        return 0


class RenderCommand(CommandGroup):
    name = "render"
    help = "render deployable files from a profile"
    metavar = "WHAT"
    actions = (_ServeConfig(), _HelmValues(), _PrometheusRules(), _Dashboards(), _SpecReference())
