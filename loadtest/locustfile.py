"""dsserve's Locust entry point: an open-loop, SLO-gated load test of an OpenAI-compatible LLM server.

Run it through `dsserve loadtest SCENARIO --host URL` (which prepares prompts, runs this file headless,
gates and reports), or directly:

    locust -f loadtest/locustfile.py ScenarioUser --headless --host http://127.0.0.1:8000 \\
        --dsserve-scenario smoke --dsserve-tokenizer tiny:tiny-deepseek-v2

Everything below is declarative; the machinery is in dsserve.loadgen (docs/loadtesting.md):

- ScenarioUser: one in-flight slot. Its wait_time is the arrival schedule, so the rate does not depend on
  response times; the scenario's request mix (chat or completions, streamed or not, token lengths) is
  sampled per arrival. TTFT, ITL, TPOT and token counts become extra METRIC rows that do not inflate the
  Aggregated row.
- ScenarioLoad: holds the in-flight slots while the scenario runs, then ends the test.
- events.quitting runs the SLO gate and sets the exit code: 0 pass, 1 fail, 3 invalid (generator saturated).
"""

from locust import events, run_single_user

from dsserve.loadgen import locust_plugin as dsserve_loadtest
from dsserve.loadgen.users import OpenLoopUser


class ScenarioUser(OpenLoopUser):
    """Sends each arrival the scenario's pacer hands it (see dsserve.loadgen.users.OpenLoopUser)."""


class ScenarioLoad(dsserve_loadtest.ScenarioShape):
    """max_in_flight users for as long as the schedule and its drain last."""


events.init_command_line_parser.add_listener(dsserve_loadtest.add_arguments)
events.init.add_listener(dsserve_loadtest.on_init)
events.test_start.add_listener(dsserve_loadtest.on_test_start)
events.quitting.add_listener(dsserve_loadtest.on_quitting)  # the SLO gate: results.json + exit code


if __name__ == "__main__":
    # Debug one user against a server: python loadtest/locustfile.py --host URL --dsserve-scenario smoke
    run_single_user(ScenarioUser)
