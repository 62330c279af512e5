"""`dsserve up [PROFILE]`: serve a profile locally until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dsserve.cli.base import REPO_ROOT, Command, say

__all__ = ["UpCommand", "default_profile"]


def default_profile() -> Path:
    """deploy/profiles/local-cpu.yaml: beside the working directory if there, else beside the package."""
    rel = Path("deploy/profiles/local-cpu.yaml")
    return rel if rel.is_file() else REPO_ROOT / rel


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
        say(f"sample request failed: HTTP {r.status_code}: {r.text[:300]}")
        return
    data = r.json()
    answer = data["choices"][0]["message"]["content"]
    usage = data.get("usage", {})
    say(
        f"sample chat request: HTTP 200 in {ms:.0f} ms, {usage.get('prompt_tokens')} prompt + "
        f"{usage.get('completion_tokens')} completion tokens"
    )
    why = "simulated engine: placeholder words" if simulated else "random weights, so random text"
    print(f"  answer ({why}): {answer!r}", flush=True)


class UpCommand(Command):
    name = "up"
    help = "serve a profile locally (default: the tiny CPU model) until Ctrl-C"
    description = (
        "Start a local Ray runtime, deploy the profile with ray.serve.llm and vLLM, wait until /v1/models "
        "answers, print the URL, and serve until Ctrl-C or SIGTERM. Either shuts down Serve and Ray (letting "
        "in-flight requests finish) with no processes left behind, and exits 0."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        p = parser
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

    def run(self, args: argparse.Namespace) -> int:
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

        say(f"profile {profile}: {spec.description or spec.name}")
        try:
            with LocalStack(
                spec, progress=say, verbose=args.verbose, prometheus=prometheus, timeout_s=args.timeout_s
            ) as stack:
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
                    say(f"Prometheus: {prometheus.url} (stops with the stack)")
                say("READY - serving until Ctrl-C")
                stack.serve_forever()
        except KeyboardInterrupt:  # a signal before serve_forever: the stack is stopped already
            pass
        finally:
            say("stopped")
        return 0
