"""results.json (a versioned schema), requests.csv and report.html of a load test.

``results.json`` (schema ``dsserve.loadtest.results/1``; docs/loadtesting.md lists every field) says what
produced each figure: the scenario as run, the machine, the engine kind (and where that label came from),
the model, the load, how prompt lengths were counted, the generator's own health, then every figure of
the measured window, a per-second timeline, the distributions the report draws, and (with
``--prometheus``) the server's own percentiles for the same window. ``report.html`` is one self-contained
file (inline SVG, no scripts, no network).
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import platform
import socket
import sys
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsserve.loadgen.gate import compute_figures, evaluate, timeline
from dsserve.loadgen.measure import RESULT_FIELDS, LogHistogram
from dsserve.loadgen.svg import PALETTE, Band, HLine, Series, VLine, histogram_chart, line_chart

if TYPE_CHECKING:
    from dsserve.loadgen.coordinator import Collector
    from dsserve.loadgen.target import RunConfig

__all__ = ["SCHEMA", "finalize", "machine_info", "render_html", "write_outputs"]

SCHEMA = "dsserve.loadtest.results/1"


def machine_info() -> dict[str, Any]:
    """The machine the generator (the Locust master) ran on."""
    import psutil

    cpu_model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import locust

        locust_version = locust.__version__
    except Exception:  # pragma: no cover
        locust_version = None
    from dsserve import __version__

    return {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "locust": locust_version,
        "dsserve": __version__,
    }


def _distribution(values: list[float], bins: int = 40) -> dict[str, Any]:
    xs = sorted(v for v in values if v is not None and v > 0)
    if not xs:
        return {"edges": [], "counts": [], "log_x": False}
    lo, hi = xs[0], xs[-1]
    log_x = hi / lo > 20
    if hi <= lo:
        hi = lo * 1.01 + 1e-6
    if log_x:
        edges = [lo * (hi / lo) ** (i / bins) for i in range(bins + 1)]
    else:
        edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    counts = [0] * bins
    for v in xs:
        if log_x:
            i = int(math.log(v / lo) / math.log(hi / lo) * bins)
        else:
            i = int((v - lo) / (hi - lo) * bins)
        counts[min(bins - 1, max(0, i))] += 1
    return {"edges": edges, "counts": counts, "log_x": log_x}


def _hist_distribution(h: LogHistogram, bins: int = 40) -> dict[str, Any]:
    if not h.counts:
        return {"edges": [], "counts": [], "log_x": True}
    lo = max(h.bin_bounds(min(h.counts))[0], LogHistogram.FLOOR_MS)
    hi = h.bin_bounds(max(h.counts))[1]
    edges = [lo * (hi / lo) ** (i / bins) for i in range(bins + 1)]
    counts = [0] * bins
    for i, c in h.counts.items():
        a, b = h.bin_bounds(i)
        mid = math.sqrt(max(a, lo) * b)
        k = int(math.log(mid / lo) / math.log(hi / lo) * bins) if hi > lo else 0
        counts[min(bins - 1, max(0, k))] += c
    return {"edges": edges, "counts": counts, "log_x": True}


def finalize(
    config: RunConfig, collector: Collector | None, *, problems: list[str], t0: float | None, processes: int
) -> dict[str, Any]:
    """Run the gate on what the collector holds and write every output; return the results dict."""
    from dsserve.loadgen.coordinator import Collector

    spec = config.spec
    coll = collector or Collector(max(1, processes))
    data = coll.run_data(spec)
    data.problems = list(coll.problems) + list(problems)
    figures = compute_figures(data)
    verdict = evaluate(figures, spec.slo, spec.generator, data=data, problems=data.problems)
    w0, w1 = data.profile.window
    win = [r for r in data.rows if r.ok and w0 <= r.sent_s < w1]
    started = _dt.datetime.fromtimestamp(t0, _dt.UTC).isoformat() if t0 else None
    out = Path(config.out_dir)
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(),
        **verdict.to_dict(),
        "scenario": {
            "name": spec.name,
            "description": spec.description,
            "requires": list(spec.requires),
            "overrides": config.overrides,
            "resolved": config.scenario,
        },
        "target": {
            "host": config.host,
            "model": config.model,
            "models": config.models,
            "context_window": config.context_window,
            "engine": config.engine,
        },
        "load": {
            "rate_rps": spec.load.rate_rps,
            "arrivals": spec.load.arrivals,
            "ramp_up_s": spec.load.ramp_up_s,
            "measured_s": spec.load.measured_s,
            "max_in_flight": spec.load.max_in_flight,
            "generator_processes": processes,
            "started_at": started,
            "t0_epoch_s": t0,
            "profile": data.profile.to_dict(),
        },
        "prompts": {
            "source": spec.workload.prompts.source,
            "lengths": config.prompt_counter,
            "pool": {name: _pool_stats(p) for name, p in config.pools.items()},
        },
        "environment": {"generator_machine": machine_info(), "server_on_generator_machine": _is_loopback(config.host)},
        "figures": figures,
        "timeline": timeline(data),
        "distributions": {
            "ttft_ms": _distribution([r.ttft_ms for r in win if r.ttft_ms is not None]),
            "e2e_ms": _distribution([r.e2e_ms for r in win if r.e2e_ms is not None]),
            "tpot_ms": _distribution([r.tpot_ms for r in win if r.tpot_ms is not None]),
            "itl_ms": _hist_distribution(data.itl),
        },
        "server_side": None,
        "files": {
            "results": str(out / "results.json"),
            "requests": str(out / "requests.csv"),
            "report": str(out / "report.html"),
        },
    }
    write_outputs(results, out, rows=[r.to_row() for r in data.rows])
    return results


def _pool_stats(p: dict[str, Any]) -> dict[str, Any]:
    toks = p["tokens"]
    return {
        "prompts": len(toks),
        "tokens_min": min(toks) if toks else None,
        "tokens_mean": sum(toks) / len(toks) if toks else None,
        "tokens_max": max(toks) if toks else None,
    }


def _is_loopback(host: str) -> bool:
    from urllib.parse import urlparse

    h = (urlparse(host).hostname or "").lower()
    return h in ("localhost", "::1") or h.startswith("127.")


def write_outputs(results: dict[str, Any], out: Path, rows: list[list[Any]] | None = None) -> None:
    from dsserve.loadgen.coordinator import write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    if rows is not None:
        with (out / "requests.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(RESULT_FIELDS)
            w.writerows(rows)
    (out / "report.html").write_text(render_html(results), encoding="utf-8")


# ------------------------------------------------------------------------------------------- HTML


def _ms(v: Any) -> str:
    return "–" if v is None else f"{v:,.1f}"


def _num(v: Any, fmt: str = ",.2f") -> str:
    return "–" if v is None else format(v, fmt)


def render_html(r: dict[str, Any]) -> str:
    fig = r["figures"]
    verdict = r["verdict"]
    color = {"pass": PALETTE["green"], "fail": PALETTE["red"], "invalid": PALETTE["amber"]}[verdict]
    thresholds = {(t["metric"]): t for t in r["scenario"]["resolved"]["slo"]["thresholds"]}
    eng = r["target"]["engine"]
    mach = r["environment"]["generator_machine"]
    tl = r["timeline"]
    w0 = fig["window"]["start_s"]
    bands = [Band(0, w0, "ramp (not measured)")] if w0 > 0 else []
    end = r["load"]["profile"]["end_s"]
    if tl and tl[-1]["t_s"] + 1 > end:
        bands.append(Band(end, tl[-1]["t_s"] + 1, "drain"))

    def pts(key: str) -> list[tuple[float, float | None]]:
        return [(p["t_s"], p[key]) for p in tl]

    step = (tl[1]["t_s"] - tl[0]["t_s"]) if len(tl) > 1 else 1.0
    charts = [
        line_chart(
            [
                Series("sent", pts("sent_rps"), PALETTE["blue"], step=step, width=2.5),
                Series("ok completed", pts("ok_done_rps"), PALETTE["green"], step=step),
                Series("errors", pts("error_rps"), PALETTE["red"], step=step),
                Series("overflow", pts("overflow_rps"), PALETTE["amber"], step=step),
                Series("target", pts("target_rps"), "#111827", "5 3", step=step, width=1.2),
            ],
            title="Requests per second (1 s buckets)",
            x_label="seconds since start",
            y_label="req/s",
            bands=bands,
            x_min=0,
        )
    ]
    for metric, label in (("ttft", "Time to first token"), ("e2e", "End-to-end latency")):
        t = thresholds.get(metric)
        h = [HLine(t["max_ms"], f"SLO p{t['percentile']:g} ≤ {t['max_ms']:g} ms")] if t else []
        charts.append(
            line_chart(
                [
                    Series("p50", pts(f"{metric}_p50_ms"), PALETTE["blue"], step=step),
                    Series("p99", pts(f"{metric}_p99_ms"), PALETTE["orange"], step=step),
                ],
                title=f"{label} of the requests sent in each second (ms)",
                x_label="seconds since start",
                y_label="ms",
                hlines=h,
                bands=bands,
                x_min=0,
            )
        )
    hists = []
    for key, label, metric in (
        ("ttft_ms", "TTFT", "ttft"),
        ("itl_ms", "ITL (pooled gaps)", "itl"),
        ("tpot_ms", "TPOT", "tpot"),
        ("e2e_ms", "E2E", "e2e"),
    ):
        d = r["distributions"][key]
        lat = fig["latency_ms"][metric]
        vl = []
        if lat.get("p50") is not None:
            vl.append(VLine(lat["p50"], f"p50 {lat['p50']:.1f}", PALETTE["blue"]))
        if lat.get("p99") is not None:
            vl.append(VLine(lat["p99"], f"p99 {lat['p99']:.1f}", PALETTE["orange"]))
        t = thresholds.get(metric)
        if t:
            vl.append(VLine(t["max_ms"], f"SLO {t['max_ms']:g}", PALETTE["red"]))
        hists.append(
            histogram_chart(
                d["edges"],
                d["counts"],
                title=f"{label} distribution",
                x_label="ms" + (" (log scale)" if d["log_x"] else ""),
                vlines=vl,
                log_x=d["log_x"],
            )
        )
    checks = "".join(
        f"<tr><td>{'✅' if c['passed'] else '❌'}</td><td>{escape(c['name'])}</td>"
        f"<td>{_num(c['measured'], ',.4g')}</td><td>{_num(c['limit'], ',.4g')}</td><td>{escape(c['detail'])}</td></tr>"
        for c in r["checks"]
    )
    invalid = "".join(f"<li>{escape(x)}</li>" for x in r["invalid_reasons"])
    lat_rows = "".join(
        f"<tr><th>{m.upper()}</th><td>{lat['count']:,}</td><td>{_ms(lat['mean'])}</td><td>{_ms(lat['p50'])}</td>"
        f"<td>{_ms(lat['p90'])}</td><td>{_ms(lat['p99'])}</td><td>{_ms(lat.get('p99_9'))}</td>"
        f"<td>{_ms(lat.get('max'))}</td></tr>"
        for m, lat in fig["latency_ms"].items()
    )
    lat_heads = "".join(f"<th>{h}</th>" for h in ("metric", "samples", "mean", "p50", "p90", "p99", "p99.9", "max"))
    server = _server_table(r)
    req = fig["requests"]
    rate = fig["rate"]
    errors = (
        "".join(f"<tr><td>{escape(k)}</td><td>{v:,}</td></tr>" for k, v in req["errors"].items())
        or "<tr><td colspan=2>none</td></tr>"
    )
    gen = fig["generator"]
    cpu = gen["cpu_percent"]["per_process"]
    cpu_txt = (
        ", ".join(f"#{k}: {_num(v['mean'], '.0f')}% mean / {_num(v['max'], '.0f')}% max" for k, v in cpu.items())
        or "no samples"
    )
    prompts = r["prompts"]
    lengths = prompts["lengths"]
    prompt_note = (
        f"measured with the tokenizer {escape(str(lengths['source']))}"
        if lengths["method"] == "tokenizer"
        else f"<b>estimated</b> at {lengths.get('chars_per_token')} chars/token (no tokenizer given)"
    )
    pool = "; ".join(
        f"{escape(k)}: {v['prompts']} prompts, {_num(v['tokens_min'], '.0f')}–"
        f"{_num(v['tokens_max'], '.0f')} tokens (mean {_num(v['tokens_mean'], '.0f')})"
        for k, v in prompts["pool"].items()
    )
    engine_label = escape(str(eng.get("kind")))
    if eng.get("kind") == "unknown":
        engine_label = "<b style='color:#d97706'>unknown</b>"
    loopback = (
        " The server ran on the same machine, sharing its CPUs with the generator."
        if r["environment"]["server_on_generator_machine"]
        else ""
    )
    load = r["load"]
    produced = [
        ("Engine", f"{engine_label} <span style='color:#6b7280'>({escape(str(eng.get('source')))})</span>"),
        ("Model", f"{escape(r['target']['model'])} (context window {r['target']['context_window'] or 'not set'})"),
        (
            "Load",
            f"{_num(load['rate_rps'], ',.6g')} req/s {escape(load['arrivals'])} arrivals (open loop), ramp "
            f"{load['ramp_up_s']:g} s, measured {load['measured_s']:g} s, in-flight cap "
            f"{load['max_in_flight']:,}, {load['generator_processes']} generator process(es)",
        ),
        ("Prompts", f"{escape(prompts['source'])}; lengths {prompt_note}. {pool}"),
        (
            "Generator machine",
            f"{escape(str(mach['cpu_model']))}, {mach['logical_cpus']} logical CPUs, "
            f"{mach['memory_gib']} GiB, {escape(mach['os'])}, Python {mach['python']}, "
            f"Locust {mach['locust']}, dsserve {mach['dsserve']}.{loopback}",
        ),
        ("Started", escape(str(load["started_at"]))),
    ]
    produced_rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in produced)
    thr_heads = "".join(
        f"<th>{h}</th>"
        for h in (
            "target",
            "scheduled",
            "sent (achieved)",
            "ok",
            "failed",
            "overflow",
            "unfinished",
            "error ratio",
            "output tokens/s",
        )
    )
    thr_cells = "".join(
        f"<td>{c}</td>"
        for c in (
            f"{_num(rate['target_rps'])} req/s",
            f"{rate['scheduled']:,} ({_num(rate['scheduled_rps'])}/s)",
            f"{rate['sent']:,} ({_num(rate['achieved_rps'])}/s)",
            f"{req['ok']:,}",
            f"{req['failed']:,}",
            f"{req['overflow']:,}",
            f"{req['unfinished']:,}",
            _num(req["error_ratio"], ".4%"),
            _num(fig["tokens"]["output_tokens_per_s"], ",.1f"),
        )
    )
    limits = r["scenario"]["resolved"]["generator"]
    lag = gen["pacing_lag_ms"]
    health = (
        f"Pacing lag (send time − due time) p50 {_ms(lag['p50'])} ms, p99 {_ms(lag['p99'])} ms, max "
        f"{_ms(lag['max'])} ms (limit p99 {limits['max_lag_p99_ms']:g} ms). CPU per generator process: "
        f"{cpu_txt} (limit {limits['max_cpu_percent']:g}% mean)."
    )
    title = f"dsserve load test: {escape(r['scenario']['name'])} — {verdict}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#111827;padding:0 16px}}
h1{{font-size:22px;margin:0 0 4px}}
h2{{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}}
.verdict{{background:{color};color:white;padding:14px 18px;border-radius:8px;font-size:20px;font-weight:700;
margin:12px 0}}
.verdict small{{font-weight:400;font-size:14px;display:block;margin-top:4px}}
table{{border-collapse:collapse;font-size:13px;margin:6px 0}}
td,th{{border:1px solid #e5e7eb;padding:4px 8px;text-align:right}}
th{{background:#f9fafb}} td:first-child,th:first-child{{text-align:left}} .left td{{text-align:left}}
.grid{{display:grid;grid-template-columns:1fr 1fr;gap:8px}} .meta{{color:#374151;font-size:13px;line-height:1.5}}
</style></head><body>
<h1>Load test <code>{escape(r["scenario"]["name"])}</code> against <code>{escape(r["target"]["host"])}</code></h1>
<div class="meta">{escape(r["scenario"]["description"])}</div>
<div class="verdict">{verdict.upper()}<small>{_verdict_sentence(r)}</small></div>
{f"<h2>Why the run is invalid</h2><ul>{invalid}</ul>" if invalid else ""}
<h2>What produced these figures</h2>
<table class="left">{produced_rows}</table>
<h2>SLO gate</h2>
<table><tr><th></th><th>check</th><th>measured</th><th>limit</th><th>detail</th></tr>{checks}</table>
<h2>Throughput</h2>
{charts[0]}
<table><tr>{thr_heads}</tr><tr>{thr_cells}</tr></table>
<h2>Latency over time</h2>
{charts[1]}{charts[2]}
<h2>Latency in the measured window (ms, client side)</h2>
<table><tr>{lat_heads}</tr>{lat_rows}</table>
<div class="grid">{"".join(hists)}</div>
{server}
<h2>Errors</h2><table><tr><th>kind</th><th>count</th></tr>{errors}</table>
<h2>Load generator health</h2>
<div class="meta">{health}</div>
<h2>Definitions</h2>
<div class="meta">TTFT: request sent → first SSE event carrying generated text (streamed requests).
ITL: gaps between successive text-carrying events, pooled (vLLM bench serve's ITL; Ray Serve batches stream
events, so gaps are bimodal). TPOT: (E2E − TTFT) / (output tokens − 1) per request. E2E: request sent →
<code>data: [DONE]</code> or the whole body. Tokens from the response's <code>usage</code>. Percentiles: linear
interpolation over raw samples of requests sent in the measured window (ITL: 1% log bins).
Files: {escape(r["files"]["results"])}, requests.csv, Locust's CSVs. See docs/loadtesting.md.</div>
</body></html>
"""


