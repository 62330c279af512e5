"""The one sample-percentile definition (dsserve/stats.py), checked against values worked out by hand.

The expected values are numpy's default (``method="linear"``): position h = (n - 1) * q / 100 between the
sorted values, interpolated linearly. numpy is not a dependency, so the arithmetic is written out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dsserve.stats import percentile, percentiles
from tests.conftest import REPO


def test_linear_interpolation_between_closest_ranks() -> None:
    xs = [40.0, 10.0, 30.0, 20.0]  # unsorted on purpose
    assert percentile(xs, 50) == 25.0  # h = 1.5: halfway between 20 and 30
    assert percentile(xs, 90) == pytest.approx(37.0)  # h = 2.7: 30 + 0.7 * 10
    assert percentile(xs, 99) == pytest.approx(39.7)  # h = 2.97: 30 + 0.97 * 10
    assert percentile(xs, 0) == 10.0 and percentile(xs, 100) == 40.0
    assert percentile(range(1, 11), 99) == pytest.approx(9.91)  # h = 8.91: 9 + 0.91 (nearest rank says 10)
    assert percentile([1, 2, 3, 4, 5], 25) == 2.0  # h = 1 exactly: a sample, no interpolation
    assert percentile([5.0], 99) == 5.0


def test_no_values_is_none_not_zero() -> None:
    assert percentile([], 50) is None
    assert percentiles([], (50, 99)) == [None, None]


def test_several_at_once_agree_with_one_at_a_time() -> None:
    xs = [float((i * 37) % 101) for i in range(250)]
    qs = (50, 90, 95, 99, 99.9)
    assert percentiles(xs, qs) == [percentile(xs, q) for q in qs]


@pytest.mark.parametrize("q", [-1, 100.5])
def test_q_outside_0_to_100_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0, 2.0], q)


#: Percentile functions that are not sample percentiles, and may stay: (file, function name).
NOT_SAMPLE_PERCENTILES = {
    ("dsserve/stats.py", "percentile"),
    ("dsserve/stats.py", "percentiles"),
    ("dsserve/loadgen/measure.py", "percentile"),  # LogHistogram.percentile: an estimate from 1% bins
    ("dsserve/planner/slo.py", "_percentile"),  # a quantile of the modelled latency distribution
    ("dsserve/planner/disagg.py", "_quantile"),  # of a weighted token-count distribution (main, after 1113a69)
    ("dsserve/render/queries.py", "_quantiles"),  # PromQL histogram_quantile recording rules
    ("dsserve/render/dashboards.py", "_quantile_targets"),  # the same, as dashboard panels
}


def test_no_second_percentile_definition() -> None:
    """Every sample percentile comes from dsserve.stats: no other function computes one."""
    found = set()
    for top in ("dsserve", "bench", "loadtest", "scripts"):
        for path in (REPO / top).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    word in node.name.lower() for word in ("percentile", "quantile", "pct")
                ):
                    found.add((str(path.relative_to(REPO)), node.name))
    assert found - NOT_SAMPLE_PERCENTILES == set(), "use dsserve.stats.percentile"


def test_the_gate_and_the_benchmarks_use_it() -> None:
    from bench import openloop
    from dsserve.loadgen import gate, measure

    assert gate.percentile is measure.percentile is openloop.percentile is percentile
    assert Path(openloop.__file__).parent.name == "bench"
