"""The load generator's arithmetic, checked against hand-computed cases: SSE parsing, per-request
TTFT/ITL/TPOT/E2E, percentiles, the ITL histogram, rate profiles and their split, and the SLO gate."""

from __future__ import annotations

import math

import pytest

from dsserve.loadgen.gate import EXIT_CODES, RunData, compute_figures, evaluate, timeline
from dsserve.loadgen.measure import LogHistogram, RequestResult, SSEParser, StreamState, percentile, summarize, tpot_ms
from dsserve.loadgen.pacing import RateProfile, Segment, arrival_times
from dsserve.loadgen.scenario import GeneratorSpec, LoadSpec, SloGate, Threshold

# ------------------------------------------------------------------------------------------------ SSE


def test_sse_parser_handles_any_split() -> None:
    stream = (
        'data: {"a": 1}\n\n: keep-alive comment\n\nevent: x\ndata: first\r\ndata: second\r\n\r\n'
        "data:no-space\n\ndata: caf\u00e9\n\ndata: [DONE]\n\n"
    ).encode()
    expected = ['{"a": 1}', "first\nsecond", "no-space", "caf\u00e9", "[DONE]"]
    for step in (1, 2, 3, 7, len(stream)):  # every split point, including inside the two-byte "é"
        p = SSEParser()
        got = []
        for i in range(0, len(stream), step):
            got += p.feed(stream[i : i + step])
        got += p.flush()
        assert got == expected, step


def test_sse_parser_flushes_an_unterminated_event() -> None:
    p = SSEParser()
    assert p.feed(b"data: [DONE]") == []
    assert p.flush() == ["[DONE]"]


def _chunk(content: str | None = None, *, role: bool = False, finish: str | None = None) -> str:
    import json

    delta = {"role": "assistant", "content": ""} if role else {"content": content}
    return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def test_stream_timings_by_hand() -> None:
    # sent at t=10.000 s; role chunk (no text) at 10.100; text at 10.200, 10.250, 10.400; usage; [DONE] at 10.450
    st = StreamState(t_send=10.0)
    st.on_event(_chunk(role=True), 10.1)
    st.on_event(_chunk("a"), 10.2)
    st.on_event(_chunk("b"), 10.25)
    st.on_event(_chunk("c", finish="length"), 10.4)
    st.on_event('{"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}', 10.41)
    st.on_event("[DONE]", 10.45)
    ttft = (st.first_token_at - st.t_send) * 1000
    e2e = (st.done_at - st.t_send) * 1000
    assert ttft == pytest.approx(200.0)  # the role-only chunk is not a token
    assert st.itl_ms == pytest.approx([50.0, 150.0])
    assert e2e == pytest.approx(450.0)
    assert tpot_ms(e2e, ttft, st.usage["completion_tokens"]) == pytest.approx(125.0)  # (450-200)/(3-1)
    assert st.finish_reason == "length" and st.error is None


def test_stream_completions_text_and_errors() -> None:
    st = StreamState(t_send=0.0)
    st.on_event('{"choices": [{"index": 0, "text": "x"}]}', 0.05)
    st.on_event('{"error": {"message": "engine died", "code": 500}}', 0.06)
    st.on_event("not json", 0.07)
    assert st.first_token_at == 0.05
    assert st.error == "error event: engine died"  # the first problem wins


def test_tpot_needs_two_tokens() -> None:
    assert tpot_ms(300.0, 100.0, 1) is None
    assert tpot_ms(300.0, 100.0, 2) == 200.0


# -------------------------------------------------------------------------------------- percentiles


def test_percentile_linear_interpolation_by_hand() -> None:
    xs = [40.0, 10.0, 30.0, 20.0]
    assert percentile(xs, 50) == 25.0  # between 20 and 30
    assert percentile(xs, 99) == pytest.approx(39.7)  # 30 + 0.97 * 10
    assert percentile(xs, 0) == 10.0 and percentile(xs, 100) == 40.0
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) is None


def test_summarize_by_hand() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0, None])
    assert s["count"] == 4 and s["mean"] == 2.5 and s["min"] == 1.0 and s["max"] == 4.0
    assert s["p50"] == 2.5 and s["p99"] == pytest.approx(3.97)
    assert summarize([])["p99"] is None


