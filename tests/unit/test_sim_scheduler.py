"""The simulated engine's scheduler follows vLLM v1's rules: budget, max_num_seqs, chunked prefill, KV, preemption."""

from __future__ import annotations

import pytest

from dsserve.sim.scheduler import Scheduler, SimRequest


def _sched(**kw: int) -> Scheduler:
    args = {"max_num_seqs": 8, "max_num_batched_tokens": 64, "kv_blocks": 1000, "block_tokens": 16}
    args.update(kw)
    return Scheduler(**args)


def _run(s: Scheduler, steps: int, t0: float = 0.0, dt: float = 0.01) -> float:
    t = t0
    for _ in range(steps):
        step = s.schedule(t)
        if step is None:
            break
        t += dt
        s.complete(step, t)
    return t


def test_a_short_prompt_prefills_in_one_step_then_decodes_one_token_per_step() -> None:
    s = _sched()
    r = SimRequest("a", prompt_tokens=10, max_tokens=3, arrival=0.0)
    s.add(r)
    step = s.schedule(0.0)
    assert step is not None and step.prefill_tokens == 10 and step.decodes == 0
    s.complete(step, 0.01)
    assert (r.output_tokens, r.first_token) == (1, 0.01)
    step = s.schedule(0.01)
    assert step is not None and (step.decodes, step.prefill_tokens) == (1, 0)
    assert step.decode_context == 10  # prompt in cache; the sampled token is computed in this step
    _run(s, 5, 0.01)
    assert r.finished and r.finished_reason == "length" and r.output_tokens == 3
    assert r.token_gaps == pytest.approx([0.01, 0.01])
    assert s.free_blocks == s.kv_blocks and not s.has_work()


def test_chunked_prefill_splits_a_long_prompt_over_the_token_budget() -> None:
    s = _sched(max_num_batched_tokens=64)
    r = SimRequest("long", prompt_tokens=150, max_tokens=1, arrival=0.0)
    s.add(r)
    chunks = []
    t = 0.0
    while not r.finished:
        step = s.schedule(t)
        assert step is not None
        chunks.append(step.prefill_tokens)
        t += 0.01
        s.complete(step, t)
    assert chunks == [64, 64, 22]
    assert r.first_token == pytest.approx(0.03) and r.prefill_computed == 150


def test_without_chunked_prefill_a_prompt_over_the_budget_never_runs() -> None:
    s = _sched(max_num_batched_tokens=64)
    s.chunked_prefill = False
    s.add(SimRequest("big", prompt_tokens=100, max_tokens=1, arrival=0.0))
    assert s.schedule(0.0) is None


def test_decodes_are_scheduled_before_new_prefills_and_share_the_budget() -> None:
    s = _sched(max_num_batched_tokens=32)
    a = SimRequest("a", prompt_tokens=8, max_tokens=10, arrival=0.0)
    s.add(a)
    _run(s, 1)  # a prefilled, now decoding
    b = SimRequest("b", prompt_tokens=100, max_tokens=1, arrival=0.01)
    s.add(b)
    step = s.schedule(0.01)
    assert step is not None
    assert [(req.request_id, n) for req, n in step.work] == [("a", 1), ("b", 31)]
    assert (step.decodes, step.prefill_tokens) == (1, 31)


def test_max_num_seqs_caps_the_running_batch_and_the_rest_wait_in_order() -> None:
    s = _sched(max_num_seqs=2)
    reqs = [SimRequest(str(i), prompt_tokens=4, max_tokens=2, arrival=0.0) for i in range(3)]
    for r in reqs:
        s.add(r)
    step = s.schedule(0.0)
    assert step is not None and [r.request_id for r, _ in step.work] == ["0", "1"]
    assert list(s.waiting) == [reqs[2]]
    _run(s, 10)
    assert all(r.finished for r in reqs)
    assert reqs[2].first_scheduled is not None and reqs[2].first_scheduled > 0  # it queued


def test_a_full_kv_cache_preempts_the_newest_request_which_recomputes_later() -> None:
    # 4 blocks of 4 tokens = 16 tokens of KV for two requests that grow to 12 tokens each.
    s = _sched(kv_blocks=4, block_tokens=4, max_num_batched_tokens=64)
    old = SimRequest("old", prompt_tokens=4, max_tokens=8, arrival=0.0)
    new = SimRequest("new", prompt_tokens=4, max_tokens=8, arrival=0.0)
    s.add(old)
    s.add(new)
    _run(s, 40)
    assert old.finished and new.finished
    assert old.preemptions == 0 and new.preemptions >= 1
    assert new.prefill_computed > new.prompt_tokens  # recomputed after preemption
    assert s.total_preemptions == new.preemptions
    assert s.free_blocks == 4


def test_finishing_a_request_early_frees_its_kv_blocks_at_once() -> None:
    s = _sched()
    r = SimRequest("x", prompt_tokens=40, max_tokens=100, arrival=0.0)
    s.add(r)
    _run(s, 3)
    assert s.free_blocks < s.kv_blocks and s.kv_usage > 0
    s.finish(r, "abort", 1.0)
    assert s.free_blocks == s.kv_blocks and r.finished_reason == "abort" and not s.has_work()
    s.finish(r, "abort", 2.0)  # idempotent
    assert r.finished_at == 1.0


