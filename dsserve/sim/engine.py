"""The simulated engine behind ``ray.serve.llm``'s ``LLMServer``.

``ray.serve.llm`` picks its engine class from ``RAYLLM_VLLM_ENGINE_CLS`` (``LLMServer.
_get_default_engine_class`` in ``ray/llm/_internal/serve/core/server/llm_server.py``); dsserve's renderer
sets it to :class:`SimulatedEngine` for ``engine.backend: simulated``. Everything above the engine -
Serve's proxy, dsserve's ingress, routing, batching of streamed chunks, admission - is the production
code path; only the GPU work is replaced by waiting the planner's step time.

Requests become :class:`~dsserve.sim.scheduler.SimRequest` objects in a vLLM-style scheduler driven by
one asyncio task (the "engine core"). Token counts are estimated at 4 characters per token plus a few
template tokens per chat message (no tokenizer is needed, so any catalog model can be simulated); tool
definitions and earlier tool calls in a chat count toward the prompt as their JSON. By default the output
is a deterministic stream of English words, one per token, until ``max_tokens``.

Agent traffic gets what vLLM 0.32 answers with the deployment's ``model.parsers``
(:mod:`dsserve.sim.answer` decides what is said, including vLLM's 400s for ``tool_choice`` without a
tool parser):

- ``response_format`` ``json_object`` / ``json_schema`` (and ``structured_outputs``): the content is a JSON
  document (an instance of the schema, :mod:`dsserve.sim.schema_instance`), streamed as content deltas of
  about 4 characters per token, then EOS: ``finish_reason: stop``;
- a tool call: ``message.tool_calls`` with one ``chatcmpl-tool-<32 hex>`` call whose ``arguments`` are an
  instance of the tool's ``parameters`` schema. Its tokens are the call's markup and function name
  (:data:`TOOL_CALL_OPEN_TOKENS` plus the name's), then the arguments at about 4 characters per token,
  then the closing markup (:data:`TOOL_CALL_CLOSE_TOKENS`) and EOS - the shape of DeepSeek's tool-call
  format under vLLM's ``deepseek_v3`` parser, which also handles named and ``required`` choices (vLLM's
  strict tool calling, on by default, routes them through it). Streamed, as that parser streams: a first
  ``{"role": "assistant", "content": ""}`` delta, nothing during the opening markup, one delta with the
  call's ``id``, ``type``, ``index`` and ``function.name``, then one ``function.arguments`` fragment per
  token, and the finish chunk: ``stop`` for a named choice, ``tool_calls`` otherwise.

A document or call longer than ``max_tokens`` allows ends with ``finish_reason: length``, cut where the
tokens ran out: streamed, the arguments fragments sent so far (an unparseable prefix); not streamed, no
call at all (vLLM's parser finds no complete call: ``tool_calls: []``, content as above). Stop strings
apply to text and JSON content, not inside a tool call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from ray.llm._internal.serve.core.engine.protocol import LLMEngine

from dsserve.planner.disagg import KvTransfer
from dsserve.sim import SIM_CONFIG_KEY, SIM_KV_TRANSFER_KEY
from dsserve.sim.answer import Refusal, TextAnswer, ToolCallAnswer, ToolParsing, chat_answer, text_answer
from dsserve.sim.kv_transfer import (
    TransferMetrics,
    is_decode_handoff,
    is_prefill_handoff,
    prefill_handoff_params,
)
from dsserve.sim.scheduler import Scheduler, SimRequest, StepResult
from dsserve.sim.timing import SimTiming, spec_from_inputs, timing_from_spec

__all__ = ["SimulatedEngine", "chat_prompt_tokens", "estimate_tokens"]

logger = logging.getLogger("dsserve.sim")

CHARS_PER_TOKEN = 4.0  # the load generator's estimate too (dsserve/loadgen/prompts.py)
TEMPLATE_TOKENS_PER_MESSAGE = 3  # role markers a chat template adds around each message
FINGERPRINT = "dsserve-simulated"
#: DeepSeek's tool-call markup around a call, in tokens: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>
#: function<｜tool▁sep｜>`` + the name + ``\n```json\n`` before the arguments,
#: ``\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>`` after.
TOOL_CALL_OPEN_TOKENS = 6
TOOL_CALL_CLOSE_TOKENS = 3
GAUGE_REFRESH_S = 5.0  # vLLM logs stats every VLLM_LOG_STATS_INTERVAL (10 s); Ray drops gauges after ~20 s
_WORDS = (
    "the",
    "model",
    "answers",
    "in",
    "simulated",
    "words",
    "while",
    "the",
    "engine",
    "keeps",
    "its",
    "pace",
    "step",
    "by",
    "step",
    "and",
    "every",
    "token",
    "arrives",
    "when",
    "the",
    "planner",
    "says",
    "a",
    "real",
    "accelerator",
    "would",
    "produce",
    "it",
)


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN)) if text else 0


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(getattr(p, "text", "")) for p in content)
    return str(content)


def chat_prompt_tokens(messages: list[Any], tools: list[Any] | None = None) -> int:
    """Prompt tokens of a chat: each message's text and earlier tool calls, and the tool definitions the
    chat template renders into the prompt (vLLM renders them whatever the tool_choice)."""
    total = 1  # BOS
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else getattr(m, "content", None)
        calls = m.get("tool_calls") if isinstance(m, dict) else getattr(m, "tool_calls", None)
        total += TEMPLATE_TOKENS_PER_MESSAGE + estimate_tokens(_content_text(content))
        if calls:
            total += estimate_tokens(_json_text(calls))
    if tools:
        total += estimate_tokens(_json_text(tools))
    return total + 2  # the assistant turn's opening


def _json_text(value: Any) -> str:
    """JSON of request parts that may be pydantic models (vLLM's tool params) or plain dicts."""
    return json.dumps(value, default=lambda o: o.model_dump(exclude_none=True) if hasattr(o, "model_dump") else str(o))


def _word(i: int) -> str:
    return " " + _WORDS[i % len(_WORDS)]


@dataclass(frozen=True)
class _Script:
    """What a request's sampled tokens spell: ``pieces`` then EOS, or (``pieces`` None) filler words until
    ``max_tokens``. The first ``lead`` pieces are markup that shows nowhere (a tool call's opening)."""

    pieces: tuple[str, ...] | None = None
    lead: int = 0

    @classmethod
    def text(cls, text: str | None) -> _Script:
        return cls() if text is None else cls(_split(text))

    @classmethod
    def tool_call(cls, call: ToolCallAnswer) -> _Script:
        lead = TOOL_CALL_OPEN_TOKENS + estimate_tokens(call.name)
        return cls(("",) * lead + _split(call.arguments) + ("",) * TOOL_CALL_CLOSE_TOKENS, lead)

    def piece(self, i: int) -> str:
        if self.pieces is None:
            return _word(i)
        return self.pieces[i] if i < len(self.pieces) else ""

    @property
    def eos_at(self) -> int | None:
        """Output tokens once the model has sampled EOS (vLLM counts it), or None: it never does."""
        return None if self.pieces is None else len(self.pieces) + 1


def _split(text: str) -> tuple[str, ...]:
    """One piece per simulated token, CHARS_PER_TOKEN characters each (the last may be shorter)."""
    size = int(CHARS_PER_TOKEN)
    return tuple(text[i : i + size] for i in range(0, len(text), size))


class _Seq:
    """Per-request bridge between the engine-core task and the HTTP generator."""

    __slots__ = ("event", "req", "script", "sent", "stop", "text")

    def __init__(self, req: SimRequest, stop: list[str], script: _Script) -> None:
        self.req = req
        self.event = asyncio.Event()
        self.sent = 0
        self.stop = stop
        self.text = ""
        self.script = script


class SimulatedEngine(LLMEngine):
    """An ``LLMEngine`` whose tokens take as long as the planner says the modelled GPUs would."""

    def __init__(self, llm_config: Any) -> None:
        self.llm_config = llm_config
        self.model_id: str = llm_config.model_id
        self._inputs: dict[str, Any] = (llm_config.experimental_configs or {}).get(SIM_CONFIG_KEY) or {}
        self.timing: SimTiming | None = None
        self.tool_parsing = ToolParsing()  # the spec's model.parsers, read at start()
        self.scheduler: Scheduler | None = None
        self.metrics: Any = None
        self._seqs: dict[int, _Seq] = {}
        self._wake: asyncio.Event | None = None
        self._core: asyncio.Task[None] | None = None
        self._gauges: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.steps = 0
        self.lag_s = 0.0  # how far the event loop ran behind the modelled step times, in total
        # disaggregation (dsserve/sim/kv_transfer.py): the connector config, and on a decode pool the transfer
        self._kv_config: dict[str, Any] | None = (getattr(llm_config, "engine_kwargs", None) or {}).get(
            "kv_transfer_config"
        )
        handoff = (llm_config.experimental_configs or {}).get(SIM_KV_TRANSFER_KEY)
        self.transfer = KvTransfer(**handoff) if handoff else None
        self.transfer_metrics: TransferMetrics | None = None
        self.engine_id = uuid.uuid4().hex

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self._inputs:
            raise RuntimeError(
                f"simulated engine: experimental_configs.{SIM_CONFIG_KEY} is missing from the LLM config; "
                "render the app with dsserve (engine.backend: simulated) rather than by hand"
            )
        spec = spec_from_inputs(self._inputs)
        self.timing = timing_from_spec(spec)
        self.tool_parsing = ToolParsing.from_frontend_kwargs(spec.model.frontend_kwargs())
        t = self.timing
        self.scheduler = Scheduler(
            max_num_seqs=t.max_num_seqs,
            max_num_batched_tokens=t.max_num_batched_tokens,
            kv_blocks=t.kv_blocks,
            block_tokens=t.block_tokens,
            speculative_tokens=t.speculative_tokens,
            acceptance=t.acceptance,
        )
        if getattr(self.llm_config, "log_engine_metrics", False):
            from dsserve.sim.metrics import SimMetrics

            caching = (self._inputs.get("engine") or {}).get("enable_prefix_caching") is not False  # vLLM's default: on
            self.metrics = SimMetrics(
                self.model_id,
                max_model_len=t.max_model_len,
                block_tokens=t.block_tokens,
                kv_blocks=t.kv_blocks,
                description=t.description,
                prefix_caching=caching,
                speculative_tokens=t.speculative_tokens,
            )
        if self._kv_config:
            # as vLLM's engine does at start (VLLMEngine.start): the P/D orchestrator reads the connector backend
            self.llm_config.setup_engine_backend()
            if self.metrics is not None and self.transfer and self._kv_config.get("kv_connector") == "NixlConnector":
                self.transfer_metrics = TransferMetrics(self.model_id, self._kv_config)
        self._wake = asyncio.Event()
        self._core = asyncio.get_running_loop().create_task(self._run_core())
        if self.metrics is not None:
            self._gauges = asyncio.get_running_loop().create_task(self._refresh_gauges())
        logger.warning(
            "SIMULATED engine for %s: %s, KV cache %d tokens, max_num_seqs %d, max_num_batched_tokens %d%s",
            self.model_id,
            t.description,
            t.kv_tokens,
            t.max_num_seqs,
            t.max_num_batched_tokens,
            f", KV handoff over {self.transfer.link} (modelled)" if self.transfer else "",
        )

    async def shutdown(self) -> None:
        for task in (self._core, self._gauges):
            if task is not None:
                task.cancel()

    async def _refresh_gauges(self, every_s: float = GAUGE_REFRESH_S) -> None:
        """Re-set the scheduler gauges while idle, as vLLM's periodic stats logging does: Ray stops
        exporting a gauge that is not refreshed for two report intervals, and an idle engine must still
        show 0 running rather than no series at all."""
        assert self.scheduler
        while True:
            await asyncio.sleep(every_s)
            self.metrics.record_state(self.scheduler)
            self.metrics.refresh_static()

    def engine_error(self) -> bool:
        """The engine core has stopped (direct mode's pipeline answers 503 until Serve replaces the replica)."""
        return self._error is not None or (self._core is not None and self._core.done())

    async def check_health(self) -> None:
        if self._error is not None or (self._core is not None and self._core.done()):
            raise RuntimeError(f"simulated engine core stopped: {self._error!r}")

    def routing_stats(self) -> dict:
        return {}

    async def resolve_lora(self, lora_model: Any) -> None:
        raise ValueError("the simulated engine serves no LoRA adapters")

    async def reset_prefix_cache(self) -> None:
        return None

    async def build_asgi_app(self) -> Any:
        """The app an engine replica serves in direct mode (dsserve/sim/asgi.py)."""
        from dsserve.sim.asgi import build_sim_app

        return build_sim_app(self)

    # -- engine core ------------------------------------------------------------------------------

    async def _run_core(self) -> None:
        assert self.scheduler and self.timing and self._wake
        sched, timing, loop = self.scheduler, self.timing, asyncio.get_running_loop()
        try:
            while True:
                if not sched.has_work():
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                start = loop.time()
                step = sched.schedule(start)
                if step is None:  # waiting for KV blocks that an abort or finish will free
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                dt = timing.step_time_s(step.decodes, step.prefill_tokens, step.decode_context, step.prefill_context)
                await asyncio.sleep(max(0.0, start + dt - loop.time()))
                now = loop.time()
                self.lag_s += max(0.0, now - (start + dt))
                self.steps += 1
                result = sched.complete(step, now)
                finished = result.finished + self._stop_at_eos(result, now)
                if self.metrics is not None:
                    self.metrics.record_step(step, result)
                    for req in finished:
                        self.metrics.record_finished(req)
                    self.metrics.record_state(sched)
                for req in result.emitted:
                    seq = self._seqs.get(id(req))
                    if seq is not None:
                        seq.event.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug here must fail health checks, not hang requests
            self._error = exc
            logger.exception("simulated engine core failed")
            for seq in self._seqs.values():
                seq.event.set()
            raise

    def _stop_at_eos(self, result: StepResult, now: float) -> tuple[SimRequest, ...]:
        """Finish (``stop``) the requests whose script has just sampled EOS, before the metrics and the HTTP
        generator look: the scheduler only stops at max_tokens. Returns those it finished; one that also
        reached max_tokens with its EOS was finished already, and is relabelled ``stop`` as vLLM reports it.
        With MTP a step can gain several tokens: tokens accepted past the EOS are dropped, as vLLM stops there."""
        assert self.scheduler
        stopped = []
        for req, gain in zip(result.emitted, result.gained, strict=True):
            seq = self._seqs.get(id(req))
            eos = seq.script.eos_at if seq is not None else None
            if eos is None or not req.output_tokens - gain < eos <= req.output_tokens:
                continue
            req.output_tokens = eos
            if req.finished:
                req.finished_reason = "stop"
            else:
                self.scheduler.finish(req, "stop", now)
                stopped.append(req)
        return tuple(stopped)

    def _finish(self, seq: _Seq, reason: str) -> None:
        assert self.scheduler
        req = seq.req
        if not req.finished:
            self.scheduler.finish(req, reason, asyncio.get_running_loop().time())
            if self.metrics is not None:
                self.metrics.record_finished(req)
                self.metrics.record_state(self.scheduler)
            assert self._wake
            self._wake.set()

    async def _generate(
        self, req: SimRequest, stop: list[str], script: _Script
    ) -> AsyncGenerator[tuple[str, int, str | None], None]:
        """Yield (new text, output tokens so far, finish reason or None) as the engine core emits tokens for
        ``req``; token i spells ``script.piece(i)``."""
        assert self.scheduler and self._wake
        if self._error is not None:
            raise RuntimeError(f"simulated engine core stopped: {self._error!r}")
        seq = _Seq(req, stop, script)
        self._seqs[id(req)] = seq
        self.scheduler.add(req)
        self._wake.set()
        try:
            while True:
                await seq.event.wait()
                seq.event.clear()
                if self._error is not None:
                    raise RuntimeError(f"simulated engine core stopped: {self._error!r}")
                before, seq.sent = seq.sent, req.output_tokens
                new = "".join(script.piece(i) for i in range(before, seq.sent))
                reason = req.finished_reason
                if stop and new:
                    at = len(seq.text)
                    seq.text += new
                    hit = min((i for i in (seq.text.find(s, max(0, at - len(s))) for s in stop) if i >= 0), default=-1)
                    if hit >= 0:
                        new = seq.text[at:hit] if hit > at else ""
                        self._finish(seq, "stop")
                        yield new, seq.sent, "stop"
                        return
                if reason is not None:
                    yield new, seq.sent, reason
                    return
                if seq.sent > before:  # markup tokens spell nothing but still advance a tool call
                    yield new, seq.sent, None
        finally:
            self._seqs.pop(id(req), None)
            if not req.finished:  # client went away or the caller stopped reading: free the slot
                self._finish(seq, "abort")

    # -- OpenAI surface ---------------------------------------------------------------------------

    def _limits(self, prompt_tokens: int, max_tokens: int | None, param: str) -> tuple[int, Any]:
        """Resolve max_tokens as vLLM does and refuse what exceeds the context (vLLM's 400)."""
        assert self.timing
        limit = self.timing.max_model_len
        if max_tokens is None:
            max_tokens = limit - prompt_tokens
        if prompt_tokens + max_tokens > limit or max_tokens < 1:
            return 0, self._error_response(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + max(max_tokens, 0)} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
                f"completion). Please reduce the length of the messages or completion.",
                param,
            )
        return max_tokens, None

    @staticmethod
    def _error_response(message: str, param: str | None = None, code: int = 400) -> Any:
        from ray.llm._internal.serve.core.configs.openai_api_models import ErrorInfo, ErrorResponse

        return ErrorResponse(error=ErrorInfo(message=message, type="BadRequestError", param=param, code=code))

    @staticmethod
    def _stops(stop: Any) -> list[str]:
        if not stop:
            return []
        return [stop] if isinstance(stop, str) else [s for s in stop if s]

    async def chat(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        if (request.n or 1) != 1:
            yield self._error_response("the simulated engine generates one choice per request; set n to 1", "n")
            return
        answer = chat_answer(request, self.tool_parsing)  # vLLM checks tool_choice before the context length
        if isinstance(answer, Refusal):
            yield self._error_response(answer.message, answer.param)
            return
        prompt = chat_prompt_tokens(list(request.messages), getattr(request, "tools", None))
        requested = request.max_completion_tokens or vars(request).get("max_tokens")
        max_tokens, err = self._limits(prompt, requested, "messages")
        if err is not None:
            yield err
            return
        async for out in self._respond(request, prompt, max_tokens, answer, chat=True):
            yield out

    async def completions(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        if (request.n or 1) != 1:
            yield self._error_response("the simulated engine generates one choice per request; set n to 1", "n")
            return
        p = request.prompt
        if isinstance(p, list) and p and isinstance(p[0], list):
            if len(p) != 1:
                yield self._error_response("the simulated engine takes one prompt per request", "prompt")
                return
            p = p[0]
        if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
            p = p[0]
        answer = text_answer(request)
        if isinstance(answer, Refusal):
            yield self._error_response(answer.message, answer.param)
            return
        prompt = len(p) if isinstance(p, list) else estimate_tokens(str(p or "")) + 1
        max_tokens, err = self._limits(prompt, request.max_tokens, "prompt")
        if err is not None:
            yield err
            return
        async for out in self._respond(request, prompt, max_tokens, answer, chat=False):
            yield out

    async def _respond(
        self, request: Any, prompt: int, max_tokens: int, answer: TextAnswer | ToolCallAnswer, *, chat: bool
    ) -> AsyncGenerator[Any, None]:
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{getattr(request, 'request_id', None) or uuid.uuid4().hex}"
        created = int(time.time())
        call = answer if isinstance(answer, ToolCallAnswer) else None
        script = _Script.tool_call(answer) if isinstance(answer, ToolCallAnswer) else _Script.text(answer.text)
        handoff = getattr(request, "kv_transfer_params", None)
        req = SimRequest(rid, prompt, max_tokens, asyncio.get_running_loop().time())
        if is_decode_handoff(handoff):
            req.external_tokens = await self._receive_kv(prompt)
        gen = self._generate(req, [] if call is not None else self._stops(request.stop), script)
        if not request.stream:
            parts: list[str] = []
            reason = "length"
            async for text, _, fin in gen:
                parts.append(text)
                reason = fin or reason
            response = self._full_response(rid, created, chat, "".join(parts), reason, prompt, req.output_tokens, call)
            if is_prefill_handoff(handoff):
                assert self.timing
                response.kv_transfer_params = prefill_handoff_params(
                    engine_id=self.engine_id,
                    request_id=rid,
                    prompt_tokens=prompt,
                    block_tokens=self.timing.block_tokens,
                    tp_size=self.timing.perf.dep.layout.tp,
                )
            yield response
            return

        obj = "chat.completion.chunk" if chat else "text_completion"
        head = {"id": rid, "object": obj, "created": created, "model": self.model_id, "system_fingerprint": FINGERPRINT}
        if chat:
            yield _chunk(head, {"role": "assistant", "content": ""}, None)
        body = (
            self._tool_call_chunks(gen, head, call, script.lead)
            if call is not None
            else self._text_chunks(gen, head, chat)
        )
        async for chunk in body:
            yield chunk
        opts = request.stream_options
        if opts is not None and getattr(opts, "include_usage", False):
            yield _sse({**head, "choices": [], "usage": _usage(prompt, req.output_tokens)})
        yield "data: [DONE]\n\n"

    async def _receive_kv(self, prompt: int) -> int:
        """Wait while the prompt's KV arrives from the prefill engine; the prompt tokens it covers (all but
        the last, which the decode engine computes to sample from). Without a modelled transfer it is instant."""
        cached = max(prompt - 1, 0)
        if self.transfer is None or not cached:
            return cached
        assert self.timing
        post_s = self.transfer.latency_s * self.timing.time_scale
        wire_s = (self.transfer.seconds(cached) - self.transfer.latency_s) * self.timing.time_scale
        await asyncio.sleep(post_s + wire_s)
        if self.transfer_metrics is not None:
            blocks = math.ceil(cached / self.timing.block_tokens)
            self.transfer_metrics.record(
                post_s=post_s,
                transfer_s=wire_s,
                nbytes=self.transfer.bytes_per_request(cached),
                descriptors=blocks * self.timing.perf.dep.arch.num_layers,  # one region per block per layer
            )
        return cached

    @staticmethod
    async def _text_chunks(
        gen: AsyncGenerator[tuple[str, int, str | None], None], head: dict[str, Any], chat: bool
    ) -> AsyncGenerator[str, None]:
        """Content deltas (chat) or text pieces (completions), the finish reason on the last."""
        async for text, _, fin in gen:
            if chat:
                yield _chunk(head, {"content": text} if text else {}, fin)
                continue
            choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": fin}
            if fin is not None:
                choice["stop_reason"] = None
            yield _sse({**head, "choices": [choice]})

    @staticmethod
    async def _tool_call_chunks(
        gen: AsyncGenerator[tuple[str, int, str | None], None], head: dict[str, Any], call: ToolCallAnswer, lead: int
    ) -> AsyncGenerator[str, None]:
        """A tool call as vLLM's deepseek_v3 parser streams it: once the opening markup and the name are
        out, a delta naming the call; then each arguments fragment; the finish reason on the last chunk."""
        announced = False
        async for text, tokens, fin in gen:
            deltas: list[dict[str, Any]] = []
            if not announced and tokens >= lead:
                announced = True
                deltas.append(
                    {
                        "tool_calls": [
                            {"id": _tool_call_id(), "type": "function", "index": 0, "function": {"name": call.name}}
                        ]
                    }
                )
            if text:
                deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": text}}]})
            if fin is None:
                for delta in deltas:
                    yield _chunk(head, delta, None)
                continue
            for delta in deltas[:-1]:
                yield _chunk(head, delta, None)
            yield _chunk(head, deltas[-1] if deltas else {}, call.finish_reason if fin == "stop" and announced else fin)

    def _full_response(
        self,
        rid: str,
        created: int,
        chat: bool,
        text: str,
        reason: str,
        prompt: int,
        used: int,
        call: ToolCallAnswer | None = None,
    ) -> Any:
        from ray.llm._internal.serve.core.configs.openai_api_models import (
            ChatCompletionResponse,
            CompletionResponse,
        )

        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if call is not None:
                message, reason = _tool_call_message(call, text, reason)
            return ChatCompletionResponse(
                id=rid,
                object="chat.completion",
                created=created,
                model=self.model_id,
                system_fingerprint=FINGERPRINT,
                usage=_usage(prompt, used),
                choices=[
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": reason, "stop_reason": None}
                ],
            )
        return CompletionResponse(
            id=rid,
            object="text_completion",
            created=created,
            model=self.model_id,
            system_fingerprint=FINGERPRINT,
            usage=_usage(prompt, used),
            choices=[{"index": 0, "text": text, "logprobs": None, "finish_reason": reason, "stop_reason": None}],
        )

    # unsupported endpoints: answer as a text-only vLLM model would
    async def embeddings(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        yield self._error_response("the simulated engine serves generation only (no embeddings)", None, 404)

    async def transcriptions(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        yield self._error_response("the simulated engine serves generation only (no transcriptions)", None, 404)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _chunk(head: dict[str, Any], delta: dict[str, Any], fin: str | None) -> str:
    """One chat.completion.chunk event with one choice, as vLLM serializes it."""
    choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": fin}
    if fin is not None:
        choice["stop_reason"] = None
    return _sse({**head, "choices": [choice]})


def _tool_call_id() -> str:
    """vLLM's default tool-call id (``make_tool_call_id``: ``chatcmpl-tool-`` + a random uuid's 32 hex digits)."""
    return f"chatcmpl-tool-{uuid.uuid4().hex}"


def _tool_call_message(call: ToolCallAnswer, arguments: str, reason: str) -> tuple[dict[str, Any], str]:
    """The non-streamed message and finish reason: the call once complete (EOS reached); cut by max_tokens,
    no call at all, since vLLM's parser finds no complete call in the text."""
    message: dict[str, Any] = {"role": "assistant", "content": call.content, "tool_calls": []}
    if reason != "stop":
        return message, reason
    message["tool_calls"] = [
        {"id": _tool_call_id(), "type": "function", "function": {"name": call.name, "arguments": arguments}}
    ]
    return message, call.finish_reason
