"""Helpers for the Helm chart's in-cluster load test (helm/dsserve, loadtest.mode: job).

docker/Dockerfile.locust bakes this file in at /opt/dsserve/loadtest/incluster.py. Standard library only:

    python loadtest/incluster.py wait-http URL [--timeout S] [--api-key-env VAR]
        until GET URL answers 200 (the serve Service's /v1/models, while KubeRay brings the RayService up);
        with --api-key-env, sends the first key of $VAR as Authorization: Bearer. Exit 0 ready, 1 gave up.
    python loadtest/incluster.py wait-tcp HOST PORT [--timeout S]
        until HOST:PORT accepts a connection (a Locust worker waiting for the load-test master).
    python loadtest/incluster.py summary RESULTS_DIR --exit-code N
        the SLO gate's verdict from RESULTS_DIR/results.json in at most 4 KiB, the size Kubernetes keeps as a
        container's termination message (kubectl get pod POD -o jsonpath='{..terminated.message}').
    python loadtest/incluster.py check-scenarios [DIR]
        load every DIR/*.yaml (default: loadtest/scenarios beside this file) with dsserve's validator and print
        their names; exit 1 when there are none or one is invalid (docker/Dockerfile.locust runs it at build).
    python loadtest/incluster.py first-key VAR
        the first API key in $VAR, read the way the server reads its key file (one key per line, `#` comment
        lines, commas also separate keys), so a Secret written for apiKeys.filePath serves the load test too.

Nothing here logs an API key: first-key prints one only for a shell's $(...) to capture.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

#: `dsserve loadtest` exit statuses (docs/loadtesting.md).
MEANINGS = {
    0: "pass",
    1: "fail: the SLO was missed",
    2: "bad input: nothing was sent",
    3: "invalid: the load generator was the bottleneck",
}
#: Kubernetes truncates a termination message to 4096 bytes.
MAX_MESSAGE_BYTES = 4096


def _wait(what: str, probe, timeout_s: float, interval_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        problem = probe()
        if problem is None:
            print(f"ready: {what}", flush=True)
            return 0
        if problem != last:
            print(f"waiting for {what}: {problem}", flush=True)
            last = problem
        if time.monotonic() >= deadline:
            print(f"gave up after {timeout_s:g} s: {what}: {problem}", flush=True)
            return 1
        time.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))


def first_key(text: str) -> str:
    """The first key of a key list: lines, then commas; blank parts and `#` comment lines skipped."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for part in line.split(","):
            if part.strip():
                return part.strip()
    return ""


def wait_http(url: str, timeout_s: float, api_key_env: str | None, interval_s: float = 10.0) -> int:
    headers = {}
    if api_key_env:
        key = first_key(os.environ.get(api_key_env, ""))
        if not key:
            print(f"${api_key_env} is empty or not set; no API key to send", flush=True)
            return 1
        headers["Authorization"] = f"Bearer {key}"

    def probe() -> str | None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
                return None if r.status == 200 else f"HTTP {r.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            return type(exc).__name__ + (f": {exc.reason}" if isinstance(exc, urllib.error.URLError) else "")

    return _wait(f"GET {url}", probe, timeout_s, interval_s)


def wait_tcp(host: str, port: int, timeout_s: float, interval_s: float = 5.0) -> int:
    def probe() -> str | None:
        try:
            with socket.create_connection((host, port), timeout=5):
                return None
        except OSError as exc:
            return type(exc).__name__

    return _wait(f"{host}:{port}", probe, timeout_s, interval_s)


def summary(results_dir: Path, exit_code: int) -> str:
    """The verdict, one line per check, and where the report is; at most MAX_MESSAGE_BYTES."""
    lines = [f"dsserve loadtest exit status {exit_code} ({MEANINGS.get(exit_code, 'unexpected')})"]
    path = results_dir / "results.json"
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        lines.append(f"no readable {path} ({type(exc).__name__}); see the container log")
    else:
        scenario, target = r.get("scenario") or {}, r.get("target") or {}
        lines.append(
            f"verdict {str(r.get('verdict', '?')).upper()}: scenario {scenario.get('name', '?')} against "
            f"{target.get('host', '?')} (model {target.get('model', '?')})"
        )
        for check in r.get("checks") or []:
            lines.append(
                f"  {'ok    ' if check.get('passed') else 'FAILED'} {check.get('name')}: {check.get('detail', '')}"
            )
        for reason in r.get("invalid_reasons") or []:
            lines.append(f"  INVALID: {reason}")
        lines.append(f"report: {results_dir / 'report.html'}")
    text = "\n".join(lines) + "\n"
    data = text.encode()
    if len(data) > MAX_MESSAGE_BYTES:
        data = data[: MAX_MESSAGE_BYTES - 4].rsplit(b"\n", 1)[0] + b"\n...\n"
    return data.decode(errors="ignore")


def check_scenarios(directory: Path) -> int:
    from dsserve.loadgen.scenario import load_scenario  # the image's dsserve; everything else is stdlib

    paths = sorted(directory.glob("*.yaml"))
    for path in paths:
        load_scenario(str(path))  # raises ScenarioError naming the file, the field and the fix
    print("scenarios:", *(p.stem for p in paths) or ["none"], flush=True)
    return 0 if paths else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="incluster.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("wait-http", help="wait until GET URL answers 200")
    p.add_argument("url")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds (default 3600)")
    p.add_argument("--interval", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--api-key-env", default=None, help="send the first key of $VAR as a Bearer token")
    p = sub.add_parser("wait-tcp", help="wait until HOST:PORT accepts a connection")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds (default 3600)")
    p.add_argument("--interval", type=float, default=5.0, help=argparse.SUPPRESS)
    p = sub.add_parser("check-scenarios", help="validate every scenario file of DIR")
    p.add_argument("directory", nargs="?", type=Path, default=Path(__file__).resolve().parent / "scenarios")
    p = sub.add_parser("first-key", help="print the first API key in $VAR (key-file rules)")
    p.add_argument("var")
    p = sub.add_parser("summary", help="the verdict of RESULTS_DIR/results.json in at most 4 KiB")
    p.add_argument("results_dir", type=Path)
    p.add_argument("--exit-code", type=int, required=True, help="the exit status of dsserve loadtest")
    args = parser.parse_args(argv)
    if args.cmd == "wait-http":
        return wait_http(args.url, args.timeout, args.api_key_env, args.interval)
    if args.cmd == "wait-tcp":
        return wait_tcp(args.host, args.port, args.timeout, args.interval)
    if args.cmd == "check-scenarios":
        return check_scenarios(args.directory)
    if args.cmd == "first-key":
        key = first_key(os.environ.get(args.var, ""))
        if not key:
            print(f"${args.var} holds no API key", file=sys.stderr)
            return 1
        print(key)
        return 0
    sys.stdout.write(summary(args.results_dir, args.exit_code))
    return 0


if __name__ == "__main__":
    sys.exit(main())