def test_log_histogram_percentiles_within_its_resolution() -> None:
    h = LogHistogram()
    values = [i * 0.37 for i in range(1, 10001)]
    for v in values:
        h.add(v)
    assert h.total == 10000
    for q in (50, 90, 99, 99.9):
        exact = sorted(values)[math.ceil(q / 100 * 10000) - 1]
        assert h.percentile(q) == pytest.approx(exact, rel=0.006), q
    other = LogHistogram()
    other.add(1e9)
    h.merge(other.to_dict() and {int(k): v for k, v in other.to_dict().items()})
    assert h.total == 10001 and h.percentile(100) == pytest.approx(1e9, rel=0.006)
    h.add(0.0)  # below the floor: bin 0
    assert h.counts[0] == 1


# ------------------------------------------------------------------------------------ rate profiles


def _load(**kw) -> LoadSpec:
    return LoadSpec.model_validate({"rate_rps": 100.0, "duration_s": 20.0, **kw})


def test_ramp_profile_by_hand() -> None:
    p = RateProfile.from_load(_load(ramp_up_s=10.0))  # 0 -> 100 req/s over 10 s, then 20 s at 100
    assert p.window == (10.0, 30.0) and p.end_s == 30.0
    assert p.cumulative(10.0) == pytest.approx(500.0)  # area of the ramp triangle
    assert p.cumulative(5.0) == pytest.approx(125.0)  # 0.5 * 10/s^2 * 5^2
    assert p.total == pytest.approx(2500.0)
    assert p.inverse(125.0) == pytest.approx(5.0)
    assert p.inverse(1500.0) == pytest.approx(20.0)
    assert p.rate_at(5.0) == pytest.approx(50.0) and p.rate_at(30.0) == 0.0
    for u in (0.3, 17.0, 499.9, 500.1, 2499.0):
        assert p.cumulative(p.inverse(u)) == pytest.approx(u)


def test_burst_stages_by_hand() -> None:
    p = RateProfile.from_load(
        _load(
            duration_s=None, stages=[{"duration_s": 10, "rate_multiplier": 1}, {"duration_s": 5, "rate_multiplier": 2}]
        )
    )
    assert [s.phase for s in p.segments] == ["stage-1", "stage-2"]
    assert p.expected(0, 10) == pytest.approx(1000) and p.expected(10, 15) == pytest.approx(1000)
    assert p.rate_at(12.0) == 200.0


@pytest.mark.parametrize("n", [1, 2, 3])
def test_constant_arrivals_split_into_the_one_schedule(n: int) -> None:
    p = RateProfile([Segment(0.0, 10.0, 50.0, 50.0, "steady")])
    whole = list(arrival_times(p, "constant"))
    assert len(whole) == 500
    assert whole[:3] == pytest.approx([0.01, 0.03, 0.05])  # (k + 1/2) / rate
    shares = [list(arrival_times(p, "constant", share_index=j, share_count=n)) for j in range(n)]
    assert sorted(t for s in shares for t in s) == pytest.approx(whole)  # split, never multiplied
    assert max(len(s) for s in shares) - min(len(s) for s in shares) <= 1


def test_poisson_arrivals_split_keeps_the_total_rate() -> None:
    p = RateProfile([Segment(0.0, 100.0, 40.0, 40.0, "steady")])  # 4000 expected
    one = list(arrival_times(p, "poisson", seed=7))
    two = [t for j in range(2) for t in arrival_times(p, "poisson", share_index=j, share_count=2, seed=7)]
    for xs in (one, two):
        assert abs(len(xs) - 4000) < 5 * math.sqrt(4000)  # not 8000: the shares add up to the target
    gaps = [b - a for a, b in zip(one, one[1:], strict=False)]
    mean = sum(gaps) / len(gaps)
    cv = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean
    assert mean == pytest.approx(1 / 40, rel=0.05) and cv == pytest.approx(1.0, abs=0.1)  # exponential gaps
    assert list(arrival_times(p, "poisson", seed=7)) == one  # reproducible
    with pytest.raises(ValueError):
        next(arrival_times(p, "poisson", share_index=2, share_count=2))


# ------------------------------------------------------------------------------------------- gate


def _row(
    sent_s: float,
    *,
    ttft: float | None = 10.0,
    e2e: float = 100.0,
    error: str | None = None,
    share: int = 0,
    sched_s: float | None = None,
) -> RequestResult:
    return RequestResult(
        cls="c",
        share=share,
        sched_s=sent_s if sched_s is None else sched_s,
        sent_s=sent_s,
        status=200 if error is None else 500,
        error=error,
        ttft_ms=ttft,
        e2e_ms=e2e,
        tpot_ms=5.0,
        output_tokens=8,
        prompt_tokens=20,
        prompt_tokens_client=18,
        max_tokens=8,
    )


