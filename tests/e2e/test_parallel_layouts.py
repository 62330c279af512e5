"""Tensor and expert parallelism for real on CPU: two vLLM ranks under Ray Serve, proven from the running system."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.e2e.conftest import RunningStack, StackManager, assert_clean_shutdown, prompt_logprobs

pytestmark = pytest.mark.e2e


def _engine_log(stack: RunningStack) -> str:
    """Everything the replica and its vLLM ranks logged in this Ray session."""
    return "\n".join(p.read_text(errors="replace") for p in stack.log_dir().glob("*") if p.is_file())


@pytest.mark.profile("local-cpu-tp2-ep")
class TestTensorPlusExpertParallel:
    def test_two_ranks_each_hold_half_the_experts(self, stack: RunningStack, client: httpx.Client) -> None:
        assert client.get("/v1/models").status_code == 200
        log = _engine_log(stack)
        # vLLM itself (rank 0 logs it): EP is on and a rank holds 4 of the 8 routed experts
        assert re.search(r"\[EP Rank 0/2\] Expert parallelism is enabled.*Local/global number of experts: 4/8", log)
        # each rank's MoE kernel, at its first forward pass, reports the experts it actually computes
        held = dict(
            re.findall(
                r"dsserve EP: TP rank (\d) computes 4/8 routed experts locally, "
                r"global ids (\[[\d, ]+\])",
                log,
            )
        )
        assert held == {"0": "[0, 1, 2, 3]", "1": "[4, 5, 6, 7]"}, held
        assert re.search(r"Worker_TP1", log), "expected a second tensor-parallel worker process"

    def test_v1_models_reports_the_live_layout(self, client: httpx.Client) -> None:
        """GET /v1/models says what runs: read from the replica's own config and Serve's replica states."""
        card = next(c for c in client.get("/v1/models").json()["data"] if c["id"] == "tiny-deepseek-v2")
        live = card["metadata"]["dsserve"]
        assert live.get("source", "").startswith("live"), live
        assert (
            live["engine"],
            live["tensor_parallel_size"],
            live["pipeline_parallel_size"],
            live["data_parallel_size"],
            live["expert_parallel"],
        ) == ("vllm", 2, 1, 1, True)
        assert live["replicas_running"] == 1

    def test_same_model_as_the_single_rank_layout(self, client: httpx.Client, stacks: StackManager) -> None:
        """Same prompt log-probabilities as TP1, within bf16 noise (measured 0.016 max offline).

        This shows the two ranks compute the same model; that EP itself is right is shown on the kernel in
        tests/unit/test_vllm_plugin.py, since this random model's experts barely move its logits.
        """
        got = prompt_logprobs(client, "tiny-deepseek-v2")
        reference = stacks.prompt_logprobs.get("local-cpu")
        if reference is None:
            pytest.skip("the local-cpu reference was not recorded in this run (run the whole e2e suite)")
        assert [len(x) for x in got] == [len(x) for x in reference]
        worst = max(abs(a - b) for g, r in zip(got, reference, strict=True) for a, b in zip(g, r, strict=True))
        assert worst < 0.1, f"TP2+EP prompt log-probabilities differ from TP1 by up to {worst:.3f}"

    @pytest.mark.shutdown
    def test_ctrl_c_stops_both_ranks(self, stack: RunningStack) -> None:
        assert_clean_shutdown(stack)


@pytest.mark.profile("local-cpu-tp2")
class TestDenseTensorParallel:
    def test_two_ranks_serve(self, stack: RunningStack, client: httpx.Client) -> None:
        got = prompt_logprobs(client, "tiny-deepseek-llm")
        assert all(got)
        log = _engine_log(stack)
        assert re.search(r"world_size=2 rank=1", log), "expected vLLM to start a second TP rank"

    @pytest.mark.shutdown
    def test_ctrl_c_stops_both_ranks(self, stack: RunningStack) -> None:
        assert_clean_shutdown(stack)
