"""Locust event listeners and the load shape that run a dsserve scenario (wired up by loadtest/locustfile.py).

Command-line options (added to Locust's own, and forwarded by Locust from master to workers):

- ``--dsserve-run-config FILE``: the run config `dsserve loadtest` prepared (scenario, prompts, models).
- ``--dsserve-scenario NAME|PATH``, ``--dsserve-set PATH=VALUE[,PATH=VALUE...]``, ``--dsserve-tokenizer``,
  ``--dsserve-api-key-env``, ``--dsserve-engine``, ``--dsserve-out``: prepare one here instead, for a bare
  ``locust -f loadtest/locustfile.py --headless --host URL --dsserve-scenario smoke``.

The SLO gate runs in ``events.quitting`` on the master (or the single process): it writes
``results.json``, ``requests.csv`` and ``report.html`` to the output directory and sets
``environment.process_exit_code`` (0 pass, 1 fail, 3 invalid).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from locust import LoadTestShape

from dsserve.loadgen.coordinator import (
    MSG_DONE,
    MSG_GO,
    MSG_PLAN,
    MSG_READY,
    MSG_RESULTS,
    Controller,
    attach,
    controller_of,
)
from dsserve.loadgen.errors import LoadtestError
from dsserve.loadgen.target import RunConfig

__all__ = ["ScenarioShape", "add_arguments", "on_init", "on_quitting", "on_test_start"]

log = logging.getLogger("dsserve.loadgen")


def add_arguments(parser: Any) -> None:
    g = parser.add_argument_group("dsserve", "dsserve load-test scenario (see docs/loadtesting.md)")
    g.add_argument("--dsserve-run-config", default="", help="run config JSON written by `dsserve loadtest`")
    g.add_argument("--dsserve-scenario", default="", help="scenario name or YAML path (without a run config)")
    g.add_argument("--dsserve-set", default="", help="scenario overrides PATH=VALUE, comma-separated")
    g.add_argument("--dsserve-tokenizer", default="", help="tokenizer.json, model dir or tiny:<name>")
    g.add_argument("--dsserve-api-key-env", default="", help="env var holding the API key")
    g.add_argument("--dsserve-engine", default="auto", help="real, simulated or auto (ask the server)")
    g.add_argument("--dsserve-out", default="", help="results directory (default loadtest-results/<name>-<time>)")


def _load_config(environment: Any) -> RunConfig | None:
    import json

    opts = environment.parsed_options
    path = getattr(opts, "dsserve_run_config", "") if opts else ""
    if path:
        return RunConfig.from_dict(json.loads(Path(path).read_text()))
    name = getattr(opts, "dsserve_scenario", "") if opts else ""
    if not name:
        return None
    from dsserve.loadgen.scenario import load_scenario
    from dsserve.loadgen.target import prepare_run

    sets = [s for s in (opts.dsserve_set or "").split(",") if s.strip()]
    scenario = load_scenario(name, sets)
    out = opts.dsserve_out or f"loadtest-results/{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not environment.host:
        raise LoadtestError("--host is required: the base URL of the OpenAI server, e.g. http://127.0.0.1:8000")
    return prepare_run(
        scenario,
        environment.host,
        out_dir=out,
        api_key_env=opts.dsserve_api_key_env or None,
        engine=opts.dsserve_engine or "auto",
        tokenizer=opts.dsserve_tokenizer or None,
        overrides={"set": sets},
    )


def on_init(environment: Any, runner: Any = None, **_kw: Any) -> None:
    """Decide this process's role, load the run config (not on workers) and register messages."""
    from locust.runners import MasterRunner, WorkerRunner

    if isinstance(runner, WorkerRunner):
        ctl = Controller(environment, "worker", None)
        runner.register_message(MSG_PLAN, lambda environment, msg, **kw: ctl.on_plan(msg.data))
        runner.register_message(MSG_GO, lambda environment, msg, **kw: ctl.on_go(msg.data))
        attach(environment, ctl)
        return
    role = "master" if isinstance(runner, MasterRunner) else ("debug" if runner is None else "local")
    try:
        config = _load_config(environment)
        if config is None:
            raise LoadtestError("no scenario given: pass --dsserve-scenario NAME (or run `dsserve loadtest`)")
    except LoadtestError as exc:
        # bad input: the shape ends the test at its first tick (so forked workers are told to quit at
        # once) and on_quitting exits 2, as `dsserve loadtest` does
        log.error("%s: %s", type(exc).__name__, exc)
        bad = Controller(environment, role, None)
        bad.bad_input = f"{type(exc).__name__}: {exc}"
        bad.bad_input_exit = int(exc.exit_code)
        attach(environment, bad)
        if role == "debug":
            raise SystemExit(bad.bad_input_exit) from None
        return
    ctl = Controller(environment, role, config)
    attach(environment, ctl)
    environment.events.spawning_complete.add_listener(lambda **kw: ctl.on_spawning_complete())
    if role == "master":
        runner.register_message(MSG_READY, lambda environment, msg, **kw: ctl.on_ready(msg.data))
        runner.register_message(MSG_RESULTS, lambda environment, msg, **kw: ctl.deliver(MSG_RESULTS, msg.data))
        runner.register_message(MSG_DONE, lambda environment, msg, **kw: ctl.deliver(MSG_DONE, msg.data))
    spec = config.spec
    log.info(
        "dsserve: scenario %s against %s (model %s): %.6g req/s %s, ramp %gs, measured %gs, in-flight cap %d",
        spec.name,
        config.host,
        config.model,
        spec.load.rate_rps,
        spec.load.arrivals,
        spec.load.ramp_up_s,
        spec.load.measured_s,
        spec.load.max_in_flight,
    )


