"""Locust users that speak the OpenAI API and time what matters for an LLM: TTFT, ITL, E2E, tokens.

- :class:`LLMUser` (abstract): a ``FastHttpUser`` that sends one chat or completions request, streamed or
  not, parses SSE incrementally as bytes arrive (``readline`` on geventhttpclient's response: an event is
  timed when its line arrives, not when a read buffer fills), and checks the answer: HTTP status, JSON,
  an in-stream ``error`` event, ``data: [DONE]``, ``usage``, and with ``ignore_eos`` that the server
  generated exactly ``max_tokens``; for a request class with tools or a response_format, that the tool
  calls or JSON answer are well-formed (:mod:`dsserve.loadgen.tools`: ``malformed_tool_call``,
  ``malformed_json``). A semantic problem marks the request failed (``catch_response``).
- :class:`OpenLoopUser` (abstract): a user whose ``wait_time`` is the arrival schedule. It blocks until
  its process's pacer hands it an arrival, sends it, and waits for the next. The pacer, not the user,
  decides when requests go out, so the rate does not depend on response times; users are the in-flight
  slots, and an arrival that finds every slot busy is counted as overflow instead of being delayed.

Locust rows: the real request row (``POST <class>``) carries the E2E time, so its RPS is the real
request rate. TTFT, ITL, TPOT and token counts go into extra ``METRIC`` rows that are logged straight
into their own stats entries, not fired through ``events.request``: the ``Aggregated`` row then counts
real requests only (Locust #2289: every ``events.request`` sample is added to Aggregated, inflating its
RPS N-fold). Locust buckets its times to about two significant digits; the gate uses the raw samples.
The token-count rows hold counts in their "ms" columns.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from locust import task
from locust.contrib.fasthttp import FastHttpUser

from dsserve.loadgen.measure import (
    RequestResult,
    SSEParser,
    StreamState,
    stream_problem,
    tpot_ms,
)
from dsserve.loadgen.tools import AnswerBuffer

if TYPE_CHECKING:
    from dsserve.loadgen.coordinator import ProcessPacer, Ticket
    from dsserve.loadgen.tools import AnswerCheck

__all__ = ["LLMUser", "OpenLoopUser", "METRIC_ROWS"]

#: The extra Locust rows, by key: (name, method).
METRIC_ROWS = {
    "ttft": ("TTFT (ms)", "METRIC"),
    "itl": ("ITL (ms)", "METRIC"),
    "tpot": ("TPOT (ms)", "METRIC"),
    "output_tokens": ("output tokens (count)", "METRIC"),
    "prompt_tokens": ("prompt tokens (count)", "METRIC"),
}

_PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


class LLMUser(FastHttpUser):
    """Sends OpenAI requests and measures them. Subclasses decide what to send and when."""

    abstract = True
    concurrency = 1  # one request at a time per user: a user is one in-flight slot
    network_timeout = 60.0
    connection_timeout = 10.0

    def send_openai(
        self,
        *,
        api: str,
        stream: bool,
        body: bytes,
        name: str,
        max_tokens: int,
        ignore_eos: bool,
        headers: dict[str, str],
        check: AnswerCheck | None = None,
    ) -> RequestResult:
        """Send one request and return what it measured (sched/sent times are filled by the caller).

        ``check`` judges the answer's tool calls or JSON content (request classes with tools or a
        response_format); a malformed answer fails the request like an HTTP error does.
        """
        path = _PATHS[api]
        hdrs = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            **headers,
        }
        self._itl: list[float] = []
        t_send = time.perf_counter()
        result = RequestResult(
            cls=name,
            share=0,
            sched_s=0.0,
            sent_s=0.0,
            status=0,
            error=None,
            ttft_ms=None,
            e2e_ms=None,
            tpot_ms=None,
            output_tokens=None,
            prompt_tokens=None,
            prompt_tokens_client=None,
            max_tokens=max_tokens,
        )
        with self.client.request(
            "POST", path, data=body, headers=hdrs, name=name, stream=stream, catch_response=True
        ) as resp:
            result.status = resp.status_code or 0
            try:
                if resp.status_code != 200:
                    result.error = _http_error(resp)
                elif stream:
                    self._read_stream(resp, t_send, result, max_tokens, ignore_eos, check)
                else:
                    self._read_json(resp, t_send, result, max_tokens, ignore_eos, check)
            except Exception as exc:  # a timeout or reset mid-body is the request's failure, not the user's
                result.error = result.error or f"{type(exc).__name__}: {exc}"[:300]
            if result.e2e_ms is None:
                result.e2e_ms = (time.perf_counter() - t_send) * 1000.0
            resp.request_meta["response_time"] = result.e2e_ms
            if result.error:
                resp.failure(result.error)
            else:
                resp.success()
        self._log_metrics(result)
        return result

    def _read_stream(
        self,
        resp: Any,
        t_send: float,
        result: RequestResult,
        max_tokens: int,
        ignore_eos: bool,
        check: AnswerCheck | None = None,
    ) -> None:
        raw = resp._response  # geventhttpclient's response: readline returns as soon as a line is complete
        parser = SSEParser()
        st = StreamState(t_send, answer=AnswerBuffer() if check is not None else None)
        nbytes = 0
        perf = time.perf_counter
        while True:
            line = raw.readline(b"\n")
            if not line:
                break
            nbytes += len(line)
            data = parser.feed_line(line)
            if data is not None:
                st.on_event(data, perf())
        for data in parser.flush():
            st.on_event(data, perf())
        resp.request_meta["response_length"] = nbytes
        end = st.done_at if st.done_at is not None else perf()
        result.e2e_ms = (end - t_send) * 1000.0
        if st.first_token_at is not None:
            result.ttft_ms = (st.first_token_at - t_send) * 1000.0
        result.itl_count = len(st.itl_ms)
        if st.itl_ms:
            result.itl_mean_ms = sum(st.itl_ms) / len(st.itl_ms)
        self._itl = st.itl_ms
        usage = st.usage or {}
        result.output_tokens = _int(usage.get("completion_tokens"))
        result.prompt_tokens = _int(usage.get("prompt_tokens"))
        if result.ttft_ms is not None and result.output_tokens:
            result.tpot_ms = tpot_ms(result.e2e_ms, result.ttft_ms, result.output_tokens)
        result.error = st.error or stream_problem(st, max_tokens, ignore_eos, result.output_tokens, check)

    def _read_json(
        self,
        resp: Any,
        t_send: float,
        result: RequestResult,
        max_tokens: int,
        ignore_eos: bool,
        check: AnswerCheck | None = None,
    ) -> None:
        content = resp.content or b""
        result.e2e_ms = (time.perf_counter() - t_send) * 1000.0
        self._itl = []
        try:
            obj = json.loads(content)
        except ValueError:
            result.error = f"response is not JSON: {content[:80]!r}"
            return
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not choices:
            result.error = "empty choices: the response has no choices"
            return
        usage = obj.get("usage") or {}
        result.output_tokens = _int(usage.get("completion_tokens"))
        result.prompt_tokens = _int(usage.get("prompt_tokens"))
        if result.output_tokens is None:
            result.error = "missing usage: the response has no usage.completion_tokens"
        elif ignore_eos and result.output_tokens != max_tokens:
            result.error = (
                f"wrong length: ignore_eos with max_tokens {max_tokens} but {result.output_tokens} output tokens"
            )
        elif check is not None:
            first = choices[0] if isinstance(choices[0], dict) else {}
            result.error = check.check_message(first.get("message"), first.get("finish_reason"))

    def _log_metrics(self, r: RequestResult) -> None:
        """Extra METRIC rows, logged into their own entries so the Aggregated row stays real requests."""
        if r.error:
            return
        stats = self.environment.stats
        if r.ttft_ms is not None:
            stats.get(*METRIC_ROWS["ttft"]).log(r.ttft_ms, 0)
        for gap in getattr(self, "_itl", ()):
            stats.get(*METRIC_ROWS["itl"]).log(gap, 0)
        if r.tpot_ms is not None:
            stats.get(*METRIC_ROWS["tpot"]).log(r.tpot_ms, 0)
        if r.output_tokens is not None:
            stats.get(*METRIC_ROWS["output_tokens"]).log(r.output_tokens, 0)
        if r.prompt_tokens is not None:
            stats.get(*METRIC_ROWS["prompt_tokens"]).log(r.prompt_tokens, 0)


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _http_error(resp: Any) -> str:
    code = resp.status_code
    if not code:
        err = getattr(resp, "error", None)
        return f"connection error: {type(err).__name__}: {err}"[:300] if err else "connection error"
    msg = ""
    try:
        body = resp.content or b""
        obj = json.loads(body)
        err = obj.get("error") if isinstance(obj, dict) else None
        msg = (err.get("message") if isinstance(err, dict) else None) or str(obj)[:200]
    except Exception:
        msg = (resp.content or b"")[:200].decode("utf-8", errors="replace") if resp.content else ""
    return f"HTTP {code}: {msg}"[:300]


class OpenLoopUser(LLMUser):
    """One in-flight slot of the open-loop generator: waits for an arrival, sends it, repeats.

    ``wait_time`` is the schedule: it blocks on the process's pacer (Locust marks the user as waiting, so
    stopping the test never waits for an idle slot). The first task run finds no arrival yet and returns.
    """

    abstract = True

    def __init__(self, environment: Any) -> None:
        from dsserve.loadgen.coordinator import controller_of

        ctl = controller_of(environment)
        if ctl is not None and ctl.pacer is not None:  # the scenario's timeout, before the session is built
            self.network_timeout = ctl.pacer.scenario.load.request_timeout_s
            self.connection_timeout = min(10.0, self.network_timeout)
        super().__init__(environment)
        self._ticket: Ticket | None = None
        self._itl: list[float] = []

    @property
    def pacer(self) -> ProcessPacer:
        from dsserve.loadgen.coordinator import pacer_of

        return pacer_of(self.environment)

    def wait_time(self) -> float:
        self._ticket = self.pacer.next_ticket()
        return 0.0

    @task
    def send_arrival(self) -> None:
        ticket, self._ticket = self._ticket, None
        if ticket is None:
            return
        pacer = self.pacer
        req = pacer.request_for(ticket)
        sent_s = pacer.now_s()
        pacer.mark_sent(ticket, sent_s)
        result: RequestResult | None = None
        try:
            result = self.send_openai(
                api=req.api,
                stream=req.stream,
                body=req.body,
                name=req.name,
                max_tokens=req.max_tokens,
                ignore_eos=req.ignore_eos,
                headers=pacer.headers,
                check=req.check,
            )
        finally:
            pacer.complete(ticket, sent_s, result, req.prompt_tokens_client, self._itl)
            self._itl = []
