"""What one request measured, and the statistics over many: the metric math, kept free of Locust.

Definitions (docs/loadtesting.md has the comparison with vLLM bench serve and GuideLLM):

- **E2E**: request sent -> response complete (``data: [DONE]`` for a stream, the whole body otherwise).
- **TTFT** (streams only): request sent -> the first SSE event carrying a generated token: chat
  ``delta.content``, ``delta.reasoning``/``reasoning_content`` or ``tool_calls``, completions ``text``, or a chat
  event after the role announcement whose text vLLM holds back (part of a multi-byte character).
- **ITL**: the gaps between successive text-carrying events of one stream, pooled over all streams (vLLM
  bench serve's ITL). A server that batches several tokens into one event (Ray Serve's
  ``stream_batching_interval_ms``) shows long gaps and near-zero gaps; TPOT is the per-token figure.
- **TPOT**: per stream, (E2E - TTFT) / (output tokens - 1), for streams of at least two output tokens
  (vLLM bench serve's TPOT; GuideLLM calls the same quotient ITL).
- **Output / prompt tokens**: from the response's ``usage`` (streams ask for it with
  ``stream_options.include_usage``), never estimated.

All times are milliseconds. Percentiles are :func:`dsserve.stats.percentile` (numpy's linear interpolation
between closest ranks, what vLLM bench serve reports), over raw samples. Pooled ITL alone goes through
:class:`LogHistogram` (1% wide bins), because a long run has tens of millions of gaps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dsserve.stats import percentile, percentiles

if TYPE_CHECKING:
    from dsserve.loadgen.tools import AnswerBuffer, AnswerCheck

__all__ = [
    "LogHistogram",
    "RequestResult",
    "SSEParser",
    "StreamState",
    "percentile",
    "stream_problem",
    "summarize",
    "tpot_ms",
]


class SSEParser:
    """Incremental Server-Sent Events parser: feed bytes as they arrive, get each event's data when complete.

    Follows the HTML spec's field rules for what an LLM server sends: ``data:`` lines (one optional space
    after the colon is dropped; several lines join with ``\\n``), comment lines starting with ``:``, other
    fields ignored, ``\\n`` or ``\\r\\n`` line ends, an event dispatched at a blank line. Bytes may split
    anywhere, including inside a multi-byte UTF-8 character.
    """

    __slots__ = ("_buf", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """Feed raw bytes; return the data of every event completed by them."""
        buf = self._buf + chunk
        out: list[str] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            ev = self.feed_line(buf[start:nl])
            if ev is not None:
                out.append(ev)
            start = nl + 1
        self._buf = buf[start:]
        return out

    def feed_line(self, line: bytes) -> str | None:
        """Feed one line (with or without its line end); return an event's data when the line ends one."""
        if line.endswith(b"\n"):
            line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data = []
            return data
        if line.startswith(b"data:"):
            value = line[5:]
            if value.startswith(b" "):
                value = value[1:]
            self._data.append(value.decode("utf-8", errors="replace"))
        # comments (":...") and the event/id/retry fields carry nothing a load test needs
        return None

    def flush(self) -> list[str]:
        """End of stream: an event the server did not close with a blank line still counts."""
        out = []
        if self._buf:
            ev = self.feed_line(self._buf)
            self._buf = b""
            if ev is not None:
                out.append(ev)
        if self._data:
            out.append("\n".join(self._data))
            self._data = []
        return out


