"""Open-loop arrival schedules: when each request is due, independent of how fast the server answers.

A :class:`RateProfile` is the target rate over time, r(t): a linear ramp from 0, then one or more stages
at constant rates (a step to 2x for ``burst``). Its integral Lambda(t) = int_0^t r counts the requests due by
time t. Arrivals are placed in Lambda-space and mapped back through Lambda^-1, which handles ramps and steps
exactly:

- **constant**: global arrival k is due at Lambda^-1(k + 1/2), evenly spaced at every rate.
- **poisson**: Lambda-space gaps are exponential with mean 1 (a non-homogeneous Poisson process of
  intensity r(t)).

**Splitting the rate.** With N generator processes (``--processes N`` or N distributed workers), process j
(0 <= j < N) owns a 1/N share, so the processes together produce the target rate, never N times it:

- constant: process j takes global arrivals j, j+N, j+2N, ... of the single global schedule (interleaved,
  so the union is exactly the one-process schedule);
- poisson: process j runs an independent Poisson process with Lambda-space gaps of mean N; the
  superposition of N independent Poisson processes of rate r/N is a Poisson process of rate r.

Times are seconds relative to the common start t0 that the master hands every process.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from dsserve.loadgen.scenario import LoadSpec

__all__ = ["RateProfile", "Segment", "arrival_times"]


@dataclass(frozen=True)
class Segment:
    """A piece of the profile: the rate goes linearly from ``rate0`` to ``rate1`` over [start_s, end_s)."""

    start_s: float
    end_s: float
    rate0: float
    rate1: float
    phase: str  # "ramp", or "steady" / "stage-<i>" inside the measured window

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def count(self) -> float:
        """Requests due in this segment: the area under the rate."""
        return 0.5 * (self.rate0 + self.rate1) * self.duration_s


class RateProfile:
    """Target arrival rate r(t) for t in [0, end_s), and its integral and inverse."""

    def __init__(self, segments: list[Segment]) -> None:
        if not segments:
            raise ValueError("a rate profile needs at least one segment")
        self.segments = segments
        self._starts = [s.start_s for s in segments]
        self._cum = [0.0]
        for s in segments:
            self._cum.append(self._cum[-1] + s.count)

    @classmethod
    def from_load(cls, load: LoadSpec) -> RateProfile:
        segs: list[Segment] = []
        t = 0.0
        if load.ramp_up_s > 0:
            segs.append(Segment(0.0, load.ramp_up_s, 0.0, load.rate_rps, "ramp"))
            t = load.ramp_up_s
        if load.stages:
            for i, st in enumerate(load.stages):
                r = load.rate_rps * st.rate_multiplier
                segs.append(Segment(t, t + st.duration_s, r, r, f"stage-{i + 1}"))
                t += st.duration_s
        else:
            segs.append(Segment(t, t + float(load.duration_s or 0), load.rate_rps, load.rate_rps, "steady"))
        return cls(segs)

    @property
    def end_s(self) -> float:
        return self.segments[-1].end_s

    @property
    def window(self) -> tuple[float, float]:
        """The measured window: everything after the ramp."""
        start = next((s.start_s for s in self.segments if s.phase != "ramp"), self.end_s)
        return start, self.end_s

    @property
    def total(self) -> float:
        """Requests due over the whole profile."""
        return self._cum[-1]

    def rate_at(self, t: float) -> float:
        if t < 0 or t >= self.end_s:
            return 0.0
        s = self.segments[max(0, bisect.bisect_right(self._starts, t) - 1)]
        return s.rate0 + (s.rate1 - s.rate0) * (t - s.start_s) / s.duration_s

    def cumulative(self, t: float) -> float:
        """Lambda(t): requests due in [0, t)."""
        if t <= 0:
            return 0.0
        if t >= self.end_s:
            return self.total
        i = max(0, bisect.bisect_right(self._starts, t) - 1)
        s = self.segments[i]
        x = t - s.start_s
        slope = (s.rate1 - s.rate0) / s.duration_s
        return self._cum[i] + s.rate0 * x + 0.5 * slope * x * x

    def expected(self, t0: float, t1: float) -> float:
        """Requests due in [t0, t1)."""
        return self.cumulative(t1) - self.cumulative(t0)

    def inverse(self, u: float) -> float:
        """The time t with Lambda(t) = u, for 0 <= u <= total."""
        if u <= 0:
            return 0.0
        if u >= self.total:
            return self.end_s
        i = min(len(self.segments) - 1, max(0, bisect.bisect_right(self._cum, u) - 1))
        s = self.segments[i]
        c = u - self._cum[i]
        slope = (s.rate1 - s.rate0) / s.duration_s
        # r0*x + slope*x^2/2 = c, solved in the form that stays exact when r0 = 0 or slope = 0
        root = math.sqrt(max(0.0, s.rate0 * s.rate0 + 2.0 * slope * c))
        denom = s.rate0 + root
        x = 2.0 * c / denom if denom > 0 else 0.0
        return min(s.end_s, s.start_s + x)

    def phase_at(self, t: float) -> str:
        if t < 0:
            return "before"
        if t >= self.end_s:
            return "after"
        return self.segments[max(0, bisect.bisect_right(self._starts, t) - 1)].phase

    def to_dict(self) -> dict:
        return {
            "end_s": self.end_s,
            "window_s": list(self.window),
            "expected_total": self.total,
            "segments": [
                {"start_s": s.start_s, "end_s": s.end_s, "rate0_rps": s.rate0, "rate1_rps": s.rate1, "phase": s.phase}
                for s in self.segments
            ],
        }


def arrival_times(
    profile: RateProfile, arrivals: str, *, share_index: int = 0, share_count: int = 1, seed: int = 0
) -> Iterator[float]:
    """This process's arrival times (seconds from t0), in order: its 1/share_count share of the profile."""
    if not 0 <= share_index < share_count:
        raise ValueError(f"share_index {share_index} is not in 0..{share_count - 1}")
    total = profile.total
    if arrivals == "constant":
        k = share_index
        while k + 0.5 < total:
            yield profile.inverse(k + 0.5)
            k += share_count
    elif arrivals == "poisson":
        # a distinct, reproducible stream per share: the same seed and share give the same arrivals
        rng = random.Random(f"dsserve-arrivals:{seed}:{share_index}:{share_count}")
        u = rng.expovariate(1.0 / share_count)
        while u < total:
            yield profile.inverse(u)
            u += rng.expovariate(1.0 / share_count)
    else:
        raise ValueError(f"unknown arrival process {arrivals!r}; choose constant or poisson")