def _data(rows: list[RequestResult], **kw) -> RunData:
    profile = RateProfile([Segment(0.0, 2.0, 0.0, 10.0, "ramp"), Segment(2.0, 12.0, 10.0, 10.0, "steady")])
    base = dict(
        profile=profile,
        arrivals="constant",
        share_count=1,
        rows=rows,
        scheduled={0: {"window": 100, "total": 110}},
        cpu={0: [(5.0, 20.0, 30.0), (6.0, 30.0, 40.0)]},
    )
    base.update(kw)
    return RunData(**base)


SLO = SloGate(
    thresholds=[
        Threshold(metric="ttft", percentile=99, max_ms=96.5),
        Threshold(metric="e2e", percentile=50, max_ms=100.0),
    ],
    max_error_ratio=0.05,
    min_rate_fraction=0.98,
)
GEN = GeneratorSpec(max_lag_p99_ms=25, max_cpu_percent=90)


def test_gate_figures_by_hand() -> None:
    # window [2, 12): 97 ok + 1 failed sent in it, 2 overflow due in it; 5 ramp requests outside it
    rows = [_row(2.0 + i * 0.1, ttft=float(i + 1)) for i in range(97)]
    rows.append(_row(11.95, error="HTTP 500: boom"))
    rows += [_row(0.5 + i * 0.1) for i in range(5)]
    data = _data(rows, overflow=[(0, 3.3), (0, 7.7)])
    f = compute_figures(data)
    assert f["window"] == {"start_s": 2.0, "end_s": 12.0, "duration_s": 10.0}
    assert f["rate"]["target_rps"] == pytest.approx(10.0)
    assert f["rate"]["sent"] == 98 and f["rate"]["achieved_rps"] == pytest.approx(9.8)
    assert f["rate"]["achieved_fraction"] == pytest.approx(0.98)  # 98 sent of 100 scheduled
    r = f["requests"]
    assert (r["arrivals"], r["ok"], r["failed"], r["overflow"]) == (100, 97, 1, 2)
    assert r["error_ratio"] == pytest.approx(0.03)  # (1 failed + 2 overflow) / 100 arrivals
    assert r["errors"] == {"HTTP 500": 1, "overflow: in-flight cap reached, not sent": 2}
    assert f["latency_ms"]["ttft"]["p99"] == pytest.approx(96.04)  # 1..97: 1 + 0.99 * 96
    assert f["latency_ms"]["ttft"]["count"] == 97
    assert f["tokens"]["output_total"] == 97 * 8
    assert f["generator"]["cpu_percent"]["per_process"]["0"]["mean"] == 25.0
    assert f["whole_run"]["sent"] == 103
    v = evaluate(f, SLO, GEN, data=data)
    assert v.verdict == "pass", [c.to_dict() for c in v.checks]
    assert [c.name for c in v.checks] == ["rate", "error_ratio", "ttft_p99", "e2e_p50"]
    assert v.exit_code == 0


def test_gate_fails_each_check_at_its_boundary() -> None:
    rows = [_row(2.0 + i * 0.1, ttft=float(i + 1)) for i in range(97)] + [_row(11.95, error="HTTP 500: x")]
    data = _data(rows, overflow=[(0, 3.3), (0, 7.7)])
    f = compute_figures(data)
    strict = SloGate(
        thresholds=[Threshold(metric="ttft", percentile=99, max_ms=96.0)], max_error_ratio=0.02, min_rate_fraction=0.99
    )
    v = evaluate(f, strict, GEN, data=data)
    assert v.verdict == "fail" and v.exit_code == EXIT_CODES["fail"] == 1
    assert {c.name: c.passed for c in v.checks} == {"rate": False, "error_ratio": False, "ttft_p99": False}


def test_gate_without_samples_fails_rather_than_passes() -> None:
    data = _data([_row(3.0, error="HTTP 503: full")], scheduled={0: {"window": 1, "total": 1}})
    data.profile = RateProfile([Segment(2.0, 12.0, 0.1, 0.1, "steady")])
    v = evaluate(compute_figures(data), SLO, GEN, data=data)
    ttft = next(c for c in v.checks if c.name == "ttft_p99")
    assert not ttft.passed and ttft.measured is None and "no ttft samples" in ttft.detail


