"""The SLO gate: every figure of a run, computed from its raw request rows, and the verdict.

Pure functions of plain data (rows, schedule counts, CPU samples), so they are tested with hand-computed
cases and run the same in the Locust master, in `dsserve loadtest` and in a notebook.

**Window.** Only the measured window counts: after the ramp, up to the end of the schedule. A request
belongs to it when it was *sent* in it; an arrival that was never sent (overflow) when it was *due* in it.

**Counts.** arrivals = sent + overflow; sent = completed + unfinished; completed = ok + failed.
error ratio = (failed + overflow + unfinished) / arrivals.

**Verdict** (and `dsserve loadtest`'s exit status):

- ``invalid`` (exit 3): the generator could not be trusted: its p99 pacing lag (send time minus due time)
  or a process's mean CPU went over ``generator`` limits, a generator process never reported, or its
  schedule does not add up to the target. Nothing is concluded about the server.
- ``fail`` (exit 1): a check failed: rate (sent / scheduled < ``min_rate_fraction``), error ratio, or a
  latency percentile over its threshold (or no sample to check it with).
- ``pass`` (exit 0): every check passed.

Bad input never gets this far: it exits 2 before any load is sent.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dsserve.errors import ExitCode
from dsserve.loadgen.measure import LogHistogram, RequestResult, percentile, summarize
from dsserve.loadgen.pacing import RateProfile
from dsserve.loadgen.scenario import GeneratorSpec, SloGate

__all__ = ["EXIT_CODES", "Check", "RunData", "Verdict", "compute_figures", "evaluate", "timeline"]

#: Exit status of `dsserve loadtest` (and of the Locust process) per verdict; bad input (2) is an error,
#: not a verdict (dsserve.loadgen.errors).
EXIT_CODES = {"pass": ExitCode.OK, "fail": ExitCode.NOT_MET, "invalid": ExitCode.INVALID_MEASUREMENT}


@dataclass
class RunData:
    """Everything the generator processes reported, merged."""

    profile: RateProfile
    arrivals: str
    share_count: int
    rows: list[RequestResult]
    overflow: list[tuple[int, float]] = field(default_factory=list)  # (share, due_s)
    unfinished: list[tuple[int, float, float]] = field(default_factory=list)  # (share, due_s, sent_s)
    scheduled: dict[int, dict[str, int]] = field(default_factory=dict)  # share -> {"window", "total"}
    cpu: dict[int, list[tuple[float, float, float]]] = field(default_factory=dict)  # share -> (t, proc, sys)
    itl: LogHistogram = field(default_factory=LogHistogram)
    problems: list[str] = field(default_factory=list)  # generator problems reported during the run


@dataclass
class Check:
    name: str
    measured: float | None
    limit: float
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": self.measured,
            "limit": self.limit,
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass
class Verdict:
    verdict: str  # pass | fail | invalid
    checks: list[Check]
    invalid_reasons: list[str]

    @property
    def exit_code(self) -> int:
        return int(EXIT_CODES[self.verdict])

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "checks": [c.to_dict() for c in self.checks],
            "invalid_reasons": self.invalid_reasons,
        }


def _in(t: float, lo: float, hi: float) -> bool:
    return lo <= t < hi


def compute_figures(data: RunData) -> dict[str, Any]:
    """Every figure of the measured window (and the whole-run counts), as a JSON-ready dict."""
    w0, w1 = data.profile.window
    dur = max(1e-9, w1 - w0)
    rows = [r for r in data.rows if _in(r.sent_s, w0, w1)]
    ok = [r for r in rows if r.ok]
    failed = [r for r in rows if not r.ok]
    overflow = [o for o in data.overflow if _in(o[1], w0, w1)]
    unfinished = [u for u in data.unfinished if _in(u[2], w0, w1)]
    sent = len(rows) + len(unfinished)
    arrivals = sent + len(overflow)
    expected = data.profile.expected(w0, w1)
    scheduled = sum(s.get("window", 0) for s in data.scheduled.values())
    errors = Counter(_reason(r.error) for r in failed)
    if overflow:
        errors["overflow: in-flight cap reached, not sent"] += len(overflow)
    if unfinished:
        errors["unfinished: no response before the drain timeout"] += len(unfinished)
    lag = [(r.sent_s - r.sched_s) * 1000.0 for r in rows] + [(u[2] - u[1]) * 1000.0 for u in unfinished]
    streamed_ok = [r for r in ok if r.ttft_ms is not None]
    out_tokens = [r.output_tokens for r in ok if r.output_tokens is not None]
    figures: dict[str, Any] = {
        "window": {"start_s": w0, "end_s": w1, "duration_s": dur},
        "rate": {
            "target_rps": expected / dur,
            "scheduled": scheduled,
            "scheduled_rps": scheduled / dur,
            "sent": sent,
            "achieved_rps": sent / dur,
            "achieved_fraction": (sent / scheduled) if scheduled else None,
            "ok_rps": len(ok) / dur,
        },
        "requests": {
            "arrivals": arrivals,
            "sent": sent,
            "completed": len(rows),
            "ok": len(ok),
            "failed": len(failed),
            "overflow": len(overflow),
            "unfinished": len(unfinished),
            "error_ratio": ((len(failed) + len(overflow) + len(unfinished)) / arrivals) if arrivals else None,
            "errors": dict(errors.most_common()),
            "streamed_ok": len(streamed_ok),
        },
        "latency_ms": {
            "ttft": summarize(r.ttft_ms for r in streamed_ok if r.ttft_ms is not None),
            "e2e": summarize(r.e2e_ms for r in ok if r.e2e_ms is not None),
            "tpot": summarize(r.tpot_ms for r in streamed_ok if r.tpot_ms is not None),
            "itl": data.itl.summary(),
        },
        "tokens": {
            "output": summarize(out_tokens),
            "output_total": sum(out_tokens),
            "output_tokens_per_s": sum(out_tokens) / dur,
            "max_tokens": summarize(r.max_tokens for r in ok),
            "prompt_server": summarize(r.prompt_tokens for r in ok if r.prompt_tokens is not None),
            "prompt_client": summarize(r.prompt_tokens_client for r in rows if r.prompt_tokens_client is not None),
        },
        "generator": {
            "processes": data.share_count,
            "pacing_lag_ms": summarize(lag),
            "cpu_percent": _cpu(data.cpu, w0, w1),
        },
        "by_class": _by_class(rows, unfinished),
        "phases": _phases(data, rows),
        "whole_run": {
            "sent": len(data.rows) + len(data.unfinished),
            "completed": len(data.rows),
            "ok": sum(1 for r in data.rows if r.ok),
            "overflow": len(data.overflow),
            "unfinished": len(data.unfinished),
            "scheduled": sum(s.get("total", 0) for s in data.scheduled.values()),
            "expected": data.profile.total,
        },
    }
    return figures


def _reason(error: str | None) -> str:
    """Group errors by kind: the text before the first digit-free detail is enough ("HTTP 503", ...)."""
    if not error:
        return "ok"
    head = error.split(":", 1)[0].strip()
    return head[:80] or error[:80]


def _cpu(cpu: dict[int, list[tuple[float, float, float]]], w0: float, w1: float) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for share, samples in sorted(cpu.items()):
        xs = [p for t, p, _ in samples if _in(t, w0, w1)]
        sy = [s for t, _, s in samples if _in(t, w0, w1)]
        per[str(share)] = {
            "mean": (sum(xs) / len(xs)) if xs else None,
            "max": max(xs) if xs else None,
            "system_mean": (sum(sy) / len(sy)) if sy else None,
            "samples": len(xs),
        }
    means = [v["mean"] for v in per.values() if v["mean"] is not None]
    return {"per_process": per, "max_process_mean": max(means) if means else None}


def _by_class(rows: Sequence[RequestResult], unfinished: Sequence[tuple[int, float, float]]) -> dict[str, Any]:
    groups: dict[str, list[RequestResult]] = defaultdict(list)
    for r in rows:
        groups[r.cls].append(r)
    out = {}
    for name, rs in sorted(groups.items()):
        ok = [r for r in rs if r.ok]
        out[name] = {
            "completed": len(rs),
            "ok": len(ok),
            "failed": len(rs) - len(ok),
            "ttft_ms": {
                "p50": percentile([r.ttft_ms for r in ok if r.ttft_ms is not None], 50),
                "p99": percentile([r.ttft_ms for r in ok if r.ttft_ms is not None], 99),
            },
            "e2e_ms": {
                "p50": percentile([r.e2e_ms for r in ok if r.e2e_ms is not None], 50),
                "p99": percentile([r.e2e_ms for r in ok if r.e2e_ms is not None], 99),
            },
            "output_tokens_mean": _mean(r.output_tokens for r in ok),
            "prompt_tokens_mean": _mean(r.prompt_tokens for r in ok),
        }
    return out


def _phases(data: RunData, rows: Sequence[RequestResult]) -> list[dict[str, Any]]:
    out = []
    for seg in data.profile.segments:
        if seg.phase == "ramp":
            continue
        rs = [r for r in rows if _in(r.sent_s, seg.start_s, seg.end_s)]
        ok = [r for r in rs if r.ok]
        out.append(
            {
                "phase": seg.phase,
                "start_s": seg.start_s,
                "end_s": seg.end_s,
                "target_rps": data.profile.expected(seg.start_s, seg.end_s) / seg.duration_s,
                "achieved_rps": len(rs) / seg.duration_s,
                "ok": len(ok),
                "failed": len(rs) - len(ok),
                "ttft_p99_ms": percentile([r.ttft_ms for r in ok if r.ttft_ms is not None], 99),
                "e2e_p99_ms": percentile([r.e2e_ms for r in ok if r.e2e_ms is not None], 99),
            }
        )
    return out


def _mean(xs: Iterable[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return sum(v) / len(v) if v else None


def _metric_value(figures: dict[str, Any], metric: str, pct: float, data: RunData | None) -> tuple[float | None, int]:
    lat = figures["latency_ms"][metric]
    n = lat["count"]
    key = f"p{pct:g}".replace(".", "_")
    if key in lat:
        return lat[key], n
    if data is None:
        return None, n
    # a percentile outside the standard set: compute it from the raw data
    w0, w1 = data.profile.window
    if metric == "itl":
        return data.itl.percentile(pct), n
    attr = {"ttft": "ttft_ms", "e2e": "e2e_ms", "tpot": "tpot_ms"}[metric]
    vals = [getattr(r, attr) for r in data.rows if r.ok and _in(r.sent_s, w0, w1) and getattr(r, attr) is not None]
    return percentile(vals, pct), n


def evaluate(
    figures: dict[str, Any],
    slo: SloGate,
    gen: GeneratorSpec,
    *,
    data: RunData | None = None,
    problems: Sequence[str] = (),
) -> Verdict:
    """Checks and verdict of a run from its figures (see the module docstring)."""
    checks: list[Check] = []
    rate = figures["rate"]
    frac = rate["achieved_fraction"]
    checks.append(
        Check(
            "rate",
            frac,
            slo.min_rate_fraction,
            frac is not None and frac >= slo.min_rate_fraction,
            f"sent {rate['sent']} of {rate['scheduled']} scheduled requests in the window "
            f"({rate['achieved_rps']:.2f} of {rate['scheduled_rps']:.2f} req/s; target {rate['target_rps']:.2f})",
        )
    )
    req = figures["requests"]
    er = req["error_ratio"]
    checks.append(
        Check(
            "error_ratio",
            er,
            slo.max_error_ratio,
            er is not None and er <= slo.max_error_ratio,
            f"{req['failed']} failed + {req['overflow']} overflow + {req['unfinished']} unfinished of "
            f"{req['arrivals']} arrivals",
        )
    )
    for t in slo.thresholds:
        value, n = _metric_value(figures, t.metric, t.percentile, data)
        name = f"{t.metric}_p{t.percentile:g}"
        if value is None:
            checks.append(Check(name, None, t.max_ms, False, f"no {t.metric} samples to check"))
        else:
            checks.append(
                Check(
                    name,
                    value,
                    t.max_ms,
                    value <= t.max_ms,
                    f"p{t.percentile:g} {t.metric.upper()} {value:.1f} ms over {n} samples (limit {t.max_ms:g} ms)",
                )
            )
    invalid = list(problems)
    lag99 = figures["generator"]["pacing_lag_ms"]["p99"]
    if lag99 is not None and lag99 > gen.max_lag_p99_ms:
        invalid.append(
            f"load generator fell behind its schedule: p99 pacing lag {lag99:.1f} ms > "
            f"{gen.max_lag_p99_ms:g} ms (add --processes or generator machines, or lower the rate)"
        )
    cpu = figures["generator"]["cpu_percent"]
    for share, c in cpu["per_process"].items():
        if c["mean"] is not None and c["mean"] >= gen.max_cpu_percent:
            invalid.append(
                f"load generator process {share} used {c['mean']:.0f}% CPU on average "
                f"(limit {gen.max_cpu_percent:g}%): its timings are not trustworthy "
                "(add --processes or generator machines)"
            )
    if data is not None:
        missing = [j for j in range(data.share_count) if j not in data.scheduled]
        if missing:
            invalid.append(f"generator process(es) {missing} never reported their schedule")
        else:
            invalid.extend(_schedule_problems(figures, data))
    verdict = "invalid" if invalid else ("pass" if all(c.passed for c in checks) else "fail")
    return Verdict(verdict, checks, invalid)


def _schedule_problems(figures: dict[str, Any], data: RunData) -> list[str]:
    """The processes' schedules must add up to the target (a pacing bug or a lost process shows here)."""
    w0, w1 = data.profile.window
    expected = data.profile.expected(w0, w1)
    scheduled = figures["rate"]["scheduled"]
    if data.arrivals == "constant":
        tol = data.share_count + 1.0
    else:  # Poisson counts have standard deviation sqrt(expected)
        tol = 5.0 * math.sqrt(max(expected, 1.0)) + data.share_count
    if abs(scheduled - expected) > tol:
        return [
            f"the generator scheduled {scheduled} requests in the window where the target rate gives "
            f"{expected:.1f} (tolerance {tol:.1f}): a pacing fault, not a server result"
        ]
    return []


