"""The `dsserve` command: a thin layer over the library.

It parses arguments, calls library functions, and turns a :class:`DsserveError` into one line on stderr
and exit status 1 (2 for usage errors). Only this module calls ``sys.exit``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from dsserve import __version__
from dsserve.errors import DsserveError

__all__ = ["main", "default_profile"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


def default_profile() -> Path:
    """deploy/profiles/local-cpu.yaml: beside the working directory if there, else beside the package."""
    rel = Path("deploy/profiles/local-cpu.yaml")
    return rel if rel.is_file() else _REPO_ROOT / rel


def _say(msg: str) -> None:
    print(f"dsserve: {msg}", flush=True)


def _cmd_validate(args: argparse.Namespace) -> int:
    from dsserve.config import load_spec

    for path in args.profiles:
        spec = load_spec(path)
        eng = spec.engine
        layout = f"TP{eng.tensor_parallel_size} PP{eng.pipeline_parallel_size} DP{eng.data_parallel_size}"
        if eng.enable_expert_parallel:
            layout += " +EP"
        print(f"{path}: ok: {spec.name}: {spec.model.id} ({spec.model.architecture}) on "
              f"{spec.hardware.accelerator}, {layout}, {spec.serving.replicas} replica(s)")
    return 0


def _cmd_tiny_model(args: argparse.Namespace) -> int:
    from dsserve.tiny_models import TINY_MODELS, build_tiny_model

    names = sorted(TINY_MODELS) if args.all or not args.names else args.names
    root = Path(args.cache_dir) if args.cache_dir else None
    for name in names:
        t0 = time.monotonic()
        path, built = build_tiny_model(name, root, progress=lambda m, n=name: _say(f"{n}: {m}"))
        state = f"built in {time.monotonic() - t0:.1f}s" if built else "already built, nothing to do"
        print(f"{name}: {path} ({state})")
    return 0


def _cmd_render_serve_config(args: argparse.Namespace) -> int:
    from dsserve.config import load_spec
    from dsserve.render.serve_config import render_serve_config

    spec = load_spec(args.profile)
    text = render_serve_config(spec, source=_display_path(args.profile))
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_render_helm_values(args: argparse.Namespace) -> int:
    from dsserve.config import load_spec
    from dsserve.render.helm_values import render_helm_values

    spec = load_spec(args.profile)
    text = render_helm_values(spec, source=_display_path(args.profile))
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _display_path(path: str) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(_REPO_ROOT))
    except ValueError:
        return str(path)


def _sample_request(base_url: str, model: str, api_key: str | None) -> None:
    import httpx

    body = {"model": model, "messages": [{"role": "user", "content": "Say hello in five words."}],
            "max_tokens": 16, "temperature": 0}
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
    _say(f"sample chat request: HTTP 200 in {ms:.0f} ms, {usage.get('prompt_tokens')} prompt + "
         f"{usage.get('completion_tokens')} completion tokens")
    print(f"  answer (random weights, so random text): {answer!r}", flush=True)


def _cmd_up(args: argparse.Namespace) -> int:
    from dsserve.config import load_spec
    from dsserve.stack import LocalStack, client_api_key

    profile = args.profile or str(default_profile())
    overrides = list(args.set)
    if args.host:
        overrides.append(f"api.host={args.host}")
    if args.port:
        overrides.append(f"api.port={args.port}")
    spec = load_spec(profile, overrides)
    api_key = client_api_key(spec)

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C while stopping: let the default handler act
            signal.signal(signum, signal.SIG_DFL)
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    stack = LocalStack(spec, progress=_say, verbose=args.verbose)
    _say(f"profile {profile}: {spec.description or spec.name}")
    try:
        stack.start(timeout_s=args.timeout_s)
        url = stack.base_url
        auth = f" \\\n    -H 'Authorization: Bearer ${spec.api.api_keys_env}'" if spec.api.api_keys_env else ""
        print(
            f"\nServing {spec.model.id} (real vLLM on {spec.hardware.accelerator}) at {url}/v1\n"
            f"  curl {url}/v1/chat/completions -H 'Content-Type: application/json'{auth} \\\n"
            f"    -d '{json.dumps({'model': spec.model.id, 'messages': [{'role': 'user', 'content': 'Hello'}], 'max_tokens': 16})}'\n",
            flush=True,
        )
        if args.sample:
            _sample_request(url, spec.model.id, api_key)
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
            raise DsserveError("dsserve plan: no PROFILE given; pass one or more deployment specs, e.g. "
                               "deploy/profiles/h800-deepseek-llm-67b-tp8.yaml (or --published)")
        overrides = {k: getattr(args, k) for k in OVERRIDE_PATHS}
        if args.sweep:
            from dsserve.planner.sweep import sweep_table

            sys.stdout.write(sweep_table(args.profiles, target_qps=args.target_qps, overrides=overrides))
            return 0
        from dsserve.planner import plan_profile, plan_to_dict, render_text

        mix_args = {"qps": args.qps, "input_tokens": args.input_tokens, "output_tokens": args.output_tokens,
                    "metric": args.metric, "percentile": args.percentile, "threshold_ms": args.threshold_ms}
        plans = [plan_profile(p, overrides=overrides, hf_config=args.hf_config, mix_args=mix_args,
                              alternatives=args.alternatives) for p in args.profiles]
    except DsserveError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        data = [plan_to_dict(p) for p in plans]
        print(json.dumps(data[0] if len(data) == 1 else data, indent=2))
    else:
        sys.stdout.write("\n".join(render_text(p) for p in plans))
    return 0 if all(p.ok for p in plans) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsserve",
        description="Serve DeepSeek-family models with vLLM on Ray Serve, driven by one YAML deployment spec.",
        epilog="Start with `dsserve up` (tiny model, CPU, no network). Docs: README.md.",
    )
    parser.add_argument("--version", action="version", version=f"dsserve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("up", help="serve a profile locally (default: the tiny CPU model) until Ctrl-C",
                       description="Start a local Ray runtime, deploy the profile with ray.serve.llm and vLLM, "
                       "wait until /v1/models answers, print the URL, and serve until Ctrl-C. Ctrl-C shuts "
                       "down Serve and Ray with no processes left behind.")
    p.add_argument("profile", nargs="?", help="deployment spec YAML (default: deploy/profiles/local-cpu.yaml)")
    p.add_argument("--host", help="override api.host")
    p.add_argument("--port", type=int, help="override api.port")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="override any spec field, e.g. --set serving.max_ongoing_requests=8 (repeatable)")
    p.add_argument("--timeout-s", type=float, default=900.0, help="give up if not healthy by then (default 900)")
    p.add_argument("--no-sample", dest="sample", action="store_false",
                   help="do not send the sample chat request once healthy")
    p.add_argument("-v", "--verbose", action="store_true", help="stream Ray and vLLM logs to this terminal")
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("validate", help="check deployment spec files and explain every problem",
                       description="Validate one or more deployment specs; exit 1 with one line per problem.")
    p.add_argument("profiles", nargs="+", metavar="PROFILE")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("tiny-model", help="build the offline tiny DeepSeek-architecture models",
                       description="Build tiny models (random weights, local tokenizer) into the cache "
                       "($DSSERVE_CACHE_DIR, default ~/.cache/dsserve). Building again is a no-op.")
    p.add_argument("names", nargs="*", metavar="NAME", help="tiny-deepseek-v2, tiny-deepseek-llm (default: all)")
    p.add_argument("--all", action="store_true", help="build every tiny model")
    p.add_argument("--cache-dir", help="cache root instead of $DSSERVE_CACHE_DIR")
    p.set_defaults(func=_cmd_tiny_model)

    p = sub.add_parser("render", help="render deployable files from a profile")
    rsub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    r = rsub.add_parser("serve-config", help="Ray Serve YAML for `serve deploy` / KubeRay serveConfigV2")
    r.add_argument("profile", metavar="PROFILE")
    r.add_argument("-o", "--output", help="write here instead of stdout")
    r.set_defaults(func=_cmd_render_serve_config)
    r = rsub.add_parser("helm-values", help="Helm values for helm/dsserve (KubeRay RayService) from a profile",
                        description="Write a values file for `helm install -f`: the profile's Ray Serve config "
                        "(serveConfigV2, the text `render serve-config` writes) plus the sizing it implies "
                        "(GPUs per worker pod, worker pods, autoscaling bounds, ports, HAProxy, API-key "
                        "variable). The profile must set api.host: 0.0.0.0. See docs/kubernetes.md.")
    r.add_argument("profile", metavar="PROFILE")
    r.add_argument("-o", "--output", help="write here instead of stdout")
    r.set_defaults(func=_cmd_render_helm_values)

    p = sub.add_parser(
        "plan", help="capacity and SLO plan: does a profile fit, how fast is it, does it meet its SLO",
        description="Plan a deployment from its profile without a GPU: per-GPU memory (weights, KV cache, "
        "reserves, as vLLM splits them), prefill/decode times, the SLO at a request mix with a queueing "
        "estimate, and the nearest layouts that fit. Exit status: 0 fits and meets the SLO, 1 does not, "
        "2 bad input. See docs/planner.md.")
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
    g.add_argument("--dp", type=int, help="engine.data_parallel_size (planned; not renderable yet)")
    g.add_argument("--ep", action=argparse.BooleanOptionalAction, default=None,
                   help="engine.enable_expert_parallel")
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
    g.add_argument("--no-alternatives", dest="alternatives", action="store_false",
                   help="skip the search for nearest fitting layouts")
    g.add_argument("--sweep", action="store_true",
                   help="print the docs/planner.md QPS table (largest QPS under p99 500 ms) for the profiles")
    g.add_argument("--target-qps", type=float, default=1200.0, help="QPS the --sweep table tests (default 1200)")
    g.add_argument("--published", action="store_true",
                   help="print the predicted/published comparison table of docs/planner.md")
    p.set_defaults(func=_cmd_plan)
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