@dataclass(slots=True)
class StreamState:
    """Timings and content of one streamed response, fed event by event (times: perf_counter seconds)."""

    t_send: float
    first_token_at: float | None = None
    last_token_at: float | None = None
    done_at: float | None = None
    token_events: int = 0
    itl_ms: list[float] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    error: str | None = None
    finish_reason: str | None = None
    text_chars: int = 0
    #: set for request classes whose answers are checked (tools, response_format): content and tool calls
    answer: AnswerBuffer | None = None

    def on_event(self, data: str, now: float) -> None:
        """One event's data, received at ``now``."""
        if data == "[DONE]":
            self.done_at = now
            return
        try:
            obj = json.loads(data)
        except ValueError:
            self.error = self.error or f"event is not JSON: {data[:80]!r}"
            return
        if not isinstance(obj, dict):
            self.error = self.error or f"event is not a JSON object: {data[:80]!r}"
            return
        if "error" in obj:
            err = obj["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            self.error = self.error or f"error event: {str(msg)[:200]}"
            return
        usage = obj.get("usage")
        if usage:
            self.usage = usage
        for choice in obj.get("choices") or ():
            text = _choice_text(choice)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            if self.answer is not None:
                self.answer.feed(choice)
            if self.first_token_at is None and (text or carries_a_token(choice)):
                self.first_token_at = now
            if text:
                self.text_chars += len(text)
                if self.last_token_at is not None:
                    self.itl_ms.append((now - self.last_token_at) * 1000.0)
                self.last_token_at = now
                self.token_events += 1


def _choice_text(choice: dict[str, Any]) -> str:
    if "text" in choice:  # completions
        return choice.get("text") or ""
    delta = choice.get("delta") or {}
    # vLLM 0.32 streams a reasoning parser's output as delta.reasoning; DeepSeek's API and older vLLM as
    # delta.reasoning_content
    return (
        (delta.get("content") or "")
        + (delta.get("reasoning") or "")
        + (delta.get("reasoning_content") or "")
        + ("<tool>" if delta.get("tool_calls") else "")
    )


def carries_a_token(choice: dict[str, Any]) -> bool:
    """Whether a stream event's choice stands for generated tokens even without text: every chat event after
    the role announcement does. vLLM sends ``delta: {}`` for a token whose text it holds back (a byte of a
    multi-byte character not yet complete), so a first token is not missed when its text comes later."""
    if "text" in choice:
        return True
    delta = choice.get("delta")
    return isinstance(delta, dict) and "role" not in delta


def stream_problem(
    st: StreamState, max_tokens: int, ignore_eos: bool, output_tokens: int | None, check: AnswerCheck | None = None
) -> str | None:
    """Why a finished stream is not a successful request (None when it is), first problem first.

    The transport (``[DONE]``, ``usage``), then the answer's tool calls or JSON when ``check`` is given,
    then whether any text came and, with ``ignore_eos``, the output length.
    """
    if st.done_at is None:
        return "no [DONE]: the stream ended without data: [DONE]"
    if st.usage is None:
        return "missing usage: the stream has no usage chunk (stream_options.include_usage)"
    if output_tokens is None:
        return "missing usage: the usage chunk has no completion_tokens"
    if check is not None and st.answer is not None:
        # before "no text": a forced call that never came is a malformed answer, whatever else was sent
        problem = check.check_stream(st.answer, st.finish_reason)
        if problem:
            return problem
    if st.token_events == 0 and output_tokens > 0:
        return "no text: the stream carried no generated text"
    if ignore_eos and output_tokens != max_tokens:
        return f"wrong length: ignore_eos with max_tokens {max_tokens} but {output_tokens} output tokens"
    return None


def tpot_ms(e2e_ms: float, ttft_ms: float, output_tokens: int) -> float | None:
    """Time per output token after the first: (E2E - TTFT) / (n - 1); None for fewer than two tokens."""
    if output_tokens is None or output_tokens < 2:
        return None
    return (e2e_ms - ttft_ms) / (output_tokens - 1)


#: The fields of a result row, in order (rows travel between Locust processes as plain lists).
RESULT_FIELDS = (
    "cls",
    "share",
    "sched_s",
    "sent_s",
    "status",
    "error",
    "ttft_ms",
    "e2e_ms",
    "tpot_ms",
    "output_tokens",
    "prompt_tokens",
    "prompt_tokens_client",
    "max_tokens",
    "itl_count",
    "itl_mean_ms",
)


@dataclass(slots=True)
class RequestResult:
    """One request's outcome. ``sched_s``/``sent_s`` are seconds from the run's t0 (wall clock)."""

    cls: str
    share: int
    sched_s: float
    sent_s: float
    status: int
    error: str | None
    ttft_ms: float | None
    e2e_ms: float | None
    tpot_ms: float | None
    output_tokens: int | None
    prompt_tokens: int | None
    prompt_tokens_client: int | None
    max_tokens: int
    itl_count: int = 0
    itl_mean_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_row(self) -> list[Any]:
        return [getattr(self, f) for f in RESULT_FIELDS]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> RequestResult:
        return cls(**dict(zip(RESULT_FIELDS, row, strict=True)))


#: Percentiles every latency summary carries.
PERCENTILES = (50, 90, 95, 99, 99.9)


def summarize(values: Iterable[float]) -> dict[str, Any]:
    """count, mean, min, max and the standard percentiles of raw samples (ms)."""
    xs = sorted(v for v in values if v is not None)
    out: dict[str, Any] = {"count": len(xs)}
    if not xs:
        out.update({"mean": None, "min": None, "max": None, **{_pkey(p): None for p in PERCENTILES}})
        return out
    out["mean"] = sum(xs) / len(xs)
    out["min"], out["max"] = xs[0], xs[-1]
    out.update(zip((_pkey(p) for p in PERCENTILES), percentiles(xs, PERCENTILES), strict=True))
    return out


def _pkey(p: float) -> str:
    return f"p{p:g}".replace(".", "_")


class LogHistogram:
    """Counts of positive values (ms) in bins 1% wide: relative error of a percentile below 0.5%.

    Bin i >= 1 holds [FLOOR * 1.01^(i-1), FLOOR * 1.01^i); bin 0 holds everything below FLOOR (1 us).
    Histograms from several processes merge by adding counts.
    """

    FLOOR_MS = 0.001
    GROWTH = 1.01
    _LOG = math.log(GROWTH)

    def __init__(self, counts: dict[int, int] | None = None) -> None:
        self.counts: dict[int, int] = dict(counts or {})

    def add(self, value_ms: float) -> None:
        i = 0 if value_ms < self.FLOOR_MS else int(math.log(value_ms / self.FLOOR_MS) / self._LOG) + 1
        self.counts[i] = self.counts.get(i, 0) + 1

    def merge(self, other: dict[int, int] | LogHistogram) -> None:
        items = other.counts.items() if isinstance(other, LogHistogram) else other.items()
        for i, c in items:
            i = int(i)
            self.counts[i] = self.counts.get(i, 0) + int(c)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def bin_bounds(self, i: int) -> tuple[float, float]:
        if i == 0:
            return 0.0, self.FLOOR_MS
        return self.FLOOR_MS * self.GROWTH ** (i - 1), self.FLOOR_MS * self.GROWTH**i

    def percentile(self, q: float) -> float | None:
        """The geometric middle of the bin holding the q-th percentile (nearest rank)."""
        n = self.total
        if n == 0:
            return None
        rank = max(1, math.ceil(q / 100.0 * n))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                lo, hi = self.bin_bounds(i)
                return math.sqrt(lo * hi) if lo > 0 else hi / 2
        return None  # pragma: no cover - rank <= n

    def mean(self) -> float | None:
        n = self.total
        if n == 0:
            return None
        return (
            sum(
                c * (math.sqrt(lo * hi) if lo > 0 else hi / 2)
                for i, c in self.counts.items()
                for lo, hi in [self.bin_bounds(i)]
            )
            / n
        )

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.total, "mean": self.mean(), "resolution": "1% log bins"}
        for p in PERCENTILES:
            out[_pkey(p)] = self.percentile(p)
        if self.counts:
            out["min"] = self.bin_bounds(min(self.counts))[0]
            out["max"] = self.bin_bounds(max(self.counts))[1]
        return out

    def to_dict(self) -> dict[str, int]:
        return {str(k): v for k, v in self.counts.items()}
