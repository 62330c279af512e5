"""The `dsserve` command: a thin layer over the library.

It parses arguments, calls library functions, and turns a :class:`DsserveError` into one line on stderr
and exit status 1 (2 for usage errors). Only this module calls ``sys.exit``.
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dsserve import __version__
from dsserve.errors import DsserveError, ModelBuildError

__all__ = ["main", "default_profile"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


def default_profile() -> Path:
    """deploy/profiles/local-cpu.yaml: beside the working directory if there, else beside the package."""
    rel = Path("deploy/profiles/local-cpu.yaml")
    return rel if rel.is_file() else _REPO_ROOT / rel


def _say(msg: str) -> None:
    print(f"dsserve: {msg}", flush=True)


def _say_about(name: str, msg: str) -> None:
    _say(f"{name}: {msg}")


def _cmd_validate(args: argparse.Namespace) -> int:
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


def _cmd_tiny_model(args: argparse.Namespace) -> int:
    from dsserve.tiny_lora import TINY_LORAS, build_tiny_lora
    from dsserve.tiny_models import TINY_MODELS, build_tiny_model

    names = sorted(TINY_MODELS) + sorted(TINY_LORAS) if args.all or not args.names else args.names
    root = Path(args.cache_dir) if args.cache_dir else None
    for name in names:
        t0 = time.monotonic()
        if name not in TINY_MODELS and name not in TINY_LORAS:
            raise ModelBuildError(
                f"unknown tiny model or adapter {name!r}; choose from: "
                f"{', '.join(sorted(TINY_MODELS) + sorted(TINY_LORAS))}"
            )
        build = build_tiny_lora if name in TINY_LORAS else build_tiny_model
        path, built = build(name, root, progress=functools.partial(_say_about, name))
        state = f"built in {time.monotonic() - t0:.1f}s" if built else "already built, nothing to do"
        print(f"{name}: {path} ({state})")
    return 0


def _render_profile(args: argparse.Namespace, render: Callable[..., str]) -> int:
    """Render one profile with ``render(spec, source=...)`` to --output or stdout."""
    from dsserve.config import load_spec

    text = render(load_spec(args.profile), source=_display_path(args.profile))
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_render_serve_config(args: argparse.Namespace) -> int:
    from dsserve.render.serve_config import render_serve_config

    return _render_profile(args, render_serve_config)


def _cmd_render_helm_values(args: argparse.Namespace) -> int:
    from dsserve.render.helm_values import render_helm_values

    return _render_profile(args, render_helm_values)


def _cmd_render_prometheus_rules(args: argparse.Namespace) -> int:
    from dsserve.render.prometheus_rules import render_alerts, render_recording, write_rules

    if args.output:
        for path in write_rules(args.output, args.runbook_base_url):
            print(f"wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(render_recording() + "---\n" + render_alerts(args.runbook_base_url))
    return 0


def _cmd_render_dashboards(args: argparse.Namespace) -> int:
    from dsserve.render.dashboards import dashboards, render_dashboard, write_dashboards

    if args.output:
        for path in write_dashboards(args.output):
            print(f"wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write("".join(render_dashboard(d) for d in dashboards().values()))
    return 0


def _cmd_dashboards_push(args: argparse.Namespace) -> int:
    import os

    from dsserve.render.dashboards import push_dashboards

    token = os.environ.get(args.token_env, "").strip()
    if not token:
        raise DsserveError(
            f"--token-env {args.token_env}: ${args.token_env} is unset or empty; export a Grafana "
            f"service-account token (Editor role) in it, e.g. export {args.token_env}=glsa_..."
        )
    push_dashboards(args.grafana_url, token, args.folder or None, progress=_say)
    return 0


def _display_path(path: str) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(_REPO_ROOT))
    except ValueError:
        return str(path)


def _sample_request(base_url: str, model: str, api_key: str | None, *, simulated: bool = False) -> None:
    import httpx

    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello in five words."}],
        "max_tokens": 16,
        "temperature": 0,
    }
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    t0 = time.monotonic()
    r = httpx.post(f"{base_url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    ms = (time.monotonic() - t0) * 1000
    if r.status_code != 200:
        _say(f"sample request failed: HTTP {r.status_code}: {r.text[:300]}")
        return
    data = r.json()
    answer = data["choices"][0]["message"]["content"]
    usage = data.get("usage", {})
    _say(
        f"sample chat request: HTTP 200 in {ms:.0f} ms, {usage.get('prompt_tokens')} prompt + "
        f"{usage.get('completion_tokens')} completion tokens"
    )
    why = "simulated engine: placeholder words" if simulated else "random weights, so random text"
    print(f"  answer ({why}): {answer!r}", flush=True)


def _cmd_up(args: argparse.Namespace) -> int:
    from dsserve.config import load_spec
    from dsserve.sim.serving import engine_label, is_simulated
    from dsserve.stack import LocalStack, client_api_key

    profile = args.profile or str(default_profile())
    overrides = list(args.set)
    if args.host:
        overrides.append(f"api.host={args.host}")
    if args.port:
        overrides.append(f"api.port={args.port}")
    spec = load_spec(profile, overrides)
    api_key = client_api_key(spec)
    prometheus = None
    if args.prometheus:
        from dsserve.local_prometheus import LocalPrometheus

        prometheus = LocalPrometheus.for_spec(spec)  # fails now, not after a minute, if it is missing

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C while stopping: let the default handler act
            signal.signal(signum, signal.SIG_DFL)
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    stack = LocalStack(spec, progress=_say, verbose=args.verbose, prometheus=prometheus)
    _say(f"profile {profile}: {spec.description or spec.name}")
    try:
        stack.start(timeout_s=args.timeout_s)
        url = stack.base_url
        auth = f" \\\n    -H 'Authorization: Bearer ${spec.api.api_keys_env}'" if spec.api.api_keys_env else ""
        if spec.api.api_keys_file and not auth:  # never print a key: say where one is
            auth = f" \\\n    -H 'Authorization: Bearer <a key from {spec.api.api_keys_file}>'"
        sample = {"model": spec.model.id, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16}
        print(
            f"\nServing {spec.model.id} ({engine_label(spec)}) at {url}/v1\n"
            f"  curl {url}/v1/chat/completions -H 'Content-Type: application/json'{auth} \\\n"
            f"    -d '{json.dumps(sample)}'\n",
            flush=True,
        )
        if args.sample:
            _sample_request(url, spec.model.id, api_key, simulated=is_simulated(spec))
        if prometheus is not None:
            _say(f"Prometheus: {prometheus.url} (stops with the stack)")
        _say("READY - serving until Ctrl-C")
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        _say("interrupted")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        _say("stopped")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    """Plan profiles; 0 when every one fits and meets its SLO, 1 when one does not, 2 on bad input.

    Bad input (an invalid profile or flag) is reported here rather than in :func:`main` because `plan`
    distinguishes "your input is wrong" (2) from "your deployment does not work" (1).
    """
    from dsserve.planner.plan import OVERRIDE_PATHS

    try:
        if args.published:
            from dsserve.planner.published import published_table

            sys.stdout.write(published_table())
            return 0
        if not args.profiles:
            raise DsserveError(
                "dsserve plan: no PROFILE given; pass one or more deployment specs, e.g. "
                "deploy/profiles/h800x8-deepseek-llm-67b-tp8.yaml (or --published)"
            )
        overrides = {k: getattr(args, k) for k in OVERRIDE_PATHS}
        if args.sweep:
            from dsserve.planner.sweep import sweep_table

            sys.stdout.write(sweep_table(args.profiles, target_qps=args.target_qps, overrides=overrides))
            return 0
        from dsserve.planner import plan_profile, plan_to_dict, render_text

        mix_args = {
            "qps": args.qps,
            "input_tokens": args.input_tokens,
            "output_tokens": args.output_tokens,
            "metric": args.metric,
            "percentile": args.percentile,
            "threshold_ms": args.threshold_ms,
        }
        plans = [
            plan_profile(
                p, overrides=overrides, hf_config=args.hf_config, mix_args=mix_args, alternatives=args.alternatives
            )
            for p in args.profiles
        ]
    except DsserveError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        data = [plan_to_dict(p) for p in plans]
        print(json.dumps(data[0] if len(data) == 1 else data, indent=2))
    else:
        sys.stdout.write("\n".join(render_text(p) for p in plans))
    return 0 if all(p.ok for p in plans) else 1


def _cmd_loadtest(args: argparse.Namespace) -> int:
    """Run a load-test scenario; 0 pass, 1 fail, 2 bad input, 3 invalid (the generator was the bottleneck).

    Bad input is reported here, not in :func:`main`, because a load test distinguishes "your input is
    wrong" (2, nothing was sent) from "the server missed its SLO" (1). See docs/loadtesting.md.
    """
    from dsserve.loadgen.errors import LoadtestError
    from dsserve.loadgen.runner import LoadtestOptions, run_loadtest

    opts = LoadtestOptions(
        scenario=args.scenario,
        host=args.host,
        rate=args.rate,
        duration=args.duration,
        processes=args.processes,
        expect_workers=args.expect_workers,
        master_bind_host=args.master_bind_host,
        master_bind_port=args.master_bind_port,
        prometheus=args.prometheus,
        prometheus_lag_s=args.prometheus_lag_s,
        api_key_env=args.api_key_env,
        out=args.out,
        engine=args.engine,
        tokenizer=args.tokenizer,
        sharegpt=args.sharegpt,
        model=args.model,
        sets=list(args.set),
        quiet=args.quiet,
        timeout_s=args.timeout_s,
        argv=list(sys.argv),
    )
    try:
        return run_loadtest(opts, say=_say)
    except LoadtestError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsserve",
        description="Serve DeepSeek-family models with vLLM on Ray Serve, driven by one YAML deployment spec.",
        epilog="Start with `dsserve up` (tiny model, CPU, no network). Docs: README.md.",
    )
    parser.add_argument("--version", action="version", version=f"dsserve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "up",
        help="serve a profile locally (default: the tiny CPU model) until Ctrl-C",
        description="Start a local Ray runtime, deploy the profile with ray.serve.llm and vLLM, "
        "wait until /v1/models answers, print the URL, and serve until Ctrl-C. Ctrl-C shuts "
        "down Serve and Ray with no processes left behind.",
    )
    p.add_argument("profile", nargs="?", help="deployment spec YAML (default: deploy/profiles/local-cpu.yaml)")
    p.add_argument("--host", help="override api.host")
    p.add_argument("--port", type=int, help="override api.port")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override any spec field, e.g. --set serving.max_ongoing_requests=8 (repeatable)",
    )
    p.add_argument("--timeout-s", type=float, default=900.0, help="give up if not healthy by then (default 900)")
    p.add_argument(
        "--no-sample", dest="sample", action="store_false", help="do not send the sample chat request once healthy"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="stream Ray and vLLM logs to this terminal")
    p.add_argument(
        "--prometheus",
        action="store_true",
        help="also run a local Prometheus (Debian's prometheus binary) scraping the stack with "
        "dsserve's rules; prints its URL and stops with the stack",
    )
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser(
        "validate",
        help="check deployment spec files and explain every problem",
        description="Validate one or more deployment specs; exit 1 with one line per problem.",
    )
    p.add_argument("profiles", nargs="+", metavar="PROFILE")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "tiny-model",
        help="build the offline tiny DeepSeek-architecture models and LoRA adapters",
        description="Build tiny models (random weights, local tokenizer) and tiny LoRA adapters "
        "(random, seeded, PEFT format) into the cache ($DSSERVE_CACHE_DIR, default "
        "~/.cache/dsserve). Building again is a no-op.",
    )
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="tiny-deepseek-v2, tiny-deepseek-llm, or an adapter: tiny-deepseek-llm-sql, "
        "tiny-deepseek-llm-chat (default: all)",
    )
    p.add_argument("--all", action="store_true", help="build every tiny model and adapter")
    p.add_argument("--cache-dir", help="cache root instead of $DSSERVE_CACHE_DIR")
    p.set_defaults(func=_cmd_tiny_model)

    p = sub.add_parser("render", help="render deployable files from a profile")
    rsub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    r = rsub.add_parser("serve-config", help="Ray Serve YAML for `serve deploy` / KubeRay serveConfigV2")
    r.add_argument("profile", metavar="PROFILE")
    r.add_argument("-o", "--output", help="write here instead of stdout")
    r.set_defaults(func=_cmd_render_serve_config)
    r = rsub.add_parser(
        "helm-values",
        help="Helm values for helm/dsserve (KubeRay RayService) from a profile",
        description="Write a values file for `helm install -f`: the profile's Ray Serve config "
        "(serveConfigV2, the text `render serve-config` writes) plus the sizing it implies "
        "(GPUs per worker pod, worker pods, autoscaling bounds, ports, HAProxy, API-key "
        "variable). The profile must set api.host: 0.0.0.0. See docs/kubernetes.md.",
    )
    r.add_argument("profile", metavar="PROFILE")
    r.add_argument("-o", "--output", help="write here instead of stdout")
    r.set_defaults(func=_cmd_render_helm_values)
    r = rsub.add_parser(
        "prometheus-rules",
        help="Prometheus recording and alerting rules (deploy/prometheus/rules)",
        description="Write dsserve-recording.yaml and dsserve-alerts.yaml (the rules `make render` "
        "puts in deploy/prometheus/rules/ and the Helm chart ships). See docs/observability.md.",
    )
    r.add_argument("-o", "--output", metavar="DIR", help="write both files into DIR instead of stdout")
    r.add_argument(
        "--runbook-base-url",
        default="docs/runbook.md",
        metavar="URL",
        help="what each alert's runbook_url starts with (default docs/runbook.md; point it at your "
        "copy, e.g. https://git.example.com/dsserve/blob/main/docs/runbook.md)",
    )
    r.set_defaults(func=_cmd_render_prometheus_rules)
    r = rsub.add_parser(
        "dashboards",
        help="Grafana dashboards (deploy/grafana/dashboards)",
        description="Write the Overview, Engine and SLO dashboards as Grafana JSON.",
    )
    r.add_argument("-o", "--output", metavar="DIR", help="write the JSON files into DIR instead of stdout")
    r.set_defaults(func=_cmd_render_dashboards)

    p = sub.add_parser("dashboards", help="work with dsserve's Grafana dashboards")
    dsub = p.add_subparsers(dest="what", metavar="ACTION", required=True)
    r = dsub.add_parser(
        "push",
        help="create or update the dashboards in a Grafana (idempotent)",
        description="Upload the Overview, Engine and SLO dashboards through Grafana's HTTP API "
        "(grafana-client), into --folder (created when missing), overwriting by uid.",
    )
    r.add_argument("--grafana-url", required=True, metavar="URL", help="e.g. http://127.0.0.1:3000")
    r.add_argument(
        "--token-env",
        required=True,
        metavar="VAR",
        help="environment variable holding a Grafana service-account token (Editor role)",
    )
    r.add_argument("--folder", default="dsserve", help="Grafana folder title (default dsserve; '' for General)")
    r.set_defaults(func=_cmd_dashboards_push)

    p = sub.add_parser(
        "plan",
        help="capacity and SLO plan: does a profile fit, how fast is it, does it meet its SLO",
        description="Plan a deployment from its profile without a GPU: per-GPU memory (weights, KV cache, "
        "reserves, as vLLM splits them), prefill/decode times, the SLO at a request mix with a queueing "
        "estimate, and the nearest layouts that fit. Exit status: 0 fits and meets the SLO, 1 does not, "
        "2 bad input. See docs/planner.md.",
    )
    p.add_argument("profiles", nargs="*", metavar="PROFILE", help="deployment spec YAML(s)")
    g = p.add_argument_group("request mix (default: the profile's slo section)")
    g.add_argument("--qps", type=float, help="arrival rate, requests per second (Poisson)")
    g.add_argument("--input-tokens", help="prompt tokens: N, LO:HI (uniform) or exp:MEAN")
    g.add_argument("--output-tokens", help="output tokens: N, LO:HI (uniform) or exp:MEAN")
    g.add_argument("--metric", choices=["ttft", "e2e", "itl"], help="latency the SLO bounds")
    g.add_argument("--percentile", type=float, help="SLO percentile, e.g. 99")
    g.add_argument("--threshold-ms", type=float, help="SLO bound in milliseconds")
    g = p.add_argument_group("what-if overrides (validated like the profile)")
    g.add_argument("--architecture", help="catalog model key, e.g. deepseek-v3")
    g.add_argument("--hf-config", metavar="PATH", help="plan the model of this local config.json instead")
    g.add_argument("--accelerator", help="h800, h100, h200, a100-80g or cpu")
    g.add_argument("--gpus-per-node", type=int)
    g.add_argument("--nodes", type=int)
    g.add_argument("--tp", type=int, help="engine.tensor_parallel_size")
    g.add_argument("--pp", type=int, help="engine.pipeline_parallel_size")
    g.add_argument("--dp", type=int, help="engine.data_parallel_size (DP attention; each DP rank is one Serve replica)")
    g.add_argument("--ep", action=argparse.BooleanOptionalAction, default=None, help="engine.enable_expert_parallel")
    g.add_argument("--quantization", help="fp8, awq, gptq, compressed-tensors, bitsandbytes or none")
    g.add_argument("--kv-cache-dtype", help="auto or fp8")
    g.add_argument("--max-model-len", type=int)
    g.add_argument("--max-num-seqs", type=int)
    g.add_argument("--max-num-batched-tokens", type=int)
    g.add_argument("--gpu-memory-utilization", type=float)
    g.add_argument("--replicas", type=int, help="serving.replicas")
    g.add_argument("--max-ongoing-requests", type=int, help="serving.max_ongoing_requests")
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print the plan as JSON")
    g.add_argument(
        "--no-alternatives",
        dest="alternatives",
        action="store_false",
        help="skip the search for nearest fitting layouts",
    )
    g.add_argument(
        "--sweep",
        action="store_true",
        help="print the docs/planner.md QPS table (largest QPS under p99 500 ms) for the profiles",
    )
    g.add_argument("--target-qps", type=float, default=1200.0, help="QPS the --sweep table tests (default 1200)")
    g.add_argument(
        "--published", action="store_true", help="print the predicted/published comparison table of docs/planner.md"
    )
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser(
        "loadtest",
        help="open-loop Locust load test of an OpenAI server, gated by the scenario's SLO",
        description="Run a load-test scenario (loadtest/scenarios/NAME.yaml or a path) against an OpenAI "
        "server with Locust, headless: open-loop arrivals at the target rate, TTFT/ITL/TPOT/E2E per request, "
        "then the SLO gate. Writes results.json, report.html, requests.csv and Locust's CSVs to --out. Exit "
        "status: 0 pass, 1 fail, 2 bad input (nothing sent), 3 invalid (the load generator was the "
        "bottleneck). See docs/loadtesting.md.",
    )
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
        default=1,
        help="Locust worker processes on this machine (the rate is split between them); default 1",
    )
    p.add_argument(
        "--expect-workers",
        type=int,
        default=0,
        metavar="N",
        help="be a Locust master and wait for N `locust --worker` processes (any machine)",
    )
    p.add_argument("--master-bind-host", default="127.0.0.1", help="with --expect-workers (default 127.0.0.1)")
    p.add_argument("--master-bind-port", type=int, default=5557, help="with --expect-workers (default 5557)")
    p.add_argument("--prometheus", metavar="URL", help="also fetch the server-side TTFT/E2E percentiles")
    p.add_argument(
        "--prometheus-lag-s",
        type=float,
        default=15.0,
        metavar="S",
        help="read them S seconds after the window, once exported and scraped (default 15)",
    )
    p.add_argument("--api-key-env", metavar="VAR", help="send the key in $VAR as Authorization: Bearer")
    p.add_argument("--out", metavar="DIR", help="results directory (default loadtest-results/NAME-TIME)")
    p.add_argument(
        "--engine",
        default="auto",
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
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override any scenario field, e.g. --set workload.context_window=2048 (repeatable)",
    )
    p.add_argument("--timeout-s", type=float, help="stop Locust if it runs longer than this")
    p.add_argument("-q", "--quiet", action="store_true", help="only the verdict lines (Locust's log is in --out)")
    p.set_defaults(func=_cmd_loadtest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DsserveError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