def timeline(data: RunData, bucket_s: float = 1.0, until_s: float | None = None) -> list[dict[str, Any]]:
    """Per-bucket figures over the whole run, for the charts (requests bucketed by send time)."""
    end = until_s if until_s is not None else data.profile.end_s
    for r in data.rows:
        if r.e2e_ms is not None:
            end = max(end, r.sent_s + r.e2e_ms / 1000.0)
    n = max(1, int(math.ceil(end / bucket_s)))
    sent = [0] * n
    ok_done = [0] * n
    err = [0] * n
    over = [0] * n
    ttft: list[list[float]] = [[] for _ in range(n)]
    e2e: list[list[float]] = [[] for _ in range(n)]
    for r in data.rows:
        i = int(r.sent_s // bucket_s)
        if 0 <= i < n:
            sent[i] += 1
            if not r.ok:
                err[i] += 1
            else:
                if r.ttft_ms is not None:
                    ttft[i].append(r.ttft_ms)
                if r.e2e_ms is not None:
                    e2e[i].append(r.e2e_ms)
        if r.ok and r.e2e_ms is not None:
            j = int((r.sent_s + r.e2e_ms / 1000.0) // bucket_s)
            if 0 <= j < n:
                ok_done[j] += 1
    for _, due in data.overflow:
        i = int(due // bucket_s)
        if 0 <= i < n:
            over[i] += 1
    out = []
    for i in range(n):
        t = (i + 0.5) * bucket_s
        out.append(
            {
                "t_s": i * bucket_s,
                "target_rps": data.profile.expected(i * bucket_s, (i + 1) * bucket_s) / bucket_s,
                "sent_rps": sent[i] / bucket_s,
                "ok_done_rps": ok_done[i] / bucket_s,
                "error_rps": err[i] / bucket_s,
                "overflow_rps": over[i] / bucket_s,
                "ttft_p50_ms": percentile(ttft[i], 50),
                "ttft_p99_ms": percentile(ttft[i], 99),
                "e2e_p50_ms": percentile(e2e[i], 50),
                "e2e_p99_ms": percentile(e2e[i], 99),
                "phase": data.profile.phase_at(t),
            }
        )
    return out