def on_test_start(environment: Any, **_kw: Any) -> None:
    ctl = controller_of(environment)
    if ctl is not None and ctl.role != "worker":
        ctl.on_test_start()


def on_quitting(environment: Any, **_kw: Any) -> None:
    """The SLO gate: results, report and the process exit code (0 pass, 1 fail, 3 invalid; 2 bad input)."""
    ctl = controller_of(environment)
    if ctl is not None and ctl.bad_input:
        environment.process_exit_code = ctl.bad_input_exit
        return
    if ctl is None or ctl.role not in ("master", "local") or ctl.config is None or ctl.results is not None:
        return
    from dsserve.loadgen.report import finalize

    problems = []
    if ctl.aborted:
        problems.append(ctl.aborted)
    elif not ctl.finished:
        problems.append("the run was stopped before every generator process finished its schedule")
    ctl.results = finalize(
        ctl.config,
        ctl.collector,
        problems=problems,
        t0=ctl.go_at,
        processes=ctl.collector.share_count if ctl.collector else 0,
    )
    environment.process_exit_code = ctl.results["exit_code"]
    for line in _verdict_lines(ctl.results):
        log.info("%s", line)


def _verdict_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        f"dsserve SLO gate: {results['verdict'].upper()} ({results['scenario']['name']}); "
        f"results in {results['files']['results']}"
    ]
    for c in results["checks"]:
        lines.append(f"  {'ok  ' if c['passed'] else 'FAIL'} {c['name']}: {c['detail']}")
    for r in results["invalid_reasons"]:
        lines.append(f"  INVALID: {r}")
    return lines


class ScenarioShape(LoadTestShape):
    """Holds the in-flight slots (users) for as long as the scenario runs, then ends the test.

    Users are slots, not load: the pacer decides the arrival rate. The shape spawns ``max_in_flight``
    users (at once), keeps them until every generator process has drained its schedule, and returns None
    to stop the test.
    """

    abstract = True

    def tick(self) -> tuple[int, float] | None:
        ctl = controller_of(self.runner.environment) if self.runner is not None else None
        if ctl is None:
            return None
        return ctl.shape_tick()
