"""Scenarios: the shipped ones are valid and documented; mistakes become one line with path, value and fix;
prompts have the lengths the scenario asks for, counted by the tokenizer or labelled as estimates."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
import yaml

from dsserve.loadgen.errors import ScenarioError
from dsserve.loadgen.prompts import build_pools, load_token_counter, sample_length
from dsserve.loadgen.scenario import (
    SCENARIO_DIR,
    Dist,
    apply_overrides,
    find_scenario,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
)
from tests.conftest import REPO

ISSUE_SCENARIOS = {"slo-1200qps", "chat-mixed", "long-context", "burst", "soak", "lora-mix"}


def test_the_issue_scenarios_ship() -> None:
    assert ISSUE_SCENARIOS | {"smoke"} <= set(shipped_scenarios())
    assert SCENARIO_DIR == REPO / "loadtest" / "scenarios"


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "loadtest" / "scenarios").glob("*.yaml")))
def test_shipped_scenario_is_valid_and_documented(name: str) -> None:
    s = load_scenario(name)
    assert s.name == name  # file stem and name agree
    assert s.description
    assert f"`{name}`" in (REPO / "docs" / "loadtesting.md").read_text()


def test_headline_scenario_is_what_the_issue_asks() -> None:
    s = load_scenario("slo-1200qps")
    assert s.load.rate_rps == 1200
    assert {(t.metric, t.percentile, t.max_ms) for t in s.slo.thresholds} == {("ttft", 99, 500), ("e2e", 99, 500)}
    assert s.slo.max_error_ratio == 0.001 and s.slo.min_rate_fraction == 0.98
    assert all(r.stream and r.api == "chat" for r in s.workload.requests)


def test_burst_steps_to_twice_the_rate() -> None:
    s = load_scenario("burst")
    assert max(st.rate_multiplier for st in s.load.stages) == 2


def test_lora_mix_names_adapters_and_requires_lora() -> None:
    s = load_scenario("lora-mix")
    assert s.requires == ["lora"]
    assert {r.model for r in s.workload.requests} == {None, "{model}:sql-adapter", "{model}:chat-adapter"}


def test_long_context_retargets_with_one_override() -> None:
    big = load_scenario("long-context")
    tiny = load_scenario("long-context", ["workload.context_window=2048"])
    assert big.workload.context_window == 32768 and tiny.workload.context_window == 2048
    counter = load_token_counter("tiny:tiny-deepseek-v2")
    pool = build_pools(tiny, counter)["long-prompt-chat"]
    assert all(0.85 * 2048 - 1 <= n <= 0.95 * 2048 + 1 for n in pool.tokens)
    assert max(pool.tokens) + 64 < 2048  # prompt + output fit the tiny model's window


def _smoke() -> dict:
    return yaml.safe_load((REPO / "loadtest/scenarios/smoke.yaml").read_text())


def _error(mutate) -> str:
    data = _smoke()
    mutate(data)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, where="s.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["load"].update(rate=5), "s.yaml: load.rate: unknown key; did you mean 'rate_rps'?"),
        (lambda d: d["load"].update(rate_rps="1200"), "s.yaml: load.rate_rps: got '1200'; must be a number"),
        (
            lambda d: d["workload"]["requests"][0].update(output_tokens={"dist": "normal", "mean": 5}),
            "workload.requests[0].output_tokens: got {'dist': 'normal', 'mean': 5}; dist normal needs stdev; e.g.",
        ),
        (
            lambda d: d["workload"]["requests"][0].update(prompt_tokens=3000),
            "workload.requests[0]: got 'short-chat'; prompt up to 3000 + output up to 8 tokens exceed the context "
            "window",
        ),
        (
            lambda d: d["workload"]["requests"][0].update(stream=False),
            "slo.thresholds[0].metric: got 'ttft'; needs at least one streamed request class",
        ),
        (
            lambda d: d["workload"].update(context_window="big"),
            "workload.context_window: got 'big'; must be a whole number of tokens between 16 and 10000000, or auto",
        ),
        (
            lambda d: d["load"].update(stages=[{"duration_s": 5}]),
            "load.duration_s: got 10.0; the stages last 5 s; remove duration_s or make it 5",
        ),
        (lambda d: d["load"].pop("duration_s"), "load.duration_s: required unless load.stages is given; e.g. 60"),
        (lambda d: d.update(requires=["lora"]), "requires: got ['lora']; a LoRA scenario needs request classes"),
        (
            lambda d: d["slo"]["thresholds"][0].update(metric="tbt"),
            "slo.thresholds[0].metric: got 'tbt'; choose one of: 'ttft', 'e2e', 'itl' or 'tpot'",
        ),
        (
            lambda d: d["workload"]["requests"].append(dict(d["workload"]["requests"][0])),
            "workload.requests[1].name: got 'short-chat'; names must be unique",
        ),
        (
            lambda d: d["workload"]["prompts"].update(tokenizr="x"),
            "workload.prompts.tokenizr: unknown key; did you mean 'tokenizer'?",
        ),
        (
            lambda d: d["workload"]["requests"][0].pop("output_tokens"),
            "workload.requests[0].output_tokens: required but missing",
        ),
        (
            lambda d: (
                d["workload"].pop("context_window"),
                d["workload"]["requests"][0].update(
                    output_tokens={"dist": "constant", "value": 0.1, "unit": "context"}
                ),
            ),
            "workload.requests[0].output_tokens.unit: got 'context'; needs workload.context_window",
        ),
        (
            lambda d: d["workload"]["prompts"].update(source="sharegpt"),
            "workload.prompts.path: source: sharegpt needs the JSON file; set path or pass --sharegpt FILE",
        ),
    ],
)
def test_scenario_errors_name_path_value_and_fix(mutate, expected: str) -> None:
    msg = _error(mutate)
    assert expected in msg, msg
    assert "\n" not in msg and "Traceback" not in msg


def test_several_problems_one_line_each() -> None:
    msg = _error(lambda d: (d["load"].update(rate_rps=-1, max_in_flight=0), d.update(nme="x")))
    lines = msg.splitlines()
    assert len(lines) == 3 and all(line.startswith("s.yaml: ") for line in lines)


def test_overrides_reach_lists_and_reject_bad_paths() -> None:
    data = apply_overrides(
        _smoke(), ["workload.requests.0.output_tokens=4", "load.rate_rps=7.5", "slo.thresholds.1.max_ms=900"], where="s"
    )
    s = parse_scenario(data)
    assert s.workload.requests[0].output_tokens.value == 4 and s.load.rate_rps == 7.5
    assert s.slo.thresholds[1].max_ms == 900
    for bad, fragment in [
        ("load.rate_rps", "expected PATH=VALUE"),
        ("workload.requests.3.output_tokens=4", "index it with 0..0"),
        ("load.rate_rps.x=1", "is a value, not a section"),
    ]:
        with pytest.raises(ScenarioError, match=fragment):
            apply_overrides(_smoke(), [bad], where="s")


def test_unknown_scenario_suggests_a_shipped_one() -> None:
    with pytest.raises(ScenarioError, match="did you mean 'smoke'"):
        find_scenario("smoek")


def test_bare_number_is_a_constant_distribution() -> None:
    assert Dist.model_validate(16) == Dist(dist="constant", value=16)


@pytest.mark.parametrize(
    "spec, lo, hi",
    [
        ({"dist": "uniform", "min": 10, "max": 20}, 10, 20),
        ({"dist": "normal", "mean": 100, "stdev": 30, "min": 50, "max": 150}, 50, 150),
        ({"dist": "lognormal", "mean": 100, "stdev": 80, "max": 400}, 1, 400),
        ({"dist": "exponential", "mean": 50, "max": 300}, 1, 300),
    ],
)
def test_length_distributions_have_their_mean_and_bounds(spec: dict, lo: int, hi: int) -> None:
    d = Dist.model_validate(spec)
    rng = random.Random(1)
    xs = [sample_length(d, rng) for _ in range(4000)]
    assert lo <= min(xs) and max(xs) <= hi
    if spec["dist"] in ("uniform",):
        assert sum(xs) / len(xs) == pytest.approx(15, rel=0.03)
    if spec["dist"] == "lognormal":  # mean 100 before clamping at 400 (little mass above)
        assert sum(xs) / len(xs) == pytest.approx(100, rel=0.08)


def test_synthetic_prompts_are_measured_with_the_tokenizer() -> None:
    s = load_scenario(
        "smoke",
        ["workload.prompts.pool_size=40", "workload.requests.0.prompt_tokens={dist: uniform, min: 50, max: 1500}"],
    )
    counter = load_token_counter("tiny:tiny-deepseek-v2")
    assert counter.method == "tokenizer"
    pool = build_pools(s, counter)["short-chat"]
    rng = random.Random(f"dsserve-prompts:{s.load.seed}:short-chat")
    wanted = [sample_length(s.workload.requests[0].prompt_tokens, rng) for _ in range(40)]
    assert [counter.count(t) for t in pool.texts] == pool.tokens  # what is recorded is what is sent
    assert all(abs(a - b) <= 2 for a, b in zip(pool.tokens, wanted, strict=True))
    assert len(set(pool.texts)) == 40
    assert build_pools(s, counter)["short-chat"].texts == pool.texts  # deterministic in the seed


def test_without_a_tokenizer_lengths_are_labelled_estimates() -> None:
    counter = load_token_counter(None, 4.0)
    d = counter.describe()
    assert d["method"] == "estimate" and d["chars_per_token"] == 4.0 and "not measured" in d["note"]
    pool = build_pools(load_scenario("smoke"), counter)["short-chat"]
    assert all(abs(len(t) / n - 4.0) < 0.6 for t, n in zip(pool.texts, pool.tokens, strict=True))


def test_tokenizer_errors_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such file"):
        load_token_counter(str(tmp_path / "nope"))
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}")
    with pytest.raises(ScenarioError, match="not a tokenizers JSON file"):
        load_token_counter(str(tmp_path))
    with pytest.raises(ScenarioError, match="no tiny model 'tiny-x'"):
        load_token_counter("tiny:tiny-x")


def test_sharegpt_prompts_and_dataset_output_lengths(tmp_path: Path) -> None:
    convs = [
        {
            "conversations": [
                {"from": "human", "value": f"question {i} " * (i + 1)},
                {"from": "gpt", "value": "answer " * (3 * i + 2)},
            ]
        }
        for i in range(30)
    ]
    convs.append({"conversations": [{"from": "human", "value": "only one turn"}]})
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(convs))
    data = _smoke()
    data["workload"]["prompts"] = {"source": "sharegpt", "path": str(path), "pool_size": 10}
    data["workload"]["requests"][0].pop("prompt_tokens")
    data["workload"]["requests"][0]["output_tokens"] = {"dist": "dataset", "max": 64}
    s = parse_scenario(data)
    counter = load_token_counter("tiny:tiny-deepseek-v2")
    pool = build_pools(s, counter)["short-chat"]
    assert len(pool.texts) == 10 and all(t.startswith("question") for t in pool.texts)
    assert pool.tokens == [counter.count(t) for t in pool.texts]
    assert all(r is not None and r >= 1 for r in pool.reply_tokens)
    i = 3
    assert sample_length(s.workload.requests[0].output_tokens, random.Random(0), None, pool.reply_tokens[i]) == min(
        64, pool.reply_tokens[i]
    )
    bad = copy.deepcopy(data)
    bad["workload"]["prompts"]["path"] = str(tmp_path / "missing.json")
    with pytest.raises(ScenarioError, match="cannot read it"):
        build_pools(parse_scenario(bad), counter)


def test_public_surface_and_no_locust_at_import() -> None:
    """dsserve.loadgen exports what it names, and importing it (or `dsserve --help`) loads no Locust/gevent."""
    import subprocess
    import sys

    import dsserve.loadgen as lg

    assert all(hasattr(lg, name) for name in lg.__all__)
    code = (
        "import sys, dsserve.loadgen, dsserve.cli; "
        "bad = [m for m in ('locust', 'gevent', 'ray') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
