"""dsserve's LLM load generator: open-loop Locust users, scenarios, the SLO gate and the report.

`dsserve loadtest SCENARIO --host URL` is the command; ``loadtest/locustfile.py`` is the Locust entry
point; docs/loadtesting.md explains the figures. Modules:

- :mod:`~dsserve.loadgen.scenario`: the scenario YAML (pydantic, strict) and its error messages.
- :mod:`~dsserve.loadgen.pacing`: rate profiles and open-loop arrival schedules, split across processes.
- :mod:`~dsserve.loadgen.prompts`: prompts of measured token lengths (tokenizer, estimate, ShareGPT).
- :mod:`~dsserve.loadgen.measure`: SSE parsing and the per-request metric math (TTFT, ITL, TPOT, E2E).
- :mod:`~dsserve.loadgen.tools`: built-in tool sets; the check that tool calls and JSON answers are
  well-formed (``malformed_tool_call``, ``malformed_json`` errors).
- :mod:`~dsserve.loadgen.target`: asks the server (models, context window, engine kind); the run config.
- :mod:`~dsserve.loadgen.users`: the Locust users (``FastHttpUser``), extra METRIC rows.
- :mod:`~dsserve.loadgen.coordinator`: per-process pacing, master/worker coordination, result collection.
- :mod:`~dsserve.loadgen.locust_plugin`: the Locust listeners and load shape loadtest/locustfile.py wires up.
- :mod:`~dsserve.loadgen.gate`: figures and verdict (pass / fail / invalid).
- :mod:`~dsserve.loadgen.report`: results.json, requests.csv, report.html (inline SVG from
  :mod:`~dsserve.loadgen.svg`).
- :mod:`~dsserve.loadgen.prometheus`: the server's own percentiles for the same window.
- :mod:`~dsserve.loadgen.runner`: what `dsserve loadtest` does, end to end.
- :mod:`~dsserve.loadgen.null_server`: an instant OpenAI-shaped server to measure the generator itself.

Errors derive from :class:`~dsserve.loadgen.errors.LoadtestError` (a ``DsserveError``). Importing this
package imports neither Locust nor gevent; the modules that need them do.
"""

from dsserve.loadgen.errors import LoadtestError, ScenarioError, TargetError
from dsserve.loadgen.gate import EXIT_CODES, compute_figures, evaluate
from dsserve.loadgen.pacing import RateProfile, arrival_times
from dsserve.loadgen.scenario import Scenario, load_scenario, parse_scenario, shipped_scenarios

__all__ = [
    "EXIT_CODES",
    "LoadtestError",
    "RateProfile",
    "Scenario",
    "ScenarioError",
    "TargetError",
    "arrival_times",
    "compute_figures",
    "evaluate",
    "load_scenario",
    "parse_scenario",
    "shipped_scenarios",
]
