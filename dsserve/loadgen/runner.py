"""`dsserve loadtest`, end to end: validate, ask the server, build prompts, run Locust, gate, report.

Locust runs as a subprocess (``python -m locust -f loadtest/locustfile.py --headless ...``), so
``--processes N`` (Locust forks N workers) and ``--expect-workers N`` (a master that waits for N
``locust --worker`` processes on any machine) work exactly as Locust documents them. The SLO gate runs in
the Locust master's ``quitting`` event and writes ``results.json``; this module then adds the server's own
percentiles (``--prometheus``) and the command line, and rewrites ``results.json`` and ``report.html``.

Exit status (dsserve.errors.ExitCode): 0 pass, 1 fail, 3 invalid (the generator was the bottleneck, or the
run did not complete); bad input raises a LoadtestError (exit 2, nothing was sent).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsserve.errors import ExitCode
from dsserve.loadgen.errors import LoadtestError, ScenarioError
from dsserve.loadgen.options import LoadtestOptions

__all__ = ["LoadtestOptions", "locustfile_path", "run_loadtest"]


def locustfile_path() -> Path:
    """loadtest/locustfile.py: beside the working directory if there, else in the source checkout."""
    rel = Path("loadtest/locustfile.py")
    if rel.is_file():
        return rel.resolve()
    repo = Path(__file__).resolve().parent.parent.parent / rel
    if repo.is_file():
        return repo
    raise LoadtestError("cannot find loadtest/locustfile.py; run from the dsserve checkout (or its copy of loadtest/)")


def _overrides(opts: LoadtestOptions) -> list[str]:
    sets = list(opts.sets)
    if opts.rate is not None:
        if opts.rate <= 0:
            raise ScenarioError(f"--rate {opts.rate:g}: must be above 0 requests per second")
        sets.append(f"load.rate_rps={opts.rate!r}")
    if opts.duration is not None:
        if opts.duration <= 0:
            raise ScenarioError(f"--duration {opts.duration:g}: must be above 0 seconds")
        sets.append(f"load.duration_s={opts.duration!r}")
    if opts.sharegpt:
        sets += ["workload.prompts.source=sharegpt", f"workload.prompts.path={json.dumps(opts.sharegpt)}"]
    return sets


def run_loadtest(opts: LoadtestOptions, say: Callable[[str], None] = print) -> int:
    """Run one load test; return the exit status (see the module docstring)."""
    from dsserve.loadgen.scenario import load_scenario
    from dsserve.loadgen.target import prepare_run

    if opts.processes < 1:
        raise ScenarioError(f"--processes {opts.processes}: must be 1 or more")
    if opts.processes > 1 and opts.expect_workers:
        raise ScenarioError(
            "--processes and --expect-workers exclude each other: --processes forks local "
            "workers, --expect-workers waits for `locust --worker` processes you start"
        )
    if opts.engine not in ("auto", "real", "simulated", "null"):
        raise ScenarioError(f"--engine {opts.engine}: choose real, simulated or auto (ask the server)")
    sets = _overrides(opts)
    if opts.duration is not None:
        plain = load_scenario(opts.scenario, list(opts.sets))
        if plain.load.stages:
            raise ScenarioError(
                f"--duration: scenario {plain.name} is made of rate stages; change them with "
                "--set load.stages.N.duration_s=S instead"
            )
    scenario = load_scenario(opts.scenario, sets)
    gens = max(opts.processes, opts.expect_workers, 1)
    if scenario.load.max_in_flight < gens:
        raise ScenarioError(
            f"load.max_in_flight ({scenario.load.max_in_flight}) is below the number of "
            f"generator processes ({gens}); raise it with --set load.max_in_flight=N"
        )
    out = Path(opts.out or f"loadtest-results/{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    say(
        f"scenario {scenario.name}: {scenario.load.rate_rps:g} req/s {scenario.load.arrivals}, ramp "
        f"{scenario.load.ramp_up_s:g} s, measured {scenario.load.measured_s:g} s, {gens} generator process(es)"
    )
    config = prepare_run(
        scenario,
        opts.host,
        out_dir=str(out),
        api_key_env=opts.api_key_env,
        engine=opts.engine,
        tokenizer=opts.tokenizer,
        sharegpt=opts.sharegpt,
        model=opts.model,
        overrides={"set": sets, "rate": opts.rate, "duration": opts.duration},
    )
    if "lora" in scenario.requires:
        say("note: this scenario sends LoRA adapter ids; the server lists them, so it serves adapters")
    lengths = config.prompt_counter
    say(
        f"model {config.model}; engine {config.engine['kind']} ({config.engine['source']}); prompt lengths "
        + (
            "measured with " + str(lengths["source"])
            if lengths["method"] == "tokenizer"
            else f"ESTIMATED at {lengths['chars_per_token']:g} chars/token (pass --tokenizer to measure them)"
        )
    )
    cfg_path = out / "run-config.json"
    cfg_path.write_text(json.dumps(config.to_dict()))
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile_path()),
        "ScenarioUser",
        "--headless",
        "--host",
        opts.host,
        "--dsserve-run-config",
        str(cfg_path),
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "locust.html"),
        "--only-summary",
        "--stop-timeout",
        "0",
        "--loglevel",
        "INFO",
    ]
    if opts.processes > 1:
        cmd += ["--processes", str(opts.processes)]
    if opts.expect_workers:
        cmd += [
            "--master",
            "--expect-workers",
            str(opts.expect_workers),
            "--master-bind-host",
            opts.master_bind_host,
            "--master-bind-port",
            str(opts.master_bind_port),
        ]
        say(
            f"waiting for {opts.expect_workers} worker(s): start each with\n  {sys.executable} -m locust -f "
            f"{locustfile_path()} --worker --master-host {opts.master_bind_host} --master-port "
            f"{opts.master_bind_port}"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    env["PYTHONUNBUFFERED"] = "1"
    results_path = out / "results.json"
    if results_path.exists():
        results_path.unlink()
    rc = _run_locust(cmd, env, out / "locust.log", quiet=opts.quiet, say=say, timeout_s=opts.timeout_s)
    if not results_path.is_file():
        say(f"Locust exited {rc} without results; see {out / 'locust.log'}")
        # Locust exits 2 when its plugin found bad input (locust_plugin.on_quitting); anything else
        # without results is a run that did not complete, so nothing can be concluded
        return ExitCode.BAD_INPUT if rc == ExitCode.BAD_INPUT else ExitCode.INVALID_MEASUREMENT
    results = json.loads(results_path.read_text())
    results["command"] = {"dsserve": list(opts.argv) or None, "locust": shlex.join(cmd), "locust_exit": rc}
    if opts.prometheus:
        results["server_side"] = _server_side(opts.prometheus, results, config.model, opts.prometheus_lag_s, say)
    from dsserve.loadgen.report import write_outputs

    write_outputs(results, out)
    say(
        f"{results['verdict'].upper()}: "
        + "; ".join(f"{c['name']} {'ok' if c['passed'] else 'FAILED'}" for c in results["checks"])
    )
    for reason in results["invalid_reasons"]:
        say(f"INVALID: {reason}")
    say(f"results: {results_path}  report: {out / 'report.html'}")
    return int(results["exit_code"])


def _server_side(
    url: str, results: dict[str, Any], model: str, lag_s: float, say: Callable[[str], None]
) -> dict[str, Any]:
    from dsserve.loadgen.prometheus import server_side

    t0 = results["load"]["t0_epoch_s"]
    if t0 is None:
        return {"error": "the run never started, so there is no window to query"}
    w = results["figures"]["window"]
    end = t0 + w["end_s"]
    wait = end + lag_s - time.time()
    if wait > 0:
        say(f"prometheus: waiting {wait:.0f} s for the server's metrics of the window to be scraped")
        time.sleep(wait)
    s = server_side(url, start_epoch=t0 + w["start_s"], end_epoch=end, model=model, lag_s=lag_s)
    if s.get("error"):
        say(f"prometheus: {s['error']}")
    elif s["empty"]:
        say(f"prometheus: no data for {', '.join(s['empty'])} (see results.json server_side.queries)")
    return s


def _run_locust(
    cmd: list[str],
    env: dict[str, str],
    log_path: Path,
    *,
    quiet: bool,
    say: Callable[[str], None],
    timeout_s: float | None,
) -> int:
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if not quiet and (
                    "dsserve" in line
                    or "ERROR" in line
                    or "Traceback" in line
                    or "CPU usage" in line
                    or "workers connected" in line
                ):
                    sys.stderr.write(line)

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            say(f"Locust ran past {timeout_s:g} s; stopping it")
            proc.terminate()
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        except KeyboardInterrupt:  # Locust got the same SIGINT: let it stop, gate and write its results
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        t.join(timeout=10)
    return rc
