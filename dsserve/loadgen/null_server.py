"""An instant OpenAI-shaped server: measures the load generator, not a model.

``python -m dsserve.loadgen.null_server --port 0`` prints ``LISTENING <port>`` and answers
``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions``, streamed (SSE with a role
chunk, one event per token, a usage chunk when ``stream_options.include_usage`` is set, and
``data: [DONE]``) or not, with ``max_tokens`` tokens and an exact ``usage``. Optional delays (``--ttft-ms``,
``--itl-ms``) and injected failures (``--fail-every N``: every N-th request answers 500) make the gate's
failure paths testable. A chat request with ``tools`` (and a ``tool_choice`` other than ``none``) is
answered with one tool call in vLLM's shape (the named function, else the first declared; arguments the
simulated engine's instance of its parameters schema, :func:`dsserve.sim.schema_instance.instance_of`;
streamed as a name delta then argument fragments; ``finish_reason`` ``stop`` for a named choice,
``tool_calls`` otherwise), and one with a ``response_format`` with JSON content; ``--malformed-every N``
cuts every N-th such answer's JSON short, so the load generator's ``malformed_tool_call`` /
``malformed_json`` checks can be tested end to end. ``GET /stats`` returns the arrival time (``time.time()``)
of every request, so a test can check the rate the server saw, independent of the generator's own
bookkeeping.

It is how dsserve tests its pacing, and how to find a generator machine's ceiling before blaming a server:
run a scenario against it with ``--engine null``; whatever the generator cannot sustain here it cannot
sustain anywhere. Its model card advertises ``metadata.engine_kind: "null"``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from aiohttp import web

from dsserve.sim.schema_instance import instance_of

__all__ = ["NullServer", "make_app", "main"]


def _structured_answer(body: dict[str, Any]) -> tuple[str, str, str | None] | None:
    """("call", arguments, function name) or ("json", content, None) for an agent request; None otherwise."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if tools and choice != "none":
        named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        fn = next((t["function"] for t in tools if t["function"]["name"] == named), tools[0]["function"])
        text = json.dumps(instance_of(fn.get("parameters") or {"type": "object"}))
        return "call", text, fn["name"]
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_schema", "json_object"):
        text = json.dumps(instance_of((fmt.get("json_schema") or {}).get("schema") or {"type": "object"}))
        return "json", text, None
    return None


