"""What `dsserve up` says when a deployment fails: the replica's own exception, from Serve's status message."""

from __future__ import annotations

from dsserve.stack import last_exception_line

# The shape of Serve's DeploymentStatusInfo.message for a replica whose constructor raised (trimmed).
SERVE_MESSAGE = """The deployment failed to start 3 times in a row. This may be due to a problem with its \
constructor or initial health check failing. See controller logs for details. Error:
ray::ServeReplica:local-cpu:LLMServer:tiny-deepseek-v2.initialize_and_get_metadata() (pid=27598, ip=192.0.2.2)
  File "/x/ray/serve/_private/replica.py", line 1, in initialize_and_get_metadata
    raise RuntimeError(
RuntimeError: DeepSeek-V3 Tool parser could not locate tool call start/end tokens in the tokenizer!

During handling of the above exception, another exception occurred:

  File "/x/vllm/entrypoints/openai/api_server.py", line 2, in validate
    raise TypeError(
TypeError: --tool-call-parser deepseek_v3 cannot be used with the tokenizer of '/m': no tool tokens!
"""


def test_the_last_exception_of_the_traceback_is_the_cause() -> None:
    assert last_exception_line(SERVE_MESSAGE) == (
        "TypeError: --tool-call-parser deepseek_v3 cannot be used with the tokenizer of '/m': no tool tokens!"
    )
    assert last_exception_line("Deploying: 1 replica starting") is None
    assert last_exception_line("vllm.v1.engine.exceptions.EngineDeadError: x" + "y" * 2000).endswith("y" * 10)
    assert len(last_exception_line("ValueError: " + "z" * 5000) or "") < 600