def _verdict_sentence(r: dict[str, Any]) -> str:
    if r["verdict"] == "invalid":
        return "The load generator could not be trusted; nothing is concluded about the server."
    failed = [c["name"] for c in r["checks"] if not c["passed"]]
    if failed:
        return "Failed: " + ", ".join(escape(x) for x in failed)
    return "Every check passed."


def _server_table(r: dict[str, Any]) -> str:
    s = r.get("server_side")
    if not s:
        return ""
    if s.get("error"):
        return f"<h2>Client vs server</h2><div class='meta'>Prometheus: {escape(s['error'])}</div>"
    fig = r["figures"]["latency_ms"]
    rows = []
    for metric, label in (("ttft", "TTFT"), ("e2e", "E2E")):
        for q in ("p50", "p90", "p99"):
            srv = s.get("quantiles", {}).get(metric, {})
            rows.append(
                f"<tr><th>{label} {q}</th><td>{_ms(fig[metric].get(q))}</td>"
                + "".join(f"<td>{_ms(srv.get(src, {}).get(q))}</td>" for src in s.get("sources", []))
                + "</tr>"
            )
    heads = "".join(f"<th>{escape(src)}</th>" for src in s.get("sources", []))
    return (
        f"<h2>Client vs server (ms)</h2><table><tr><th></th><th>client (this generator)</th>{heads}</tr>"
        f"{''.join(rows)}</table><div class='meta'>Server side: <code>histogram_quantile</code> over "
        f"<code>increase(...[{escape(str(s.get('range')))}])</code> at {escape(str(s.get('at')))} from "
        f"{escape(str(s.get('url')))}; bucket interpolation, so values between bucket edges are approximate. "
        "vLLM's TTFT excludes HTTP, SSE and the Serve proxy hop; the client's includes them.</div>"
    )