def make_app(
    *,
    model: str = "null-model",
    context_window: int = 4096,
    ttft_ms: float = 0.0,
    itl_ms: float = 0.0,
    fail_every: int = 0,
    api_key: str | None = None,
    malformed_every: int = 0,
) -> web.Application:
    arrivals: list[float] = []
    counter = {"n": 0, "structured": 0}

    def unauthorized(request: web.Request) -> web.Response | None:
        if api_key and request.headers.get("Authorization", "") != f"Bearer {api_key}":
            return web.json_response(
                {"error": {"message": "bad key", "type": "authentication_error", "param": None, "code": 401}},
                status=401,
            )
        return None

    async def models(request: web.Request) -> web.Response:
        if (r := unauthorized(request)) is not None:
            return r
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": model,
                        "object": "model",
                        "owned_by": "dsserve",
                        "permission": [],
                        "metadata": {"max_request_context_length": context_window, "engine_kind": "null"},
                    }
                ],
            }
        )

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"count": len(arrivals), "arrivals": arrivals})

    async def generate(request: web.Request) -> web.StreamResponse:
        arrivals.append(time.time())
        counter["n"] += 1
        if (r := unauthorized(request)) is not None:
            return r
        try:
            body: dict[str, Any] = await request.json()
        except ValueError:
            return web.json_response(
                {"error": {"message": "not JSON", "type": "invalid_request_error", "param": None, "code": 400}},
                status=400,
            )
        if fail_every and counter["n"] % fail_every == 0:
            return web.json_response(
                {"error": {"message": "injected failure", "type": "internal_error", "param": None, "code": 500}},
                status=500,
            )
        chat = request.path.endswith("/chat/completions")
        n = int(body.get("max_tokens") or 16)
        prompt = (body.get("messages") or [{}])[-1].get("content", "") if chat else body.get("prompt", "")
        usage = {
            "prompt_tokens": max(1, len(str(prompt).split())),
            "completion_tokens": n,
            "total_tokens": max(1, len(str(prompt).split())) + n,
        }
        obj = "chat.completion" if chat else "text_completion"
        plan = _structured_answer(body) if chat else None
        if plan is not None:
            counter["structured"] += 1
            if malformed_every and counter["structured"] % malformed_every == 0:
                plan = (plan[0], plan[1][:-1], plan[2])  # JSON cut short: the closing brace is missing
            return await structured(request, body, plan, usage)
        if not body.get("stream"):
            if ttft_ms or itl_ms:
                await asyncio.sleep((ttft_ms + itl_ms * max(0, n - 1)) / 1000.0)
            choice = (
                {"index": 0, "message": {"role": "assistant", "content": "tok " * n}, "finish_reason": "length"}
                if chat
                else {"index": 0, "text": "tok " * n, "finish_reason": "length"}
            )
            return web.json_response(
                {"id": "null-1", "object": obj, "created": 0, "model": model, "choices": [choice], "usage": usage}
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        kind = obj + ".chunk" if chat else obj
        if ttft_ms:
            await asyncio.sleep(ttft_ms / 1000.0)

        def chunk(text: str | None, finish: str | None = None, role: bool = False) -> bytes:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {"content": text}
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish}
            return (
                b"data: "
                + json.dumps(
                    {"id": "null-1", "object": kind, "created": 0, "model": model, "choices": [choice]}
                ).encode()
                + b"\n\n"
            )

        if chat:
            await resp.write(chunk(None, role=True))
        for i in range(n):
            if i and itl_ms:
                await asyncio.sleep(itl_ms / 1000.0)
            await resp.write(chunk("tok ", "length" if i == n - 1 else None))
        opts = body.get("stream_options") or {}
        if opts.get("include_usage"):
            await resp.write(
                b"data: "
                + json.dumps(
                    {"id": "null-1", "object": kind, "created": 0, "model": model, "choices": [], "usage": usage}
                ).encode()
                + b"\n\n"
            )
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def structured(
        request: web.Request, body: dict[str, Any], plan: tuple[str, str, str | None], usage: dict[str, int]
    ) -> web.StreamResponse:
        """A tool call or JSON content, in vLLM's shape: whole, or streamed in fragments."""
        kind, text, name = plan
        named = isinstance(body.get("tool_choice"), dict)
        finish = "tool_calls" if kind == "call" and not named else "stop"
        call = {"id": "call-null-1", "type": "function", "function": {"name": name, "arguments": text}}
        head = {"id": "null-1", "created": 0, "model": model}
        if not body.get("stream"):
            message = (
                {"role": "assistant", "content": None, "tool_calls": [call]}
                if kind == "call"
                else {"role": "assistant", "content": text}
            )
            return web.json_response(
                {
                    **head,
                    "object": "chat.completion",
                    "usage": usage,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def event(delta: dict[str, Any] | None, finish_reason: str | None = None, **extra: Any) -> None:
            choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
            payload = {**head, "object": "chat.completion.chunk", "choices": choices, **extra}
            await resp.write(b"data: " + json.dumps(payload).encode() + b"\n\n")

        await event({"role": "assistant", "content": ""})
        pieces = [text[i : i + 5] for i in range(0, len(text), 5)]
        if kind == "call":
            await event(
                {
                    "tool_calls": [
                        {"index": 0, "id": call["id"], "type": "function", "function": {"name": name, "arguments": ""}}
                    ]
                }
            )
            for piece in pieces:
                await event({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        else:
            for piece in pieces:
                await event({"content": piece})
        await event({"content": ""}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            await event(None, usage=usage)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", stats)
    app.router.add_post("/v1/chat/completions", generate)
    app.router.add_post("/v1/completions", generate)
    return app


class NullServer:
    """The null server in a subprocess on 127.0.0.1 (a context manager): ``url``, ``stats()``, ``stop()``."""

    def __init__(self, *args: str, startup_timeout_s: float = 30.0) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dsserve.loadgen.null_server", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + startup_timeout_s
        line = ""
        while time.monotonic() < deadline:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if line.startswith("LISTENING "):
                break
            if not line and self.proc.poll() is not None:
                break
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"null server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        import httpx

        return httpx.get(f"{self.url}/stats", timeout=10).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except Exception:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> NullServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dsserve.loadgen.null_server", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed as LISTENING <port>)")
    p.add_argument("--model", default="null-model")
    p.add_argument("--context-window", type=int, default=4096)
    p.add_argument("--ttft-ms", type=float, default=0.0)
    p.add_argument("--itl-ms", type=float, default=0.0)
    p.add_argument("--fail-every", type=int, default=0, help="every N-th request answers HTTP 500")
    p.add_argument("--api-key", default=None, help="require this Bearer key")
    p.add_argument(
        "--malformed-every", type=int, default=0, help="every N-th tool-call or JSON answer has its JSON cut short"
    )
    args = p.parse_args(argv)
    app = make_app(
        model=args.model,
        context_window=args.context_window,
        ttft_ms=args.ttft_ms,
        itl_ms=args.itl_ms,
        fail_every=args.fail_every,
        api_key=args.api_key,
        malformed_every=args.malformed_every,
    )

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port, backlog=4096)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # set by start()
        print(f"LISTENING {port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