def test_gate_percentile_outside_the_standard_set() -> None:
    rows = [_row(2.0 + i * 0.1, e2e=float(i + 1)) for i in range(100)]
    data = _data(rows)
    slo = SloGate(thresholds=[Threshold(metric="e2e", percentile=75, max_ms=75.0)], max_error_ratio=0.0)
    v = evaluate(compute_figures(data), slo, GEN, data=data)
    assert v.checks[-1].measured == pytest.approx(75.25)  # 1 + 0.75 * 99


@pytest.mark.parametrize(
    "case, reason",
    [
        ("lag", "fell behind its schedule"),
        ("cpu", "% CPU on average"),
        ("missing", "never reported"),
        ("schedule", "a pacing fault"),
        ("problem", "was stopped"),
    ],
)
def test_gate_invalid_generator(case: str, reason: str) -> None:
    rows = [_row(2.0 + i * 0.1, sched_s=2.0 + i * 0.1 - (0.03 if case == "lag" else 0.0)) for i in range(100)]
    kw: dict = {}
    if case == "cpu":
        kw["cpu"] = {0: [(5.0, 95.0, 99.0), (6.0, 93.0, 99.0)]}
    if case == "missing":
        kw["share_count"] = 2
    if case == "schedule":
        kw["scheduled"] = {0: {"window": 200, "total": 210}}
    problems = ["the run was stopped before every generator process finished its schedule"] if case == "problem" else []
    data = _data(rows, **kw)
    v = evaluate(compute_figures(data), SLO, GEN, data=data, problems=problems)
    assert v.verdict == "invalid" and v.exit_code == 3
    assert any(reason in r for r in v.invalid_reasons), v.invalid_reasons


def test_poisson_schedule_tolerance_is_statistical() -> None:
    rows = [_row(2.0 + i * 0.1) for i in range(100)]
    ok = _data(rows, arrivals="poisson", scheduled={0: {"window": 130, "total": 140}})  # 3 sigma of 100
    bad = _data(rows, arrivals="poisson", scheduled={0: {"window": 160, "total": 170}})  # 6 sigma
    assert not [r for r in evaluate(compute_figures(ok), SLO, GEN, data=ok).invalid_reasons if "pacing fault" in r]
    assert [r for r in evaluate(compute_figures(bad), SLO, GEN, data=bad).invalid_reasons if "pacing fault" in r]


def test_timeline_buckets_by_hand() -> None:
    rows = [_row(2.1, ttft=10.0, e2e=500.0), _row(2.2, ttft=30.0, e2e=1500.0), _row(3.5, error="HTTP 500: x")]
    tl = timeline(_data(rows, overflow=[(0, 4.2)]))
    b2, b3, b4 = tl[2], tl[3], tl[4]
    assert b2["sent_rps"] == 2 and b2["ttft_p50_ms"] == 20.0 and b2["target_rps"] == pytest.approx(10.0)
    assert b3["error_rps"] == 1 and b4["overflow_rps"] == 1
    assert b2["ok_done_rps"] == 1 and b3["ok_done_rps"] == 1  # completions counted when they finish
    assert tl[0]["phase"] == "ramp" and b2["phase"] == "steady"
    assert tl[0]["target_rps"] == pytest.approx(2.5)  # ramp 0 -> 10 req/s over 2 s: 0.5 * 5 * 1^2 due in second 0


def test_ttft_counts_a_token_whose_text_is_held_back() -> None:
    """vLLM streams ``delta: {}`` for a token whose text it holds back (a byte of an unfinished multi-byte
    character): the first token arrived then, though its text comes later or never."""
    import json

    from dsserve.loadgen.measure import StreamState, carries_a_token

    role = {"index": 0, "delta": {"role": "assistant", "content": ""}}
    held = {"index": 0, "delta": {}}
    text = {"index": 0, "delta": {"content": "é"}}
    assert not carries_a_token(role) and carries_a_token(held) and carries_a_token(text)
    assert carries_a_token({"index": 0, "text": ""})  # completions: every event is a token
    st = StreamState(t_send=0.0)
    for t, choice in ((1.0, role), (2.0, held), (3.0, text), (4.0, text)):
        st.on_event(json.dumps({"choices": [choice]}), t)
    assert st.first_token_at == 2.0 and st.token_events == 2 and st.itl_ms == [1000.0]