def test_a_request_aborted_mid_step_gets_no_token_from_that_step() -> None:
    s = _sched()
    r = SimRequest("x", prompt_tokens=4, max_tokens=5, arrival=0.0)
    s.add(r)
    step = s.schedule(0.0)
    assert step is not None
    s.finish(r, "abort", 0.005)
    result = s.complete(step, 0.01)
    assert result.emitted == () and r.output_tokens == 0


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError):
        Scheduler(max_num_seqs=0, max_num_batched_tokens=1, kv_blocks=1, block_tokens=1)


# -- MTP speculative decoding -------------------------------------------------------------------------


def _mtp(k: int, a: float, **kw: int) -> Scheduler:
    args = {"max_num_seqs": 8, "max_num_batched_tokens": 64, "kv_blocks": 1000, "block_tokens": 16}
    args.update(kw)
    return Scheduler(**args, speculative_tokens=k, acceptance=a, seed=7)


def test_mtp_decodes_verify_their_drafts_in_the_budget_and_gain_what_is_accepted() -> None:
    s = _mtp(2, 0.0)  # every draft rejected: one token a step, but three tokens of work
    r = SimRequest("a", prompt_tokens=10, max_tokens=5, arrival=0.0)
    s.add(r)
    s.complete(s.schedule(0.0), 0.01)  # the prefill samples one token, no drafts yet
    step = s.schedule(0.01)
    assert step is not None and step.decodes == 1 and step.tokens == 3  # its token and two drafts
    res = s.complete(step, 0.02)
    assert res.gained == (1,) and res.spec is not None
    assert (res.spec.num_drafts, res.spec.num_draft_tokens, res.spec.num_accepted_tokens) == (1, 2, 0)
    assert r.output_tokens == 2 and r.num_computed == r.num_tokens - 1  # rejected drafts' KV is not kept


def test_mtp_gains_one_plus_the_accepted_drafts_on_average() -> None:
    """With acceptance a and k drafts a step yields 1 + a + ... + a^k tokens (what the planner assumes)."""
    s = _mtp(1, 0.85, max_num_seqs=64, max_num_batched_tokens=4096)
    reqs = [SimRequest(str(i), prompt_tokens=8, max_tokens=400, arrival=0.0) for i in range(32)]
    for r in reqs:
        s.add(r)
    s.complete(s.schedule(0.0), 0.01)
    gains, drafts, accepted, t = [], 0, 0, 0.01
    for _ in range(100):
        step = s.schedule(t)
        t += 0.01
        res = s.complete(step, t)
        gains += list(res.gained)
        drafts += res.spec.num_draft_tokens
        accepted += res.spec.num_accepted_tokens
    assert sum(gains) / len(gains) == pytest.approx(1.85, abs=0.03)
    assert accepted / drafts == pytest.approx(0.85, abs=0.03)


def test_mtp_never_runs_past_max_tokens_and_counts_per_position() -> None:
    s = _mtp(3, 0.99)
    r = SimRequest("a", prompt_tokens=4, max_tokens=6, arrival=0.0)
    s.add(r)
    results = []
    t = 0.0
    while not r.finished:
        step = s.schedule(t)
        t += 0.01
        results.append(s.complete(step, t))
    assert r.output_tokens == 6 and r.finished_reason == "length"
    # 1 from the prefill, then 1 + 3 accepted, then the last one with no room for drafts
    assert [res.gained for res in results] == [(1,), (4,), (1,)]
    assert results[1].spec is not None and results[1].spec.accepted_per_pos == (1, 1, 1)
    assert results[2].spec is not None and results[2].spec.num_drafts == 0


def test_mtp_draws_are_reproducible() -> None:
    def gains() -> list[tuple[int, ...]]:
        s = _mtp(2, 0.6)
        s.add(SimRequest("a", prompt_tokens=4, max_tokens=50, arrival=0.0))
        out, t = [], 0.0
        while s.has_work():
            t += 0.01
            out.append(s.complete(s.schedule(t), t).gained)
        return out

    assert gains() == gains()


def test_the_sims_spec_decode_metric_names_are_vllms() -> None:
    """The series the simulated engine exports under MTP are the ones vLLM's SpecDecodingProm registers
    (read from the installed vLLM's source, so an upstream rename fails here)."""
    import re
    from pathlib import Path

    import vllm.v1.spec_decode.metrics as upstream

    import dsserve.sim.metrics as ours

    def names(path: str) -> set[str]:
        return set(re.findall(r'"(vllm:spec_decode_[a-z_]+)"', Path(path).read_text()))

    theirs = names(upstream.__file__)
    assert theirs >= {"vllm:spec_decode_num_drafts", "vllm:spec_decode_num_accepted_tokens_per_pos"}, theirs
    assert names(ours.__file__) == theirs
    assert '["position"]' in Path(ours.__file__).read_text()  # the per-position counter's extra label, as vLLM's
