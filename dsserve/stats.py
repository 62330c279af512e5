"""Sample statistics shared by the load tester, its SLO gate and the benchmarks.

One percentile definition for the whole repository, so that a p99 in the README, in a benchmark's JSON
and in ``dsserve loadtest``'s gate are the same statistic: numpy's default (``method="linear"``, type 7
of Hyndman and Fan), which is also what vLLM bench serve reports. Server-side ``histogram_quantile`` and
:class:`dsserve.loadgen.measure.LogHistogram` estimate percentiles from buckets; they are not this.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["percentile", "percentiles"]


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100) of ``values``: linear interpolation between the closest ranks.

    With the n values sorted as x[0] <= ... <= x[n-1], the position is h = (n - 1) * q / 100 and the
    result x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)]). So p0 is the minimum, p100 the
    maximum, p50 of an even count the mean of the middle two, and a percentile of one value is that value.
    None when there are no values: "no sample" must not read as a latency of zero.
    """
    return percentiles(values, (q,))[0]


def percentiles(values: Iterable[float], qs: Sequence[float]) -> list[float | None]:
    """:func:`percentile` at each of ``qs``, sorting the values once."""
    xs = sorted(values)
    for q in qs:
        if not 0 <= q <= 100:
            raise ValueError(f"percentile: q must be between 0 and 100, got {q!r}")
    if not xs:
        return [None for _ in qs]
    return [_at(xs, q) for q in qs]


def _at(xs: list[float], q: float) -> float:
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
